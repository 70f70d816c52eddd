"""Prompt templates (Jinja2, in config/prompts/) rendered into chat messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..errors import ConfigError
from ..inputs.codebook import Codebook

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class Prompts:
    system_text: str  # rendered once: the same for every chunk (and so cacheable by providers)
    user: jinja2.Template
    codebook: Codebook
    structured_output: str
    label_continued_turn: bool = False

    def messages(
        self,
        text: str,
        speakers: tuple[str, ...] | list[str] = (),
        metadata: dict[str, str] | None = None,
        turn_speaker: str | None = None,
    ) -> list[dict[str, str]]:
        """The chat messages for one chunk. `turn_speaker` (the speaker whose turn the chunk starts inside) reaches
        the template only with `prompt_context.label_continued_turn`."""
        variables = dict(
            text=text,
            speakers=list(speakers),
            metadata=dict(metadata or {}),
            turn_speaker=turn_speaker if self.label_continued_turn else None,
        )
        return [
            {"role": "system", "content": self.system_text},
            {"role": "user", "content": self.user.render(**variables).strip()},
        ]


def _template(path: str | Path, setting: str) -> jinja2.Template:
    path = Path(path)
    try:
        return _ENV.from_string(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{setting}: template {path} not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{path}: template error on line {exc.lineno}: {exc.message}") from None


def load(
    system: str | Path, user: str | Path, codebook: Codebook, structured_output: str, label_continued_turn: bool = False
) -> Prompts:
    try:  # an unknown template variable fails here, not at the first chunk
        schema = json.dumps(codebook.answer_schema(), indent=1)
        system_text = (
            _template(system, "prompts.system")
            .render(codebook=codebook, schema=schema, structured_output=structured_output)
            .strip()
        )
        prompts = Prompts(
            system_text, _template(user, "prompts.user"), codebook, structured_output, label_continued_turn
        )
        prompts.messages("example", ["Speaker"], {"question": "example"}, "Speaker")
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"{system} or {user}: {exc.message}; the templates may use codebook, schema, "
            "structured_output (system) and text, speakers, metadata, turn_speaker (user)"
        ) from None
    return prompts
