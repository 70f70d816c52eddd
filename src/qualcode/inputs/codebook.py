"""The codebook: what to code. It generates the answer's JSON Schema and pydantic model.

Every string in the answer schema has `maxLength` and every array `maxItems`: small local models loop
without them, and the bounds make `max_tokens` budgetable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ..config import explain, read_yaml

_IDENT = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeValue(_Strict):
    """One allowed value of a choice field."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_]*$", description="Value as it appears in the tables.")
    definition: str = Field(..., min_length=1, description="What the value means; shown to the model.")
    examples: list[str] = Field(default_factory=list, description="Optional example phrases.")
    label: str | None = Field(None, description="The code's name as written elsewhere (a QDA program's export).")
    exclusive: bool = Field(
        False, description="Use alone: an answer holding this value holds no other (e.g. `none`); re-asked if not."
    )


class CodeField(_Strict):
    """One question asked of every chunk."""

    name: str = Field(..., pattern=_IDENT, description="Column name in the tables (snake_case).")
    label: str | None = Field(None, description="Human-readable name.")
    type: Literal["single_choice", "multiple_choice", "boolean", "text"] = Field(..., description="Answer type.")
    description: str = Field(..., min_length=1, description="What to look for; shown to the model.")
    values: list[CodeValue] = Field(
        default_factory=list, description="Allowed values (single_choice and multiple_choice only)."
    )
    max_items: int | None = Field(None, ge=1, le=100, description="Most values a multiple_choice answer may hold.")
    min_items: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Fewest values a multiple_choice answer may hold (default 0, or 1 with allow_empty: false).",
    )
    allow_empty: bool = Field(
        True,
        description="Whether the answer may be empty: no value (multiple_choice), or a text without a letter or "
        "digit (`][`, `...`). With false such an answer is invalid and re-asked; either way empty answers are "
        "counted in the codings table (`empty_fields`), the manifest and the methods.",
    )
    max_length: int = Field(200, ge=1, le=10_000, description="Longest text answer (type text), in characters.")
    quote: bool = Field(True, description="Ask for a verbatim evidence quote for this field.")

    @model_validator(mode="after")
    def _values_fit_type(self) -> CodeField:
        choice = self.type in ("single_choice", "multiple_choice")
        if choice and not self.values:
            raise ValueError(f"field '{self.name}' is {self.type} but its list of values is empty")
        if not choice and self.values:
            raise ValueError(f"field '{self.name}' is {self.type}; only choice fields take values")
        names = [v.name for v in self.values]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field '{self.name}' lists value(s) more than once: {', '.join(dupes)}")
        if self.type != "multiple_choice" and (self.min_items is not None or self.max_items is not None):
            raise ValueError(f"field '{self.name}' is {self.type}; only multiple_choice fields take min_items and "
                             "max_items")  # fmt: skip
        if self.type != "multiple_choice" and any(v.exclusive for v in self.values):
            raise ValueError(f"field '{self.name}' is {self.type}; its values are used alone already (exclusive is "
                             "for multiple_choice)")  # fmt: skip
        if self.type in ("single_choice", "boolean") and not self.allow_empty:
            raise ValueError(f"field '{self.name}' is {self.type}, whose answer is never empty; leave out allow_empty")
        if self.min_items is not None and self.min_items > self.most_items:
            raise ValueError(f"field '{self.name}': min_items ({self.min_items}) is more than the most values an "
                             f"answer may hold ({self.most_items})")  # fmt: skip
        return self

    @property
    def most_items(self) -> int:
        return self.max_items or len(self.values)

    @property
    def fewest_items(self) -> int:
        return max(self.min_items or 0, 0 if self.allow_empty else 1)

    def is_empty(self, value: Any) -> bool:
        """An answer empty of meaning: no value, or a text without a letter or digit (`][`, `...`, `-`)."""
        if self.type == "multiple_choice":
            return not value
        if self.type == "text":
            return not any(ch.isalnum() for ch in str(value))
        return False

    def problems(self, value: Any) -> list[str]:
        """What is wrong with a schema-valid answer by the codebook's rules (use alone, fewest values, empty)."""
        found = []
        if self.type == "multiple_choice":
            chosen = list(dict.fromkeys(value))
            alone = [v.name for v in self.values if v.exclusive and v.name in chosen]
            if alone and len(chosen) > 1:
                others = ", ".join(repr(v) for v in chosen if v != alone[0])
                found.append(f"{self.name}: '{alone[0]}' must be used alone, not with {others}")
            if len(chosen) < self.fewest_items:
                found.append(f"{self.name}: choose at least {self.fewest_items} value(s)")
        elif self.type == "text" and not self.allow_empty and self.is_empty(value):
            found.append(f"{self.name}: the answer {value!r} is empty; write what the passage says")
        return found


class Codebook(_Strict):
    """A codebook: a named, versioned list of fields."""

    name: str = Field(..., min_length=1, description="Codebook title.")
    version: str = Field(..., min_length=1, description="Version to cite.")
    description: str = Field("", description="What the codebook is for; shown to the model.")
    quote_max_length: int = Field(160, ge=10, le=5_000, description="Longest evidence quote, in characters.")
    fields: list[CodeField] = Field(..., min_length=1, description="The questions asked of every chunk.")

    @field_validator("fields")
    @classmethod
    def _unique_names(cls, fields: list[CodeField]) -> list[CodeField]:
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field name(s) used more than once: {', '.join(dupes)}")
        return fields

    # -- answer schema -------------------------------------------------------------------------

    def field_schema(self, field: CodeField) -> dict[str, Any]:
        if field.type == "single_choice":
            value: dict[str, Any] = {"type": "string", "enum": [v.name for v in field.values]}
        elif field.type == "multiple_choice":
            value = {
                "type": "array",
                "items": {"type": "string", "enum": [v.name for v in field.values]},
                # No uniqueItems: llama.cpp grammars cannot enforce it, and a repeated value carries no
                # meaning; the tables keep each value once.
                "maxItems": field.most_items,
            }
            if field.fewest_items:  # only when asked for, so a codebook without the rule keeps its schema
                value["minItems"] = field.fewest_items
        elif field.type == "boolean":
            value = {"type": "boolean"}
        else:
            value = {"type": "string", "maxLength": field.max_length}
            if not field.allow_empty:
                value["minLength"] = 1
        props: dict[str, Any] = {"value": value}
        if field.quote:
            props["quote"] = {
                "type": "string",
                "maxLength": self.quote_max_length,
                "description": "Verbatim words from the text that support the value; empty if none.",
            }
        return {
            "type": "object",
            "description": field.description,
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }

    def answer_schema(self) -> dict[str, Any]:
        """JSON Schema of one answer: an object with one {value, quote} object per field."""
        props = {f.name: self.field_schema(f) for f in self.fields}
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": re.sub(r"\W+", "_", self.name).strip("_") or "answer",
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }

    def answer_model(self) -> type[BaseModel]:
        """A pydantic model equivalent to `answer_schema()`: the second, typed check of every answer."""
        strict = ConfigDict(extra="forbid", strict=True)
        fields: dict[str, Any] = {}
        for f in self.fields:
            allowed = tuple(v.name for v in f.values)
            if f.type == "single_choice":
                vtype: Any = Literal[allowed]  # type: ignore[valid-type]
                vfield = Field(...)
            elif f.type == "multiple_choice":
                vtype = list[Literal[allowed]]  # type: ignore[valid-type]
                vfield = Field(..., max_length=f.max_items or len(f.values))
            elif f.type == "boolean":
                vtype, vfield = bool, Field(...)
            else:
                vtype, vfield = str, Field(..., max_length=f.max_length)
            sub: dict[str, Any] = {"value": (vtype, vfield)}
            if f.quote:
                sub["quote"] = (str, Field(..., max_length=self.quote_max_length))
            fields[f.name] = (create_model(f"{f.name}_answer", __config__=strict, **sub), ...)
        by_name = {f.name: f for f in self.fields}

        def _codebook_rules(answer: BaseModel) -> BaseModel:
            found = [p for name, f in by_name.items() for p in f.problems(getattr(answer, name).value)]
            if found:
                raise ValueError("; ".join(found))
            return answer

        rules = {"codebook_rules": model_validator(mode="after")(_codebook_rules)}
        return create_model("Answer", __config__=strict, __validators__=rules, **fields)

    def empty_fields(self, answer: dict[str, Any]) -> list[str]:
        """The fields whose answer is empty of meaning, in codebook order."""
        return [f.name for f in self.fields if f.name in answer and f.is_empty(answer[f.name].get("value"))]

    def max_answer_chars(self) -> int:
        """Upper bound on the strings an answer can hold, to check `llm.max_tokens` against."""
        total = 0
        for f in self.fields:
            if f.type == "multiple_choice":
                total += sum(len(v.name) + 3 for v in f.values)
            elif f.type == "single_choice":
                total += max(len(v.name) for v in f.values)
            elif f.type == "text":
                total += f.max_length
            total += self.quote_max_length if f.quote else 0
        return total


def read(path: str | Path) -> Any:
    """The codebook file as parsed YAML, before validation."""
    return read_yaml(path, "codebook (the `codebook:` setting)")


def parse(raw: Any, path: str | Path) -> Codebook:
    try:
        return Codebook.model_validate(raw)
    except ValidationError as exc:
        raise explain(
            exc, path, raw=raw, model=Codebook, files=[path] if Path(path).is_file() else [], unknown="unknown key"
        ) from None


def load(path: str | Path) -> Codebook:
    return parse(read(path), path)


# Column names QDA programs and Taguette give a codebook export, lower-cased.
_NAME_COLUMNS = ("name", "code", "code name", "tag", "codes", "title")
_DESCRIPTION_COLUMNS = ("description", "definition", "memo", "code memo", "comment", "comments")


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.strip().lower()).strip("_")


def from_csv(
    path: str | Path,
    field: str = "codes",
    field_type: Literal["multiple_choice", "single_choice"] = "multiple_choice",
    name: str | None = None,
    version: str = "1.0",
) -> str:
    """A codebook (YAML text) with one choice field whose values are the codes of a CSV of code names and
    descriptions, as QDA programs and Taguette export it (`tag,description`; `Code,Memo`; ...). A code's name
    becomes a value name (lower case, `_` for anything else) and its label; an empty description becomes the
    label, to be written properly. The result is checked as any codebook is."""
    import csv
    import io

    import yaml

    from ..errors import ConfigError
    from .text import decode

    path = Path(path)
    try:
        text, _ = decode(path.read_bytes(), str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    name_col = next((header.index(c) for c in _NAME_COLUMNS if c in header), None)
    desc_col = next((header.index(c) for c in _DESCRIPTION_COLUMNS if c in header), None)
    if name_col is None:
        raise ConfigError(
            f"{path}: no column of code names (columns: {', '.join(rows[0]) if rows else 'none'}); "
            f"name one of: {', '.join(_NAME_COLUMNS)}"
        )
    values: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        label = row[name_col].strip() if name_col < len(row) else ""
        if not label:
            continue
        slug = _slug(label)
        if not slug:
            raise ConfigError(f"{path}, line {number}: code {label!r} has no letter or digit to name it by")
        if slug in seen:
            raise ConfigError(f"{path}, line {number}: codes {seen[slug]!r} and {label!r} both become {slug!r}")
        seen[slug] = label
        description = row[desc_col].strip() if desc_col is not None and desc_col < len(row) else ""
        value: dict[str, Any] = {"name": slug, "definition": description or label}
        if label != slug:
            value["label"] = label
        values.append(value)
    if not values:
        raise ConfigError(f"{path}: no codes in column {rows[0][name_col]!r}")
    raw = {
        "name": name or path.stem,
        "version": version,
        "description": f"Imported from {path.name}; check each definition before coding.",
        "fields": [
            {
                "name": _slug(field) or "codes",
                "type": field_type,
                "description": "The codes that apply to the passage."
                if field_type == "multiple_choice"
                else "The code that best fits the passage.",
                "values": values,
            }
        ],
    }
    parse(raw, path)
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the codebook file itself (committed as schemas/codebook.schema.json)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Codebook.model_json_schema()}
