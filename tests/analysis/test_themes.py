"""The themes stage's library: passage vectors (offline, or a provider's through the answer cache), the seeded
clustering, its stability and the theme tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score

from qualcode.analysis import embeddings, themes
from qualcode.coding import archive
from qualcode.coding import embeddings as provider
from qualcode.coding.cache import AnswerCache
from qualcode.config import Config, LLMConfig, ThemesConfig
from qualcode.outputs import tables
from qualcode.records import LLMRequest

from fakeserver import FakeServer, embedding_of


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


def _llm(fake) -> LLMConfig:
    return LLMConfig(provider="openai", model="chat-model", base_url=fake.base_url, structured_output="json_object")


# -- provider embeddings: through coding/, the cache and the archive ---------------------------------------------


def test_provider_embeddings_are_cached_per_text_and_model(server, tmp_path):
    llm = _llm(server)
    with AnswerCache(tmp_path / "cache") as cache:
        vectors, sent = provider.embed(["masks ran out", "pay was low", "masks ran out"], llm, "emb-a", cache)
        assert sent == 2 and server.embedded == ["masks ran out", "pay was low"]  # the same text is sent once
        assert vectors[0] == vectors[2] == embedding_of("masks ran out")
        again, sent = provider.embed(["pay was low", "masks ran out"], llm, "emb-a", cache)
        assert sent == 0 and server.embedding_requests == 1
        assert again == [vectors[1], vectors[0]]
        _, sent = provider.embed(["pay was low", "a new passage"], llm, "emb-b", cache)  # another model: asked again
        assert sent == 2 and server.embedded[-2:] == ["pay was low", "a new passage"]
    assert server.count() == 0  # no chat request


def test_many_texts_go_in_batches_and_keep_their_order(server, tmp_path):
    texts = [f"passage number {i} about shift {i % 7}" for i in range(provider.BATCH * 2 + 5)]
    with AnswerCache(tmp_path / "cache") as cache:
        vectors, sent = provider.embed(texts, _llm(server), "emb-a", cache)
    assert sent == len(texts) and server.embedding_requests == 3
    assert vectors == [embedding_of(t) for t in texts]


def test_the_replay_archive_rebuilds_embeddings_with_no_server(server, tmp_path):
    llm, texts = _llm(server), ["gloves on nights", "my kids at home"]
    with AnswerCache(tmp_path / "cache") as cache:
        vectors, _ = provider.embed(texts, llm, "emb-a", cache)
    path = tmp_path / "answers.jsonl.gz"
    assert archive.export(provider.archive_pairs(texts, vectors, llm, "emb-a"), path) == 2
    with AnswerCache(tmp_path / "empty") as fresh:
        assert archive.import_(path, fresh) == 2
        server.stop()  # nothing may be sent now
        rebuilt, sent = provider.embed(texts, llm, "emb-a", fresh)
    assert sent == 0 and rebuilt == vectors


def test_a_chat_requests_key_does_not_change_with_the_new_kind_field():
    req = LLMRequest(provider="openai", base_url="http://x/v1", model="m", messages=({"role": "user", "content": "t"},),
                     temperature=0, top_p=1, max_tokens=5, seed=None, response_format=None)  # fmt: skip
    assert "kind" not in json.loads(req.canonical())
    embedding = req.model_copy(update={"kind": "embeddings"})
    assert json.loads(embedding.canonical())["kind"] == "embeddings" and embedding.key() != req.key()


def test_provider_embeddings_need_an_openai_compatible_llm():
    with pytest.raises(ValueError, match="themes.embeddings 'emb' needs llm.provider: openai"):
        Config.model_validate({"themes": {"embeddings": "emb"}})
    Config.model_validate({"themes": {"embeddings": "emb", "enabled": False}})  # not used: no error


# -- offline vectors stored by shard ----------------------------------------------------------------------------

TEXTS = (
    [f"we had no masks and no gloves on ward {i}" for i in range(6)]
    + [f"the pay is low and the rent went up again {i}" for i in range(6)]
    + [f"my children were scared I would bring it home {i}" for i in range(6)]
)


def _stored(texts, cut):
    terms, counts = embeddings.count_rows(texts)
    m = embeddings.stored_matrix(terms, counts)
    return lambda: iter([m[a:b] for a, b in zip([0, *cut], [*cut, len(texts)], strict=True)])


def test_vectors_do_not_depend_on_how_the_passages_are_split_into_shards():
    whole = embeddings.reduce_pieces(_stored(TEXTS, []), 8, 0)
    split = embeddings.reduce_pieces(_stored(TEXTS, [5, 11, 12]), 8, 0)
    assert whole.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(whole, split, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)


def test_above_the_fitting_sample_every_row_is_still_transformed(monkeypatch):
    monkeypatch.setattr(embeddings, "FIT_ROWS", 7)
    x = embeddings.reduce_pieces(_stored(TEXTS, [4, 9]), 4, 0)
    assert x.shape == (len(TEXTS), 4) and np.isfinite(x).all()
    assert np.array_equal(x, embeddings.reduce_pieces(_stored(TEXTS, [4, 9]), 4, 0))  # seeded


def test_the_public_vectors_function_offline_and_by_provider(server, tmp_path):
    offline = embeddings.vectors(TEXTS, dims=6, seed=1)
    assert offline.shape == (len(TEXTS), 6)
    with AnswerCache(tmp_path / "cache") as cache:
        by_provider = embeddings.vectors(TEXTS, model="emb-a", llm=_llm(server), cache=cache, dims=6)
    assert by_provider.shape[0] == len(TEXTS) and by_provider.shape[1] <= 6
    assert sorted(server.embedded) == sorted(TEXTS)


# -- the clustering ----------------------------------------------------------------------------------------------


def _blobs(sizes, spread, seed=0, dims=8):
    rng = np.random.default_rng(seed)
    centres = np.eye(dims)[: len(sizes)] * 3
    x = np.vstack([c + rng.normal(0, spread, (n, dims)) for c, n in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return x.astype(np.float32), truth


def _passages(n, codes=None, groups=None):
    return themes.Passages(
        chunk_ids=[f"c{i:03d}" for i in range(n)], doc_ids=[f"d{i // 3}" for i in range(n)],
        chunk_index=[i % 3 for i in range(n)], texts=[f"text {i}" for i in range(n)],
        codes=codes or [[] for _ in range(n)], group=groups,
    )  # fmt: skip


def test_separated_groups_are_found_and_numbered_by_size():
    x, truth = _blobs([30, 12, 20], 0.05)
    result = themes.build(x, _passages(len(x)), ThemesConfig())
    c = result.clustering
    assert c.k == 3 and "silhouette" in c.criterion
    assert adjusted_rand_score(truth, c.labels) == 1.0
    assert result.tables["themes"].column("n_chunks").to_pylist() == [30, 20, 12]
    # robust themes: every repeat agrees, every theme stays together
    assert result.tables["theme_runs"].column("ari").to_pylist() == [1.0] * 5
    assert result.tables["themes"].column("stability").to_pylist() == [1.0, 1.0, 1.0]


def test_stability_is_measured_not_assumed():
    x = np.random.default_rng(3).normal(size=(200, 8)).astype(np.float32)  # no structure at all
    result = themes.build(x, _passages(len(x)), ThemesConfig(n_themes=6))
    aris = result.tables["theme_runs"].column("ari").to_pylist()
    assert len(aris) == 5 and min(aris) < 0.9
    assert min(result.tables["themes"].column("stability").to_pylist()) < 1.0


def test_the_number_of_themes_as_given_and_passages_with_nothing_to_compare_are_unassigned():
    x, _ = _blobs([10, 10], 0.05)
    x = np.vstack([x, np.zeros((2, x.shape[1]), dtype=np.float32)])
    result = themes.build(x, _passages(len(x)), ThemesConfig(n_themes=4))
    ct = result.tables["chunk_themes"].to_pandas()
    assert ct.theme.isna().sum() == 2 and result.unassigned == 2
    assert sorted(ct.theme.dropna().unique()) == [1, 2, 3, 4]
    assert result.tables["themes"].column("n_chunks").to_pylist()[0] > 0
    sentence = themes.methods_sentence(result.summary(), ThemesConfig(n_themes=4))
    assert "2 passages shared no word with any other passage and were left unassigned" in sentence
    assert "into 4 themes, 4 themes, as set" in sentence


def test_code_and_group_cross_tabs_match_a_count_by_hand():
    x, truth = _blobs([8, 8], 0.05)
    rng = np.random.default_rng(1)
    values = ["fear", "pay", "care"]
    codes = [[{"field": "topic", "value": v, "quote": None, "grounding": "none"}
              for v in sorted(set(rng.choice(values, size=2)))] for _ in range(16)]  # fmt: skip
    groups = [["nurse", "doctor", None][i % 3] for i in range(16)]
    settings = ThemesConfig(n_themes=2, by="occupation")
    result = themes.build(x, _passages(16, codes, groups), settings)
    labels = result.clustering.labels
    long = pd.DataFrame([(labels[i], c["value"]) for i in range(16) for c in codes[i]], columns=["theme", "value"])
    n_theme = pd.Series(labels).value_counts()
    overall = long.value_counts("value") / 16
    got = result.tables["theme_codes"].to_pandas()
    for row in got.itertuples():
        n = ((long.theme == row.theme) & (long.value == row.value)).sum()
        assert row.n_chunks == n and row.share == pytest.approx(n / n_theme[row.theme], abs=1e-6)
        assert row.lift == pytest.approx(n / n_theme[row.theme] / overall[row.value], abs=1e-5)
    assert got.n_chunks.sum() == len(long)
    g = result.tables["theme_groups"].to_pandas()
    assert set(g.by) == {"occupation"} and g.n_chunks.sum() == 16
    by_hand = pd.DataFrame({"theme": labels, "group": groups}).groupby(["theme", "group"], dropna=False).size()
    assert sorted(g.n_chunks) == sorted(by_hand)


def test_same_inputs_give_byte_identical_tables(tmp_path):
    texts = TEXTS + ["", "!!!"]  # two passages with no words
    ids = [f"c{i:03d}" for i in range(len(texts))]
    stores = []
    for name, rows in (("aaa", slice(0, 9)), ("bbb", slice(9, None))):
        path = tmp_path / "vectors" / f"{name}.parquet"
        tables.write(themes.shard_vectors(ids[rows], texts[rows], None), path)
        stores.append(path)
    excerpts = pa.Table.from_pylist(
        [{"doc_id": f"d{i // 4}", "chunk_index": i % 4, "chunk_id": c, "status": "coded", "start": 0, "end": 1,
          "speakers": [], "text": t, "codes": [], "codes_text": ""}
         for i, (c, t) in enumerate(zip(ids, texts, strict=True))],
        schema=tables.EXCERPTS,
    )  # fmt: skip
    tables.write(excerpts, tmp_path / "excerpts.parquet")
    written = []
    for run in ("one", "two"):
        out = {name: tmp_path / run / f"{name}.parquet" for name in tables.THEME_TABLES}
        out |= {"excerpts_csv": tmp_path / run / "themes_excerpts.csv", "methods": tmp_path / run / "methods.md"}
        result = themes.write_outputs(stores, tmp_path / "excerpts.parquet", ThemesConfig(), out, {"origin": "x"})
        written.append({k: v.read_bytes() for k, v in out.items()})
    assert written[0] == written[1]
    assert result.unassigned == 2 and result.summary()["n_chunks"] == len(texts)
    csv = pd.read_csv(tmp_path / "one" / "themes_excerpts.csv", encoding="utf-8-sig")
    assert csv.theme.isna().sum() == 2 and csv.theme.isna().tolist()[-2:] == [True, True]  # unassigned last


# -- the report ----------------------------------------------------------------------------------------------------


def test_the_report_draws_a_bounded_map_and_a_page_with_quotes_in_context(tmp_path, monkeypatch):
    from qualcode.reporting import themes as report_themes

    x, _ = _blobs([12, 9], 0.05)
    texts = [f"Before <b>words</b> the quote {i} after words" for i in range(21)]
    codes = [[{"field": "topic", "value": "care" if i < 12 else "pay", "quote": f"the quote {i}",
               "grounding": "exact"}] for i in range(21)]  # fmt: skip
    p = _passages(21, codes)
    p.texts = texts
    result = themes.build(x, p, ThemesConfig(n_themes=2))
    paths = {name: tmp_path / f"{name}.parquet" for name in tables.THEME_TABLES}
    for name, path in paths.items():
        tables.write(result.tables[name], path)
    excerpts = pa.Table.from_pylist(
        [{"doc_id": p.doc_ids[i], "chunk_index": p.chunk_index[i], "chunk_id": p.chunk_ids[i], "status": "coded",
          "start": 0, "end": 1, "speakers": [], "text": texts[i], "codes": codes[i], "codes_text": ""}
         for i in range(21)], schema=tables.EXCERPTS)  # fmt: skip
    tables.write(excerpts, tmp_path / "excerpts.parquet")
    (tmp_path / "methods.md").write_text(themes.methods_sentence(result.summary(), ThemesConfig(n_themes=2)))

    monkeypatch.setattr(report_themes, "MAP_POINTS", 10)
    assert report_themes.plot_map(paths["chunk_themes"], paths["themes"], tmp_path / "map.png") == 10
    report_themes.plot_theme_codes(paths["theme_codes"], paths["themes"], tmp_path / "codes.png")
    assert (tmp_path / "map.png").stat().st_size > 0 and (tmp_path / "codes.png").stat().st_size > 0
    n = report_themes.write_page(paths["themes"], tmp_path / "excerpts.parquet", tmp_path / "methods.md",
                                 tmp_path / "themes.html")  # fmt: skip
    page = (tmp_path / "themes.html").read_text()
    assert n == 2 and "<b>" not in page and "&lt;b&gt;words&lt;/b&gt;" in page
    assert page.count("<li>") == 6  # three passages per theme
    assert "grouped by seeded mini-batch k-means" in page
    for theme in result.tables["themes"].to_pylist():
        first = int(theme["representatives"][0][1:])
        assert f"<strong>the quote {first}</strong>" in page  # the most central passage's quote, in its context


# -- names from the model ----------------------------------------------------------------------------------------


def test_themes_are_named_once_through_the_asker_and_only_found_quotes_are_kept(server, tmp_path):
    from qualcode.analysis import naming

    server.answer_fn = lambda body: json.dumps({
        "name": "Protective equipment", "description": "Staff went without masks. They improvised.",
        "quotes": ["no masks on the ward", "words nobody said"],
    })  # fmt: skip
    evidence = [naming.Evidence(1, ("We had no  masks on the ward.", "Masks ran out."), ("topic=ppe",)),
                naming.Evidence(2, ("Pay is low.",), ())]  # fmt: skip
    llm = _llm(server)
    with AnswerCache(tmp_path / "cache") as cache:
        names, asked = naming.name_themes(evidence, llm, cache)
        assert server.count() == 2 and all(not a.cache_hit for a in asked)
        again, asked_again = naming.name_themes(evidence, llm, cache)
    assert server.count() == 2 and all(a.cache_hit for a in asked_again)  # a rerun is free
    assert again == names
    assert names[1] == naming.Named(
        "Protective equipment", "Staff went without masks. They improvised.", ("no masks on the ward",)
    )  # grounded as coding grounds (whitespace folded)
    assert names[2].quotes == ()  # neither quote is in theme 2's passage
    assert sum("topic=ppe" in r["messages"][-1]["content"] for r in server.requests) == 1
    # the questions, for the replay archive: the same keys as the cache's
    path = tmp_path / "named.jsonl"
    assert naming.write_asked(asked, path) == 2
    assert [k for _, _, k in naming.archive_pairs(path)] == [a.key for a in asked]
    assert all(req.key() == key for req, _, key in naming.archive_pairs(path))


def test_a_named_theme_replaces_the_provisional_name_in_the_table():
    from qualcode.analysis import naming

    x, _ = _blobs([6, 4], 0.05)
    result = themes.build(x, _passages(10), ThemesConfig(n_themes=2, stability_runs=0))
    assert result.tables["themes"].column("name").to_pylist() == ["Theme 1", "Theme 2"]
    assert [ev.theme for ev in result.evidence()] == [1, 2] and len(result.evidence()[0].passages) == 5
    result.named({2: naming.Named("Pay", "Two sentences. Here.", ("low",))})
    rows = result.tables["themes"].to_pylist()
    assert [r["name"] for r in rows] == ["Theme 1", "Pay"] and rows[1]["quotes"] == ["low"]
    assert rows[0]["description"] is None and result.tables["theme_runs"].num_rows == 0


def test_a_run_where_no_chunk_was_coded_writes_empty_typed_theme_tables(tmp_path):
    tables.write(themes.shard_vectors([], [], None), tmp_path / "store.parquet")
    tables.write(pa.Table.from_pylist([], schema=tables.EXCERPTS), tmp_path / "excerpts.parquet")
    out = {name: tmp_path / f"{name}.parquet" for name in tables.THEME_TABLES}
    out |= {"excerpts_csv": tmp_path / "themes_excerpts.csv", "methods": tmp_path / "methods.md"}
    result = themes.write_outputs([tmp_path / "store.parquet"], tmp_path / "excerpts.parquet", ThemesConfig(), out)
    assert result.clustering.k == 0
    for name in tables.THEME_TABLES:
        t = tables.read(out[name], name)
        assert t.num_rows == 0 and t.schema.names == tables.schema(name).names
    assert (tmp_path / "methods.md").read_text() == "No passage was coded, so no themes were formed.\n"
    assert pd.read_csv(out["excerpts_csv"], encoding="utf-8-sig").columns[0] == "theme"


def test_passages_that_share_no_word_are_all_unassigned_not_a_crash():
    texts = ["We reused masks all week.", "My colleague covered my shift.", "The bus at five."]
    x = embeddings.offline_vectors(texts, 64, 0)
    assert x.shape[0] == len(texts) and not x.any()  # nothing to compare them by
    result = themes.build(x, _passages(len(x)), ThemesConfig())
    assert result.unassigned == len(texts) and result.tables["chunk_themes"].column("theme").null_count == len(texts)
