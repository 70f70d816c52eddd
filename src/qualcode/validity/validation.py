"""The validate stage: the model's codes beside the human coders', on a common unit, as agreement tables.

Units: with `document`, a rater gives a value to a document if they gave it anywhere in it (the model: in any of its
coded chunks); with `chunk`, a human code placed by offsets (or a located quote) counts for every chunk it overlaps.
The units are the documents the human coders coded (with `chunk`, their chunks); a human coder rated the units of
the documents they coded, the model every unit of a chunk it coded. A failed chunk is a missing rating, not an
absence.

What is compared: each value of a choice field as presence/absence, and single-choice and boolean fields as a whole
(a nominal variable: a unit where a rater gave several values of a single-choice field is a missing rating for the
field as a whole; a boolean is true if any place says true).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import RESERVED_RATERS
from ..errors import ConfigError
from ..ids import canonical_json, file_sha256, utc_now
from ..inputs.codebook import Codebook, CodeField
from ..outputs import provenance, tables
from ..outputs.results import value_strings
from ..records import ChunkResult
from . import agreement, gold, sampling

MODEL = RESERVED_RATERS[0]  # the run's own model; arms go by their names
RESERVED = set(RESERVED_RATERS)


def reference_used(humans: Sequence[str], reference: str) -> str:
    """The rater the model is scored against: one coder is their own majority."""
    return humans[0] if reference == "majority" and len(humans) == 1 else reference


def human_raters(agreement: pd.DataFrame, models: Sequence[str] = (MODEL,)) -> list[str]:
    """The human coders of an agreement table: every rater named in it but the models (the run's and the arms')."""
    names = set(agreement.rater_a) | set(agreement.rater_b.dropna())
    return sorted(names - RESERVED - set(models))


RARE = 5  # fewer positives than this by a rater: a presence code's coefficients and intervals mean little


def _splits(agreement: pd.DataFrame) -> pd.Series:
    return agreement["split"] if "split" in agreement else pd.Series("all", index=agreement.index)


def positives(agreement: pd.DataFrame) -> dict[tuple[str, str, str, str], int]:
    """(split, field, value, rater) -> the units the rater marked present (the majority too), from the prevalence
    rows."""
    p = agreement[(agreement.metric == "prevalence") & agreement.estimate.notna()]
    return {
        (s, f, v, r): int(round(e * n))
        for s, f, v, r, e, n in zip(_splits(p), p.field, p.value, p.rater_a, p.estimate, p.n_units, strict=True)
    }


def too_rare(agreement: pd.DataFrame, threshold: int = RARE) -> pd.Series:
    """Per row: a presence code compared between raters either of whom marked it present on fewer than
    `threshold` units (its kappa or alpha, interval included, rests on a handful of units)."""
    count = positives(agreement)
    rare = [
        v is not None and v == v and b is not None and b == b
        and min(count.get((s, f, v, a), 0), count.get((s, f, v, b), 0)) < threshold
        for s, f, v, a, b in zip(_splits(agreement), agreement.field, agreement.value, agreement.rater_a,
                                 agreement.rater_b, strict=True)
    ]  # fmt: skip
    return pd.Series(rare, index=agreement.index, dtype=bool)


def majority_basis(agreement: pd.DataFrame) -> tuple[int, int, int] | None:
    """What the coders' majority rested on: (units some coder coded, units only one coder coded, units tied), from
    the first presence code's rows of each split (every presence code is rated on the same units; the splits'
    units are disjoint); None without such rows."""
    rows = agreement[(agreement.rater_a == "majority") & agreement.value.notna()]
    if rows.empty:
        return None
    n = one = tied = 0
    for _, part in rows.groupby(_splits(rows), sort=False):
        first = part[(part.field == part.field.iloc[0]) & (part.value == part.value.iloc[0])]
        by = first.set_index("metric")
        if "majority_one_coder" not in by.index:
            continue
        k = int(by.at["majority_one_coder", "n_units"])
        n += k
        one += round(float(by.at["majority_one_coder", "estimate"] or 0) * k)
        tied += round(float(by.at["majority_tied", "estimate"] or 0) * k)
    return (n, one, tied) if n else None


def check_coders(coders: set[str], models: Sequence[str], reference: str | None) -> None:
    """The human coders' names are free (not reserved, not an arm's), and `reference` (None: not checked), unless
    the majority, is one of them."""
    clash = sorted(coders & (RESERVED | set(models)))
    if clash:
        raise ConfigError(f"validation.gold: coder name(s) {', '.join(clash)} are reserved or name an arm; rename")
    if reference is not None and reference != "majority" and reference not in coders:
        raise ConfigError(
            f"validation.reference: {reference!r} is not one of the human coders ({', '.join(sorted(coders))}); "
            "name one of them, or set it to majority"
        )


def _compared(cb: Codebook) -> list[CodeField]:
    return [f for f in cb.fields if f.type != "text"]


def _columns(cb: Codebook) -> list[tuple[str, str]]:
    """Every (field, value) a rater can give, in codebook order."""
    cols = []
    for f in _compared(cb):
        cols += [(f.name, v.name) for v in f.values] if f.values else [(f.name, "false"), (f.name, "true")]
    return cols


def _presence(rows: pd.DataFrame, n_units: int, columns: list[tuple[str, str]]) -> np.ndarray:
    """units x columns: which values each unit was given (rows: unit, field, value)."""
    at = {c: i for i, c in enumerate(columns)}
    out = np.zeros((n_units, len(columns)), dtype=bool)
    compared = {f for f, _ in columns}
    rows = rows[rows["field"].isin(compared)]  # text fields (summaries) are not compared
    if len(rows):
        col = np.array([at[(f, v)] for f, v in zip(rows["field"], rows["value"], strict=True)])
        out[rows["unit"].to_numpy(dtype=np.int64), col] = True
    return out


def codes_for_raters(
    cb: Codebook, presence: Mapping[str, np.ndarray], rated: Mapping[str, np.ndarray]
) -> list[agreement.Code]:
    """The codes compared: per value of each choice field (absent/present), and single-choice and boolean fields
    as a whole. `presence[r]` is units x `_columns(cb)`, `rated[r]` which units rater r rated."""
    raters = list(presence)
    columns = _columns(cb)
    codes = []
    for f in _compared(cb):
        idx = [i for i, (name, _) in enumerate(columns) if name == f.name]
        names = tuple(columns[i][1] for i in idx)
        if f.type in ("single_choice", "multiple_choice"):
            for i, v in zip(idx, names, strict=True):
                x = np.column_stack([np.where(rated[r], presence[r][:, i], -1) for r in raters]).astype(np.int64)
                codes.append(agreement.Code(f.name, v, ("absent", "present"), x))
        if f.type in ("single_choice", "boolean"):
            cols = []
            for r in raters:
                given = presence[r][:, idx]
                if f.type == "boolean":  # true if any place says true
                    value = np.where(given[:, 1], 1, np.where(given[:, 0], 0, -1))
                else:  # one value, or several (ambiguous) or none: missing
                    value = np.where(given.sum(1) == 1, given.argmax(1), -1)
                cols.append(np.where(rated[r], value, -1))
            codes.append(agreement.Code(f.name, None, names, np.column_stack(cols).astype(np.int64)))
    return codes


def ratings(
    cb: Codebook,
    human: pd.DataFrame,
    chunks: pd.DataFrame,
    unit: str,
    models: Mapping[str, tuple[pd.DataFrame, pd.Series]] | None = None,
) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The units, and each rater's presence matrix and rated units. `human`: checked gold rows; `chunks`:
    chunk_id, doc_id, start, end; `models`: by rater name, the model's codes (doc_id, chunk_id, field, value) and
    the ids of the chunks it coded. Without models, the human coders alone (for documents, `chunks` may be empty)."""
    columns = _columns(cb)
    docs = sorted(human["doc_id"].unique())
    if unit == "document":
        units = docs
        key = {d: i for i, d in enumerate(docs)}
        unit_of_chunk = chunks.assign(unit=chunks["doc_id"].map(key)).dropna(subset=["unit"])
    else:
        unit_of_chunk = chunks[chunks["doc_id"].isin(docs)].reset_index(drop=True)
        unit_of_chunk = unit_of_chunk.assign(unit=np.arange(len(unit_of_chunk)))
        units = unit_of_chunk["chunk_id"].tolist()
    unit_of_chunk = unit_of_chunk.astype({"unit": np.int64})
    presence, rated = {}, {}
    coded_human = human[human["field"].notna()]
    for coder in sorted(human["coder"].unique()):
        mine = human[human["coder"] == coder]
        codes = coded_human[coded_human["coder"] == coder]
        if unit == "document":
            rated_units = mine["doc_id"].map(key).to_numpy()
            rows = codes.assign(unit=codes["doc_id"].map(key))
        else:
            rated_units = unit_of_chunk.loc[unit_of_chunk["doc_id"].isin(mine["doc_id"]), "unit"].to_numpy()
            placed = codes.merge(unit_of_chunk, on="doc_id", suffixes=("", "_chunk"))
            rows = placed[(placed["start"] < placed["end_chunk"]) & (placed["end"] > placed["start_chunk"])]
        presence[coder] = _presence(rows, len(units), columns)
        rated[coder] = np.isin(np.arange(len(units)), rated_units)
    by_chunk = unit_of_chunk.set_index("chunk_id")["unit"]
    for name, (model_codes, coded_chunks) in (models or {}).items():
        model = model_codes[model_codes["chunk_id"].isin(by_chunk.index)]
        presence[name] = _presence(model.assign(unit=model["chunk_id"].map(by_chunk)), len(units), columns)
        ok = coded_chunks[coded_chunks.isin(by_chunk.index)]
        rated[name] = np.isin(np.arange(len(units)), ok.map(by_chunk).to_numpy())
    return units, presence, rated


def agreement_tables(
    cb: Codebook,
    presence: Mapping[str, np.ndarray],
    rated: Mapping[str, np.ndarray],
    reference: str,
    resamples: int,
    seed: int,
    models: Sequence[str] = (MODEL,),
    split: str = "all",
) -> dict[str, pa.Table]:
    """The agreement and confusion tables from each rater's presence matrix and rated units (`ratings`); `models`
    names the raters that are models (scored against the reference), the others are human coders; `split` is
    written on every row (dev, holdout or all)."""
    raters = list(presence)
    humans = [r for r in raters if r not in models]
    if reference != "majority" and reference not in humans:
        raise ConfigError(f"validation.reference: {reference!r} is not one of the human coders ({', '.join(humans)})")
    reference = reference_used(humans, reference)
    n_units = len(next(iter(rated.values()))) if rated else 0
    weights = agreement.bootstrap_weights(n_units, resamples, seed)
    rows, confusion = agreement.evaluate(
        codes_for_raters(cb, presence, rated), raters, list(models), reference, weights
    )
    return {
        "agreement": pa.Table.from_pylist([{**r, "split": split} for r in rows], schema=tables.AGREEMENT),
        "confusion": pa.Table.from_pylist([{**r, "split": split} for r in confusion], schema=tables.CONFUSION),
    }


def split_agreement_tables(
    cb: Codebook,
    units: Sequence[str],
    presence: Mapping[str, np.ndarray],
    rated: Mapping[str, np.ndarray],
    settings: Mapping[str, Any],
    models: Sequence[str] = (MODEL,),
    score_holdout: bool = True,
) -> tuple[dict[str, pa.Table], int]:
    """The agreement and confusion tables by split: with a holdout (validation.holdout > 0) the dev units with
    every model (the arms are compared here), and, if `score_holdout`, the holdout units with the run's model
    only (an arm is not scored on the holdout: it would be chosen on it); without, all units ('all'). Returns the
    tables and the number of holdout units scored (0: the holdout was not scored)."""
    humans = [r for r in presence if r not in models]
    args = (settings["reference"], settings["bootstrap"], settings["seed"])
    if settings.get("holdout", 0) <= 0:
        return agreement_tables(cb, presence, rated, *args, models), 0
    hold = sampling.in_holdout(units, settings["holdout"], settings["holdout_seed"])
    parts = [("dev", ~hold, list(models))]
    if score_holdout:
        parts.append(("holdout", hold, [m for m in models if m == MODEL]))
    built: dict[str, list[pa.Table]] = {"agreement": [], "confusion": []}
    scored = 0
    for split, mask, raters in parts:
        if not mask.any():
            continue
        keep = humans + raters
        part = agreement_tables(cb, {r: presence[r][mask] for r in keep}, {r: rated[r][mask] for r in keep},
                                *args, raters, split)  # fmt: skip
        for name, table in part.items():
            built[name].append(table)
        scored = int(mask.sum()) if split == "holdout" else scored
    return {name: pa.concat_tables(ts) if ts else tables.schema(name).empty_table()
            for name, ts in built.items()}, scored  # fmt: skip


def holdout_sealed(settings: Mapping[str, Any], config_sha256: str) -> bool:
    """Whether the holdout stays unscored: validation.lock names another configuration than this run's."""
    lock = settings.get("lock")
    return settings.get("holdout", 0) > 0 and lock is not None and not config_sha256.startswith(lock)


def answers(cb: Codebook, results: Sequence[ChunkResult]) -> tuple[pd.DataFrame, pd.Series]:
    """A coding's codes (doc_id, chunk_id, field, value, as in codes.parquet) and the ids of the chunks it coded,
    from the coding jobs' results."""
    rows, coded = [], []
    fields = {f.name: f for f in _compared(cb)}
    for r in results:
        if r.status != "coded":
            continue
        coded.append(r.chunk_id)
        answer = json.loads(r.answer_json or "{}")
        for name, f in fields.items():
            rows += [(r.doc_id, r.chunk_id, name, v) for v in value_strings(f, answer[name]["value"])]
    codes = pd.DataFrame(rows, columns=["doc_id", "chunk_id", "field", "value"])
    return codes, pd.Series(coded, dtype=object)


def stability_table(
    cb: Codebook,
    chunk_ids: Sequence[str],
    replicates: Mapping[str, Sequence[tuple[pd.DataFrame, pd.Series]]],
    resamples: int,
    seed: int,
) -> pa.Table:
    """Per rater (the run's model, each arm) with 2+ replicates, over every chunk: Krippendorff's alpha across the
    replicates and the share of chunks whose codes change, per code and per field (any of its values changes)."""
    units = pd.Series(np.arange(len(chunk_ids)), index=list(chunk_ids))
    weights = agreement.bootstrap_weights(len(chunk_ids), resamples, seed)
    columns = _columns(cb)
    rows = []
    for rater, runs in replicates.items():
        if len(runs) < 2:
            continue
        presence, rated = {}, {}
        for i, (codes, coded) in enumerate(runs):
            codes = codes[codes["chunk_id"].isin(units.index)]
            presence[str(i)] = _presence(codes.assign(unit=codes["chunk_id"].map(units)), len(units), columns)
            rated[str(i)] = np.isin(np.arange(len(units)), coded[coded.isin(units.index)].map(units).to_numpy())
        field_changed: dict[str, np.ndarray] = {}
        field_rated: dict[str, np.ndarray] = {}
        for code in codes_for_raters(cb, presence, rated):
            x = code.ratings
            two = (x >= 0).sum(1) >= 2
            lo = np.where(x >= 0, x, np.iinfo(np.int64).max).min(1)
            changed = two & (lo != x.max(1))
            stats = agreement.group_statistics(x, len(code.categories), weights)
            stats["krippendorff_alpha"][0] = agreement.krippendorff_alpha(x, len(code.categories))
            share = weights @ np.column_stack([changed, two]).astype(np.float64)
            metrics = {"krippendorff_alpha": stats["krippendorff_alpha"], "share_changed": agreement._div(
                share[:, 0], share[:, 1])}  # fmt: skip
            for metric, v in metrics.items():
                row = agreement._row(code, rater, None, metric, v, share[0, 1])
                rows.append({k: row[k] for k in tables.STABILITY.names if k != "rater"} | {"rater": rater})
            if code.value is not None:
                field_changed[code.field] = field_changed.get(code.field, np.zeros(len(x), bool)) | changed
                field_rated[code.field] = two
        for field, changed in field_changed.items():
            share = weights @ np.column_stack([changed, field_rated[field]]).astype(np.float64)
            v = agreement._div(share[:, 0], share[:, 1])
            low, high = agreement.interval(v)
            rows.append({"field": field, "value": None, "rater": rater, "metric": "share_changed_any_value",
                         "estimate": float(v[0]) if np.isfinite(v[0]) else None, "ci_low": low, "ci_high": high,
                         "n_units": int(share[0, 1])})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=tables.STABILITY)


def write_validation(
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
) -> tuple[dict[str, int], list[str]]:
    """Read the human codings and the model's, write the agreement, confusion and stability tables (agreement and
    confusion empty without human codings, stability without replicates); returns their row counts and the human
    coding rows skipped (with `on_error: skip`). `codings`: the coding jobs' result files by (rater, replicate),
    the rater being "model" for the run's own settings or an arm's name. `sample`: the documents are a pilot's
    sample, so human codings of the others are left out rather than errors."""
    stamp = {
        **(metadata or {}),
        "qualcode.validation": canonical_json(dict(settings)),
        "qualcode.gold_sha256": json.dumps({str(p): file_sha256(p) for p in gold_files}, sort_keys=True),
    }
    replicates = Counter(rater for rater, _ in codings)
    if not gold_files and max(replicates.values(), default=0) < 2:
        # nothing to compare: the tables are empty, and reading every answer to find that out cost seconds per
        # thousand chunks at the end of every run
        for name in tables.VALIDATION:
            tables.write(tables.schema(name).empty_table(), out[name], stamp)
        return dict.fromkeys(tables.VALIDATION, 0), []
    docs = tables.read(documents, "documents", ["doc_id", "text"]).to_pandas()
    texts = dict(zip(docs["doc_id"], docs["text"], strict=True))
    unit = settings["unit"]
    human, problems = gold.load(gold_files, cb, texts, unit=unit, on_error=settings["on_error"], sample=sample)
    raters = sorted({rater for rater, _ in codings}, key=lambda r: (r != MODEL, r))
    check_coders(set(human["coder"]), raters, None)
    coded = {key: answers(cb, tables.read_results(files)) for key, files in sorted(codings.items())}
    all_chunks = tables.read(chunks, "chunks", ["chunk_id", "doc_id", "start", "end"]).to_pandas()
    built = {name: tables.schema(name).empty_table() for name in tables.VALIDATION}
    config_sha256 = (metadata or {}).get("qualcode.config_sha256", "")
    if holdout_sealed(settings, config_sha256):
        problems.append(f"the holdout was not scored: validation.lock is {settings['lock']}, this run's "
                        f"configuration is {config_sha256}; only dev numbers were computed")  # fmt: skip
    if not human.empty:
        units, presence, rated = ratings(cb, human, all_chunks, unit, {r: coded[r, 1] for r in raters})
        split_tables, scored = split_agreement_tables(
            cb, units, presence, rated, settings, raters, not holdout_sealed(settings, config_sha256)
        )
        built.update(split_tables)
        if scored:
            provenance.record_holdout_scoring(settings["holdout_log"], {
                "scored_at": utc_now(), "config_sha256": config_sha256, "lock": settings.get("lock"),
                "holdout": settings["holdout"], "holdout_seed": settings["holdout_seed"], "units": scored,
                "unit": unit, "gold_sha256": stamp["qualcode.gold_sha256"],
            })  # fmt: skip
    by_rater = {r: [coded[key] for key in sorted(coded) if key[0] == r] for r in raters}
    built["stability"] = stability_table(cb, all_chunks["chunk_id"].tolist(), by_rater, settings["bootstrap"],
                                         settings["seed"])  # fmt: skip
    for name, table in built.items():
        tables.write(table, out[name], stamp)
    return {name: t.num_rows for name, t in built.items()}, problems
