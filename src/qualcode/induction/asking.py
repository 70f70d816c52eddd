"""What open coding and the naming of a group ask, and what their answers must look like: the prompt templates
(config/prompts/induction_*.j2), each answer's JSON Schema and pydantic model. Builds messages only; the requests go
through the shared asker (`coding.asker`), with the cache, validation, re-asks, limits and journal of coding."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field

from ..coding.prompts import _template
from ..config import InductionConfig
from ..errors import ConfigError
from ..records import Chunk

LABEL_MAX = 80
DEFINITION_MAX = 400
QUOTE_MAX = 200
CRITERION_MAX = 300
OPEN_TITLE = "open_codes"
NAME_TITLE = "code_from_group"


def open_schema(max_candidates: int) -> dict[str, Any]:
    """One open-coding answer: up to `max_candidates` codes, each a label, a definition and a verbatim quote. Every
    string bounded, every array too, as in the coding schema (small models loop without bounds)."""
    code = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "maxLength": LABEL_MAX, "minLength": 1},
            "definition": {"type": "string", "maxLength": DEFINITION_MAX},
            "quote": {
                "type": "string",
                "maxLength": QUOTE_MAX,
                "description": "Verbatim words from the passage that show the code.",
            },
        },
        "required": ["label", "definition", "quote"],
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": OPEN_TITLE,
        "type": "object",
        # at least one: open coding codes every passage (a passage of no interest gets a code saying so), and a
        # model allowed an empty list may give nothing but empty lists
        "properties": {"codes": {"type": "array", "items": code, "minItems": 1, "maxItems": max_candidates}},
        "required": ["codes"],
        "additionalProperties": False,
    }


def name_schema(n_quotes: int) -> dict[str, Any]:
    """The naming of one group: a name, a definition, inclusion and exclusion criteria, and the numbers (from 1) of
    two of the group's quotes."""
    text = {"type": "string", "maxLength": CRITERION_MAX}
    most = max(n_quotes, 1)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": NAME_TITLE,
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": LABEL_MAX, "minLength": 1},
            "definition": {"type": "string", "maxLength": DEFINITION_MAX, "minLength": 1},
            "include": text,
            "exclude": text,
            "examples": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": most},
                "maxItems": min(2, n_quotes),
            },
        },
        "required": ["name", "definition", "include", "exclude", "examples"],
        "additionalProperties": False,
    }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OpenCode(_Strict):
    label: str = Field(..., min_length=1, max_length=LABEL_MAX)
    definition: str = Field(..., max_length=DEFINITION_MAX)
    quote: str = Field(..., max_length=QUOTE_MAX)


class OpenAnswer(_Strict):
    codes: list[OpenCode] = Field(..., min_length=1)


class NameAnswer(_Strict):
    name: str = Field(..., min_length=1, max_length=LABEL_MAX)
    definition: str = Field(..., min_length=1, max_length=DEFINITION_MAX)
    include: str = Field(..., max_length=CRITERION_MAX)
    exclude: str = Field(..., max_length=CRITERION_MAX)
    examples: list[int]


@dataclass(frozen=True)
class ExistingCode:
    """A code of the codebook being extended, as the prompt lists it."""

    name: str
    label: str
    definition: str


@dataclass(frozen=True)
class Templates:
    """The rendered system message of open coding (the same for every chunk) and the two per-item templates."""

    open_system: str
    open_user: jinja2.Template
    name: jinja2.Template
    structured_output: str
    research_question: str
    max_candidates: int

    def open_messages(self, chunk: Chunk) -> list[dict[str, str]]:
        user = self.open_user.render(text=chunk.text, speakers=list(chunk.speakers), metadata=dict(chunk.context))
        return [{"role": "system", "content": self.open_system}, {"role": "user", "content": user.strip()}]

    def name_messages(self, labels: Sequence[tuple[str, str]], quotes: Sequence[str]) -> list[dict[str, str]]:
        content = self.name.render(
            candidates=[{"label": label, "definition": d} for label, d in labels],
            quotes=list(quotes),
            research_question=self.research_question,
            structured_output=self.structured_output,
            schema=json.dumps(name_schema(len(quotes)), indent=1),
        )
        return [{"role": "user", "content": content.strip()}]


def load(
    prompts: dict[str, str | Path],
    cfg: InductionConfig,
    structured_output: str,
    existing: Sequence[ExistingCode] = (),
) -> Templates:
    """The induction templates, rendered once with everything but the chunk (an unknown variable fails here)."""
    system = _template(prompts["system"], "induction.prompts.system")
    try:
        system_text = system.render(
            description="",
            research_question=cfg.research_question,
            granularity=cfg.granularity,
            quote_max_length=QUOTE_MAX,
            max_candidates=cfg.candidates_per_chunk,
            existing=list(existing),
            structured_output=structured_output,
            schema=json.dumps(open_schema(cfg.candidates_per_chunk), indent=1),
        ).strip()
        templates = Templates(
            system_text,
            _template(prompts["user"], "induction.prompts.user"),
            _template(prompts["name"], "induction.prompts.name"),
            structured_output,
            cfg.research_question,
            cfg.candidates_per_chunk,
        )
        templates.open_messages(Chunk("c", "d", 0, 0, 7, 1, ("Speaker",), "example", None, {"question": "q"}))
        templates.name_messages([("label", "definition")], ["quote"])
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"induction.prompts: {exc.message}; the templates may use research_question, granularity, "
            "quote_max_length, max_candidates, existing, structured_output, schema (system); text, speakers, "
            "metadata (user); candidates, quotes, research_question, structured_output, schema (name)"
        ) from None
    return templates
