"""Checking answers: JSON syntax, the answer's JSON Schema, the pydantic model, and quote grounding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from ..errors import AnswerError
from ..records import encodable_json


class AnswerValidator:
    """Validates one answer against the codebook's JSON Schema, then its pydantic model."""

    def __init__(self, schema: dict[str, Any], model: type[BaseModel]):
        jsonschema.Draft202012Validator.check_schema(schema)
        self._validator = jsonschema.Draft202012Validator(schema)
        self._model = model

    def __call__(self, content: str | None, finish_reason: str | None = None) -> dict[str, Any]:
        """The parsed answer, or AnswerError saying what is wrong in words a model can act on. Any failure of
        an answer (nesting too deep, a number too long, text too long, no text at all) is an AnswerError, never a
        crash."""
        if content is None:
            raise AnswerError(
                f"the server sent no answer text (message.content was null, finish_reason {finish_reason!r})", ""
            )
        if len(content) > MAX_ANSWER_CHARS:
            raise AnswerError(f"the answer is {len(content):,} characters long; at most {MAX_ANSWER_CHARS:,}", content)
        text = _strip_fences(content)
        try:
            # strict=False: a raw newline inside a string is harmless, not a reason to re-ask.
            answer = json.loads(text, strict=False)
        except json.JSONDecodeError as exc:
            cut = (
                " (the answer was cut off at the token limit; keep strings shorter)"
                if finish_reason == "length"
                else ""
            )
            raise AnswerError(f"not valid JSON: {exc.msg} at character {exc.pos}{cut}", content) from None
        except (ValueError, RecursionError) as exc:  # e.g. a 5,000-digit number, or [[[[... nested too deep
            raise AnswerError(f"not usable JSON: {_reason(exc)}", content) from None
        # `\udc80` is legal JSON but no writer can store the lone surrogate it gives: replaced, as in `Completion`.
        answer = encodable_json(answer)
        try:
            errors = sorted(self._validator.iter_errors(answer), key=lambda e: list(e.absolute_path))
            if errors:
                msgs = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}" for e in errors[:5]]
                raise AnswerError("does not match the schema: " + "; ".join(msgs), content)
            self._model.model_validate(answer)
        except ValidationError as exc:
            raise AnswerError(
                f"does not match the codebook: {exc.errors()[0]['msg'].removeprefix('Value error, ')}", content
            ) from None
        except (ValueError, RecursionError, TypeError) as exc:
            raise AnswerError(f"cannot be checked: {_reason(exc)}", content) from None
        return answer


# An answer is bounded by llm.max_tokens; this bounds the work of checking one whatever a server sends.
MAX_ANSWER_CHARS = 1_000_000


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _strip_fences(content: str) -> str:
    """Prompt-only mode: models often wrap JSON in a Markdown code fence (```json ... ```). Linear time."""
    text = content.strip()
    if not (text.startswith("```") and text.endswith("```") and len(text) >= 6):
        return text
    inner = text[3:-3]
    if inner.startswith("json"):
        inner = inner[4:]
    return inner.strip()


def reask_messages(previous: str, error: str) -> list[dict[str, str]]:
    """Messages appended after an invalid answer. They change the prompt, so a deterministic model can
    answer differently."""
    return [
        {"role": "assistant", "content": previous[:2000]},
        {
            "role": "user",
            "content": f"That answer is invalid: {error}. Reply again with only a JSON object that matches the "
            "schema, using only the allowed values and short verbatim quotes.",
        },
    ]


# -- quote grounding -------------------------------------------------------------------------------

_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_EDGES = " \t\n\"'\u2018\u2019\u201c\u201d.,;:…"


@dataclass(frozen=True)
class Grounding:
    """Where a quote sits in its document: 'exact', 'normalised' (whitespace/case/quote marks),
    'ungrounded' (not found), or 'empty' (no quote given)."""

    status: str
    start: int | None = None
    end: int | None = None

    @property
    def grounded(self) -> bool:
        return self.status in ("exact", "normalised")


def _fold(text: str) -> tuple[str, list[int]]:
    """Whitespace-collapsed, case- and quote-mark-folded text, with each character's original index."""
    out: list[str] = []
    index: list[int] = []
    prev_space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            if not prev_space:
                out.append(" ")
                index.append(i)
            prev_space = True
            continue
        prev_space = False
        for c in ch.translate(_FOLD).casefold():
            out.append(c)
            index.append(i)
    return "".join(out), index


def ground_quote(quote: str, chunk_text: str, chunk_start: int) -> Grounding:
    """Find `quote` in the chunk: exactly, then ignoring whitespace, case and curly quotes.
    Offsets are in the normalised document (chunk_start + position in chunk)."""
    q = quote.strip(_EDGES)
    if not q:
        return Grounding("empty")
    pos = chunk_text.find(q)
    if pos >= 0:
        return Grounding("exact", chunk_start + pos, chunk_start + pos + len(q))
    folded_text, index = _fold(chunk_text)
    folded_q, _ = _fold(q)
    pos = folded_text.find(folded_q.strip())
    if pos >= 0 and folded_q.strip():
        end = pos + len(folded_q.strip()) - 1
        return Grounding("normalised", chunk_start + index[pos], chunk_start + index[end] + 1)
    return Grounding("ungrounded")
