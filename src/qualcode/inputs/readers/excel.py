"""Excel workbooks (.xlsx): one sheet read as a table, with the table reader's settings (`ingest.table`).

`ingest.table.sheet` names the sheet (null: the first). Cells are read as text: a number as Excel shows it
unformatted (`3`, `2.5`), a date as `2024-05-01 00:00:00`, an empty cell as empty text.
"""

from __future__ import annotations

import io
import zipfile

from ...config import IngestConfig
from ...errors import InputError
from ...records import Document
from ..text import check_unzipped_size
from .tables import grid_documents


def read_xlsx(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import pandas as pd  # deferred, as for CSV: pandas (and openpyxl under it) only for table inputs

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise InputError(rel, "not a valid .xlsx (not a zip archive); re-save it from Excel as .xlsx")
    check_unzipped_size(data, rel, fmt, cfg.max_expanded_mb)
    wanted = cfg.table.sheet
    try:
        with pd.ExcelFile(io.BytesIO(data), engine="openpyxl") as book:
            names = [str(name) for name in book.sheet_names]
            if wanted is not None and wanted not in names:
                raise InputError(
                    rel, f"no sheet {wanted!r} (sheets: {', '.join(map(repr, names))}); set ingest.table.sheet to one"
                )
            sheet = wanted if wanted is not None else names[0]
            frame = pd.read_excel(book, sheet_name=sheet, header=None, dtype=str, keep_default_na=False)
    except InputError:
        raise
    except Exception as exc:  # openpyxl raises KeyError, ValueError, InvalidFileException... for broken workbooks
        raise InputError(rel, f"not a valid .xlsx ({type(exc).__name__}: {exc})") from None
    if frame.empty:
        raise InputError(rel, f"empty: sheet {sheet!r} has no header row")
    # Empty cells come back as NaN even with keep_default_na=False; an empty cell is empty text.
    cells = [[value if isinstance(value, str) else "" for value in row] for row in frame.itertuples(index=False)]
    return grid_documents(cells, rel, fmt, "xlsx", cfg)
