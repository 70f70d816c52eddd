"""The readers, one module per format family, keyed by file suffix: a new format is one module and one line here.

Each reader takes the file's bytes, its name relative to the input folder, its suffix and the ingest settings, and
returns its documents or raises InputError naming the file. Heavy libraries are imported inside the readers, so
importing this package stays light.
"""

from __future__ import annotations

from collections.abc import Callable

from ...config import IngestConfig
from ...records import Document
from . import captions, excel, pdf, plain, tables, word

Reader = Callable[[bytes, str, str, IngestConfig], list[Document]]

READERS: dict[str, Reader] = {
    "txt": plain.read_text,
    "md": plain.read_text,
    "docx": word.read_docx,
    "vtt": captions.read_captions,
    "srt": captions.read_captions,
    "csv": tables.read_csv,
    "jsonl": tables.read_jsonl,
    "xlsx": excel.read_xlsx,
    "pdf": pdf.read_pdf,
}
