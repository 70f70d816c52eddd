"""Every Parquet table is built and written here, with an explicit pyarrow schema.

Explicit schemas keep column types stable when a table is empty or a column is all null, so the
tables load the same way in pandas, R (arrow) or DuckDB whatever the run produced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .chunking import Chunk
from .codebook import Codebook, CodeField
from .config import Price
from .ingest import Document, IngestProblem, Turn
from .records import ChunkResult
from .validate import ground_quote

TURN = pa.struct([("speaker", pa.string()), ("start", pa.int64()), ("end", pa.int64())])

DOCUMENTS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("encoding", pa.string(), nullable=False),
        pa.field("n_chars", pa.int64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("turns", pa.list_(TURN), nullable=False),
    ]
)

CHUNKS = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("start", pa.int64(), nullable=False),
        pa.field("end", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("speakers", pa.list_(pa.string()), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)

RESULTS = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("answer_json", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("error", pa.string()),
        pa.field("request_hash", pa.string(), nullable=False),
        pa.field("provider", pa.string(), nullable=False),
        pa.field("base_url", pa.string(), nullable=False),
        pa.field("model_asked", pa.string(), nullable=False),
        pa.field("model_served", pa.string()),
        pa.field("system_fingerprint", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("tokens_in", pa.int64()),
        pa.field("tokens_out", pa.int64()),
        pa.field("latency_s", pa.float64()),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("reasks", pa.int32(), nullable=False),
        pa.field("retries", pa.int32(), nullable=False),
        pa.field("answered_at", pa.string()),
        pa.field("cache_hit", pa.bool_(), nullable=False),
    ]
)

CODES = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("quote", pa.string()),
        pa.field("quote_start", pa.int64()),
        pa.field("quote_end", pa.int64()),
        pa.field("grounding", pa.string(), nullable=False),
        pa.field("grounded", pa.bool_(), nullable=False),
    ]
)

LLM_CALLS = pa.schema(
    [f for f in RESULTS if f.name not in ("answer_json", "raw", "error")] + [pa.field("cost", pa.float64())]
)

FAILURES = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("source_file", pa.string()),
        pa.field("doc_id", pa.string()),
        pa.field("chunk_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw_answer", pa.string()),
        pa.field("attempts", pa.int32()),
    ]
)

_VALUE_TYPES = {
    "single_choice": pa.string(),
    "multiple_choice": pa.list_(pa.string()),
    "boolean": pa.bool_(),
    "text": pa.string(),
}


def codings_schema(codebook: Codebook) -> pa.Schema:
    """Wide: one row per chunk, a value column per field and a `<field>_quote` column where quotes are asked."""
    cols = [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
    ]
    for f in codebook.fields:
        cols.append(pa.field(f.name, _VALUE_TYPES[f.type]))
        if f.quote:
            cols.append(pa.field(f"{f.name}_quote", pa.string()))
    return pa.schema(cols)


# -- documents and chunks --------------------------------------------------------------------------


def documents_table(docs: Sequence[Document]) -> pa.Table:
    """Documents, with one `meta_<name>` string column per metadata key found in any document."""
    keys = sorted({k for d in docs for k in d.metadata})
    schema = DOCUMENTS
    for k in keys:
        schema = schema.append(pa.field(f"meta_{k}", pa.string()))
    rows = [
        {
            "doc_id": d.doc_id,
            "source_file": d.source_file,
            "format": d.format,
            "encoding": d.encoding,
            "n_chars": len(d.text),
            "text": d.text,
            "turns": [{"speaker": t.speaker, "start": t.start, "end": t.end} for t in d.turns],
            **{f"meta_{k}": d.metadata.get(k) for k in keys},
        }
        for d in sorted(docs, key=lambda d: d.doc_id)
    ]
    return pa.Table.from_pylist(rows, schema=schema)


def read_documents(path: str | Path) -> list[Document]:
    docs = []
    for r in pq.read_table(path).to_pylist():
        meta = {k[5:]: v for k, v in r.items() if k.startswith("meta_") and v is not None}
        turns = tuple(Turn(t["speaker"], t["start"], t["end"]) for t in r["turns"])
        docs.append(Document(r["doc_id"], r["source_file"], r["format"], r["encoding"], r["text"], turns, meta))
    return docs


def chunks_table(chunks: Sequence[Chunk]) -> pa.Table:
    rows = [
        {
            "chunk_id": c.chunk_id,
            "doc_id": c.doc_id,
            "chunk_index": c.index,
            "start": c.start,
            "end": c.end,
            "n_tokens": c.n_tokens,
            "speakers": list(c.speakers),
            "text": c.text,
        }
        for c in chunks
    ]
    return pa.Table.from_pylist(rows, schema=CHUNKS)


def read_chunks(path: str | Path, first: int = 0, count: int | None = None) -> list[Chunk]:
    """Chunks `first` to `first + count` (all by default): a coding job converts only its own shard."""
    return [
        Chunk(
            chunk_id=r["chunk_id"],
            doc_id=r["doc_id"],
            index=r["chunk_index"],
            start=r["start"],
            end=r["end"],
            n_tokens=r["n_tokens"],
            speakers=tuple(r["speakers"]),
            text=r["text"],
        )
        for r in pq.read_table(path).slice(first, count).to_pylist()
    ]


# -- coding results --------------------------------------------------------------------------------


def results_table(results: Sequence[ChunkResult]) -> pa.Table:
    return pa.Table.from_pylist([r.to_row() for r in results], schema=RESULTS)


def read_results(paths: Iterable[str | Path]) -> list[ChunkResult]:
    return [ChunkResult(**r) for p in paths for r in pq.read_table(p, columns=RESULTS.names).to_pylist()]


def problems_table(problems: Sequence[IngestProblem]) -> pa.Table:
    rows = [
        {"stage": "ingest", "source_file": p.source_file, "reason": p.problem}
        for p in sorted(problems, key=lambda p: p.source_file)
    ]
    return pa.Table.from_pylist(rows, schema=FAILURES)


def _cost(r: ChunkResult, prices: Mapping[str, Price] | None) -> float | None:
    price = (prices or {}).get(r.model_asked)
    if price is None:
        return None
    return price.cost(r.tokens_in or 0, r.tokens_out or 0)


def _value_strings(field: CodeField, value: object) -> list[str]:
    if field.type == "multiple_choice":
        return list(dict.fromkeys(str(v) for v in value))  # type: ignore[union-attr]
    if field.type == "boolean":
        return ["true" if value else "false"]
    return [str(value)]


def coding_tables(
    codebook: Codebook,
    chunks: Sequence[Chunk],
    results: Sequence[ChunkResult],
    ingest_failures: pa.Table,
    prices: Mapping[str, Price] | None = None,
) -> dict[str, pa.Table]:
    """codings (wide), codes (tidy, with grounded quotes), llm_calls and failures.

    Rows follow the chunks' order (document, then position), whatever order the shards finished in."""
    by_chunk = {r.chunk_id: r for r in results}
    missing = [c.chunk_id for c in chunks if c.chunk_id not in by_chunk]
    if missing:
        raise ValueError(f"{len(missing)} chunk(s) have no coding result, e.g. {missing[0]}")
    wide, tidy, calls, failed = [], [], [], []
    for c in chunks:
        r = by_chunk[c.chunk_id]
        row = {"doc_id": c.doc_id, "chunk_id": c.chunk_id, "chunk_index": c.index, "status": r.status}
        calls.append({**{n: getattr(r, n) for n in LLM_CALLS.names if n != "cost"}, "cost": _cost(r, prices)})
        if r.status != "coded":
            failed.append(
                {
                    "stage": "coding",
                    "doc_id": c.doc_id,
                    "chunk_id": c.chunk_id,
                    "reason": r.error or "unknown",
                    "raw_answer": r.raw,
                    "attempts": r.attempts,
                }
            )
            wide.append(row)
            continue
        answer = json.loads(r.answer_json or "{}")
        for f in codebook.fields:
            item = answer[f.name]
            values = _value_strings(f, item["value"])
            row[f.name] = values if f.type == "multiple_choice" else item["value"]
            quote = item.get("quote") if f.quote else None
            if f.quote:
                row[f"{f.name}_quote"] = quote
            g = ground_quote(quote, c.text, c.start) if quote is not None else None
            for v in values:
                tidy.append(
                    {
                        "doc_id": c.doc_id,
                        "chunk_id": c.chunk_id,
                        "chunk_index": c.index,
                        "field": f.name,
                        "value": v,
                        "quote": quote,
                        "quote_start": g.start if g else None,
                        "quote_end": g.end if g else None,
                        "grounding": g.status if g else "not_asked",
                        "grounded": bool(g and g.grounded),
                    }
                )
        wide.append(row)
    failures = pa.concat_tables([ingest_failures, pa.Table.from_pylist(failed, schema=FAILURES)])
    return {
        "codings": pa.Table.from_pylist(wide, schema=codings_schema(codebook)),
        "codes": pa.Table.from_pylist(tidy, schema=CODES),
        "llm_calls": pa.Table.from_pylist(calls, schema=LLM_CALLS),
        "failures": failures,
    }


def codings_for_spreadsheets(codings: pa.Table, codebook: Codebook) -> pd.DataFrame:
    """The wide codings for Excel, SPSS and Stata: lists joined by "; ", a 0/1 column per value of each
    multiple-choice field (`<field>__<value>`), booleans as 0/1; empty cells where a chunk failed."""
    df = codings.to_pandas()
    coded = df.status == "coded"
    for f in codebook.fields:
        if f.type == "multiple_choice":
            lists = df[f.name]
            for v in f.values:
                dummy = lists.map(lambda xs, v=v.name: int(v in xs) if xs is not None else None)
                df[f"{f.name}__{v.name}"] = dummy.where(coded).astype("Int8")
            df[f.name] = lists.map(lambda xs: "; ".join(xs) if xs is not None else None)
        elif f.type == "boolean":
            df[f.name] = df[f.name].astype("boolean").astype("Int8")
    return df


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    # UTF-8 with a BOM, so Excel reads accents right; \n line ends inside quoted cells survive.
    df.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\n")


def write(table: pa.Table, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write one table; `metadata` goes into the file's key-value metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    pq.write_table(table, path)
