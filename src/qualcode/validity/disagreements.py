"""Disagreements as a worklist: one row per unit, field and pair of sources whose values for the field differ.

The sources are named as in the agreement table: each human coder by name (`consensus`, a reviewer's decisions, is
one of them), `model` and each arm by its name, a replicate after the first as `<rater>#<n>` (`model#2`), and
`majority` (the human coders' majority, consensus left out, when there are two or more). The pairs compared: human
coders among themselves; the model and each arm against each human coder and the majority; each arm against the
model; the replicates of the model (and of each arm) among themselves. A pair disagrees on a unit where both rated
it and the sets of values they gave the field differ (a boolean: true/false; nothing given is the empty set).

The units are every document (or chunk, as `validation.unit` says) of the corpus; a human coder rated the units of
the documents they coded, a model the units of the chunks it coded. The majority gives a value where more than half
of the human coders who rated the unit gave it, and no value where fewer did; a tie on any value of the field leaves
the majority without a rating for that field there.

With a holdout (`validation.holdout`), only the development units are listed: the holdout is never negotiated.

Ordered for review: units where the most sources take part in a disagreement on the field first, then codes that
are rare before common ones (the disputed value given on the fewest units by any source), then by unit (documents
by id, chunks in corpus order) and field in codebook order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import CONSENSUS
from ..inputs.codebook import Codebook
from ..outputs import tables
from . import gold, sampling
from .validation import MODEL, _columns, answers, check_coders, ratings

SEPARATOR = "; "
_ALL = "\0every document"  # no coder's name: a name holds no NUL


def replicate_name(rater: str, replicate: int) -> str:
    return rater if replicate == 1 else f"{rater}#{replicate}"


def pairs_compared(
    humans: Sequence[str], models: Sequence[str], replicates: Mapping[str, int]
) -> list[tuple[str, str]]:
    """The pairs of sources compared (see the module's docstring), in a stable order. `models`: the model first,
    then the arms; `replicates`: how many replicates each has."""
    voters = [h for h in humans if h != CONSENSUS]
    references = list(humans) + (["majority"] if len(voters) >= 2 else [])
    pairs = list(itertools.combinations(humans, 2))
    pairs += [(m, h) for m in models for h in references]
    pairs += [(arm, MODEL) for arm in models if arm != MODEL]
    for m in models:
        names = [replicate_name(m, r) for r in range(1, replicates.get(m, 1) + 1)]
        pairs += list(itertools.combinations(names, 2))
    return pairs


def _majority(presence: Mapping[str, np.ndarray], rated: Mapping[str, np.ndarray], voters: Sequence[str],
              fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The voters' majority: presence (units x columns) and, per unit and field (units x fields), whether it is
    defined (someone rated the unit and no value of the field is tied)."""
    n = sum(rated[v].astype(np.int64) for v in voters)
    given = sum((presence[v] & rated[v][:, None]).astype(np.int64) for v in voters)
    present = 2 * given > n[:, None]
    tied = 2 * given == n[:, None]
    n_fields = int(fields.max()) + 1 if len(fields) else 0
    any_tie = np.zeros((len(n), n_fields), dtype=bool)
    for j in range(n_fields):
        any_tie[:, j] = tied[:, fields == j].any(1)
    return present, (n > 0)[:, None] & ~any_tie


def disagreement_rows(
    cb: Codebook,
    units: pd.DataFrame,
    presence: Mapping[str, np.ndarray],
    rated: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    humans: Sequence[str],
) -> pd.DataFrame:
    """The disagreements among `pairs` of sources. `units`: unit, doc_id, start, end (null for documents), one
    row per unit, in the order of the presence matrices' rows; `presence[s]` units x `_columns(cb)`, `rated[s]`
    the units source s rated, for every source but `majority`, computed here from the `humans` but consensus."""
    columns = _columns(cb)
    field_names = list(dict.fromkeys(f for f, _ in columns))
    field_of = np.array([field_names.index(f) for f, _ in columns], dtype=np.int64)
    pres = dict(presence)
    defined = {s: np.repeat(r[:, None], len(field_names), 1) for s, r in rated.items()}
    if any("majority" in p for p in pairs):
        voters = [h for h in humans if h != CONSENSUS]
        pres["majority"], defined["majority"] = _majority(presence, rated, voters, field_of)
    values = {s: _value_texts(p, columns, field_of, len(field_names)) for s, p in pres.items()}
    given_anywhere = np.zeros(len(columns), dtype=np.int64)
    if pres:
        given_anywhere = np.logical_or.reduce([p for p in pres.values()]).sum(0)
    rarity = {c: int(n) for c, n in zip(columns, given_anywhere, strict=True)}
    rows = []
    for a, b in pairs:
        both = defined[a] & defined[b]
        for j, field in enumerate(field_names):
            cols = np.flatnonzero(field_of == j)
            differ = both[:, j] & (pres[a][:, cols] != pres[b][:, cols]).any(1)
            for u in np.flatnonzero(differ):
                disputed = [columns[c] for c in cols if pres[a][u, c] != pres[b][u, c]]
                rows.append({"_unit": int(u), "_field": j, "field": field, "source_a": a, "value_a": values[a][j][u],
                             "source_b": b, "value_b": values[b][j][u],
                             "disputed": SEPARATOR.join(v for _, v in disputed),
                             "_rarity": min(rarity[c] for c in disputed)})  # fmt: skip
    out = pd.DataFrame(rows, columns=["_unit", "_field", "field", "source_a", "value_a", "source_b", "value_b",
                                      "disputed", "_rarity"])  # fmt: skip
    sources = pd.concat([out[["_unit", "_field", "source_a"]].set_axis(["_unit", "_field", "s"], axis=1),
                         out[["_unit", "_field", "source_b"]].set_axis(["_unit", "_field", "s"], axis=1)])  # fmt: skip
    n_sources = sources.groupby(["_unit", "_field"])["s"].nunique().rename("n_sources")
    out = out.join(n_sources, on=["_unit", "_field"])
    out["n_sources"] = out["n_sources"].fillna(0).astype(np.int64)
    out["_pair"] = np.arange(len(out))
    out = out.sort_values(["n_sources", "_rarity", "_unit", "_field", "_pair"],
                          ascending=[False, True, True, True, True], kind="stable")  # fmt: skip
    located = units.iloc[out["_unit"].to_numpy()].reset_index(drop=True)
    out = pd.concat([located, out.reset_index(drop=True)], axis=1)
    return out[list(tables.DISAGREEMENTS.names)].reset_index(drop=True)


def _value_texts(presence: np.ndarray, columns: list[tuple[str, str]], field_of: np.ndarray, n_fields: int
                 ) -> list[list[str]]:  # fmt: skip
    """Per field, per unit: the values given, joined in codebook order."""
    out = []
    for j in range(n_fields):
        cols = np.flatnonzero(field_of == j)
        names = [columns[c][1] for c in cols]
        out.append([SEPARATOR.join(n for n, on in zip(names, row, strict=True) if on) for row in presence[:, cols]])
    return out


def _units(unit: str, docs: Sequence[str], chunks: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    if unit == "document":
        return pd.DataFrame({"unit": list(names), "doc_id": list(names), "start": pd.array([None] * len(names),
                             dtype="Int64"), "end": pd.array([None] * len(names), dtype="Int64")})  # fmt: skip
    at = chunks.set_index("chunk_id").loc[list(names)]
    return pd.DataFrame(
        {
            "unit": list(names),
            "doc_id": at["doc_id"].to_numpy(),
            "start": at["start"].astype("Int64").to_numpy(),
            "end": at["end"].astype("Int64").to_numpy(),
        }
    )


def disagreements(
    cb: Codebook,
    human: pd.DataFrame,
    chunks: pd.DataFrame,
    docs: Sequence[str],
    unit: str,
    coded: Mapping[tuple[str, int], tuple[pd.DataFrame, pd.Series]],
) -> pd.DataFrame:
    """The disagreements table from the checked human codings (gold rows), the chunks (chunk_id, doc_id, start,
    end, in corpus order), the documents' ids (in corpus order) and the codings by (rater, replicate), each as
    `validation.answers` gives it."""
    models = sorted({r for r, _ in coded}, key=lambda r: (r != MODEL, r))
    humans = sorted(human["coder"].unique()) if len(human) else []
    check_coders(set(humans), models, None)
    everyone = pd.DataFrame({"coder": _ALL, "doc_id": list(docs), "field": pd.NA, "value": pd.NA,
                             "start": pd.NA, "end": pd.NA, "quote": pd.NA})  # fmt: skip
    # a stand-in coder who read every document makes every unit of the corpus a unit (ratings: documents by id,
    # chunks in corpus order), then leaves
    sources = {replicate_name(r, k): v for (r, k), v in coded.items()}
    names, presence, rated = ratings(cb, pd.concat([human, everyone], ignore_index=True), chunks, unit, sources)
    presence.pop(_ALL), rated.pop(_ALL)
    replicates = {m: max(k for r, k in coded if r == m) for m in models}
    return disagreement_rows(cb, _units(unit, docs, chunks, names), presence, rated,
                             pairs_compared(humans, models, replicates), humans)  # fmt: skip


def write_disagreements(
    *,
    cb: Codebook,
    documents: str | Path,
    chunks: str | Path,
    codings: Mapping[tuple[str, int], Sequence[str | Path]],
    gold_files: Sequence[str | Path],
    settings: Mapping[str, Any],
    out: Mapping[str, str | Path],
    metadata: Mapping[str, str] | None = None,
    sample: bool = False,
) -> int:
    """Read what the validate stage reads and write results/disagreements.parquet and its CSV; returns the rows."""
    doc_table = tables.read(documents, "documents", ["doc_id", "text"]).to_pandas()
    texts = dict(zip(doc_table["doc_id"], doc_table["text"], strict=True))
    human, _ = gold.load(gold_files, cb, texts, unit=settings["unit"], on_error=settings["on_error"], sample=sample)
    coded = {key: answers(cb, tables.read_results(files)) for key, files in sorted(codings.items())}
    all_chunks = tables.read(chunks, "chunks", ["chunk_id", "doc_id", "start", "end"]).to_pandas()
    df = disagreements(cb, human, all_chunks, doc_table["doc_id"].tolist(), settings["unit"], coded)
    if settings.get("holdout", 0) > 0:  # the sealed holdout is never reviewed or negotiated: only dev units here
        hold = sampling.in_holdout(df["unit"].tolist(), settings["holdout"], settings["holdout_seed"])
        df = df[~hold].reset_index(drop=True)
    tables.write(pa.Table.from_pandas(df, schema=tables.DISAGREEMENTS, preserve_index=False), out["parquet"],
                 dict(metadata or {}))  # fmt: skip
    with tables.open_csv(out["csv"]) as fh:
        tables.write_csv(df, fh)
    return len(df)


def counts_per_code(df: pd.DataFrame) -> pd.DataFrame:
    """For the report: per field and disputed value, the units in disagreement and the rows."""
    if df.empty:
        return pd.DataFrame(columns=["field", "value", "units", "rows"])
    long = df.assign(value=df["disputed"].str.split(SEPARATOR)).explode("value")
    g = long.groupby(["field", "value"], sort=False)
    return (
        g.agg(units=("unit", "nunique"), rows=("unit", "size"))
        .reset_index()
        .sort_values(["units", "field", "value"], ascending=[False, True, True], kind="stable")
        .reset_index(drop=True)
    )


def sources_codes(
    human: pd.DataFrame, texts: Mapping[str, str], model_codes: pd.DataFrame, arms: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """The codes of every source in the shape of codes.parquet, with a `user` column (None: the run's model, which
    the export names itself): each arm's codes under `arm <name>`, each human coder's under their name, a code
    without offsets on its whole document."""
    frames = [model_codes.assign(user=None)]
    frames += [codes.assign(user=f"arm {name}") for name, codes in sorted(arms.items())]
    coded = human[human["field"].notna()]
    if len(coded):
        whole = coded["start"].isna() | coded["end"].isna()
        ends = coded["doc_id"].map(lambda d: len(texts.get(d, "")))
        frames.append(pd.DataFrame({
            "doc_id": coded["doc_id"].to_numpy(), "chunk_id": None, "field": coded["field"].to_numpy(),
            "value": coded["value"].to_numpy(), "quote": coded["quote"].to_numpy(), "grounded": True,
            "grounding": "exact", "quote_start": coded["start"].where(~whole, 0).astype("int64").to_numpy(),
            "quote_end": coded["end"].where(~whole, ends).astype("int64").to_numpy(),
            "user": coded["coder"].to_numpy(),
        }))  # fmt: skip
    columns = ["doc_id", "chunk_id", "field", "value", "quote", "grounded", "grounding", "quote_start", "quote_end",
               "user"]  # fmt: skip
    return pd.concat([f[columns] for f in frames], ignore_index=True)


def write_sources_qdpx(
    *,
    cb: Codebook,
    documents: str | Path,
    chunks: str | Path,
    codes: str | Path,
    arms: Mapping[str, str | Path],
    gold_files: Sequence[str | Path],
    settings: Mapping[str, Any],
    model: str,
    version: str,
    out: str | Path,
    sample: bool = False,
) -> dict[str, int]:
    """A REFI-QDA project in which every source (the model, each arm, each human coder, the consensus) is its own
    user, to compare them side by side in a QDA program (results/sources.qdpx)."""
    from ..exchange import qdpx  # lxml and the XML Schemas: only this job needs them

    docs = tables.read(documents, "documents").to_pandas()
    texts = dict(zip(docs["doc_id"], docs["text"], strict=True))
    human, _ = gold.load(gold_files, cb, texts, unit="document", on_error=settings["on_error"], sample=sample)
    chunk_table = tables.read(chunks, "chunks", ["chunk_id", "chunk_index", "start", "end"]).to_pandas()
    everyone = sources_codes(human, texts, tables.read(codes, "codes").to_pandas(),
                             {a: tables.read(p, "codes").to_pandas() for a, p in arms.items()})  # fmt: skip
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w+b") as fh:
        return qdpx.write_project(fh, cb, docs, chunk_table, everyone, model, f"qualcode {version}", "chunk")
