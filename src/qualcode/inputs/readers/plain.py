"""Plain text and Markdown (.txt, .md): one document per file, speaker turns from "Name:" labels."""

from __future__ import annotations

from ...config import IngestConfig
from ...records import Document
from ..text import decode, normalise, one_document


def read_text(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    text, encoding = decode(data, rel)
    return one_document(rel, fmt, encoding, normalise(text))
