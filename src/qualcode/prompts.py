"""Prompt templates (Jinja2, in config/prompts/) rendered into chat messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .codebook import Codebook
from .errors import ConfigError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class Prompts:
    system: jinja2.Template
    user: jinja2.Template
    codebook: Codebook
    structured_output: str

    def messages(self, text: str, speakers: tuple[str, ...] | list[str] = ()) -> list[dict[str, str]]:
        """The chat messages for one chunk. The system message is the same for every chunk."""
        return [
            {"role": "system", "content": self._system_text},
            {"role": "user", "content": self.user.render(text=text, speakers=list(speakers)).strip()},
        ]

    @property
    def _system_text(self) -> str:
        schema = json.dumps(self.codebook.answer_schema(), indent=1)
        return self.system.render(
            codebook=self.codebook, schema=schema, structured_output=self.structured_output
        ).strip()


def _template(path: str | Path, setting: str) -> jinja2.Template:
    path = Path(path)
    try:
        return _ENV.from_string(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{setting}: template {path} not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{path}: template error on line {exc.lineno}: {exc.message}") from None


def load(system: str | Path, user: str | Path, codebook: Codebook, structured_output: str) -> Prompts:
    prompts = Prompts(_template(system, "prompts.system"), _template(user, "prompts.user"), codebook, structured_output)
    try:  # fail on an unknown template variable now, not at the first chunk
        prompts.messages("example", ["Speaker"])
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"{system} or {user}: {exc.message}; the templates may use codebook, schema, "
            "structured_output (system) and text, speakers (user)"
        ) from None
    return prompts
