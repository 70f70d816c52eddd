"""Human-human agreement on real data, through qualcode's validation path, checked against an independent computation.

The data: two coders' codes of US educators' open-ended answers on online exam proctoring (Balash et al., USENIX
Security 2023), 14 questions, multi-label codes with `parent->child` sub-codes. It is not in the repository; point
the script at the folder (default: ../shared/extdata/gwusec_proctoring_openended beside the repository):

    python benchmarks/validity_gwusec.py [FOLDER] [--resamples 1000]

Each question becomes a multiple-choice field whose values are its top-level codes (sub-codes folded into their
parent, as the authors' per-code kappas are); a response is a document, coded by a coder if their file gives it
at least one code. The human codings go through gold.check (the tidy layout), validation.ratings (document units, no
model) and validation.agreement_tables, as in the validate stage. Independent check: every per-code Cohen's kappa with
scikit-learn, and Krippendorff's alpha and Gwet's AC1 with the two-rater textbook formulas written out here in plain
Python, on the same units; the script prints both and the largest difference.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from qualcode.inputs.codebook import Codebook
from qualcode.validity import gold, validation

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "extdata" / "gwusec_proctoring_openended"


def _name(code: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", code.strip().lower()).strip("_")


def read(folder: Path) -> tuple[pd.DataFrame, dict[str, str], Codebook]:
    """The codings in qualcode's tidy layout, the responses' texts, and a codebook of the codes found."""
    rows, texts, values = [], {}, {}
    for path in sorted((folder / "irr_inputs").glob("*(primary).csv")):
        question = _name(re.search(r" - (\w+) \(primary\)", path.name).group(1))
        for coder in ("primary", "secondary"):
            df = pd.read_csv(str(path).replace("(primary)", f"({coder})"), dtype=str, keep_default_na=False)
            text_col, code_cols = df.columns[1], [c for c in df.columns if c.startswith("Code")]
            for r in df.itertuples(index=False):
                rec = dict(zip(df.columns, r, strict=True))
                codes = {_name(rec[c].split("->")[0]) for c in code_cols if rec[c].strip()}
                if not codes:
                    continue  # this coder did not code this response
                doc = f"{question}#{rec['ResponseId']}"
                texts[doc] = rec[text_col]
                values.setdefault(question, set()).update(codes)
                rows += [{"coder": coder, "doc_id": doc, "field": question, "value": c} for c in sorted(codes)]
    fields = [
        {
            "name": q,
            "type": "multiple_choice",
            "description": q,
            "values": [{"name": v, "definition": v} for v in sorted(vs)],
        }
        for q, vs in sorted(values.items())
    ]
    cb = Codebook.model_validate({"name": "gwusec", "version": "1", "fields": fields})
    df = pd.DataFrame(rows).assign(start=pd.NA, end=pd.NA, quote=pd.NA)
    df.index = df.index + 2
    return df, texts, cb


def _alpha(a: list[int], b: list[int]) -> float:
    """Krippendorff's alpha, nominal, two coders, no missing: 1 - (n - 1) * disagreements / expected."""
    n = 2 * len(a)
    counts = {c: (a + b).count(c) for c in set(a + b)}
    observed_disagree = 2 * sum(x != y for x, y in zip(a, b, strict=True))
    expected = n * n - sum(v * v for v in counts.values())
    return 1 - (n - 1) * observed_disagree / expected if expected else float("nan")


def _ac1(a: list[int], b: list[int]) -> float:
    po = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    pi = (sum(a) + sum(b)) / (2 * len(a))
    pe = 2 * pi * (1 - pi)  # sum over both categories of pi_k (1 - pi_k), divided by K - 1 = 1
    return (po - pe) / (1 - pe) if pe != 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    if not (args.folder / "irr_inputs").is_dir():
        sys.exit(f"{args.folder}: no irr_inputs folder; give the gwusec_proctoring_openended folder")
    human, texts, cb = read(args.folder)
    diffs = {"cohen_kappa": [], "krippendorff_alpha": [], "gwet_ac1": []}
    independent, parts, n_both, elapsed = {}, [], 0, 0.0
    # one validation per question: each is its own coding exercise, on its own responses
    for field in cb.fields:
        one = Codebook.model_validate({"name": field.name, "version": "1", "fields": [field.model_dump()]})
        mine = human[human.field == field.name]
        start = time.perf_counter()
        checked, _ = gold.check(mine, "gwusec", one, texts, "document", "fail")
        units, presence, rated = validation.ratings(
            one, checked, pd.DataFrame(columns=["chunk_id", "doc_id"]), "document"
        )
        built = validation.agreement_tables(one, presence, rated, "primary", args.resamples, seed=1, models=())
        elapsed += time.perf_counter() - start
        table = built["agreement"].to_pandas()
        parts.append(table)
        both = rated["primary"] & rated["secondary"]
        n_both += int(both.sum())
        columns = validation._columns(one)
        for value in field.values:
            j = columns.index((field.name, value.name))
            a = presence["primary"][both, j].astype(int).tolist()
            b = presence["secondary"][both, j].astype(int).tolist()
            kappa = cohen_kappa_score(a, b) if len(set(a + b)) > 1 else float("nan")
            independent[field.name, value.name] = {"cohen_kappa": kappa, "krippendorff_alpha": _alpha(a, b),
                                                   "gwet_ac1": _ac1(a, b)}  # fmt: skip
    table = pd.concat(parts, ignore_index=True)
    pairs = table[table.rater_b.notna()].set_index(["field", "value", "metric"]).estimate.unstack()
    n = table[table.metric == "cohen_kappa"].set_index(["field", "value"]).n_units
    for key, ours in independent.items():
        for metric, v in ours.items():
            q = pairs.loc[key, metric]
            if np.isnan(v) and np.isnan(q):
                continue
            diffs[metric].append(abs(v - q) if not (np.isnan(v) or np.isnan(q)) else np.inf)
    ind = pd.DataFrame(independent).T
    print(f"{len(cb.fields)} questions, {n_both} responses coded by both coders, {len(pairs)} (question, "
          f"top-level code) pairs; validation path took {elapsed:.1f} s with {args.resamples} resamples")  # fmt: skip
    for metric, label in (("cohen_kappa", "Cohen's kappa"), ("krippendorff_alpha", "Krippendorff's alpha"),
                          ("gwet_ac1", "Gwet's AC1")):  # fmt: skip
        q, i = pairs[metric].dropna(), ind[metric].dropna()
        print(f"{label:22s} qualcode: mean {q.mean():.4f} over {len(q)} codes | independent: mean {i.mean():.4f} over "
              f"{len(i)} codes | largest difference {max(diffs[metric], default=0):.2e}")  # fmt: skip
    q12 = pairs.loc["q12", "cohen_kappa"].dropna()
    print(f"Q12 (the check in SOURCES.md: mean per-code kappa 0.79 over 17 codes): qualcode {q12.mean():.4f} over "
          f"{len(q12)} codes, on {int(n.loc['q12'].max())} responses")  # fmt: skip
    worst = max(max(v, default=0) for v in diffs.values())
    print(
        "independent check:", "PASS" if worst <= 1e-9 else "FAIL", f"(largest difference {worst:.2e}, tolerance 1e-9)"
    )
    if worst > 1e-9:
        sys.exit(1)


if __name__ == "__main__":
    main()
