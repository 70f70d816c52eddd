"""Every Parquet table is built and written here, with an explicit pyarrow schema.

Explicit schemas keep column types stable when a table is empty or a column is all null, so the
tables load the same way in pandas, R (arrow) or DuckDB whatever the run produced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import QualcodeError, writing
from ..ids import canonical_json
from ..inputs.codebook import Codebook
from ..records import Chunk, ChunkResult, Document, IngestProblem, Turn
from ..shards import Shard

if TYPE_CHECKING:  # pandas costs a second to import; the ingest and coding jobs never need it
    import pandas as pd

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
        pa.field("turn_speaker", pa.string()),
        pa.field("context", pa.string(), nullable=False),  # JSON object: the metadata chosen for the prompt
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
        pa.field("tokens_cached", pa.int64()),  # of tokens_in, served from the provider's prompt cache
        pa.field("latency_s", pa.float64()),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("reasks", pa.int32(), nullable=False),
        pa.field("retries", pa.int32(), nullable=False),
        pa.field("answered_at", pa.string()),
        pa.field("batch_id", pa.string()),  # the Batch API batch (or batch file) that answered; null: realtime
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

# The model's codes with the human decisions of a review applied (results/codes_reviewed.parquet, written only when
# `review.corrections` is set): who decided each row, and how.
CODES_REVIEWED = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("quote", pa.string()),
        pa.field("quote_start", pa.int64()),
        pa.field("quote_end", pa.int64()),
        pa.field("decision", pa.string(), nullable=False),
        pa.field("decided_by", pa.string(), nullable=False),
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

# Agreement with human coders (the validate stage): tidy, one row per code, pair (or group) of raters and metric.
AGREEMENT = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),  # dev / holdout (validation.holdout), or all
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string()),  # null: the field as a whole; else the presence of this value
        pa.field("rater_a", pa.string(), nullable=False),  # a rater, or "all" / "humans" for a group
        pa.field("rater_b", pa.string()),  # null for a group or a rater's prevalence
        pa.field("metric", pa.string(), nullable=False),
        pa.field("estimate", pa.float64()),  # null where the statistic is undefined (no variation)
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("n_units", pa.int64(), nullable=False),
        pa.field("assessment", pa.string()),  # good / tentative / poor, for chance-corrected coefficients
    ]
)

CONFUSION = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("rater", pa.string(), nullable=False),
        pa.field("reference", pa.string(), nullable=False),
        pa.field("reference_value", pa.string(), nullable=False),
        pa.field("rater_value", pa.string(), nullable=False),
        pa.field("n_units", pa.int64(), nullable=False),
    ]
)

STABILITY = pa.schema(
    [
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("rater", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("estimate", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("n_units", pa.int64(), nullable=False),
    ]
)

# One row per unit, field and pair of sources that disagree (validity.disagreements): a worklist for review.
DISAGREEMENTS = pa.schema(
    [
        pa.field("unit", pa.string(), nullable=False),  # a doc_id or a chunk_id, as validation.unit says
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("start", pa.int64()),  # the chunk's place in its document; null for a document
        pa.field("end", pa.int64()),
        pa.field("field", pa.string(), nullable=False),
        pa.field("source_a", pa.string(), nullable=False),
        pa.field("value_a", pa.string(), nullable=False),  # the values given, "; "-joined; empty: none
        pa.field("source_b", pa.string(), nullable=False),
        pa.field("value_b", pa.string(), nullable=False),
        pa.field("disputed", pa.string(), nullable=False),  # the values one gave and the other did not
        pa.field("n_sources", pa.int64(), nullable=False),  # sources in some disagreement on this unit and field
    ]
)

# Agreement per code per codebook version, accumulated across runs (validity.history): AGREEMENT's pair rows with
# the codebook that produced them; `revision` numbers the codebooks in the order they were first recorded.
AGREEMENT_HISTORY = pa.schema(
    [
        pa.field("revision", pa.int64(), nullable=False),
        pa.field("codebook_name", pa.string(), nullable=False),
        pa.field("codebook_version", pa.string(), nullable=False),
        pa.field("codebook_sha256", pa.string(), nullable=False),
        pa.field("recorded_at", pa.string(), nullable=False),  # ISO 8601, UTC: the run that recorded the rows
        *[f for f in AGREEMENT if f.name != "assessment"],
    ]
)

# A reviewer's decisions as human codings by the coder `consensus` (exchange.corrections.write_consensus), in the
# tidy layout validity.gold reads, with who decided and when; a row with no field: the decider read the document.
CONSENSUS = pa.schema(
    [
        pa.field("coder", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("value", pa.string()),
        pa.field("start", pa.int64()),
        pa.field("end", pa.int64()),
        pa.field("quote", pa.string()),
        pa.field("decided_by", pa.string(), nullable=False),
        pa.field("decided_at", pa.string(), nullable=False),  # ISO 8601, UTC
    ]
)

# Prevalence of each code over the corpus (the prevalence rule): from the model's codes and corrected with the
# human-coded probability sample (validity.prevalence), overall (by, group null) and by validation.by's groups.
PREVALENCE = pa.schema(
    [
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("by", pa.string()),  # the grouping column (validation.by); null: the whole corpus
        pa.field("group", pa.string()),
        pa.field("unit", pa.string(), nullable=False),  # document or chunk (validation.unit)
        pa.field("n_units", pa.int64(), nullable=False),  # units of the corpus (the group)
        pa.field("naive", pa.float64()),  # share of them the model gave the code
        pa.field("n_sample", pa.int64(), nullable=False),  # human-coded sampled units among them
        pa.field("human_positives", pa.int64(), nullable=False),
        pa.field("disagreements", pa.int64(), nullable=False),  # sampled units where humans and model differ
        pa.field("corrected", pa.float64()),
        pa.field("se", pa.float64()),
        pa.field("ci_low", pa.float64()),  # 95%
        pa.field("ci_high", pa.float64()),
        pa.field("method", pa.string()),
        pa.field("refused", pa.string()),  # why no corrected estimate is given (not a probability sample)
        pa.field("note", pa.string()),  # a warning: too few positives or disagreements for the interval
    ]
)

# Written by the validate stage, always (empty without human codings), after the coding tables.
VALIDATION = ("agreement", "confusion", "stability")

# `snakemake propose` (induction): every candidate code the model proposed for a sampled chunk, its quote's grounding,
# the group it was merged into and the proposed code that group became; and the saturation of the sample.
CANDIDATES = pa.schema(
    [
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),  # the chunk's place in the sample's seeded order
        pa.field("label", pa.string(), nullable=False),
        pa.field("definition", pa.string(), nullable=False),
        pa.field("quote", pa.string(), nullable=False),
        pa.field("grounding", pa.string(), nullable=False),
        pa.field("grounded", pa.bool_(), nullable=False),
        pa.field("quote_start", pa.int64()),
        pa.field("quote_end", pa.int64()),
        pa.field("group", pa.int64()),
        pa.field("code", pa.string()),  # the proposed code's name; null: its group was not proposed
        pa.field("status", pa.string()),  # proposed, new (extending), existing (the codebook has it), not proposed
    ]
)
SATURATION = pa.schema(
    [
        pa.field("batch", pa.int64(), nullable=False),
        pa.field("chunks", pa.int64(), nullable=False),  # chunks read so far
        pa.field("new_codes", pa.int64(), nullable=False),  # groups first met in this batch
        pa.field("codes", pa.int64(), nullable=False),  # groups met so far
    ]
)

EXCERPT_CODE = pa.struct(
    [("field", pa.string()), ("value", pa.string()), ("quote", pa.string()), ("grounding", pa.string())]
)

# The passages to read: one row per chunk in document order, with its document's metadata (`meta_<key>` columns,
# inserted before `text`, as in documents) and every code the chunk got, with its quote and grounding.
EXCERPTS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("start", pa.int64(), nullable=False),
        pa.field("end", pa.int64(), nullable=False),
        pa.field("speakers", pa.list_(pa.string()), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("codes", pa.list_(EXCERPT_CODE), nullable=False),
        pa.field("codes_text", pa.string(), nullable=False),
    ]
)


# The themes stage (analysis.themes). A shard's passage vectors, kept for the next run (not published): hashed term
# counts for the offline vectors (`terms` the indices, `values` the counts), or a provider's embedding (`terms` null).
THEME_VECTORS = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("terms", pa.list_(pa.int32())),
        pa.field("values", pa.list_(pa.float64()), nullable=False),
    ]
)

# One row per theme: its name and description (from the model), size, robustness, the codes most over-represented
# in it (`field=value`, by lift) and its most central chunks.
THEMES = pa.schema(
    [
        pa.field("theme", pa.int32(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("quotes", pa.list_(pa.string()), nullable=False),  # the model's quotes found in the passages shown
        pa.field("n_chunks", pa.int64(), nullable=False),
        pa.field("n_documents", pa.int64(), nullable=False),
        pa.field("share", pa.float64(), nullable=False),
        pa.field("stability", pa.float64()),  # mean share of its chunks kept together by the repeats; null: none
        pa.field("top_codes", pa.list_(pa.string()), nullable=False),
        pa.field("representatives", pa.list_(pa.string()), nullable=False),
    ]
)

# Every coded chunk: its theme (null: unassigned, e.g. a passage sharing no word with another), distance to the theme's
# centre, rank by that distance within the theme (1 = most central), and its place on the 2-D map.
CHUNK_THEMES = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("theme", pa.int32()),
        pa.field("distance", pa.float64()),
        pa.field("rank", pa.int32()),
        pa.field("x", pa.float64()),
        pa.field("y", pa.float64()),
    ]
)

# Themes by code: chunks of the theme with the code, its share of the theme, of all themed chunks, and the lift.
THEME_CODES = pa.schema(
    [
        pa.field("theme", pa.int32(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("n_chunks", pa.int64(), nullable=False),
        pa.field("share", pa.float64(), nullable=False),
        pa.field("overall_share", pa.float64(), nullable=False),
        pa.field("lift", pa.float64(), nullable=False),
    ]
)

# Themes by a document metadata key (`themes.by`); empty when none is set.
THEME_GROUPS = pa.schema(
    [
        pa.field("theme", pa.int32(), nullable=False),
        pa.field("by", pa.string(), nullable=False),
        pa.field("group", pa.string()),
        pa.field("n_chunks", pa.int64(), nullable=False),
        pa.field("share_of_theme", pa.float64(), nullable=False),
        pa.field("share_of_group", pa.float64(), nullable=False),
    ]
)

# The clustering repeated (`themes.stability_runs`): each repeat's seed, and its agreement with the published one.
THEME_RUNS = pa.schema(
    [
        pa.field("run", pa.int32(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("sample", pa.string(), nullable=False),
        pa.field("n_themes", pa.int32(), nullable=False),
        pa.field("ari", pa.float64()),
    ]
)

# Written by the themes stage (`themes.enabled`), in this order.
THEME_TABLES = ("themes", "chunk_themes", "theme_codes", "theme_groups", "theme_runs")


def excerpts_schema(meta_keys: Sequence[str]) -> pa.Schema:
    """EXCERPTS with a `meta_<key>` string column per metadata key of the corpus, before `text`."""
    at = EXCERPTS.get_field_index("text")
    fields = list(EXCERPTS)
    return pa.schema(fields[:at] + [pa.field(f"meta_{k}", pa.string()) for k in meta_keys] + fields[at:])


# The published tables, in the order they are listed everywhere (rules, manifest, tests): adding one here adds it
# to the workflow's outputs and to the manifest's hashes. `codings` has one column per codebook field, `documents`
# and `excerpts` one per metadata key.
PUBLISHED = ("documents", "chunks", "codings", "codes", "llm_calls", "failures", "excerpts")


def schema(name: str, codebook: Codebook | None = None) -> pa.Schema:
    if name == "codings":
        if codebook is None:
            raise ValueError("the codings table's schema depends on the codebook")
        return codings_schema(codebook)
    return {
        "documents": DOCUMENTS, "chunks": CHUNKS, "codes": CODES, "llm_calls": LLM_CALLS, "failures": FAILURES,
        "excerpts": EXCERPTS, "results": RESULTS,  # a coding job's output, not published
        "agreement": AGREEMENT, "confusion": CONFUSION, "stability": STABILITY, "prevalence": PREVALENCE,
        "codes_reviewed": CODES_REVIEWED,  # written only when review.corrections is set
        "theme_vectors": THEME_VECTORS, "themes": THEMES, "chunk_themes": CHUNK_THEMES, "theme_codes": THEME_CODES,
        "theme_groups": THEME_GROUPS, "theme_runs": THEME_RUNS,
        "candidates": CANDIDATES, "saturation": SATURATION,  # snakemake propose
        "disagreements": DISAGREEMENTS, "consensus": CONSENSUS, "agreement_history": AGREEMENT_HISTORY,
    }[name]  # fmt: skip


def check(
    path: str | Path, name: str, columns: Iterable[str] | None = None, read_dictionary: Sequence[str] | None = None
) -> pq.ParquetFile:
    """Open a table written by this pipeline, checking that the columns to be read are there with the registry's
    types; a file from another version or another program gets a message naming it, not a KeyError.
    `read_dictionary` columns will be read dictionary-encoded."""
    pf = pq.ParquetFile(path, read_dictionary=read_dictionary)
    found = pf.schema_arrow
    expected = schema(name) if name != "codings" else pa.schema(CODINGS_FIXED)
    for col in columns if columns is not None else expected.names:
        if col not in expected.names:
            continue  # codebook fields of codings, meta_ columns of documents: checked by their readers
        if col not in found.names:
            raise QualcodeError(f"{path}: not a qualcode {name} table (no column {col!r}); was it written by an "
                                "older version? Run the workflow again to rewrite it")  # fmt: skip
        want, got = expected.field(col).type, found.field(col).type
        if not _compatible(got, want):
            raise QualcodeError(f"{path}: column {col!r} is {got}, not {want}; run the workflow again to rewrite it")
    return pf


def _kind(t: pa.DataType) -> str:
    t = t.value_type if pa.types.is_dictionary(t) else t
    for kind, test in (("string", pa.types.is_string), ("string", pa.types.is_large_string),
                       ("integer", pa.types.is_integer), ("float", pa.types.is_floating)):  # fmt: skip
        if test(t):
            return kind
    return str(t)


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    """Same kind of values: a table rewritten by pandas or R (large strings, other integer widths, a column of
    nothing but nulls) still reads."""
    return got == want or pa.types.is_null(got) or _kind(got) == _kind(want)


def read(
    path: str | Path, name: str, columns: Sequence[str] | None = None, read_dictionary: Sequence[str] | None = None
) -> pa.Table:
    """Read a published or intermediate table (`PUBLISHED`, or "results" for a coding job's output) through the
    registry: only `columns`, after `check`; `read_dictionary` columns come dictionary-encoded.

    One file through ParquetFile, not pq.read_table: that goes through pyarrow.dataset, whose import pulls in
    pandas, half a second of every job's start-up."""
    with check(path, name, columns, read_dictionary) as pf:
        return pf.read(columns=list(columns) if columns is not None else None)


_VALUE_TYPES = {
    "single_choice": pa.string(),
    "multiple_choice": pa.list_(pa.string()),
    "boolean": pa.bool_(),
    "text": pa.string(),
}


CODINGS_FIXED = (
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("chunk_id", pa.string(), nullable=False),
    pa.field("chunk_index", pa.int32(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
)


def codings_schema(codebook: Codebook) -> pa.Schema:
    """Wide: one row per chunk, a value column per field and a `<field>_quote` column where quotes are asked, then
    `empty_fields`: the fields whose answer is empty (no value, or a text without a letter or digit)."""
    cols = list(CODINGS_FIXED)
    for f in codebook.fields:
        cols.append(pa.field(f.name, _VALUE_TYPES[f.type]))
        if f.quote:
            cols.append(pa.field(f"{f.name}_quote", pa.string()))
    cols.append(pa.field("empty_fields", pa.list_(pa.string())))
    return pa.schema(cols)


# -- documents and chunks --------------------------------------------------------------------------


def documents_table(docs: Sequence[Document]) -> pa.Table:
    """Documents, with one `meta_<name>` string column per metadata key found in any document."""
    keys = list(dict.fromkeys(k for d in docs for k in d.metadata))  # the columns in the files' order
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
        for d in docs  # in the order read: files, then rows; a text sort would put #10 before #2
    ]
    return pa.Table.from_pylist(rows, schema=schema)


def read_documents(path: str | Path) -> list[Document]:
    docs = []
    for r in read(path, "documents").to_pylist():
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
            "turn_speaker": c.turn_speaker,
            "context": canonical_json(c.context),
        }
        for c in chunks
    ]
    return pa.Table.from_pylist(rows, schema=CHUNKS)


def chunks_from(table: pa.Table) -> list[Chunk]:
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
            turn_speaker=r.get("turn_speaker"),
            context=json.loads(r.get("context") or "{}"),
        )
        for r in table.to_pylist()
    ]


def read_chunks(path: str | Path, rows: Sequence[int] | None = None) -> list[Chunk]:
    """The chunks at these rows (all by default): a coding job converts only its own shard's."""
    table = read(path, "chunks")
    return chunks_from(table if rows is None else table.take(pa.array(rows, pa.int64())))


# -- coding results --------------------------------------------------------------------------------


def results_table(results: Sequence[ChunkResult]) -> pa.Table:
    return pa.Table.from_pylist([r.to_row() for r in results], schema=RESULTS)


# Columns of the coding results added after shards were first written: a shard coded by an earlier version (kept by
# Snakemake, whose outputs are up to date) has none, and reads with them null, which is what they are: unknown.
RESULTS_ADDED_LATER = frozenset({"tokens_cached", "batch_id"})


def read_results(paths: Iterable[str | Path]) -> list[ChunkResult]:
    rows = []
    for p in paths:
        present = set(pq.read_schema(p).names)
        columns = [c for c in RESULTS.names if c in present or c not in RESULTS_ADDED_LATER]
        rows += [ChunkResult(**r) for r in read(p, "results", columns).to_pylist()]
    return rows


def iter_shards(
    chunks: str | Path, plan: Sequence[Shard], shard_files: Sequence[str | Path]
) -> Iterator[tuple[list[Chunk], list[ChunkResult]]]:
    """Each coding job's chunks and results, one shard at a time (`shard_files` in the plan's order, as the
    workflow lists them). Memory holds the chunks table's columns and one shard's results."""
    table = read(chunks, "chunks")
    for shard, path in zip(plan, shard_files, strict=True):
        results = read_results([path])
        shard_chunks = chunks_from(table.take(pa.array(shard.rows, pa.int64())))
        if [c.chunk_id for c in shard_chunks] != [r.chunk_id for r in results]:
            raise ValueError(f"{path}: its results do not match shard {shard.name} of {chunks}; run the workflow again")
        yield shard_chunks, results


def problems_table(problems: Sequence[IngestProblem]) -> pa.Table:
    rows = [
        {"stage": "ingest", "source_file": p.source_file, "reason": p.problem}
        for p in sorted(problems, key=lambda p: p.source_file)
    ]
    return pa.Table.from_pylist(rows, schema=FAILURES)


def open_csv(path: str | Path) -> TextIO:
    # UTF-8 with a BOM, so Excel reads accents right; line ends inside quoted cells survive.
    return open(path, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115 (the caller closes it)


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection"): a participant's
# words or a model's answer must not become =HYPERLINK(...) in a reviewer's Excel. Such a cell is written with a
# `'` before it, as OWASP recommends; so that the escaping can be undone exactly, a cell that already starts with
# `'`s before one of them gets one more. A number (-3, +1.5e3) is left as it is: no spreadsheet runs it.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_FIRST = frozenset("=+-@\t\r'")  # the characters such a cell can start with: a cheap test before the pattern
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def spreadsheet_text(text: str) -> str:
    """A text cell as the CSVs for spreadsheets hold it: with a `'` before it if it would start a formula."""
    return "'" + text if _FORMULA.match(text) and not _NUMBER.fullmatch(text) else text


def from_spreadsheet_text(text: str) -> str:
    """`spreadsheet_text` undone: the cell as it was before it was written (for a filled review.csv read back)."""
    return text[1:] if text.startswith("'") and spreadsheet_text(text[1:]) != text[1:] else text


def write_csv(df: pd.DataFrame, fh: TextIO, header: bool = True) -> None:
    """Append rows to a CSV opened with `open_csv`, every text cell (and header) through `spreadsheet_text`;
    numbers, booleans and empty cells are written as they are."""
    escaped = df.copy(deep=False)  # a column named `self` would not pass through df.assign
    for name in df.columns:
        if df[name].dtype.kind != "O":
            continue  # numbers and booleans: never text (pandas' string dtypes are kind "O" too)
        values = df[name].tolist()
        if any(isinstance(v, str) and v[:1] in _FIRST and spreadsheet_text(v) != v for v in values):
            escaped[name] = [spreadsheet_text(v) if isinstance(v, str) else v for v in values]
    names = [spreadsheet_text(str(name)) for name in df.columns]
    # CRLF, as RFC 4180 has it: Python's csv quotes a cell holding a character of the line end, so a lone CR in a
    # cell (a model's answer, a metadata value) is quoted too, where with LF line ends it would split the row.
    escaped.to_csv(fh, index=False, header=names if header else False, lineterminator="\r\n")


def write(table: pa.Table, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write one table; `metadata` goes into the file's key-value metadata."""
    with Writer(path, table.schema, metadata) as w:
        w.write(table)


ROW_GROUP_ROWS = 65_536


class Writer:
    """Writes a table piece by piece in row groups of ROW_GROUP_ROWS rows, so a table of any size is written in
    bounded memory, and a table smaller than that gives the same bytes as writing it whole."""

    def __init__(self, path: str | Path, schema: pa.Schema, metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if metadata:
            schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
        self.schema = schema
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._n_pending = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        self._pending.append(table.cast(self.schema) if table.schema != self.schema else table)
        self._n_pending += table.num_rows
        self.rows += table.num_rows
        if self._n_pending >= ROW_GROUP_ROWS:
            self._flush(whole_groups_only=True)

    def _flush(self, whole_groups_only: bool = False) -> None:
        # Row groups always start at multiples of ROW_GROUP_ROWS, so the bytes do not depend on the pieces' sizes.
        pending = pa.concat_tables(self._pending) if self._pending else self.schema.empty_table()
        n = (pending.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS if whole_groups_only else pending.num_rows
        with writing(self.path):  # a full disk: the job's message names this file
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.path, self.schema)
            if n or not whole_groups_only:
                self._writer.write_table(pending.slice(0, n), row_group_size=ROW_GROUP_ROWS)
        rest = pending.slice(n)
        self._pending, self._n_pending = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        self._flush()
        assert self._writer is not None
        with writing(self.path):
            self._writer.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.close()
