"""Refining the codebook (issue 27): the history of agreement per codebook version, which survives new runs and
reaches the methods text."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from qualcode.inputs.codebook import Codebook
from qualcode.outputs import tables
from qualcode.reporting import methods
from qualcode.validity import history


def _codebook(version: str) -> Codebook:
    return Codebook.model_validate({"name": "cb", "version": version, "fields": [
        {"name": "mood", "type": "multiple_choice", "description": "d", "values": [
            {"name": "calm", "definition": "c"}, {"name": "angry", "definition": "a"}]}]})  # fmt: skip


def _agreement(kappas: dict[str, float], n: int) -> pd.DataFrame:
    rows = []
    for value, k in kappas.items():
        for a, b in (("model", "majority"), ("ann", "bob"), ("model", None)):
            metric = "prevalence" if b is None else "cohen_kappa"
            rows.append({"field": "mood", "value": value, "rater_a": a, "rater_b": b, "metric": metric,
                         "estimate": k, "ci_low": None, "ci_high": None, "n_units": n, "assessment": None})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=tables.AGREEMENT).to_pandas()


def _run(tmp_path, version: str, kappas: dict[str, float], n: int, when: str) -> pd.DataFrame:
    cb_path = tmp_path / f"codebook-{version}.yaml"
    cb_path.write_text(f"version: {version}\n")  # the hash is the file's: any two texts differ
    agreement = tmp_path / "agreement.parquet"
    tables.write(pa.Table.from_pandas(_agreement(kappas, n), schema=tables.AGREEMENT, preserve_index=False), agreement)
    return history.update(agreement=agreement, codebook=_codebook(version), codebook_path=cb_path,
                          store=tmp_path / "history" / "h.parquet", out=tmp_path / "results" / "h.parquet",
                          now=when)  # fmt: skip


def test_two_codebook_versions_give_two_rows_per_code_and_a_rerun_replaces_its_own(tmp_path):
    (tmp_path / "results").mkdir()
    _run(tmp_path, "1.0", {"calm": 0.2, "angry": 0.5}, 30, "2026-01-01T00:00:00+00:00")
    _run(tmp_path, "1.0", {"calm": 0.25, "angry": 0.5}, 31, "2026-01-02T00:00:00+00:00")  # the same codebook again
    h = _run(tmp_path, "2.0", {"calm": 0.7, "angry": 0.6}, 28, "2026-01-03T00:00:00+00:00")
    # the store outside results/ holds the same as the run's copy
    assert h.equals(pd.read_parquet(tmp_path / "history" / "h.parquet"))
    assert h.equals(pd.read_parquet(tmp_path / "results" / "h.parquet"))
    kappa = h[(h.rater_a == "model") & (h.metric == "cohen_kappa")]
    per_code = kappa.groupby("value").size()
    assert per_code.to_dict() == {"angry": 2, "calm": 2}
    assert (h.metric != "prevalence").all()  # pairs only
    first = kappa[kappa.revision == 1].set_index("value")
    assert first.at["calm", "estimate"] == 0.25 and first.at["calm", "n_units"] == 31  # the rerun replaced
    assert first.at["calm", "recorded_at"] == "2026-01-02T00:00:00+00:00"
    assert set(kappa[kappa.revision == 2].codebook_version) == {"2.0"}

    text = methods.validation_paragraph(
        _agreement({"calm": 0.7, "angry": 0.6}, 28),
        {"reference": "majority", "unit": "document", "bootstrap": 0, "seed": 1},
        None,
        h,
    )
    assert "revised 1 time" in text
    assert "1.0 (n = 31)" in text and "2.0 (n = 28)" in text
    assert "mood: calm from 0.25 (n = 31) to 0.70 (n = 28)" in text


def test_one_version_says_it_was_not_revised(tmp_path):
    (tmp_path / "results").mkdir()
    h = _run(tmp_path, "1.0", {"calm": 0.2, "angry": 0.5}, 30, "2026-01-01T00:00:00+00:00")
    assert "has not been revised" in history.revisions_text(h)
    assert history.revisions_text(h.iloc[0:0]) is None
