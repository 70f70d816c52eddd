"""Tables (.csv, .jsonl): one row is one document, or one group of rows is (a transcript exported as a table).

`table_documents` (rows) and `grid_documents` (a header row and the rows below it) turn any table format into
documents, as `ingest.table` says.
"""

from __future__ import annotations

import html
import io
import json
import logging
from collections import Counter

from ...config import IngestConfig, TableInput
from ...errors import InputError
from ...records import Document, Turn
from ..text import SURROGATE, decode, detect_turns, normalise, short, speaker

logger = logging.getLogger(__name__)


def read_csv(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import pandas as pd

    text, encoding = decode(data, rel)
    try:
        # header=None: the header row is read as the file has it, so an empty header stays empty (pandas would
        # call it "Unnamed: 0") and a repeated one stays repeated (pandas would make it "x.1").
        frame = pd.read_csv(io.StringIO(text.removeprefix("\ufeff")), dtype=str, keep_default_na=False, header=None)
    except pd.errors.EmptyDataError:
        raise InputError(rel, "empty: no header row") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(rel, f"not a valid CSV file ({exc})") from None
    # Short rows come back as NaN even with keep_default_na=False; an absent cell is empty text.
    cells = [[value if isinstance(value, str) else "" for value in row] for row in frame.itertuples(index=False)]
    return grid_documents(cells, rel, fmt, encoding, cfg)


def grid_documents(cells: list[list[str]], rel: str, fmt: str, encoding: str, cfg: IngestConfig) -> list[Document]:
    """A grid of cells whose first row is the header (a CSV file, a sheet) to documents, as `table_documents`."""
    columns = [column.strip() for column in cells[0]]
    rows = [dict(zip(_unique_keys(columns), values, strict=True)) for values in cells[1:]]
    return table_documents(rows, columns, rel, fmt, encoding, cfg)


def _unique_keys(columns: list[str]) -> list[str]:
    """Keys for a row's cells: the column's name, or for a name used before, the name and its position."""
    seen: set[str] = set()
    keys = []
    for number, column in enumerate(columns, start=1):
        keys.append(column if column not in seen else f"{column}\x00{number}")
        seen.add(column)
    return keys


def read_jsonl(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    text, encoding = decode(data, rel)
    rows: list[dict[str, str]] = []
    columns: dict[str, None] = {}  # ordered set: columns in order of first appearance
    # split("\n"), not splitlines(): JSON strings may hold a raw U+2028, which splitlines() breaks on.
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        if not line.strip():
            continue
        row = _jsonl_row(line, number, rel)
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return table_documents(rows, list(columns), rel, fmt, encoding, cfg)


def _jsonl_row(line: str, number: int, rel: str) -> dict[str, str]:
    """One JSONL line as column -> text; any way the line can fail names the line."""
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise InputError(rel, f"line {number} is not a JSON object (got {type(record).__name__})")
        row = {key: _cell(value) for key, value in record.items()}
    except json.JSONDecodeError as exc:
        raise InputError(rel, f"line {number} is not valid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise InputError(rel, f"line {number} is not usable JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's advice after ";" is not ours)
        raise InputError(rel, f"line {number} is not usable JSON ({short(str(exc).split(';')[0])})") from None
    for text in (*row, *row.values()):
        if SURROGATE.search(text):
            raise InputError(
                rel, f"line {number} is not valid Unicode (a \\u escape gives a lone surrogate such as \\ud800)"
            )
    return row


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _show_columns(columns: list[str]) -> str:
    """The columns as the file has them; an empty header is named by its position and how to select it."""
    shown = [
        column if column else f'column {number} (empty header; select it with "")'
        for number, column in enumerate(columns, start=1)
    ]
    return ", ".join(shown) or "(none)"


def table_documents(
    rows: list[dict[str, str]], columns: list[str], rel: str, fmt: str, encoding: str, cfg: IngestConfig
) -> list[Document]:
    """Rows to documents: one per row, or one per group of rows (a transcript exported as a table)."""
    table = cfg.table
    if not rows:
        raise InputError(rel, "empty: no rows")
    present = _show_columns(columns)
    wanted = {
        "text_column": table.text_column,
        "group_column": table.group_column,
        "order_column": table.order_column,
        "speaker_column": table.speaker_column,
        "id_column": None if table.grouped else table.id_column,
    }
    for setting, column in wanted.items():
        if column is None or column in columns:
            continue
        what = setting.removesuffix("_column")
        null = ", or null to number the rows" if setting == "id_column" else ""
        raise InputError(rel, f"no {what} column {column!r} (columns: {present}); set ingest.table.{setting}{null}")
    for column in {c for c in wanted.values() if c is not None}:
        if columns.count(column) > 1:
            positions = [str(i) for i, c in enumerate(columns, start=1) if c == column]
            raise InputError(rel, f"column {column!r} appears more than once (columns {', '.join(positions)}); "
                             "rename one in the file")  # fmt: skip
    if table.unescape_html:
        rows = [{key: html.unescape(value) for key, value in row.items()} for row in rows]
    if table.grouped:
        return _grouped_documents(rows, columns, rel, fmt, encoding, cfg)
    metadata_columns = _metadata_columns(columns, rel, table, exclude=(table.id_column, table.text_column))

    documents = []
    for number, row in enumerate(rows, start=1):
        row_id = str(number) if table.id_column is None else row.get(table.id_column, "").strip()
        text = normalise(row.get(table.text_column, ""))
        if not text:
            logger.warning("%s: row %s has no text in column '%s'; skipped", rel, row_id or number, table.text_column)
            continue
        if not row_id:
            raise InputError(rel, f"row {number} has an empty id in column '{table.id_column}'")
        documents.append(
            Document(
                doc_id=f"{rel}#{row_id}",
                source_file=rel,
                format=fmt,
                encoding=encoding,
                text=text,
                turns=detect_turns(text),
                metadata={key: row.get(column, "") for key, column in metadata_columns.items()},
            )
        )
    if not documents:
        raise InputError(rel, f"empty: every row's '{table.text_column}' is empty")
    _reject_duplicate_ids(documents, rel, table)
    return documents


def _grouped_documents(
    rows: list[dict[str, str]], columns: list[str], rel: str, fmt: str, encoding: str, cfg: IngestConfig
) -> list[Document]:
    """A transcript exported as a table: the rows of each group (the whole file, without group_column) become one
    document, in order_column's order, each row a paragraph and each change of speaker a turn."""
    table = cfg.table
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}  # in the order groups first appear
    for number, row in enumerate(rows, start=1):
        key = row[table.group_column].strip() if table.group_column else ""
        if table.group_column and not key:
            raise InputError(rel, f"row {number} has no value in the group column {table.group_column!r}")
        groups.setdefault(key, []).append((number, row))
    exclude = (table.text_column, table.order_column, table.speaker_column)
    metadata_columns = _metadata_columns(columns, rel, table, exclude=exclude)
    documents = []
    for key, members in groups.items():
        if table.order_column:
            members = _in_order(members, table.order_column, rel)
        text, turns = _transcript([row for _, row in members], table, cfg.speaker_aliases)
        where = f"group {key!r}" if table.group_column else "the file"
        if not text:
            logger.warning("%s: %s has no text in column '%s'; skipped", rel, where, table.text_column)
            continue
        documents.append(
            Document(
                doc_id=f"{rel}#{key}" if table.group_column else rel,
                source_file=rel,
                format=fmt,
                encoding=encoding,
                text=text,
                turns=turns,
                metadata=_group_metadata(members, metadata_columns, table.metadata_columns is not None, rel, where),
            )
        )
    if not documents:
        raise InputError(rel, f"empty: every row's '{table.text_column}' is empty")
    return documents


def _in_order(members: list[tuple[int, dict[str, str]]], column: str, rel: str) -> list[tuple[int, dict[str, str]]]:
    """Rows sorted by `column`: as numbers if every value is one (2 before 10), else as text; ties keep file order."""
    values = [row[column].strip() for _, row in members]
    for (number, _), value in zip(members, values, strict=True):
        if not value:
            raise InputError(rel, f"row {number} has no value in the order column {column!r}")
    try:
        keys: list[float] | list[str] = [float(v) for v in values]
    except ValueError:
        keys = values
    order = sorted(range(len(members)), key=keys.__getitem__)
    return [members[i] for i in order]


def _transcript(rows: list[dict[str, str]], table: TableInput, aliases: dict[str, str]) -> tuple[str, tuple[Turn, ...]]:
    """Rows as a .txt transcript would hold them: paragraphs separated by a blank line, "Speaker: " before the first
    paragraph of each turn; a row of the same speaker, or without one, continues the turn (as in a .txt file,
    where a turn runs to the next label)."""
    parts: list[str] = []
    turns: list[Turn] = []
    offset, current, start = 0, None, 0
    for row in rows:
        words = normalise(row.get(table.text_column, ""))
        if not words:
            continue
        label = speaker(row.get(table.speaker_column, ""), aliases) if table.speaker_column else ""
        if label and label != current:
            if current is not None:
                turns.append(Turn(current, start, offset - 2))
            current, start = label, offset
            words = f"{label}: {words}"
        parts.append(words)
        offset += len(words) + 2
    if current is not None:
        turns.append(Turn(current, start, offset - 2))
    return "\n\n".join(parts), tuple(turns)


def _group_metadata(
    members: list[tuple[int, dict[str, str]]], columns: dict[str, str], chosen: bool, rel: str, where: str
) -> dict[str, str]:
    """The metadata of a grouped document: columns whose value is the same in all its rows. A chosen column whose
    value varies is an error; an unchosen one is left out (a per-row tag is not a fact about the interview)."""
    metadata = {}
    for key, column in columns.items():
        values = list(dict.fromkeys(row.get(column, "") for _, row in members))
        if len(values) == 1:
            metadata[key] = values[0]
        elif chosen:
            shown = ", ".join(repr(v) for v in values[:3])
            raise InputError(rel, f"metadata column {column!r} varies within {where} ({shown}...); a document's "
                             "metadata must be one value: remove it from ingest.table.metadata_columns")  # fmt: skip
    return metadata


def _metadata_columns(
    columns: list[str], rel: str, table: TableInput, exclude: tuple[str | None, ...]
) -> dict[str, str]:
    """Metadata key -> column. By default every other column with a header (a column without one is a row number,
    most often); a chosen column without a header is keyed `column_<n>`."""
    if table.metadata_columns is None:
        keys = [c for c in dict.fromkeys(columns) if c and c not in exclude]
        return {key: key for key in keys}
    missing = [column for column in table.metadata_columns if column not in columns]
    if missing:
        raise InputError(
            rel,
            f"no metadata column(s) {', '.join(map(repr, missing))} (columns: {_show_columns(columns)}); "
            "set ingest.table.metadata_columns",
        )
    return {(column or f"column_{columns.index(column) + 1}"): column for column in table.metadata_columns}


def _reject_duplicate_ids(documents: list[Document], rel: str, table: TableInput) -> None:
    counts = Counter(document.doc_id.removeprefix(f"{rel}#") for document in documents)
    duplicates = sorted(row_id for row_id, count in counts.items() if count > 1)
    if duplicates:
        raise InputError(
            rel,
            f"duplicate ids in column '{table.id_column}': {', '.join(duplicates)}; ids must be unique "
            "(or set ingest.table.id_column to null to number the rows)",
        )
