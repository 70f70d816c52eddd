"""Word documents (.docx): paragraphs and table cells in reading order; zip bombs refused before unzipping."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable

from ...config import IngestConfig
from ...errors import InputError
from ...records import Document
from ..text import MB, normalise, one_document, too_big


def read_docx(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import docx  # deferred: python-docx pulls in lxml, which only .docx inputs need

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise InputError(rel, "not a valid .docx (not a zip archive); re-save it from Word as .docx")
    _check_unzipped_size(data, rel, cfg.max_expanded_mb)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors... for broken packages
        raise InputError(rel, f"not a valid .docx ({type(exc).__name__}: {exc})") from None
    paragraphs = [text for text in _docx_blocks(document) if text.strip()]
    return one_document(rel, fmt, "docx", normalise("\n\n".join(paragraphs)))


# A Word file's zip directory holds a few dozen entries (about 100 bytes each); zipfile keeps an object per entry.
_MAX_ZIP_DIRECTORY = 4 * MB


def _check_unzipped_size(data: bytes, rel: str, max_mb: int) -> None:
    """Refuse a .docx that unzips to more than `max_mb`: by the sizes its members declare, then by the bytes
    they actually give, read in blocks (a zip bomb may declare small sizes)."""
    cap = max_mb * MB
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))  # end of central directory record
    if end >= 0 and int.from_bytes(data[end + 12 : end + 16], "little") > _MAX_ZIP_DIRECTORY:
        raise InputError(rel, "not a valid .docx (its zip directory is larger than a Word file's can be)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            declared = sum(member.file_size for member in members)
            if declared > cap:
                raise InputError(
                    rel,
                    too_big("too large when unzipped", declared, "ingest.max_expanded_mb", max_mb),
                )
            total = 0
            for member in members:
                with archive.open(member) as fh:
                    size = 0
                    while block := fh.read(MB):
                        size += len(block)
                        total += len(block)
                        if size > member.file_size:
                            raise InputError(
                                rel, f"not a valid .docx ({member.filename} unzips to more than the size it declares)"
                            )
                        if total > cap:
                            raise InputError(
                                rel, too_big("too large when unzipped", None, "ingest.max_expanded_mb", max_mb)
                            )
    except InputError:
        raise
    except Exception as exc:  # BadZipFile, an unknown compression method, an encrypted member, zlib.error...
        raise InputError(rel, f"not a valid .docx ({type(exc).__name__}: {exc})") from None


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
