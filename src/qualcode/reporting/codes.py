"""The coded chunks counted for the report: codes.parquet read column by column (only the columns used,
strings as dictionaries: an integer per row and each distinct string once), reduced to integers and counted
with numpy on them, so the counts can be tested without looking at pixels and their cost stays bounded at any
corpus size."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..inputs.codebook import Codebook, CodeField
from ..outputs import tables

logger = logging.getLogger(__name__)

CHOICE_TYPES = ("single_choice", "multiple_choice", "boolean")
GROUNDING = {  # category: colour, in reading order from best to worst
    "exact": "#2b8a3e",
    "normalised": "#8ce99a",
    "ungrounded": "#e03131",
    "empty": "#adb5bd",
    "not_asked": "#dee2e6",
}
TOP_DOCUMENTS = 30  # rows of the documents heatmap
CODE_COLUMNS = ["doc_id", "chunk_id", "field", "value", "grounding"]

Tabular = pd.DataFrame | pa.Table


# -- reading -----------------------------------------------------------------------------------------


def _arrow(table: Tabular, columns: Sequence[str]) -> pa.Table:
    """The key columns of a DataFrame or Arrow table, as an Arrow table of strings."""
    if isinstance(table, pd.DataFrame):
        schema = pa.schema([(c, pa.string()) for c in columns])
        return pa.Table.from_pandas(table[list(columns)], schema=schema, preserve_index=False)
    return table.select(list(columns))


def _factorise(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """An integer per row and the distinct values they point to, without a Python object per row: the
    indices of a dictionary column as they are (no copy when the column is one chunk)."""
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    # Chunks from different row groups, or encoded one by one, may each carry their own dictionary.
    chunks = [c for c in column.unify_dictionaries().chunks if len(c)]
    if not chunks:
        return np.zeros(0, np.int32), pa.array([], pa.string())
    if any(c.null_count for c in chunks):
        raise ValueError("a key column of the table has empty (null) cells; the table does not follow its schema")
    indices = [c.indices.to_numpy() for c in chunks]
    return indices[0] if len(indices) == 1 else np.concatenate(indices), chunks[0].dictionary


def _distinct(a: np.ndarray) -> np.ndarray:
    """The distinct values of `a`, sorted (np.unique's hash path is far slower on large int64 arrays)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


@dataclass(frozen=True, eq=False)
class CodedChunks:
    """codes.parquet reduced to what the figures count: the distinct (chunk, code) pairs of the choice and
    boolean fields as integers, sorted by chunk then code, and the quotes per field and grounding category.

    `code` indexes `codes` (every `field:value` of the codebook, in codebook order); `doc` indexes
    `doc_ids`, the documents named in the table; `chunk` numbers the chunks in the table."""

    codes: tuple[str, ...]
    doc_ids: pa.Array
    chunk: np.ndarray
    doc: np.ndarray
    code: np.ndarray
    grounding: pd.DataFrame

    @property
    def chunk_counts(self) -> np.ndarray:
        """Chunks coded with each code, in the order of `codes`."""
        return np.bincount(self.code, minlength=len(self.codes))

    @property
    def observed(self) -> list[int]:
        """The codes used at least once, in codebook order."""
        return [int(k) for k in np.flatnonzero(self.chunk_counts)]


def index_codes(codes: Tabular, cb: Codebook) -> CodedChunks:
    """Count-ready integers from a codes table with `CODE_COLUMNS` (a DataFrame or an Arrow table): each
    key column as dictionary indices, and Python strings only for the distinct fields and codes."""
    t = _arrow(codes, CODE_COLUMNS)
    doc, doc_ids = _factorise(t["doc_id"])
    chunk, chunk_ids = _factorise(t["chunk_id"])
    field, field_names = _factorise(t["field"])
    value, values = _factorise(t["value"])
    g, categories = _factorise(t["grounding"])
    del t
    fields = field_names.to_pylist()  # one per codebook field
    order = code_order(cb)
    position = {name: i for i, name in enumerate(order)}
    k = max(len(order), 1)

    # Rows of choice and boolean fields; text answers (one distinct value per chunk) are never named. Each
    # field's values that occur are named once, into a (field, value) -> code table; no per-row strings.
    coded = {f.name for f in coded_fields(cb)}
    lookup = np.full((len(fields), len(values)), -1, np.int64)
    unknown = []
    for i, f in enumerate(fields):
        if f in coded:
            used = np.flatnonzero(np.bincount(value[field == i], minlength=len(values)))
            names = [f"{f}:{v}" for v in values.take(pa.array(used, pa.int64())).to_pylist()]
            lookup[i, used] = [position.get(n, -1) for n in names]
            unknown += [n for n in names if n not in position]
    if unknown:
        # Possible only with tables from another codebook version; they would silently vanish otherwise.
        logger.warning(
            "%d code(s) not in the codebook are left out of the figures, e.g. %s", len(unknown), min(unknown)
        )
    code = lookup[field, value] if len(field) else np.zeros(0, np.int64)
    known = np.flatnonzero(code >= 0)
    key = _distinct(chunk[known].astype(np.int64) * k + code[known])  # sorted by chunk, then code
    doc_of_chunk = np.zeros(len(chunk_ids), np.int64)
    doc_of_chunk[chunk] = doc  # a chunk is in one document

    # A multiple-choice answer repeats its one quote on every value's row: count the first row per chunk
    # and quoted field.
    asked = [f.name for f in cb.fields if f.quote]
    quote_of = np.array([asked.index(f) if f in asked else -1 for f in fields], np.int32)[field]
    q = np.flatnonzero(quote_of >= 0)
    _, first = np.unique(chunk[q].astype(np.int64) * max(len(asked), 1) + quote_of[q], return_index=True)
    q = q[first]
    counts = np.bincount(quote_of[q] * len(categories) + g[q], minlength=len(asked) * len(categories))
    table = pd.DataFrame(counts.reshape(len(asked), len(categories)), index=asked, columns=categories.to_pylist())
    found = {c for c in table.columns if table[c].any()}
    columns = [c for c in GROUNDING if c in found or c in ("exact", "normalised", "ungrounded")]
    columns += sorted(found - set(columns))

    return CodedChunks(
        codes=tuple(order),
        doc_ids=doc_ids,
        chunk=key // k,
        doc=doc_of_chunk[key // k],
        code=key % k,
        grounding=table.reindex(columns=columns, fill_value=0).astype(np.int64),
    )


def read_codes(path: str | Path, cb: Codebook) -> CodedChunks:
    """codes.parquet by `index_codes`: only the columns the figures use, read as dictionaries."""
    return index_codes(tables.read(path, "codes", CODE_COLUMNS, read_dictionary=CODE_COLUMNS), cb)


def _coded(codes: Tabular | CodedChunks, cb: Codebook) -> CodedChunks:
    return codes if isinstance(codes, CodedChunks) else index_codes(codes, cb)


# -- counting ----------------------------------------------------------------------------------------


def coded_fields(cb: Codebook) -> list[CodeField]:
    """The fields whose answers are codes (choice and boolean); text answers are free prose."""
    return [f for f in cb.fields if f.type in CHOICE_TYPES]


def _values(f: CodeField) -> list[str]:
    return [v.name for v in f.values] if f.values else ["true", "false"]


def code_order(cb: Codebook) -> list[str]:
    """Every `field:value` the codebook allows, in codebook order."""
    return [f"{f.name}:{v}" for f in coded_fields(cb) for v in _values(f)]


def frequencies(codes: Tabular | CodedChunks, cb: Codebook) -> pd.DataFrame:
    """Chunks coded with each value of each choice and boolean field; values never used count 0."""
    counts = _coded(codes, cb).chunk_counts
    rows = [(f.name, v) for f in coded_fields(cb) for v in _values(f)]
    return pd.DataFrame(
        {"field": [f for f, _ in rows], "value": [v for _, v in rows], "chunks": counts.astype(np.int64)},
        columns=["field", "value", "chunks"],
    )


def cooccurrence(codes: Tabular | CodedChunks, cb: Codebook) -> pd.DataFrame:
    """Chunks coded with both codes, for every pair of codes that occur; the diagonal is each code's count.

    Each chunk's pairs of codes are its (chunk, code) pairs `j` apart, for j = 1, 2, ... up to the most
    codes a chunk has: whole-array integer counts, with memory of the order of the pairs themselves."""
    c = _coded(codes, cb)
    k = len(c.codes)
    upper = np.zeros(k * k, np.int64)
    for j in range(1, len(c.chunk)):
        same = c.chunk[j:] == c.chunk[:-j]  # pairs are sorted by chunk then code, so a < b below
        if not same.any():
            break  # no chunk has more than j codes
        upper += np.bincount(c.code[:-j][same] * k + c.code[j:][same], minlength=k * k)
    upper = upper.reshape(k, k)
    full = upper + upper.T + np.diag(c.chunk_counts)
    observed = c.observed
    names = [c.codes[i] for i in observed]
    return pd.DataFrame(full[np.ix_(observed, observed)], index=names, columns=names)


def documents_by_codes(
    codes: Tabular | CodedChunks, doc_ids: Sequence[str] | pa.Array, cb: Codebook, top: int | None = TOP_DOCUMENTS
) -> pd.DataFrame:
    """Chunks of a document (rows) coded with each code that occurs (columns), for the `top` documents of
    `doc_ids` with most coded chunks (all of them if `top` is None), most first, ties in `doc_ids` order."""
    c = _coded(codes, cb)
    doc_ids = doc_ids.cast(pa.string()) if isinstance(doc_ids, pa.Array) else pa.array(list(doc_ids), pa.string())
    # Each pair's document as its row in doc_ids; documents not in doc_ids (-1) are left out.
    row_of = pc.index_in(c.doc_ids, value_set=doc_ids).fill_null(-1).to_numpy(zero_copy_only=False)
    pair_row = row_of.astype(np.int64)[c.doc] if len(c.doc) else np.zeros(0, np.int64)
    first = np.ones(len(c.chunk), bool)
    first[1:] = c.chunk[1:] != c.chunk[:-1]  # one pair per chunk: pairs are sorted by chunk
    chunk_row = pair_row[first]
    coded_chunks = np.bincount(chunk_row[chunk_row >= 0], minlength=len(doc_ids))
    ranked = np.argsort(-coded_chunks, kind="stable")
    shown = ranked if top is None else ranked[:top]
    rank = np.full(len(doc_ids) + 1, -1, np.int64)  # the last entry is for row -1
    rank[shown] = np.arange(len(shown))
    pair_rank = rank[pair_row]
    observed = c.observed
    column = np.full(len(c.codes), -1, np.int64)
    column[observed] = np.arange(len(observed))
    keep = pair_rank >= 0
    cells = np.bincount(pair_rank[keep] * len(observed) + column[c.code[keep]], minlength=len(shown) * len(observed))
    return pd.DataFrame(
        cells.reshape(len(shown), len(observed)),
        index=doc_ids.take(pa.array(shown, pa.int64())).to_pylist(),
        columns=[c.codes[k] for k in observed],
    )


def grounding(codes: Tabular | CodedChunks, cb: Codebook) -> pd.DataFrame:
    """Quotes per field (rows) and grounding category (columns), for the fields that ask for a quote.

    A multiple-choice answer repeats its one quote on every value's row, so quotes are counted once per
    chunk and field, as in the methods paragraph."""
    return _coded(codes, cb).grounding
