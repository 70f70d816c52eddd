"""Captions (.vtt, .srt): cues as "Speaker: text" turns, a speaker's consecutive cues merged into one turn."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable

from ...config import IngestConfig
from ...errors import InputError
from ...records import Document, Turn
from ..text import LABEL_LINE, decode, is_label, one_document


def read_captions(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    text, encoding = decode(data, rel)
    text = text.removeprefix("\ufeff")
    _check_timings(text, rel)
    try:
        captions = webvtt.from_buffer(io.StringIO(text), format=fmt).captions
    except (MalformedFileError, MalformedCaptionError, ValueError) as exc:
        raise InputError(rel, f"not a valid .{fmt} file: broken timestamps or cue layout ({exc})") from None
    cues = [_cue(caption.voice, caption.text) for caption in captions]
    rendered, turns = _render_cues(_merge_speakers(cue for cue in cues if cue[1]))
    return one_document(rel, fmt, encoding, rendered, turns)


_TIMESTAMP = r"(?:\d+:)?\d{1,2}:\d{1,2}[.,]\d{1,3}"
_TIMINGS = re.compile(rf"\s*{_TIMESTAMP}\s*-->\s*{_TIMESTAMP}(?:\s.*)?")


def _check_timings(text: str, rel: str) -> None:
    """Fail on a broken timing line: webvtt-py drops such cues silently, losing what was said."""
    for number, line in enumerate(text.splitlines(), start=1):
        if "-->" in line and not _TIMINGS.fullmatch(line):
            raise InputError(rel, f"broken timestamps on line {number}: {line.strip()!r}")


def _cue(voice: str | None, text: str) -> tuple[str | None, str]:
    """(speaker, one-line text) of a cue; the speaker is the voice tag or a leading "NAME:" label."""
    text = " ".join(unicodedata.normalize("NFC", text).split())
    if voice:
        return " ".join(unicodedata.normalize("NFC", voice).split()), text
    match = LABEL_LINE.match(text)
    if match and is_label(match.group("label")):
        return match.group("label").strip(), text[match.end() :].strip()
    return None, text


def _merge_speakers(cues: Iterable[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
    """Consecutive cues of one speaker become one turn; cues without a speaker stay separate."""
    merged: list[tuple[str | None, str]] = []
    for speaker, text in cues:
        if speaker is not None and merged and merged[-1][0] == speaker:
            merged[-1] = (speaker, f"{merged[-1][1]} {text}".strip())
        else:
            merged.append((speaker, text))
    return merged


def _render_cues(cues: list[tuple[str | None, str]]) -> tuple[str, tuple[Turn, ...]]:
    """ "Speaker: text" lines separated by blank lines; turns come from the cues, not from re-parsing the text."""
    parts: list[str] = []
    turns: list[Turn] = []
    offset = 0
    for speaker, text in cues:
        line = f"{speaker}: {text}".rstrip() if speaker else text
        if speaker:
            turns.append(Turn(speaker=speaker, start=offset, end=offset + len(line)))
        parts.append(line)
        offset += len(line) + 2
    return "\n\n".join(parts), tuple(turns)
