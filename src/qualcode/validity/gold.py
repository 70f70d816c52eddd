"""Human codings ("gold"): reading them, whatever the file, and checking them against the codebook and documents.

The reader interface (one registry, `READERS`, keyed by file suffix): a reader takes a path, the codebook and the
documents' normalised texts (a reader of a format that names codes or holds its own copy of the texts uses them
to map and re-check; CSV and Parquet need neither) and returns a pandas DataFrame with exactly the columns

    coder, doc_id, field, value, start, end, quote

as strings, except start and end (nullable integers, character offsets into the document's normalised text,
end exclusive); start, end and quote may be null. One row is one code a coder gave (a multiple-choice field with
two values is two rows). A row whose field and value are empty says "this coder read this document and found
nothing": it makes the document part of the coder's sample. The DataFrame's index is the row's position as the
user sees it (for a CSV, its line number), so that errors can name it. A reader only reads; `check` validates
every row against the codebook and the documents. What a reader could not use (codes not in the codebook, a
source whose text differs) it lists in `df.attrs["problems"]`, and `load` lists those with the rows it skips.
Registering another format is one line, as `.qdpx` (REFI-QDA projects from QDA programs) is below.

Two layouts are read from CSV and Parquet: tidy (the columns above; `field` and `value` present) and wide, as
exported from a spreadsheet: `doc_id` plus one column per codebook field, several values of a field joined by
`;`, and either a `coder` column or one file per coder (the coder is then the file's name without suffix). A wide
row may carry `start` and `end` (the blind sheet of a chunk sample does: its codes are placed on that span), and
`chunk_id` and `text` columns, which are there to be read and are not codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..coding.validate import ground_quote
from ..errors import QualcodeError
from ..inputs.codebook import Codebook

COLUMNS = ["coder", "doc_id", "field", "value", "start", "end", "quote"]
# Columns of a blind coding sheet (validity.sampling) that are there for the coder to read, not codes.
SHEET_CONTEXT = ("chunk_id", "text")
BOOLEAN = {"true": "true", "false": "false", "yes": "true", "no": "false", "1": "true", "0": "false"}


class GoldError(QualcodeError):
    """A human coding file cannot be read or holds a row that does not fit the codebook or the documents."""


def _strings(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype("string").apply(lambda s: s.str.strip()).replace("", pd.NA)


def _tidy(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for col in COLUMNS:
        out[col] = df[col] if col in df.columns else pd.NA
    text = _strings(out[["coder", "doc_id", "field", "value", "quote"]])
    for col in text.columns:
        out[col] = text[col]
    for col in ("start", "end"):
        given = _strings(out[[col]])[col]
        number = pd.to_numeric(given, errors="coerce")
        bad = given.notna() & (number.isna() | (number % 1 != 0))
        if bad.any():
            row = bad.idxmax()
            raise GoldError(f"{path}, row {row}: {col} must be a whole number of characters (got {given[row]!r})")
        out[col] = number.astype("Int64")
    return out[COLUMNS]


def _wide(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """One row per coder and document, one column per field: each cell becomes one row per value; an empty row
    still records that the coder read the document."""
    if "coder" not in df.columns:
        df = df.assign(coder=path.stem)
    fields = [c for c in df.columns if c not in ("coder", "doc_id", "start", "end", *SHEET_CONTEXT)]
    df = _strings(df)
    rows = []
    for line, r in zip(df.index, df.to_dict("records"), strict=True):  # iterrows builds a Series a row
        found = False
        span = (r.get("start", pd.NA), r.get("end", pd.NA))  # a blind sheet's chunk: its codes are placed on it
        for f in fields:
            if pd.isna(r[f]):
                continue
            for v in str(r[f]).split(";"):
                if v.strip():
                    rows.append((line, r["coder"], r["doc_id"], f, v.strip(), *span))
                    found = True
        if not found:
            rows.append((line, r["coder"], r["doc_id"], pd.NA, pd.NA, pd.NA, pd.NA))
    columns = ["line", "coder", "doc_id", "field", "value", "start", "end"]
    long = pd.DataFrame(rows, columns=columns).set_index("line")
    long.index.name = None
    return _tidy(long, path)


def _layout(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    if "doc_id" not in df.columns:
        raise GoldError(
            f"{path}: no doc_id column (found: {', '.join(map(str, df.columns)) or 'none'}); human codings "
            "(validation.gold) name each document in a doc_id column: rename the column of document ids to doc_id"
        )
    return _tidy(df, path) if {"field", "value"} <= set(df.columns) else _wide(df, path)


def read_csv(path: Path, cb: Codebook | None = None, texts: Mapping[str, str] | None = None) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise GoldError(f"{path}: not a readable CSV file ({exc})") from None
    df.index = df.index + 2  # the line number: line 1 is the header
    return _layout(df, path)


def read_parquet(path: Path, cb: Codebook | None = None, texts: Mapping[str, str] | None = None) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise GoldError(f"{path}: not a readable Parquet file ({exc})") from None
    df.index = df.index + 1  # the row number, from 1
    for col in ("start", "end"):
        if col in df.columns:
            df[col] = df[col].astype("string")
    return _layout(df.astype({c: "string" for c in df.columns if c not in ("start", "end")}), path)


def read_qdpx(path: Path, cb: Codebook | None = None, texts: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A REFI-QDA project coded in a QDA program (see qdpx.read_gold)."""
    from ..exchange import qdpx  # lxml and the XML Schemas: loaded by the jobs that are given a .qdpx, not by every job

    return qdpx.read_gold(path, cb, texts)


READERS: dict[str, Callable[[Path, Codebook | None, Mapping[str, str] | None], pd.DataFrame]] = {
    ".csv": read_csv,
    ".parquet": read_parquet,
    ".qdpx": read_qdpx,
}


def read(path: str | Path, cb: Codebook | None = None, texts: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One file of human codings, in the tidy columns, by its suffix's reader."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise GoldError(f"{path}: human codings are read from {', '.join(sorted(READERS))} files, not {path.suffix!r}")
    if not path.is_file():
        raise GoldError(f"{path}: no such file (validation.gold)")
    return reader(path, cb, texts)


def _problem(
    df: pd.DataFrame, cb: Codebook, texts: Mapping[str, str] | None, unit: str, listed: Callable[[str], bool]
) -> tuple[pd.Series, pd.Series]:
    """Each row's problem (or NA) and its value, normalised (booleans as true/false), located rows' offsets.
    Without `texts` (before the documents are read), a document is known if `listed` says it can be a listed
    file's, and offsets are not checked. Column at a time (261,000 rows in about a second); a message is built only
    for a row that has a problem, the later checks of a row overriding the earlier as they always did."""
    fields = {f.name: f for f in cb.fields if f.type != "text"}
    text_fields = [f.name for f in cb.fields if f.type == "text"]
    among = (
        "the files listed from ingest.input_dir" if texts is None else f"the {len(texts)} documents read from the input"
    )
    problems = pd.Series(pd.NA, index=df.index, dtype="object")
    values = df["value"].copy()
    # as the rows' records hold them (a missing value is None), which the messages show
    coder, doc, field, value = (df[c].astype(object).where(df[c].notna(), None) for c in COLUMNS[:4])

    def put(mask: pd.Series, message: Callable[[int], str]) -> None:
        at = np.flatnonzero(mask.to_numpy(dtype=bool))
        if len(at):
            problems.iloc[at] = [message(i) for i in at]

    no_coder = coder.isna()
    no_doc = ~no_coder & doc.isna()
    known = {d: bool(listed(d)) if texts is None else d in texts for d in pd.unique(doc.dropna())}
    unknown_doc = ~no_coder & ~no_doc & ~doc.map(known).fillna(True).astype(bool)
    put(no_coder, lambda i: "no coder")
    put(no_doc, lambda i: "no doc_id")
    put(unknown_doc, lambda i: f"unknown document {doc.iat[i]!r} (not among {among})")
    coded = ~(no_coder | no_doc | unknown_doc) & ~(field.isna() & value.isna())  # else: read, found nothing
    bad_field = coded & ~field.isin(list(fields))
    put(bad_field, lambda i: f"unknown field {field.iat[i]!r}"
        f"{' (a text field: free text is not compared)' if _among(field.iat[i], text_fields) else ''}; "
        f"allowed: {', '.join(fields)}")  # fmt: skip
    has_offsets = df["start"].notna() & df["end"].notna()
    for name, f in fields.items():
        mine = coded & (field == name)
        if not mine.any():
            continue
        allowed = [v.name for v in f.values] if f.values else ["true", "false"]
        at = np.flatnonzero(mine.to_numpy(dtype=bool))
        v = value.iloc[at]
        if f.type == "boolean":
            v = v.where(v.isna(), v.astype(str).str.lower().map(BOOLEAN))
        fits = v.isin(allowed).to_numpy(dtype=bool)
        listing = ", ".join(allowed)
        put(pd.Series(np.isin(np.arange(len(df)), at[~fits])), lambda i, listing=listing: f"value "
            f"{_shown(value.iat[i])} is not allowed for field {field.iat[i]!r}; allowed: {listing}")  # fmt: skip
        values.iloc[at] = v.astype(values.dtype)
    coded_ok = coded & ~bad_field
    if texts is not None:
        length = doc.map({d: len(texts[d]) for d in known if known[d]})
        start, end = df["start"].astype("Float64"), df["end"].astype("Float64")
        span = ((start >= 0) & (start < end) & (end <= length.astype("Float64"))).fillna(False).astype(bool)
        put(coded_ok & has_offsets & ~span, lambda i: f"start {df['start'].iat[i]}, end {df['end'].iat[i]} are not a "
            f"span of {doc.iat[i]!r} (0 to {len(texts[doc.iat[i]])})")  # fmt: skip
    if unit == "chunk":
        put(coded_ok & ~has_offsets & df["quote"].isna(),
            lambda i: "validation.unit is chunk: each code needs start and end, or a quote, to place it")  # fmt: skip
    return problems, values


def _among(x: object, names: Sequence[str]) -> bool:
    return not pd.isna(x) and x in names


def _shown(x: object) -> str:
    """A value as a message shows it: quoted, or None when missing."""
    return str(x) if pd.isna(x) else repr(x)


def check(
    df: pd.DataFrame,
    path: str | Path,
    cb: Codebook,
    texts: Mapping[str, str] | None,
    unit: str,
    on_error: str,
    listed: Callable[[str], bool] = bool,
) -> tuple[pd.DataFrame, list[str]]:
    """The rows that fit, with booleans as true/false and quotes located (start and end filled in), and the
    problems found, one line each naming the file and row. With on_error 'fail' the first problem is an error.
    `texts` None: before the documents are read, as far as the codebook and `listed` (see `_problem`) tell."""
    lines = df.index.to_numpy()  # a wide row gives several codes: one line, several rows
    df = df.reset_index(drop=True)
    problems, values = _problem(df, cb, texts, unit, listed)
    df = df.assign(value=values)
    quoted = problems.isna() & df["quote"].notna() & (df["start"].isna() | df["end"].isna()) & df["field"].notna()
    for i in df.index[quoted] if texts is not None else []:
        g = ground_quote(df.at[i, "quote"], texts[df.at[i, "doc_id"]], 0)
        if g.grounded:
            df.at[i, "start"], df.at[i, "end"] = g.start, g.end
        elif unit == "chunk":
            problems[i] = f"quote {df.at[i, 'quote'][:60]!r} is not in document {df.at[i, 'doc_id']!r}"
    listed = [f"{path}, row {lines[i]}: {p}" for i, p in problems.dropna().items()]
    if listed and on_error == "fail":
        more = f" (and {len(listed) - 1} more)" if len(listed) > 1 else ""
        raise GoldError(
            listed[0] + more + "; fix the file, or set validation.on_error: skip to list and skip such rows"
        )
    return df[problems.isna()], listed


def _another_corpus(path: str | Path, example: str, where: str) -> GoldError:
    return GoldError(
        f"{path}: none of the documents it codes (e.g. {example!r}) is among {where}: are these human codings of "
        "another corpus? Point validation.gold at this corpus's codings, or remove validation.gold from your "
        "config (or set it to []) to skip validation"
    )


def preflight(
    paths: Sequence[str | Path],
    cb: Codebook,
    listed: Callable[[str], bool],
    where: str,
    unit: str = "document",
    on_error: str = "fail",
    sample: bool = False,
) -> dict[str, pd.DataFrame]:
    """What `load` stops on that is known before any document is read (at the workflow's parse, before the first
    request): a file that cannot be read, a file none of whose documents can come from the input listing (`listed`:
    whether a doc_id can be a listed file's; `where` names those files), and with on_error 'fail' a row that does
    not fit the codebook or names a document no listed file holds (offsets and quotes wait for the texts). A
    REFI-QDA project is only read: a QDA program's source may match a document by its text, not read yet. Returns
    each file's rows."""
    found = {}
    for p in paths:
        df = found[str(p)] = read(p, cb, None)
        if Path(p).suffix.lower() == ".qdpx":
            continue
        named = df["doc_id"].dropna()
        if len(named) and not named.map(listed).any():
            raise _another_corpus(p, named.iloc[0], where)
        if sample:  # a pilot leaves out the rows of documents outside its sample, which only reading tells
            df = df[df["doc_id"].map(lambda d: pd.isna(d) or listed(d)).astype(bool)]
        check(df, p, cb, None, unit, on_error, listed)
    return found


def load(
    paths: Sequence[str | Path],
    cb: Codebook,
    texts: Mapping[str, str],
    unit: str = "document",
    on_error: str = "fail",
    sample: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Every file's checked rows, in the tidy columns, and the problems listed (file, row, what is wrong).
    `sample`: the run read a sample of the corpus (a pilot), so rows about documents outside it are left out and
    counted, not errors; the full run checks them."""
    frames, problems = [], []
    for p in paths:
        df = read(p, cb, texts)
        problems += df.attrs.get("problems", [])
        read_here = df["doc_id"].isin(list(texts))
        if sample:
            outside = df["doc_id"].notna() & ~read_here
            if outside.any():
                # the file's rows (a wide row gives several codes, all with its line number as index)
                n_rows, n_docs = df.index[outside].nunique(), df.loc[outside, "doc_id"].nunique()
                problems.append(f"{p}: {n_rows} rows about {n_docs} documents outside this pilot's sample "
                                "left out (the full run compares them)")  # fmt: skip
                df, read_here = df[~outside], read_here[~outside]
        named = df["doc_id"].dropna()
        if len(named) and not read_here.any():
            raise _another_corpus(p, named.iloc[0], f"the {len(texts)} documents read from the input")
        rows, listed = check(df, p, cb, texts, unit, on_error)
        frames.append(rows)
        problems += listed
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="Int64" if c in ("start", "end") else "string") for c in COLUMNS}), []
    return pd.concat(frames, ignore_index=True), problems
