"""Names from the model: each theme's most central passages (and the codes over-represented in it) are sent once to
the model, which names the theme and describes it in two sentences grounded in quotes.

Asked through the shared asker (`coding.asker`): the same cache (a rerun is free), validation against a JSON Schema
with re-asks, limits and journal as coding. Quotes are grounded as coding's are (`coding.validate.ground_quote`):
only quotes found in the passages shown are kept. A theme whose naming fails keeps its provisional name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..coding.asker import Asked, Question, RequestBuilder, ask_questions
from ..coding.cache import AnswerCache
from ..coding.validate import AnswerValidator, ground_quote
from ..config import LimitsConfig, LLMConfig, Price
from ..records import CachedAnswer, LLMRequest

logger = logging.getLogger(__name__)

PASSAGE_CHARS = 1_500  # of each passage shown: a theme's question stays well inside a small model's context

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3, "maxLength": 80},
        "description": {"type": "string", "minLength": 10, "maxLength": 600},
        "quotes": {"type": "array", "items": {"type": "string", "minLength": 3, "maxLength": 300}, "maxItems": 3},
    },
    "required": ["name", "description", "quotes"],
    "additionalProperties": False,
}


class ThemeName(BaseModel):
    name: str
    description: str
    quotes: list[str]


SYSTEM = (
    "You help a qualitative researcher. A clustering put some coded passages together; you read them and name the "
    "theme they share. Answer with one JSON object only."
)


@dataclass(frozen=True)
class Evidence:
    """What the model is shown of one theme."""

    theme: int
    passages: tuple[str, ...]  # its most central passages, most central first
    codes: tuple[str, ...]  # the codes most over-represented in it (`field=value`)


@dataclass(frozen=True)
class Named:
    name: str
    description: str
    quotes: tuple[str, ...]  # the model's quotes found in the passages shown (grounded)


def messages(ev: Evidence) -> list[dict[str, str]]:
    shown = "\n\n".join(f'Passage {i}:\n"""\n{p[:PASSAGE_CHARS]}\n"""' for i, p in enumerate(ev.passages, 1))
    codes = ", ".join(ev.codes) if ev.codes else "none stands out"
    user = (
        f"These passages ({len(ev.passages)}) were grouped together. Codes over-represented among them: {codes}.\n\n"
        f"{shown}\n\n"
        "Name the theme they share in a few words (name), describe it in two sentences (description), and give one "
        "to three short quotes copied word for word from the passages that show it (quotes). Answer as JSON with "
        'the keys "name", "description" and "quotes".'
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def questions(evidence: Sequence[Evidence], llm: LLMConfig) -> list[Question]:
    build, check = RequestBuilder(llm, SCHEMA), AnswerValidator(SCHEMA, ThemeName)
    return [Question(f"theme {ev.theme}", build(messages(ev)), check) for ev in evidence]


def grounded(quotes: Sequence[str], passages: Sequence[str]) -> tuple[str, ...]:
    """The quotes found in one of the passages shown, as coding grounds a code's quote in its chunk."""
    kept = []
    for q in quotes:
        if any(ground_quote(q, p[:PASSAGE_CHARS], 0).grounded for p in passages):
            kept.append(q)
    return tuple(kept)


def name_themes(
    evidence: Sequence[Evidence],
    llm: LLMConfig,
    cache: AnswerCache,
    limits: LimitsConfig | None = None,
    price: Price | None = None,
    journal: str | Path | None = None,
) -> tuple[dict[int, Named], list[Asked]]:
    """Each theme's name, description and grounded quotes, from the cache or the model; a failed theme is left out
    (and logged). Also every question asked, for the replay archive."""
    asked = ask_questions(questions(evidence, llm), llm, cache, limits=limits, price=price, journal=journal,
                          noun="theme")  # fmt: skip
    names: dict[int, Named] = {}
    for ev, a in zip(evidence, asked, strict=True):
        if a.answer is None:
            logger.warning("theme %d: no name from the model (%s); it keeps its provisional name", ev.theme, a.error)
            continue
        answer = ThemeName.model_validate(a.answer.answer)
        quotes = grounded(answer.quotes, ev.passages)
        if len(quotes) < len(answer.quotes):
            logger.info("theme %d: %d of the model's %d quotes not found in its passages, left out", ev.theme,
                        len(answer.quotes) - len(quotes), len(answer.quotes))  # fmt: skip
        names[ev.theme] = Named(answer.name.strip(), answer.description.strip(), quotes)
    return names, asked


# -- the replay archive ------------------------------------------------------------------------------------------


def write_asked(asked: Sequence[Asked], path: str | Path) -> int:
    """The answered questions as the replay archive takes them (request, answer, key), one JSON line each."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "request": a.question.request.model_dump(mode="json"),
                "key": a.key,
                "answer": a.answer.model_dump(mode="json"),
            },
            sort_keys=True,
        )  # fmt: skip
        for a in asked
        if a.answer is not None
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def archive_pairs(path: str | Path) -> Iterator[tuple[LLMRequest, CachedAnswer, str]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                entry = json.loads(line)
                yield (LLMRequest.model_validate(entry["request"]), CachedAnswer.model_validate(entry["answer"]),
                       entry["key"])  # fmt: skip
