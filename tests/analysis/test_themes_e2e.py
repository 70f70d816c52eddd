"""The themes stage in real Snakemake runs: against the fake server answering /v1/embeddings (provider embeddings
through the answer cache), and offline with the embedded model (the default run).

One provider run is shared by its tests: the default run, then the themes forced again (same inputs), then a document
added; the embedded model's run is a second, small one."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from qualcode.outputs.tables import THEME_TABLES

from conftest import _quote_the_passage
from fakeserver import FakeServer, embedding_of
from workflow_helpers import fake_config, run, scratch_copy, write_config

pytestmark = pytest.mark.e2e

ENV = {"QUALCODE_TEST_KEY": "sk-test-themes"}
OUTPUTS = [f"{name}.parquet" for name in THEME_TABLES] + ["themes_excerpts.csv", "themes/methods.md"]
NEW_DOC = (
    "The new ward opened in March. We had masks at last, and the night shift finally had enough staff.\n\n"
    "Still, the pay never changed, and my daughter asked every evening whether I had brought the virus home."
)


def _bytes(results: Path) -> dict[str, bytes]:
    return {name: (results / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    work = scratch_copy(tmp_path_factory.mktemp("themes") / "work")
    results = work / "results"
    with FakeServer(seed=1) as fake:
        fake.answer_fn = _quote_the_passage
        cfg = str(fake_config(work, fake, themes={"embeddings": "emb-1", "by": "occupation", "names": True}))
        run(work, "--configfile", cfg, env=ENV)  # the default run
        first = {"bytes": _bytes(results), "embedded": list(fake.embedded), "chat": fake.count()}
        first["tables"] = {name: pd.read_parquet(results / f"{name}.parquet") for name in THEME_TABLES}
        first["excerpts"] = pd.read_parquet(results / "excerpts.parquet")
        with gzip.open(results / "replay" / "answers.jsonl.gz", "rt") as fh:
            first["archive"] = [json.loads(line) for line in fh]
        first["methods"] = (results / "themes" / "methods.md").read_text()
        first["hashes"] = json.loads((results / "manifest.json").read_text())["sha256"]["outputs"]

        # the same inputs again, the themes forced: nothing sent, the same bytes
        n_chat, n_embed = fake.count(), fake.embedding_requests
        run(work, "themes", "--forcerun", "theme_vectors", "themes", "--configfile", cfg, env=ENV)
        again = {"bytes": _bytes(results), "chat": fake.count() - n_chat, "embed": fake.embedding_requests - n_embed}

        # a document added: only its chunks are embedded
        (work / "data" / "raw" / "narratives" / "zz_new_ward.txt").write_text(NEW_DOC, encoding="utf-8")
        n_texts = len(fake.embedded)
        run(work, "themes", "--configfile", cfg, env=ENV)
        added = {
            "embedded": fake.embedded[n_texts:],
            "excerpts": pd.read_parquet(results / "excerpts.parquet"),
            "chunk_themes": pd.read_parquet(results / "chunk_themes.parquet"),
        }
    return {"first": first, "again": again, "added": added}


def test_the_default_run_writes_the_theme_tables_from_provider_embeddings(provider):
    first = provider["first"]
    coded = first["excerpts"][first["excerpts"].status == "coded"]
    # every coded chunk's text went to /v1/embeddings once
    assert sorted(first["embedded"]) == sorted(coded.text)
    themes, chunk_themes = first["tables"]["themes"], first["tables"]["chunk_themes"]
    # every coded chunk has a theme or is counted as unassigned
    assert sorted(chunk_themes.chunk_id) == sorted(coded.chunk_id)
    assigned = chunk_themes.theme.notna()
    assert themes.n_chunks.sum() == assigned.sum()
    assert (chunk_themes.theme.value_counts().sort_index() == themes.set_index("theme").n_chunks).all()
    n, k = len(coded), len(themes)
    assert f"The {n} coded passages were represented by the embeddings of emb-1" in first["methods"]
    assert f"into {k} theme{'s' * (k != 1)}" in first["methods"]


def test_the_manifest_hashes_the_theme_tables(provider):
    first = provider["first"]
    for name in THEME_TABLES:
        assert first["hashes"][name] == hashlib.sha256(first["bytes"][f"{name}.parquet"]).hexdigest(), name


def test_the_model_names_each_theme_once_and_its_questions_are_archived(provider):
    first = provider["first"]
    themes = first["tables"]["themes"]
    assert not themes.name.str.startswith("Theme ").any() and themes.description.notna().all()
    named = [e for e in first["archive"] if "were grouped together" in str(e["request"]["messages"])]
    assert len(named) == len(themes)
    texts = dict(zip(first["excerpts"].chunk_id, first["excerpts"].text, strict=True))
    for row in themes.itertuples():
        shown = [texts[c] for c in row.representatives]
        # every quote kept is in a passage the model was shown
        assert all(any(" ".join(q.split()).lower() in " ".join(t.split()).lower() for t in shown) for q in row.quotes)


def test_themes_cross_tabulated_by_code_and_metadata(provider):
    first = provider["first"]
    t = first["tables"]
    merged = t["chunk_themes"].merge(first["excerpts"], on="chunk_id")
    # theme x code counts, computed here from excerpts' codes
    expected = {}
    for row in merged.itertuples():
        if pd.isna(row.theme):
            continue
        for code in {(c["field"], c["value"]) for c in row.codes if c["value"]}:
            expected[(int(row.theme), *code)] = expected.get((int(row.theme), *code), 0) + 1
    got = {(r.theme, r.field, r.value): r.n_chunks for r in t["theme_codes"].itertuples()}
    assert got == expected
    groups = t["theme_groups"]
    assert set(groups.by) == {"occupation"}
    by_hand = merged[merged.theme.notna()].groupby(["theme", "meta_occupation"], dropna=False).size()
    assert groups.n_chunks.sum() == by_hand.sum() == t["chunk_themes"].theme.notna().sum()


def test_stability_is_computed_from_the_repeats(provider):
    t = provider["first"]["tables"]
    runs, themes = t["theme_runs"], t["themes"]
    assert list(runs.run) == [1, 2, 3, 4, 5] and runs.ari.between(-1, 1).all()
    assert len(set(runs.seed)) == 5
    assert themes.stability.between(0, 1).all()


def test_excerpts_csv_by_theme_then_centrality(provider):
    first = provider["first"]
    csv = pd.read_csv(pd.io.common.BytesIO(first["bytes"]["themes_excerpts.csv"]), encoding="utf-8-sig")
    ct = first["tables"]["chunk_themes"].dropna(subset=["theme"])
    expected = ct.sort_values(["theme", "rank"]).chunk_id.tolist()
    assert csv.chunk_id.tolist()[: len(expected)] == expected
    for theme, group in csv.groupby("theme"):
        assert group.distance.is_monotonic_increasing, theme


def test_provider_embeddings_are_in_the_replay_archive(provider):
    first = provider["first"]
    embedded = [e for e in first["archive"] if e["request"].get("kind") == "embeddings"]
    coded = first["excerpts"][first["excerpts"].status == "coded"]
    assert sorted(e["request"]["messages"][0]["content"] for e in embedded) == sorted(set(coded.text))
    for e in embedded:
        assert e["response"]["answer"]["embedding"] == embedding_of(e["request"]["messages"][0]["content"])


def test_same_inputs_give_the_same_bytes_and_send_nothing(provider):
    again = provider["again"]
    assert again["chat"] == 0 and again["embed"] == 0
    assert again["bytes"] == provider["first"]["bytes"]


def test_a_document_added_embeds_only_its_chunks(provider):
    added = provider["added"]
    excerpts = added["excerpts"]
    new = excerpts[excerpts.doc_id.str.contains("zz_new_ward") & (excerpts.status == "coded")]
    assert len(new) >= 1
    assert sorted(added["embedded"]) == sorted(new.text)
    assert set(new.chunk_id) <= set(added["chunk_themes"].chunk_id)


@pytest.mark.model
def test_the_embedded_models_default_run_makes_themes_offline(tmp_path):
    work = scratch_copy(tmp_path / "work", data=False)
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    for i, text in enumerate([NEW_DOC, "We ran out of gloves on the night shift.", "Pay was the main worry."]):
        (raw / f"doc{i}.txt").write_text(text, encoding="utf-8")
    cfg = write_config(work, {"cache_dir": str(work / "cache"), "themes": {"n_themes": 2}})
    run(work, "--configfile", str(cfg))
    results = work / "results"
    for name in OUTPUTS:
        assert (results / name).is_file(), name
    chunk_themes = pd.read_parquet(results / "chunk_themes.parquet")
    codings = pd.read_parquet(results / "codings.parquet")
    assert sorted(chunk_themes.chunk_id) == sorted(codings.chunk_id[codings.status == "coded"])
    assert "mini-batch k-means" in (results / "themes" / "methods.md").read_text()
    shutil.rmtree(work / "cache")
