"""The codebook: what to code. It generates the answer's JSON Schema and pydantic model.

Every string in the answer schema has `maxLength` and every array `maxItems`: small local models loop
without them, and the bounds make `max_tokens` budgetable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .config import explain, read_yaml

_IDENT = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeValue(_Strict):
    """One allowed value of a choice field."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_]*$", description="Value as it appears in the tables.")
    definition: str = Field(..., min_length=1, description="What the value means; shown to the model.")
    examples: list[str] = Field(default_factory=list, description="Optional example phrases.")


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
        return self


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
                "maxItems": field.max_items or len(field.values),
            }
        elif field.type == "boolean":
            value = {"type": "boolean"}
        else:
            value = {"type": "string", "maxLength": field.max_length}
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
        return create_model("Answer", __config__=strict, **fields)

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


def json_schema() -> dict[str, Any]:
    """JSON Schema of the codebook file itself (committed as schemas/codebook.schema.json)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Codebook.model_json_schema()}
