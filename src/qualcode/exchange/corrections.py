"""Human decisions brought back: a filled-in review.csv, or a .qdpx coded in a QDA program, applied to the model's
codes (results/codes_reviewed.parquet), and the same decisions as human codings for the validation stage.

Nothing here asks the model anything: the decisions are applied to the published codes table.

review.csv, one row per chunk and field (as `review.review_rows` writes it):

- `decision` empty: not reviewed; the model's codes stay, decided by the model;
- `accept`: the model's codes stay, decided by the reviewer;
- `reject`: the model's codes for that chunk and field are removed;
- `correct`: `corrected_value` replaces them (several values of a multiple-choice field separated by `;`).

A .qdpx: the project qualcode exported, after a reviewer worked on it. Every coding by another user is a human
coding; for each chunk and field a human coded, the human's values replace the model's. A coding of the model's that
was exported and is no longer in the project was removed by the reviewer, and its code is dropped.

Every row of codes_reviewed says who decided it (`decided_by`) and how (`decision`: unreviewed, accepted,
corrected or added).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from ..config import CONSENSUS
from ..errors import QualcodeError
from ..inputs.codebook import Codebook, CodeField
from ..outputs import tables
from .qdpx import GOLD_COLUMNS, read_codings, user_name
from .review import DECISIONS

TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


class CorrectionError(QualcodeError):
    """A correction cannot be applied: an unknown chunk, field, decision or value. The message names the file and
    the row."""


def _values(f: CodeField, raw: str, where: str) -> list[str]:
    """A corrected value as the tables hold it, or CorrectionError naming `where` and the allowed values."""
    text = raw.strip()
    if f.type == "text":
        return [text]
    if f.type == "boolean":
        if text.lower() in TRUE:
            return ["true"]
        if text.lower() in FALSE:
            return ["false"]
        raise CorrectionError(f"{where}: {text!r} is not a value of boolean field {f.name!r} (true or false)")
    values = [v.strip() for v in text.split(";") if v.strip()] if f.type == "multiple_choice" else [text]
    allowed = [v.name for v in f.values]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise CorrectionError(
            f"{where}: {', '.join(map(repr, unknown)) or 'an empty value'} is not a value of field {f.name!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    if f.type == "single_choice" and len(values) != 1:
        raise CorrectionError(f"{where}: field {f.name!r} takes one value, not {len(values)}")
    return list(dict.fromkeys(values))


def read_review_csv(
    path: str | Path, codebook: Codebook, chunks: pd.DataFrame, default_reviewer: str
) -> dict[tuple[str, str], tuple[str, list[str] | None, str]]:
    """The decisions of a filled review.csv: (chunk_id, field) -> (decision, values or None, reviewer)."""
    path = Path(path)
    try:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise CorrectionError(f"{path}: cannot be read as review.csv: {exc}") from None
    # review.csv was written for spreadsheets, with a ' before any cell a spreadsheet would run as a formula
    rows = rows.map(tables.from_spreadsheet_text)
    rows.columns = [tables.from_spreadsheet_text(str(c)) for c in rows.columns]
    missing = [c for c in ("chunk_id", "field", "decision", "corrected_value") if c not in rows.columns]
    if missing:
        raise CorrectionError(f"{path}: no column {missing[0]!r}; is it the review.csv qualcode wrote?")
    fields = {f.name: f for f in codebook.fields}
    known = set(chunks.chunk_id)
    out: dict[tuple[str, str], tuple[str, list[str] | None, str]] = {}
    seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(rows.to_dict("records")):
        line = i + 2  # the header is line 1
        where = f"{path}, row {line}"
        decision = r["decision"].strip().lower()
        if not decision:
            continue
        if decision not in DECISIONS:
            raise CorrectionError(
                f"{where}: decision {r['decision']!r} is not one of {', '.join(DECISIONS)} (or empty)"
            )
        if r["chunk_id"] not in known:
            raise CorrectionError(f"{where}: chunk {r['chunk_id']!r} is not in this run's chunks")
        f = fields.get(r["field"])
        if f is None:
            raise CorrectionError(f"{where}: field {r['field']!r} is not in the codebook")
        key = (r["chunk_id"], f.name)
        if key in seen:
            raise CorrectionError(f"{where}: chunk {key[0]} field {key[1]} was decided already in row {seen[key]}")
        seen[key] = line
        values = None
        if decision == "correct":
            if not r["corrected_value"].strip() and f.type != "text":
                raise CorrectionError(f"{where}: decision 'correct' needs a corrected_value")
            values = _values(f, r["corrected_value"], where)
        reviewer = (r.get("reviewer") or "").strip() or default_reviewer
        out[key] = (decision, values, reviewer)
    return out


def _row(code: Mapping[str, Any], decision: str, decided_by: str) -> dict[str, Any]:
    keep = ("doc_id", "chunk_id", "chunk_index", "field", "value", "quote", "quote_start", "quote_end")
    return {**{k: code.get(k) for k in keep}, "decision": decision, "decided_by": decided_by}


def _none(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and v != v) or v is pd.NA else v


def apply_review_csv(
    codes: pd.DataFrame, chunks: pd.DataFrame, decisions: Mapping[tuple[str, str], tuple[str, list[str] | None, str]],
    model: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """codes_reviewed rows from the model's codes and a review.csv's decisions."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in codes.to_dict("records"):
        by_key[(c["chunk_id"], c["field"])].append({k: _none(v) for k, v in c.items()})
    chunk = {c.chunk_id: c for c in chunks.itertuples()}
    out = []
    for key in sorted(set(by_key) | set(decisions), key=lambda k: (chunk[k[0]].doc_id, chunk[k[0]].chunk_index, k)):
        model_rows = by_key.get(key, [])
        decision, values, reviewer = decisions.get(key, ("", None, ""))
        if not decision:
            out += [_row(c, "unreviewed", user_name(model)) for c in model_rows]
        elif decision == "accept":
            out += [_row(c, "accepted", reviewer) for c in model_rows]
        elif decision == "correct":
            had = {c["value"]: c for c in model_rows}
            ch = chunk[key[0]]
            base = {"doc_id": ch.doc_id, "chunk_id": ch.chunk_id, "chunk_index": ch.chunk_index, "field": key[1]}
            for v in values or []:
                out.append(_row(had[v], "corrected", reviewer) if v in had else _row({**base, "value": v}, "added",
                                                                                          reviewer))  # fmt: skip
    return out


def _chunks_of(doc_chunks: pd.DataFrame, start: int | None, end: int | None) -> list[Any]:
    """The chunks a human coding belongs to: every chunk holding its whole span, else the one overlapping it most;
    a coding of the whole source belongs to all its chunks."""
    rows = list(doc_chunks.itertuples())
    if start is None or end is None:
        return rows
    holding = [c for c in rows if c.start <= start and end <= c.end]
    if holding:
        return holding
    overlap = [(min(end, c.end) - max(start, c.start), -c.chunk_index, c) for c in rows]
    best = max(overlap, key=lambda t: t[:2], default=None)
    return [best[2]] if best and best[0] > 0 else []


def apply_qdpx(
    codes: pd.DataFrame, chunks: pd.DataFrame, gold: pd.DataFrame, model: str, ungrounded: str,
    notes: list[str] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """codes_reviewed rows from the model's codes and the codings of a .qdpx the reviewer worked on. `notes`
    receives a line for each chunk and field where the reviewer's codes replaced other codes of the model's."""
    me = user_name(model)
    doc_chunks = {d: g for d, g in chunks.groupby("doc_id")}
    span = {c.chunk_id: (c.start, c.end) for c in chunks.itertuples()}
    kept = {(g.doc_id, g.field, g.value, g.start, g.end) for g in gold[gold.coder == me].itertuples()}
    human: dict[tuple[str, str], dict[str, tuple[set[str], dict[str, Any]]]] = defaultdict(dict)
    for g in gold[gold.coder != me].itertuples():
        start, end = _none(g.start), _none(g.end)
        for ch in _chunks_of(doc_chunks.get(g.doc_id, chunks.iloc[0:0]), start, end):
            who, first = human[(ch.chunk_id, g.field)].setdefault(g.value, (set(), {}))
            who.add(g.coder)
            if not first:
                first.update(doc_id=g.doc_id, chunk_id=ch.chunk_id, chunk_index=ch.chunk_index, field=g.field,
                             value=g.value, quote=_none(g.quote), quote_start=start, quote_end=end)  # fmt: skip
    out = []
    replaced: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in codes.to_dict("records"):
        c = {k: _none(v) for k, v in c.items()}
        key = (c["chunk_id"], c["field"])
        if key in human:
            if c["value"] not in human[key] and c["value"] not in replaced[key]:
                replaced[key].append(c["value"])
            continue
        if c["grounded"]:
            exported = (c["doc_id"], c["field"], c["value"], c["quote_start"], c["quote_end"])
        elif ungrounded == "chunk":
            exported = (c["doc_id"], c["field"], c["value"], *span[c["chunk_id"]])
        else:
            exported = None
        if exported is not None and exported not in kept:
            continue  # the reviewer removed the model's coding
        out.append(_row(c, "unreviewed", me))
    had = {(c.chunk_id, c.field, c.value) for c in codes.itertuples()}
    for (chunk_id, field), values in human.items():
        for value, (who, row) in values.items():
            decision = "corrected" if (chunk_id, field, value) in had else "added"
            out.append(_row(row, decision, "; ".join(sorted(who))))
    order = {c.chunk_id: (c.doc_id, c.chunk_index) for c in chunks.itertuples()}
    if notes is not None:
        for key in sorted((k for k, v in replaced.items() if v), key=lambda k: (*order[k[0]], k[1])):
            doc_id, index = order[key[0]]
            given = human[key]
            who = "; ".join(sorted(set().union(*(w for w, _ in given.values()))))
            new, old = ", ".join(map(repr, given)), ", ".join(map(repr, replaced[key]))
            notes.append(
                f"{doc_id}, chunk {index} ({key[0]}), field {key[1]}: {who}'s {new} replaced the model's {old}"
            )
    return sorted(out, key=lambda r: (*order[r["chunk_id"]], r["field"], r["value"]))


def gold_from_review_csv(
    decisions: Mapping[tuple[str, str], tuple[str, list[str] | None, str]],
    codes: pd.DataFrame,
    chunks: pd.DataFrame,
) -> pd.DataFrame:
    """A review.csv's accepted and corrected answers as human codings (the validation stage's shape): the reviewer
    coded the whole chunk, so start and end are the chunk's."""
    chunk = {c.chunk_id: c for c in chunks.itertuples()}
    model_values: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in codes.itertuples():
        model_values[(c.chunk_id, c.field)].append(c.value)
    rows = []
    for (chunk_id, field), (decision, values, reviewer) in sorted(decisions.items()):
        if decision == "correct":
            final = values
        else:  # accepted: the model's values; rejected: the right values are unknown, so none
            final = model_values.get((chunk_id, field), []) if decision == "accept" else []
        ch = chunk[chunk_id]
        for v in final or []:
            rows.append({"coder": reviewer, "doc_id": ch.doc_id, "field": field, "value": v, "start": ch.start,
                         "end": ch.end, "quote": None})  # fmt: skip
    df = pd.DataFrame(rows, columns=GOLD_COLUMNS)
    return df.astype({"start": "Int64", "end": "Int64"})


def write_reviewed(
    *,
    corrections: str | Path,
    codebook: Codebook,
    documents: str | Path,
    chunks: str | Path,
    codes: str | Path,
    model: str,
    reviewer: str,
    ungrounded: str,
    out: str | Path,
    metadata: dict[str, str] | None = None,
) -> tuple[dict[str, int], list[str]]:
    """Apply a review.csv or a .qdpx to the model's codes and write codes_reviewed.parquet. Returns the count of
    rows by decision, and what an import could not use (to log)."""
    chunk_table = tables.read(chunks, "chunks", ["chunk_id", "doc_id", "chunk_index", "start", "end"]).to_pandas()
    code_table = tables.read(codes, "codes").to_pandas()
    notes: list[str] = []
    if Path(corrections).suffix.lower() == ".qdpx":
        docs = tables.read(documents, "documents", ["doc_id", "text"]).to_pandas()
        gold, report = read_codings(corrections, codebook, dict(zip(docs.doc_id, docs.text, strict=True)))
        notes = [f"{corrections}: {line}" for line in report.lines()]
        replaced: list[str] = []
        rows = apply_qdpx(code_table, chunk_table, gold, model, ungrounded, replaced)
        notes += [f"{corrections}: {line}" for line in replaced]
    else:
        decisions = read_review_csv(corrections, codebook, chunk_table, reviewer)
        rows = apply_review_csv(code_table, chunk_table, decisions, model)
    table = pa.Table.from_pylist(rows, schema=tables.CODES_REVIEWED)
    tables.write(table, out, metadata)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["decision"]] += 1
    return dict(sorted(counts.items())), notes


def decided_at(path: str | Path) -> str:
    """When a review was decided, as far as the file tells: its last modification, in UTC."""
    return datetime.fromtimestamp(Path(path).stat().st_mtime, UTC).isoformat(timespec="seconds")


def consensus_rows(gold: pd.DataFrame, model: str | None, when: str) -> pd.DataFrame:
    """Human codings (coder, doc_id, field, value, start, end, quote; from a review.csv or a .qdpx) as the codings
    of the coder `consensus`, each with who decided it; the model's own codings left in a .qdpx are not decisions.
    Every document a decider touched is read by the consensus (a row with no field), so a rejection, which leaves
    no code, still counts as "nothing here"."""
    if model is not None:
        gold = gold[gold["coder"] != user_name(model)]
    coded = gold[gold["field"].notna()]
    read = gold.groupby("doc_id", sort=True)["coder"].agg(lambda s: "; ".join(sorted(set(s)))).reset_index()
    rows = pd.concat(
        [
            coded.assign(decided_by=coded["coder"]),
            read.assign(decided_by=read["coder"], field=None, value=None, start=None, end=None, quote=None),
        ],
        ignore_index=True,
    )
    rows = rows.assign(coder=CONSENSUS, decided_at=when)
    return rows[list(tables.CONSENSUS.names)].astype({"start": "Int64", "end": "Int64"})


def write_consensus(
    *,
    corrections: str | Path,
    codebook: Codebook,
    documents: str | Path,
    chunks: str | Path,
    codes: str | Path,
    model: str,
    reviewer: str,
    out: str | Path,
    metadata: dict[str, str] | None = None,
) -> int:
    """A review's decisions (a filled review.csv: accepted and corrected answers on their chunks; a .qdpx: every
    coding by a user other than the model) as the gold source `consensus`. Sends nothing to the model. Returns the
    rows written."""
    chunk_table = tables.read(chunks, "chunks", ["chunk_id", "doc_id", "chunk_index", "start", "end"]).to_pandas()
    if Path(corrections).suffix.lower() == ".qdpx":
        docs = tables.read(documents, "documents", ["doc_id", "text"]).to_pandas()
        gold, _ = read_codings(corrections, codebook, dict(zip(docs.doc_id, docs.text, strict=True)))
        who = model
    else:
        decisions = read_review_csv(corrections, codebook, chunk_table, reviewer)
        gold = gold_from_review_csv(decisions, tables.read(codes, "codes").to_pandas(), chunk_table)
        chunk = chunk_table.set_index("chunk_id")
        read = pd.DataFrame(
            [{"coder": r, "doc_id": chunk.at[c, "doc_id"]} for (c, _), (_, _, r) in sorted(decisions.items())],
            columns=["coder", "doc_id"],
        )
        gold = pd.concat([gold, read], ignore_index=True)
        who = None
    rows = consensus_rows(gold, who, decided_at(corrections))
    tables.write(pa.Table.from_pandas(rows, schema=tables.CONSENSUS, preserve_index=False), out, metadata)
    return len(rows)
