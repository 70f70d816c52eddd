"""From answers to tables: the coding jobs' results become the published codings, codes, llm_calls and failures.

The tables job streams: it takes one shard's results at a time, in the chunks' order, and appends them to the
tables through `tables.Writer`, so its memory does not grow with the corpus.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..coding.validate import ground_quote
from ..config import Price
from ..inputs.codebook import Codebook, CodeField
from ..records import Chunk, ChunkResult
from .tables import (
    CODES,
    FAILURES,
    LLM_CALLS,
    PUBLISHED,
    RESULTS,
    Writer,
    check,
    chunks_from,
    codings_schema,
    excerpts_schema,
    open_csv,
    read,
    schema,
    write_csv,
)


def _cost(r: ChunkResult, prices: Mapping[str, Price] | None) -> float | None:
    price = (prices or {}).get(r.model_asked)
    if price is None:
        return None
    return price.paid(r)


def value_strings(field: CodeField, value: object) -> list[str]:
    if field.type == "multiple_choice":
        return list(dict.fromkeys(str(v) for v in value))  # type: ignore[union-attr]
    if field.type == "boolean":
        return ["true" if value else "false"]
    return [str(value)]


def coding_tables(
    codebook: Codebook,
    chunks: Sequence[Chunk],
    results: Sequence[ChunkResult],
    prices: Mapping[str, Price] | None = None,
) -> dict[str, pa.Table]:
    """codings (wide), codes (tidy, with grounded quotes), llm_calls and the coding failures, for some chunks.

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
        row["empty_fields"] = codebook.empty_fields(answer)
        for f in codebook.fields:
            item = answer[f.name]
            values = value_strings(f, item["value"])
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
    return {
        "codings": pa.Table.from_pylist(wide, schema=codings_schema(codebook)),
        "codes": pa.Table.from_pylist(tidy, schema=CODES),
        "llm_calls": pa.Table.from_pylist(calls, schema=LLM_CALLS),
        "failures": pa.Table.from_pylist(failed, schema=FAILURES),
    }


def excerpts(
    codebook: Codebook,
    chunks: Sequence[Chunk],
    built: Mapping[str, pa.Table],
    metadata: Mapping[str, Mapping[str, str | None]],
    schema: pa.Schema,
) -> pa.Table:
    """The passages to read, for some chunks (in their order): each with its document's metadata and the codes
    it got (from `built`, the chunks' codings and codes tables), each code with its quote and grounding."""
    status = dict(zip(built["codings"].column("chunk_id").to_pylist(), built["codings"].column("status").to_pylist(),
                      strict=True))  # fmt: skip
    empty = dict(zip(built["codings"].column("chunk_id").to_pylist(),
                     built["codings"].column("empty_fields").to_pylist(), strict=True))  # fmt: skip
    by_chunk: dict[str, list[dict[str, object]]] = {}
    for code in built["codes"].select(["chunk_id", "field", "value", "quote", "grounding"]).to_pylist():
        by_chunk.setdefault(code.pop("chunk_id"), []).append(code)  # type: ignore[arg-type]
    meta_keys = [name[5:] for name in schema.names if name.startswith("meta_")]
    rows = []
    for c in chunks:
        codes = by_chunk.get(c.chunk_id, [])
        rows.append(
            {
                "doc_id": c.doc_id,
                "chunk_index": c.index,
                "chunk_id": c.chunk_id,
                "status": status[c.chunk_id],
                "start": c.start,
                "end": c.end,
                "speakers": list(c.speakers),
                **{f"meta_{k}": metadata.get(c.doc_id, {}).get(k) for k in meta_keys},
                "text": c.text,
                "codes": codes,
                "codes_text": _codes_text(codebook, codes, empty[c.chunk_id], status[c.chunk_id]),
            }
        )
    return pa.Table.from_pylist(rows, schema=schema)


def _codes_text(codebook: Codebook, codes: list[dict[str, object]], empty: list[str] | None, status: str) -> str:
    """One line per field, to read beside the passage: `emotions: fear, grief | "we lost three" (exact)`."""
    if status != "coded":
        return "(not coded: see failures)"
    lines = []
    for f in codebook.fields:
        mine = [c for c in codes if c["field"] == f.name]
        values = ", ".join(str(c["value"]) for c in mine)
        if f.name in (empty or []):
            values = f"(empty) {values}".rstrip() if f.type == "text" and values else "(empty)"
        line = f"{f.name}: {values}"
        if f.quote and mine:
            quote, grounding = mine[0]["quote"], mine[0]["grounding"]
            line += f' | "{quote}" ({grounding})' if quote else " | no quote"
        lines.append(line)
    return "\n".join(lines)


def codings_for_spreadsheets(codings: pa.Table, codebook: Codebook) -> pd.DataFrame:
    """The wide codings for Excel, SPSS and Stata: lists joined by "; ", a 0/1 column per value of each
    multiple-choice field (`<field>__<value>`), booleans as 0/1; empty cells where a chunk failed."""
    df = codings.to_pandas()
    coded = df.status == "coded"
    for f in codebook.fields:
        if f.type == "multiple_choice":
            lists = codings.column(f.name)
            flat, rows = pc.list_flatten(lists), pc.list_parent_indices(lists).to_numpy()
            for v in f.values:  # one vectorised pass per value, not a Python call per chunk and value
                dummy = np.zeros(len(df), dtype="int8")
                dummy[rows[pc.equal(flat, v.name).to_numpy(zero_copy_only=False)]] = 1
                df[f"{f.name}__{v.name}"] = pd.array(dummy, dtype="Int8")
                df.loc[~coded, f"{f.name}__{v.name}"] = pd.NA
            df[f.name] = df[f.name].map(lambda xs: "; ".join(xs) if xs is not None else None)
        elif f.type == "boolean":
            df[f.name] = df[f.name].astype("boolean").astype("Int8")
    df["empty_fields"] = df["empty_fields"].map(lambda xs: "; ".join(xs) if xs is not None else None)
    return df


def excerpts_for_spreadsheets(table: pa.Table) -> pd.DataFrame:
    """The excerpts for Excel and R: the structured `codes` column dropped (its text is in `codes_text`), the
    speakers joined by "; "."""
    df = table.drop_columns(["codes"]).to_pandas()
    df["speakers"] = df["speakers"].map(lambda xs: "; ".join(xs))
    return df


BATCH_CHUNKS = 4096


def write_tables(
    *,
    codebook: Codebook,
    documents: str | Path,
    chunks: str | Path,
    shard_files: Sequence[str | Path],
    ingest_failures: str | Path,
    out: Mapping[str, str | Path],
    codings_csv: str | Path,
    prices: Mapping[str, Price] | None = None,
    metadata: dict[str, str] | None = None,
    excerpts_csv: str | Path | None = None,
) -> dict[str, int]:
    """Write the published tables, the codings CSV and the excerpts CSV, in the chunks' (document) order whatever
    the sharding, BATCH_CHUNKS chunks at a time; returns rows per table. Every chunk must have exactly one result."""
    docs = check(documents, "documents")
    meta_columns = [name for name in docs.schema_arrow.names if name.startswith("meta_")]
    schemas = {name: schema(name, codebook) for name in PUBLISHED if name not in ("documents", "excerpts")}
    schemas["documents"] = docs.schema_arrow  # one meta_<key> column per metadata key of this corpus
    schemas["excerpts"] = excerpts_schema([name[5:] for name in meta_columns])
    # each document's metadata, for the excerpts: small (no texts), read once
    meta_table = read(documents, "documents", ["doc_id", *meta_columns]).to_pylist()
    doc_meta = {row.pop("doc_id"): {k[5:]: v for k, v in row.items()} for row in meta_table}
    parts = [read(p, "results", RESULTS.names) for p in shard_files]
    all_results = pa.concat_tables(parts) if parts else RESULTS.empty_table()
    all_chunks = read(chunks, "chunks")
    # where each chunk's result is, so the tables follow the chunks' order whatever the shards hold
    at = pc.index_in(all_chunks.column("chunk_id"), value_set=all_results.column("chunk_id"))
    if at.null_count or all_results.num_rows != all_chunks.num_rows:
        raise ValueError(
            f"{at.null_count} of {all_chunks.num_rows} chunk(s) have no coding result, and the shards hold "
            f"{all_results.num_rows} result(s); run the workflow again"
        )
    writers = {name: Writer(out[name], schemas[name], metadata) for name in PUBLISHED}
    try:
        for batch in docs.iter_batches(batch_size=BATCH_CHUNKS):
            writers["documents"].write(pa.Table.from_batches([batch]))
        writers["failures"].write(read(ingest_failures, "failures"))
        with open_csv(codings_csv) as csv, open_csv(excerpts_csv) if excerpts_csv else nullcontext() as ex_csv:
            for first in range(0, max(all_chunks.num_rows, 1), BATCH_CHUNKS):
                part = all_chunks.slice(first, BATCH_CHUNKS)
                batch_chunks = chunks_from(part)
                batch_results = (
                    [ChunkResult(**r) for r in all_results.take(at.slice(first, BATCH_CHUNKS)).to_pylist()]
                    if part.num_rows
                    else []
                )
                writers["chunks"].write(part)
                built = coding_tables(codebook, batch_chunks, batch_results, prices)
                built["excerpts"] = excerpts(codebook, batch_chunks, built, doc_meta, schemas["excerpts"])
                for name, table in built.items():
                    writers[name].write(table)
                write_csv(codings_for_spreadsheets(built["codings"], codebook), csv, header=first == 0)
                if ex_csv is not None:
                    write_csv(excerpts_for_spreadsheets(built["excerpts"]), ex_csv, header=first == 0)
    except BaseException:
        for w in writers.values():
            w.__exit__(RuntimeError, None, None)
        raise
    for w in writers.values():
        w.close()
    return {name: w.rows for name, w in writers.items()}
