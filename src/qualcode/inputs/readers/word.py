"""Word documents (.docx): paragraphs and table cells in reading order; zip bombs refused before unzipping."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable

from ...config import IngestConfig
from ...errors import InputError
from ...records import Document
from ..text import check_unzipped_size, normalise, one_document


def read_docx(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import docx  # deferred: python-docx pulls in lxml, which only .docx inputs need

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise InputError(rel, "not a valid .docx (not a zip archive); re-save it from Word as .docx")
    check_unzipped_size(data, rel, fmt, cfg.max_expanded_mb)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors... for broken packages
        raise InputError(rel, f"not a valid .docx ({type(exc).__name__}: {exc})") from None
    paragraphs = [text for text in _docx_blocks(document) if text.strip()]
    return one_document(rel, fmt, "docx", normalise("\n\n".join(paragraphs)))


def _docx_blocks(document) -> Iterable[str]:
    """Paragraph texts in reading order, table cells included, so answers in a table are not lost."""
    from docx.table import Table

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            yield from _table_cells(block)
        else:
            yield block.text


def _table_cells(table) -> Iterable[str]:
    for row in table.rows:
        seen = set()
        for cell in row.cells:
            # A merged cell appears once per grid column it spans; its text should appear once.
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            yield cell.text
