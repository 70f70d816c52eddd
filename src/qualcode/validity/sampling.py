"""The validation sample (which units humans should code) and the dev/holdout split of the coded units.

The sample is a stratified simple random sample without replacement: within stratum h of N_h units, n_h are drawn,
so every unit of h has inclusion probability n_h / N_h exactly (recorded per unit in sample.csv). Strata: a
metadata column, the model's codes (a unit goes to the stratum of its rarest code, so rare codes get positives), both
or neither. Allocation: `min_per_stratum` from each stratum (all of a smaller one), the rest proportional to the
strata's sizes (largest remainders). The total comes from the interval the researcher wants (`sample_size`) or is
given.

The holdout is not drawn but hashed: a unit is in it when the SHA-256 of (seed, unit id), read as a number in
[0, 1), is below the share. So a unit's side never depends on which other units exist: adding documents moves none.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, QualcodeError
from ..inputs.codebook import Codebook
from ..outputs import tables

SAMPLE_COLUMNS = [
    "unit",
    "doc_id",
    "stratum",
    "stratum_size",
    "stratum_drawn",
    "inclusion_probability",
    "seed",
    "split",
]
NO_CODE = "(no code)"
NO_VALUE = "(none)"


class SampleError(QualcodeError):
    """The validation sample cannot be drawn or the sample file (validation.sample) cannot be read."""


# -- how many ----------------------------------------------------------------------------------------------------


def sample_size(draw: Mapping[str, Any], population: int) -> dict[str, Any]:
    """The number of units to draw and how it was found: given (`size`), or from the wanted half-width h of the
    interval at the given confidence (z its normal quantile), with the finite-population correction
    n = n0 / (1 + (n0 - 1) / N):

    - prevalence p: n0 = z^2 p (1 - p) / h^2 (the normal interval of a proportion);
    - Cohen's kappa k of a code of prevalence p for both raters: chance agreement pe = p^2 + (1 - p)^2, observed
      agreement po = pe + k (1 - pe), n0 = z^2 po (1 - po) / (h^2 (1 - pe)^2) (kappa's large-sample variance
      po (1 - po) / (n (1 - pe)^2), Cohen 1960)."""
    if population <= 0:
        raise SampleError("the frame is empty: no units to draw the validation sample from (run the workflow first)")
    if draw.get("size") is not None:
        n = min(int(draw["size"]), population)
        return {
            "n": n,
            "n0": None,
            "population": population,
            "formula": f"given (validation.draw.size: {draw['size']})",
        }
    z = NormalDist().inv_cdf((1 + draw["confidence"]) / 2)
    h, p = draw["half_width"], draw["prevalence"]
    if draw["target"] == "prevalence":
        n0 = z * z * p * (1 - p) / (h * h)
        formula = f"n0 = z^2 p(1-p)/h^2 with z = {z:.4f}, p = {p}, h = {h}"
    else:
        pe = p * p + (1 - p) * (1 - p)
        po = pe + draw["kappa"] * (1 - pe)
        n0 = z * z * po * (1 - po) / (h * h * (1 - pe) ** 2)
        formula = f"n0 = z^2 po(1-po)/(h^2 (1-pe)^2) with z = {z:.4f}, pe = {pe:.4f}, po = {po:.4f}, h = {h}"
    n = math.ceil(n0 / (1 + (n0 - 1) / population))
    return {"n": min(n, population), "n0": n0, "population": population,
            "formula": formula + f"; n = n0/(1+(n0-1)/N) with N = {population}"}  # fmt: skip


def allocate(sizes: Mapping[str, int], n: int, minimum: int) -> dict[str, int]:
    """Units to draw per stratum: `minimum` from each (all of a smaller one), the rest proportional to the strata's
    sizes, never more than a stratum holds (largest remainders; ties by stratum name). The total is n, or the sum
    of the minima if that is larger."""
    alloc = {h: min(size, minimum) for h, size in sizes.items()}
    remaining = min(n, sum(sizes.values())) - sum(alloc.values())
    while remaining > 0:
        open_ = sorted(h for h in sizes if alloc[h] < sizes[h])
        total = sum(sizes[h] for h in open_)
        quota = {h: remaining * sizes[h] / total for h in open_}
        give = {h: min(sizes[h] - alloc[h], math.floor(quota[h])) for h in open_}
        if sum(give.values()) == 0:  # every quota below one: one more each to the largest remainders
            give = dict.fromkeys(sorted(open_, key=lambda h: (-(quota[h] % 1), h))[:remaining], 1)
        for h, k in give.items():
            alloc[h] += k
        remaining -= sum(give.values())
    return alloc


# -- from what ---------------------------------------------------------------------------------------------------


def meta_column(documents: pd.DataFrame, name: str) -> str:
    for col in (name, f"meta_{name}"):
        if col.startswith("meta_") and col in documents.columns:
            return col
    found = [c for c in documents.columns if c.startswith("meta_")]
    raise ConfigError(f"validation.draw.stratify_by: no metadata column {name!r} in documents.parquet; the corpus "
                      f"has {', '.join(found) or 'no metadata columns'}")  # fmt: skip


def positives(cb: Codebook, codes: pd.DataFrame) -> pd.DataFrame:
    """The model's codes as presences (chunk_id, code): each value of a choice field, and a boolean's true."""
    kinds = {f.name: f.type for f in cb.fields}
    codes = codes[codes["field"].map(kinds).isin(["single_choice", "multiple_choice"])
                  | ((codes["field"].map(kinds) == "boolean") & (codes["value"] == "true"))]  # fmt: skip
    return pd.DataFrame({"chunk_id": codes["chunk_id"], "code": codes["field"] + "=" + codes["value"]})


def frame(
    documents: pd.DataFrame,
    chunks: pd.DataFrame,
    unit: str,
    stratify_by: str | None = None,
    codes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The sampling frame: one row per unit (document or chunk), sorted by unit, with its doc_id and stratum.
    `codes`: the model's presences (`positives`) to stratify by, each unit in the stratum of its rarest code."""
    if unit == "document":
        out = pd.DataFrame({"unit": documents["doc_id"], "doc_id": documents["doc_id"]})
        of_chunk = chunks.set_index("chunk_id")["doc_id"] if codes is not None else None
    else:
        out = pd.DataFrame({"unit": chunks["chunk_id"], "doc_id": chunks["doc_id"]})
        of_chunk = None
    out = out.sort_values("unit", ignore_index=True)
    parts = []
    if stratify_by is not None:
        col = meta_column(documents, stratify_by)
        meta = documents.set_index("doc_id")[col]
        parts.append(out["doc_id"].map(meta).fillna(NO_VALUE).astype(str).map(lambda v: f"{col[5:]}={v}"))
    if codes is not None:
        found = codes.assign(unit=codes["chunk_id"].map(of_chunk) if of_chunk is not None else codes["chunk_id"])
        found = found[found["unit"].isin(out["unit"])].drop_duplicates(["unit", "code"])
        count = found["code"].value_counts()
        # the rarest code (fewest units), ties by name
        found = found.assign(n=found["code"].map(count)).sort_values(["n", "code"])
        rarest = found.drop_duplicates("unit").set_index("unit")["code"]
        parts.append(out["unit"].map(rarest).fillna(NO_CODE))
    if parts:
        stratum = parts[0]
        for p in parts[1:]:
            stratum = stratum + " | " + p
    else:
        stratum = pd.Series("all", index=out.index)
    return out.assign(stratum=stratum.astype(str))


def draw(units: pd.DataFrame, n: int, minimum: int, seed: int) -> pd.DataFrame:
    """The sample: `allocate`d units drawn without replacement within each stratum (strata in name order, units
    in frame order, one seeded generator), with stratum_size N_h, stratum_drawn n_h and the inclusion
    probability n_h / N_h; sorted by unit."""
    sizes = units.groupby("stratum").size()
    alloc = allocate({str(h): int(k) for h, k in sizes.items()}, n, minimum)
    rng = np.random.default_rng(seed)
    members = units.groupby("stratum").indices  # positions in frame order
    picked, size, drawn = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for h in sorted(alloc):
        pos = members[h]
        picked.append(pos[np.sort(rng.choice(len(pos), alloc[h], replace=False))])
        size.append(np.full(alloc[h], len(pos)))
        drawn.append(np.full(alloc[h], alloc[h]))
    out = units.iloc[np.concatenate(picked)].assign(stratum_size=np.concatenate(size),
                                                    stratum_drawn=np.concatenate(drawn))  # fmt: skip
    out = out.assign(inclusion_probability=out["stratum_drawn"] / out["stratum_size"], seed=seed)
    return out.sort_values("unit", ignore_index=True)


# -- dev and holdout ---------------------------------------------------------------------------------------------


def holdout_score(unit: str, seed: int) -> float:
    """A unit's place in [0, 1), from its id and the seed alone."""
    digest = hashlib.sha256(f"{seed}\0{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_holdout(units: Iterable[str], share: float, seed: int) -> np.ndarray:
    """Which units are in the holdout (validation.holdout, validation.holdout_seed)."""
    return np.array([holdout_score(u, seed) < share for u in units], dtype=bool)


def splits(units: Sequence[str], share: float, seed: int) -> list[str]:
    """Each unit's split: 'dev' or 'holdout', or 'all' when there is no holdout (share 0)."""
    if share <= 0:
        return ["all"] * len(units)
    return ["holdout" if h else "dev" for h in in_holdout(units, share, seed)]


# -- the files ---------------------------------------------------------------------------------------------------


def blind_sheet(cb: Codebook, sample: pd.DataFrame, documents: pd.DataFrame, chunks: pd.DataFrame,
                unit: str) -> pd.DataFrame:  # fmt: skip
    """The coding sheet: one row per sampled unit, in the wide layout `gold` reads (doc_id, one empty column per
    compared field; with chunks also chunk_id, start and end, which place the codes), and the text to read last.
    No model code is in it."""
    fields = [f.name for f in cb.fields if f.type != "text"]
    if unit == "document":
        text = documents.set_index("doc_id")["text"]
        out = pd.DataFrame({"doc_id": sample["doc_id"]})
        texts = sample["unit"].map(text)
    else:
        c = chunks.set_index("chunk_id")
        out = pd.DataFrame({"doc_id": sample["doc_id"], "chunk_id": sample["unit"],
                            "start": sample["unit"].map(c["start"]), "end": sample["unit"].map(c["end"])})  # fmt: skip
        texts = sample["unit"].map(c["text"])
    for f in fields:
        out[f] = ""
    out["text"] = texts.to_numpy()
    return out.reset_index(drop=True)


def write_gold_sample(
    *,
    cb: Codebook,
    documents: str | Path,
    chunks: str | Path,
    codes: str | Path | None,
    settings: Mapping[str, Any],
    out: Mapping[str, str | Path],
    version: str = "unknown",
) -> dict[str, Any]:
    """Draw the validation sample and write sample.csv, the blind coding sheet, its REFI-QDA project (the sampled
    documents, no codes) and design.json (the size's formula, the strata); returns the design."""
    from ..exchange import qdpx  # lxml and the XML Schemas: only this job needs them

    draw_settings, unit = settings["draw"], settings["unit"]
    docs = tables.read(documents, "documents").to_pandas()
    chunk_table = tables.read(chunks, "chunks", ["chunk_id", "doc_id", "chunk_index", "start", "end", "text"])
    chunk_table = chunk_table.to_pandas()
    found = None
    if draw_settings["by_codes"]:
        if codes is None:
            raise SampleError("validation.draw.by_codes needs the model's codes (results/codes.parquet)")
        found = positives(cb, tables.read(codes, "codes", ["chunk_id", "field", "value"]).to_pandas())
    units = frame(docs, chunk_table, unit, draw_settings["stratify_by"], found)
    size = sample_size(draw_settings, len(units))
    sample = draw(units, size["n"], draw_settings["min_per_stratum"], draw_settings["seed"])
    sample["split"] = splits(sample["unit"].tolist(), settings["holdout"], settings["holdout_seed"])
    design = {
        **size,
        "drawn": len(sample),
        "unit": unit,
        "seed": draw_settings["seed"],
        "settings": dict(draw_settings),
        "strata": {
            str(h): {"size": int(k), "drawn": int((sample["stratum"] == h).sum())}
            for h, k in units.groupby("stratum").size().items()
        },  # fmt: skip
    }
    for path in out.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tables.open_csv(out["sample"]) as fh:
        tables.write_csv(sample[SAMPLE_COLUMNS], fh)
    with tables.open_csv(out["sheet"]) as fh:
        tables.write_csv(blind_sheet(cb, sample, docs, chunk_table, unit), fh)
    sampled_docs = docs[docs["doc_id"].isin(sample["doc_id"])].reset_index(drop=True)
    no_codes = tables.CODES.empty_table().to_pandas()
    with open(out["qdpx"], "w+b") as fh:  # read back for the schema check
        qdpx.write_project(fh, cb, sampled_docs, chunk_table, no_codes, "validation sample",
                           f"qualcode {version}")  # fmt: skip
    Path(out["design"]).write_text(json.dumps(design, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return design


def read_sample(path: str | Path) -> pd.DataFrame:
    """The sample file named by validation.sample: its units, strata and inclusion probabilities, checked."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"unit": str, "doc_id": str, "stratum": str}, keep_default_na=False,
                         encoding="utf-8-sig")  # fmt: skip
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SampleError(f"{path}: not a readable sample file (validation.sample): {exc}") from None
    missing = [c for c in ("unit", "doc_id", "stratum", "inclusion_probability", "seed") if c not in df.columns]
    if missing:
        raise SampleError(f"{path}: no column(s) {', '.join(missing)}; validation.sample names the sample.csv that "
                          "`snakemake gold_sample` wrote (results/gold_sample/sample.csv)")  # fmt: skip
    p = pd.to_numeric(df["inclusion_probability"], errors="coerce")
    if (p.isna() | (p <= 0) | (p > 1)).any():
        row = int((p.isna() | (p <= 0) | (p > 1)).to_numpy().argmax()) + 2
        raise SampleError(f"{path}, row {row}: inclusion_probability must be a number in (0, 1]")
    if df["unit"].duplicated().any():
        raise SampleError(f"{path}: unit {df['unit'][df['unit'].duplicated()].iloc[0]!r} is listed twice")
    return df.assign(inclusion_probability=p)
