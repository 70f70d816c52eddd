"""Dev and holdout: a split by unit that documents added later do not move, agreement per split with the arms on dev
only, a lock that keeps the holdout sealed under other configurations, and a record of every scoring."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from qualcode.inputs import codebook
from qualcode.outputs import provenance
from qualcode.validity import sampling, validation

from conftest import DATA

CB = codebook.load(DATA / "codebook.yaml")


def _by_hand(unit: str, share: float, seed: int) -> bool:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{unit}".encode()).digest()[:8], "big") / 2**64 < share


def test_the_split_is_stable_when_documents_are_added():
    before = [f"interviews/{i:04d}.txt" for i in range(1000)]
    after = before + [f"interviews/{i:04d}.txt" for i in range(1000, 3000)]
    rng = np.random.default_rng(1)
    shuffled = list(rng.permutation(after))
    old = dict(zip(before, sampling.in_holdout(before, 0.3, 7), strict=True))
    new = dict(zip(shuffled, sampling.in_holdout(shuffled, 0.3, 7), strict=True))
    assert all(new[u] == old[u] for u in before)  # nobody moves, whatever else is in the corpus or its order
    assert all(old[u] == _by_hand(u, 0.3, 7) for u in before)
    assert np.mean(list(new.values())) == pytest.approx(0.3, abs=0.03)
    assert sampling.splits(before[:3], 0, 7) == ["all"] * 3
    other = sampling.in_holdout(before, 0.3, 8)
    assert (other != np.array(list(old.values()))).any()  # another seed, another holdout


def _presence(n):
    cols = len(validation._columns(CB))
    presence = {r: np.random.default_rng(i).random((n, cols)) < 0.4 for i, r in enumerate(("ann", "ben", "model",
                                                                                              "big"))}  # fmt: skip
    rated = {r: np.ones(n, dtype=bool) for r in presence}
    return presence, rated


SETTINGS = {"reference": "majority", "bootstrap": 50, "seed": 3, "holdout": 0.4, "holdout_seed": 5}


def test_agreement_is_given_for_dev_and_holdout_apart_and_arms_only_on_dev():
    units = [f"d{i:03d}" for i in range(60)]
    presence, rated = _presence(60)
    built, scored = validation.split_agreement_tables(CB, units, presence, rated, SETTINGS, ["model", "big"])
    a = built["agreement"].to_pandas()
    hold = np.array([_by_hand(u, 0.4, 5) for u in units])
    assert scored == hold.sum() > 0
    assert set(a.split) == {"dev", "holdout"} and set(built["confusion"].to_pandas().split) == {"dev", "holdout"}
    raters = lambda d: set(d.rater_a) | set(d.rater_b.dropna())  # noqa: E731
    assert "big" in raters(a[a.split == "dev"]) and "big" not in raters(a[a.split == "holdout"])
    # each split's numbers are those of its units alone
    for split, mask, models in (("dev", ~hold, ["model", "big"]), ("holdout", hold, ["model"])):
        keep = ["ann", "ben", *models]
        alone = validation.agreement_tables(CB, {r: presence[r][mask] for r in keep},
                                            {r: rated[r][mask] for r in keep}, "majority", 50, 3, models)  # fmt: skip
        mine = a[a.split == split].drop(columns="split").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone["agreement"].to_pandas().drop(columns="split"))
        assert mine[mine.metric == "krippendorff_alpha"].n_units.max() == mask.sum()
    # sealed: the dev numbers only
    built, scored = validation.split_agreement_tables(CB, units, presence, rated, SETTINGS, ["model"], False)
    assert scored == 0 and set(built["agreement"].to_pandas().split) == {"dev"}
    # no holdout: everything, as before
    built, _ = validation.split_agreement_tables(CB, units, presence, rated, {**SETTINGS, "holdout": 0}, ["model"])
    assert set(built["agreement"].to_pandas().split) == {"all"}


def test_the_lock_seals_the_holdout_under_any_other_configuration():
    h = "ab" * 32
    assert validation.holdout_sealed({"holdout": 0.3, "lock": "cd" * 6}, h)
    assert not validation.holdout_sealed({"holdout": 0.3, "lock": h[:12]}, h)
    assert not validation.holdout_sealed({"holdout": 0.3, "lock": None}, h)
    assert not validation.holdout_sealed({"holdout": 0, "lock": "cd" * 6}, h)


def test_each_scoring_is_appended_to_the_log_the_manifest_reads(tmp_path):
    from qualcode import config

    log = tmp_path / "kept" / "holdout_scoring.jsonl"
    provenance.record_holdout_scoring(log, {"config_sha256": "a" * 64, "units": 3})
    provenance.record_holdout_scoring(log, {"config_sha256": "b" * 64, "units": 3})
    raw = yaml.safe_load((DATA.parent.parent / "config" / "config.yaml").read_text())
    raw["validation"].update(holdout=0.2, holdout_log=str(log))
    got = provenance.holdout(config.resolve(raw))
    assert [s["config_sha256"] for s in got["scorings"]] == ["a" * 64, "b" * 64]
    assert got["configurations"] == ["a" * 64, "b" * 64] and got["share"] == 0.2
    assert [json.loads(line)["units"] for line in log.read_text().splitlines()] == [3, 3]


@pytest.mark.e2e
def test_the_manifest_and_methods_record_every_scoring_of_the_holdout(tmp_path, fake_server):
    import pyarrow.parquet as pq

    from workflow_helpers import fake_config, run, scratch_copy

    workdir = scratch_copy(tmp_path / "wf")
    env = {"QUALCODE_TEST_KEY": "loopback"}
    results, log = workdir / "results", workdir / "holdout_scoring.jsonl"

    def run_with(**validation):
        cfg = fake_config(workdir, fake_server, validation={"holdout": 0.5, **validation})
        run(workdir, "results/manifest.json", "--configfile", str(cfg), env=env)
        return (pd.read_parquet(results / "agreement.parquet"), json.loads((results / "manifest.json").read_text()),
                (results / "methods.md").read_text())  # fmt: skip

    # locked to another configuration: the holdout stays sealed
    a, manifest, methods = run_with(lock="0" * 12)
    assert set(a.split) == {"dev"} and not log.exists() and manifest["holdout"]["scorings"] == []
    assert "the holdout was not scored" in (results / "logs/validate/validate.log").read_text()
    assert "The holdout has not been scored." in methods
    config_hash = pq.read_schema(results / "agreement.parquet").metadata[b"qualcode.config_sha256"].decode()

    # locked to this run's: scored, recorded, and said so
    a, manifest, methods = run_with(lock=config_hash[:12])
    assert set(a.split) == {"dev", "holdout"}
    held = a[a.split == "holdout"]
    assert set(held.rater_a) | set(held.rater_b.dropna()) <= {"model", "coder_a", "coder_b", "majority", "all",
                                                              "humans"}  # fmt: skip
    # each split's human pair rests on the documents both coders coded that fall in it, by the hash
    coders = ("coder_a", "coder_b")
    both = set.intersection(*(set(pd.read_csv(workdir / f"config/gold/{c}.csv").doc_id) for c in coders))
    seed = manifest["holdout"]["seed"]
    for split in ("dev", "holdout"):
        pair = a[(a.split == split) & (a.rater_a == "coder_a") & (a.rater_b == "coder_b")]
        expected = sum(_by_hand(d, 0.5, seed) == (split == "holdout") for d in both)
        assert pair.n_units.max() == expected
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["config_sha256"] for s in lines] == [config_hash] and lines[0]["units"] > 0
    assert manifest["holdout"]["scorings"] == lines and manifest["holdout"]["lock"] == config_hash[:12]
    assert f"were fixed (configuration hash {config_hash[:12]}) before the holdout was scored" in methods

    # the results deleted and the run made again without a lock: the record survives, and methods says so
    import shutil

    shutil.rmtree(results)
    a, manifest, methods = run_with()
    assert [s["config_sha256"] for s in manifest["holdout"]["scorings"]] == [config_hash, config_hash]
    assert "The holdout was scored 2 time(s) under 1 configuration(s)" in methods


def test_the_report_and_methods_give_dev_and_holdout_apart(tmp_path):
    from qualcode.reporting import agreement as page
    from qualcode.reporting import methods

    units = [f"d{i:03d}" for i in range(60)]
    presence, rated = _presence(60)
    built, _ = validation.split_agreement_tables(CB, units, presence, rated, SETTINGS, ["model", "big"])
    a = built["agreement"].to_pandas()
    rows = page.forest(a, "majority", ["model", "big"])
    assert set(rows.comparison) == {"human-human (dev)", "human-human (holdout)", "model vs majority (dev)",
                                    "model vs majority (holdout)", "big vs majority (dev)"}  # fmt: skip
    page.plot_agreement(a, "majority", tmp_path / "forest.png", ["model", "big"])
    assert (tmp_path / "forest.png").stat().st_size > 0
    page.agreement_html(a, built["confusion"].to_pandas(), "majority", tmp_path / "a.html", ["model", "big"])
    html = (tmp_path / "a.html").read_text()
    assert "<th>split</th>" in html and "<td>holdout</td>" in html and "<td>dev</td>" in html
    settings = {"unit": "document", "reference": "majority", "bootstrap": 50, "seed": 3, "replicates": 1,
                "arms": {"big": {"llm": {"model": "big-model"}}}}  # fmt: skip
    text = methods.validation_paragraph(a, settings)
    assert "The figures below are on the holdout units; the arms', on dev" in text and "Between arm big" in text


def test_methods_say_whether_the_configuration_was_fixed_before_the_holdout_was_scored():
    from qualcode.reporting.methods import holdout_paragraph

    h = "c" * 64
    base = {"share": 0.3, "seed": 5, "lock": h[:12]}
    assert holdout_paragraph({**base, "share": 0}) is None
    assert "has not been scored" in holdout_paragraph({**base, "scorings": []})
    locked = [{"config_sha256": h, "lock": h[:12]}] * 2
    assert f"were fixed (configuration hash {h[:12]}) before the holdout was scored (2 time(s)" in holdout_paragraph(
        {**base, "scorings": locked}
    )
    early = [{"config_sha256": "d" * 64, "lock": None}, *locked]
    text = holdout_paragraph({**base, "scorings": early})
    assert "scored 3 time(s) under 2 configuration(s)" in text and "were fixed" not in text
