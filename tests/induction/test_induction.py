"""Induction (issue 20), without a workflow: the sample, the consolidation, saturation, the candidates' grounding,
the proposed codebook and its outputs. Expectations are computed by hand from the inputs."""

from __future__ import annotations

import io
import json

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml

from qualcode.config import InductionConfig, LLMConfig
from qualcode.exchange import qdpx
from qualcode.ids import stable_hash
from qualcode.induction import asking, consolidate, proposal, sample
from qualcode.induction.publish import codebook_yaml
from qualcode.inputs import codebook as codebook_mod
from qualcode.outputs import tables
from qualcode.records import Chunk

from conftest import REPO

SCHEMA = json.loads((REPO / "schemas" / "codebook.schema.json").read_text())


def chunk(i: int, text: str, doc: str | None = None) -> Chunk:
    return Chunk(f"c{i:03d}", doc or f"d{i:03d}", 0, 100 * i, 100 * i + len(text), 10, (), text)


# -- the sample --------------------------------------------------------------------------------------------------


def test_sample_is_the_lowest_hashes_in_hash_order():
    ids = [f"doc{i}" for i in range(30)]
    got = sample.sample_documents(ids, seed=7, documents=5)
    by_hand = sorted(ids, key=lambda d: stable_hash({"seed": 7, "doc_id": d}))[:5]
    assert got == by_hand
    assert sample.sample_documents(list(reversed(ids)), seed=7, documents=5) == got  # reading order is irrelevant
    assert sample.sample_documents(ids, seed=8, documents=5) != got


def test_share_rounds_up_and_null_takes_all():
    ids = [f"doc{i}" for i in range(10)]
    assert len(sample.sample_documents(ids, 1, None, 0.25)) == 3
    assert sorted(sample.sample_documents(ids, 1, None, None)) == sorted(ids)


def test_adding_documents_keeps_the_order_of_the_others():
    ids = [f"doc{i}" for i in range(10)]
    before = sample.sample_documents(ids, 3)
    after = sample.sample_documents(ids + ["new1", "new2"], 3)
    assert [d for d in after if d in before] == before


def test_stratified_sample_is_proportional_with_every_stratum():
    strata = {f"a{i}": "A" for i in range(12)} | {f"b{i}": "B" for i in range(6)} | {"c0": "C"}
    got = sample.sample_documents(list(strata), seed=2, documents=9, strata=strata)
    counts = pd.Series([strata[d] for d in got]).value_counts().to_dict()
    assert counts == {"A": 5, "B": 3, "C": 1}  # 9 * 12/19 = 5.7, 9 * 6/19 = 2.8, and C at least once
    # within a stratum, the lowest hashes
    a_ranked = sorted([d for d in strata if strata[d] == "A"], key=lambda d: sample.rank(d, 2))
    assert sorted(d for d in got if strata[d] == "A") == sorted(a_ranked[:5])


def test_chunks_follow_the_sample_order():
    chunks = [Chunk("x1", "x", 1, 0, 1, 1, (), "b"), Chunk("x0", "x", 0, 0, 1, 1, (), "a"),
              Chunk("y0", "y", 0, 0, 1, 1, (), "c"), Chunk("z0", "z", 0, 0, 1, 1, (), "d")]  # fmt: skip
    assert [c.chunk_id for c in sample.sample_chunks(chunks, ["y", "x"])] == ["y0", "x0", "x1"]


def test_both_documents_and_share_is_an_error():
    with pytest.raises(ValueError, match="documents or share"):
        InductionConfig(documents=3, share=0.5)


# -- consolidation -----------------------------------------------------------------------------------------------

LABELS = [
    ("fear of infection", "afraid of catching the virus at work"),
    ("shortage of masks", "not enough masks or protective equipment"),
    ("fear of infection", "afraid of catching the virus at work"),
    ("pride in the team", "proud of what colleagues achieved together"),
    ("shortage of masks", "not enough masks or protective equipment on the ward"),
    ("pride in the team", "proud of what colleagues achieved together"),
]


def _frame(labels=LABELS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": [a for a, _ in labels],
            "definition": [b for _, b in labels],
            "chunk_id": [f"c{i}" for i in range(len(labels))],
            "doc_id": [f"d{i % 4}" for i in range(len(labels))],
            "position": range(len(labels)),
        }
    )


def test_consolidation_merges_the_same_meaning_and_is_deterministic():
    vec = consolidate.offline(16, 0)
    groups, _ = consolidate.group_candidates(_frame(), 0.5, vec)
    assert groups == [0, 1, 0, 2, 1, 2]  # numbered in the order first met
    for _ in range(3):
        assert consolidate.group_candidates(_frame(), 0.5, vec)[0] == groups
    # a new vectoriser with the same settings: the same groups
    assert consolidate.group_candidates(_frame(), 0.5, consolidate.offline(16, 0))[0] == groups


def test_candidates_sharing_only_a_common_word_stay_apart():
    # every candidate says "about": its own words must still tell it apart (leaving out words only one candidate
    # uses, as a corpus's themes do, put all of them in one group)
    pairs = [("masks ward", "masks"), ("kids", "kids"), ("drivers buses", "drivers"), ("queues", "queues")]
    texts = [consolidate.candidate_text(label, f"about {word}") for label, word in pairs]
    assert len(set(consolidate.cluster(texts, 0.8, consolidate.offline(64, 0)))) == 4


def test_threshold_is_the_stated_cosine_distance():
    vectors = np.array([[1.0, 0.0], [np.cos(0.5), np.sin(0.5)], [0.0, 1.0]])
    d = consolidate.cosine_distances(vectors)
    assert d[0, 1] == pytest.approx(1 - np.cos(0.5))
    texts = ["a", "b", "c"]
    below = consolidate.cluster(texts, 1 - np.cos(0.5) + 1e-6, lambda t: vectors)
    above = consolidate.cluster(texts, 1 - np.cos(0.5) - 1e-6, lambda t: vectors)
    assert below[0] == below[1] != below[2]
    assert len(set(above)) == 3


def test_a_text_without_words_joins_nothing():
    vectors = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    assert consolidate.cluster(["a", "", "a"], 0.5, lambda t: vectors) == [0, 1, 0]


def test_anchors_mark_the_codes_a_codebook_has():
    vec = consolidate.offline(16, 0)
    anchors = [consolidate.candidate_text("fear of infection", "afraid of catching the virus at work")]
    groups, anchor_groups = consolidate.group_candidates(_frame(), 0.5, vec, anchors)
    assert anchor_groups == [0] and groups[0] == groups[2] == 0
    df = _frame().assign(group=groups)
    to_name = proposal.groups_to_name(df, anchor_groups, max_codes=10)
    assert 0 not in to_name and len(to_name) == 2


# -- saturation --------------------------------------------------------------------------------------------------


def test_saturation_counts_new_groups_per_batch_by_hand():
    order = [f"c{i}" for i in range(7)]  # c6 has no candidate: it is read all the same
    df = pd.DataFrame({"chunk_id": ["c0", "c1", "c1", "c3", "c4", "c5", "c2"], "group": [0, 1, 0, 2, 1, 3, 2]})
    table = consolidate.saturation(order, df, batch_size=3)
    # batch 1 (c0-c2): groups 0, 1, 2; batch 2 (c3-c5): 3; batch 3 (c6): none
    expected = {"batch": [1, 2, 3], "chunks": [3, 6, 7], "new_codes": [3, 1, 0], "codes": [3, 4, 4]}
    assert table.to_dict("list") == expected
    sentence = consolidate.methods_sentence(table, 4)
    assert sentence == "4 codes from 7 chunks; the last 1 chunks added 0 new codes."
    assert "3 of them were proposed" in consolidate.methods_sentence(table, 3)


# -- candidates, grounding, naming -------------------------------------------------------------------------------


def test_ungrounded_quotes_are_marked_and_never_examples():
    c0 = chunk(0, "We had no masks on the ward and I was scared.")
    c1 = chunk(1, "Nobody brought us masks for weeks.")
    answers = [
        (c0, 0, {"codes": [{"label": "No masks", "definition": "d", "quote": "no masks on the ward"}]}),
        (c1, 1, {"codes": [{"label": "No masks", "definition": "d", "quote": "invented words not in the text"}]}),
        (chunk(2, "text"), 2, None),  # failed: no candidates
    ]
    df = proposal.candidates_from(answers)
    assert list(df["grounding"]) == ["exact", "ungrounded"]
    assert list(df["grounded"]) == [True, False]
    assert df["quote_start"].iloc[0] == c0.start + c0.text.index("no masks on the ward")
    df["group"] = pd.array([0, 0], dtype="Int64")
    prompt = proposal.group_prompt(df, 0)
    assert prompt.quotes == ("no masks on the ward",)
    support = proposal.group_support(df).loc[0]
    # the model picks quotes by number: out of range numbers pick nothing, so no quote can be invented
    code = proposal.name_code(
        prompt, {"name": "No masks", "definition": "d", "include": "i", "exclude": "e", "examples": [2, 1]},
        None, support, set(),
    )  # fmt: skip
    assert code.examples == ("no masks on the ward",)
    assert (code.chunks, code.documents) == (2, 2)
    failed = proposal.name_code(prompt, None, "server error", support, set())
    assert failed.examples == ("no masks on the ward",) and failed.naming.startswith("failed (server error)")


def test_value_names_are_codebook_names_and_unique():
    taken: set[str] = {"fear"}
    assert proposal.value_name("Fear", taken) == "fear_2"
    assert proposal.value_name("  Masks & PPE! ", taken) == "masks_ppe"
    assert proposal.value_name("Masks/PPE", taken) == "masks_ppe_2"
    assert proposal.value_name("…", taken) == "code"


def test_open_and_name_schemas_are_valid_and_bounded():
    for schema in (asking.open_schema(5), asking.name_schema(3), asking.name_schema(0)):
        jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"codes": [{"label": "x", "definition": "", "quote": ""}]}, asking.open_schema(5))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"codes": []}, asking.open_schema(5))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"codes": [{"label": "x", "definition": "", "quote": ""}] * 6}, asking.open_schema(5))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"name": "n", "definition": "d", "include": "", "exclude": "", "examples": [4]}, asking.name_schema(3)
        )


def test_templates_render_research_question_and_existing_codes():
    prompts = {k: REPO / "config" / "prompts" / f"induction_{k}.j2" for k in ("system", "user", "name")}
    cfg = InductionConfig(research_question="How did workers cope with shortages?")
    existing = [asking.ExistingCode("fear", "Fear", "Afraid of infection.")]
    t = asking.load(prompts, cfg, "json_schema", existing)
    system, user = t.open_messages(chunk(0, "We had no masks."))
    assert "How did workers cope with shortages?" in system["content"]
    assert "- Fear: Afraid of infection." in system["content"]
    assert "We had no masks." in user["content"]
    (named,) = t.name_messages([("No masks", "lack of masks")], ["no masks", "few gloves"])
    assert '1. "no masks"' in named["content"] and '2. "few gloves"' in named["content"]
    assert LLMConfig().structured_output == "json_object"


# -- the proposed codebook and its outputs -----------------------------------------------------------------------


def _codes() -> list[proposal.ProposedCode]:
    return [
        proposal.ProposedCode(0, "no_masks", "No masks", "Lack of masks.", "Masks missing.", "Gloves.",
                              ("no masks",), 3, 2, "model", ("No masks",)),
        proposal.ProposedCode(1, "pride", "=HYPERLINK(\"x\")", "<b>Pride</b> & joy.", "", "",
                              ("we did it", "<script>x</script>"), 1, 1, "model", ("Pride",)),
    ]  # fmt: skip


def test_proposed_codebook_validates_and_parses():
    book = proposal.codebook_dict(_codes(), "proposed_codes", "What do workers fear?")
    jsonschema.validate(book, SCHEMA)
    text = codebook_yaml(book)
    cb = codebook_mod.parse(yaml.safe_load(text), "proposed")
    (field,) = cb.fields
    assert field.type == "multiple_choice" and [v.name for v in field.values] == ["no_masks", "pride"]
    assert field.values[0].definition == "Lack of masks. Include: Masks missing. Exclude: Gloves."
    assert "What do workers fear?" in cb.description
    qdc = qdpx.codebook_qdc(cb, "qualcode test")
    qdpx.check_xml(qdc, "proposed.qdc", qdpx.CODEBOOK_XSD)


def test_extending_keeps_the_codebook_and_adds_only_new_codes():
    raw = codebook_mod.read(REPO / "tests" / "data" / "codebook.yaml")
    book = proposal.codebook_dict(_codes(), "emotions", extend=raw)  # the field name is taken: a new one
    jsonschema.validate(book, SCHEMA)
    assert book["fields"][: len(raw["fields"])] == raw["fields"]
    new = book["fields"][-1]
    assert new["name"] == "emotions_2" and "NEW" in new["description"]
    assert [v["name"] for v in new["values"]] == ["no_masks", "pride"]
    assert proposal.codebook_dict([], "x", extend=raw) == raw  # nothing new: the codebook as it was


def test_existing_codes_of_a_codebook():
    cb = codebook_mod.load(REPO / "tests" / "data" / "codebook.yaml")
    names = [e.name for e in proposal.existing_codes(cb)]
    assert names == ["fear", "pride", "none", "present", "absent", "not_mentioned", "own_health"]


def test_csv_is_escaped_for_spreadsheets():
    buf = io.StringIO()
    tables.write_csv(proposal.codes_frame(_codes(), "proposed"), buf)
    assert "'=HYPERLINK" in buf.getvalue()
    df = pd.read_csv(io.StringIO(buf.getvalue()))
    assert list(df["code"]) == ["no_masks", "pride"] and list(df["chunks"]) == [3, 1]


def test_review_page_escapes_and_shows_quotes_in_context():
    text = "Before. We had no masks at all. After <script>alert(1)</script>."
    c = Chunk("c0", "doc", 0, 0, len(text), 10, (), text)
    df = proposal.candidates_from(
        [
            (
                c,
                0,
                {
                    "codes": [
                        {"label": "No <i>masks</i>", "definition": "d", "quote": "no masks"},
                        {"label": "Pride", "definition": "d", "quote": "<b>made up</b>"},
                    ]
                },
            )
        ]  # fmt: skip
    )
    df["group"] = pd.array([0, 1], dtype="Int64")
    page = proposal.review_page(_codes(), df, {"doc": text}, "2 codes from 1 chunks.", "proposed")
    assert "<script>" not in page and "<b>made up</b>" not in page
    assert "<mark>no masks</mark>" in page and "&lt;script&gt;" in page
    assert "quote not found in the text (ungrounded)" in page
    assert "=HYPERLINK(&quot;x&quot;)" in page


def test_candidates_table_fits_the_registry():
    c = chunk(0, "We had no masks.")
    df = proposal.candidates_from([(c, 0, {"codes": [{"label": "x", "definition": "d", "quote": "zzz"}]})])
    df["group"] = pd.array([0], dtype="Int64")
    df["code"] = ["x"]
    df["status"] = ["proposed"]
    t = proposal.candidates_table(df, tables.CANDIDATES)
    assert t.schema == tables.CANDIDATES
    assert t.column("quote_start").to_pylist() == [None]


# -- the whole proposal through the shared asker, against the fake server -------------------------------------------

MASKS = ("Shortage of masks", "Not enough masks or protective equipment.")
PRIDE = ("Pride in the team", "Proud of what colleagues achieved together.")


def _by_topic(body: dict) -> str:
    """Open coding: the masks code for a passage about masks, else the pride code, quoting the passage's first
    words; naming: the schema's default instance."""
    from fakeserver import generate_instance, request_schema

    schema = request_schema(body)
    user = body["messages"][-1]["content"]
    if schema.get("title") != asking.OPEN_TITLE:
        return json.dumps(generate_instance(schema, user))
    text = user.split('"""')[1].strip()
    label, definition = MASKS if "mask" in text.lower() else PRIDE
    return json.dumps({"codes": [{"label": label, "definition": definition, "quote": " ".join(text.split()[:3])}]})


def _propose(fake_server, tmp_path, monkeypatch, extend=None, embeddings=None):
    from qualcode.coding import asker, cache
    from qualcode.induction import run

    monkeypatch.setenv("QUALCODE_TEST_KEY", "sk-test-fake")
    fake_server.answer_fn = _by_topic
    llm = LLMConfig(provider="openai", base_url=fake_server.base_url, model="fake", api_key_env="QUALCODE_TEST_KEY",
                    structured_output="json_schema")  # fmt: skip
    cfg = InductionConfig(documents=None, embeddings=embeddings, vector_dims=16, seed=0)
    texts = ["We had no masks for weeks.", "The masks ran out on Monday.", "I am proud of my team.",
             "The team was proud of what we did.", "Masks were rationed to one a day."]  # fmt: skip
    chunks = [chunk(i, t) for i, t in enumerate(texts)]
    prompts = {k: REPO / "config" / "prompts" / f"induction_{k}.j2" for k in ("system", "user", "name")}
    existing = proposal.existing_codes(extend[0]) if extend else []
    templates = asking.load(prompts, cfg, llm.structured_output, existing)
    with cache.AnswerCache(tmp_path / "cache") as answers:

        def ask(questions):
            return asker.ask_questions(questions, llm, answers, journal=tmp_path / "journal.jsonl")

        vectorise = run.ProviderVectors(cfg, llm, answers) if embeddings else consolidate.offline(16, 0)
        p = run.propose(chunks, cfg, llm, templates, ask, vectorise, extend)
        if embeddings:
            p.pairs.extend(vectorise.pairs())
        return p


def test_extend_proposes_only_the_codes_the_codebook_lacks(fake_server, tmp_path, monkeypatch):
    raw = {
        "name": "Conditions",
        "version": "1",
        "fields": [
            {
                "name": "conditions",
                "type": "multiple_choice",
                "description": "Working conditions.",
                "values": [{"name": "no_masks", "label": MASKS[0], "definition": MASKS[1]}],
            }
        ],
    }
    cb = codebook_mod.parse(raw, "conditions.yaml")
    p = _propose(fake_server, tmp_path, monkeypatch, extend=(cb, raw))
    titles = [b["response_format"]["json_schema"]["schema"]["title"] for b in fake_server.requests]
    named = [t for t in titles if t == asking.NAME_TITLE]
    assert len(named) == 1  # only the pride group is named; the masks group is the codebook's own code
    assert [c.candidates for c in p.codes] == [(PRIDE[0],)]
    masks = p.candidates[p.candidates["label"] == MASKS[0]]
    assert set(masks["status"]) == {"existing"} and masks["code"].isna().all()
    assert set(p.candidates.loc[p.candidates["label"] == PRIDE[0], "status"]) == {"new"}
    assert p.codebook["fields"][0] == raw["fields"][0]
    assert [v["name"] for v in p.codebook["fields"][1]["values"]] == [p.codes[0].name]
    jsonschema.validate(p.codebook, SCHEMA)


def test_without_extend_both_topics_are_proposed_and_a_rerun_sends_nothing(fake_server, tmp_path, monkeypatch):
    p = _propose(fake_server, tmp_path, monkeypatch)
    assert sorted(c.candidates for c in p.codes) == sorted([(MASKS[0],), (PRIDE[0],)])
    # support by hand: masks in chunks 0, 1, 4; pride in 2, 3
    assert {c.candidates[0]: c.chunks for c in p.codes} == {MASKS[0]: 3, PRIDE[0]: 2}
    sent = fake_server.count()
    assert sent == 5 + 2
    again = _propose(fake_server, tmp_path, monkeypatch)
    assert fake_server.count() == sent and all(a.cache_hit for a in again.asked)
    assert again.codebook == p.codebook


def test_provider_embeddings_group_the_candidates_through_the_cache_and_join_the_archive(
    fake_server, tmp_path, monkeypatch
):
    p = _propose(fake_server, tmp_path, monkeypatch, embeddings="fake-embed")
    assert sorted(c.candidates for c in p.codes) == sorted([(MASKS[0],), (PRIDE[0],)])
    distinct = {consolidate.candidate_text(*MASKS), consolidate.candidate_text(*PRIDE)}
    assert set(fake_server.embedded) == distinct and len(fake_server.embedded) == 2  # each text embedded once
    archived = [(req, answer) for req, answer, _ in p.pairs if req.kind == "embeddings"]
    assert {req.messages[0]["content"] for req, _ in archived} == distinct
    from fakeserver import embedding_of

    assert all(answer.answer["embedding"] == embedding_of(req.messages[0]["content"]) for req, answer in archived)
    sent, embedded = fake_server.count(), fake_server.embedding_requests
    again = _propose(fake_server, tmp_path, monkeypatch, embeddings="fake-embed")
    assert (fake_server.count(), fake_server.embedding_requests) == (sent, embedded)  # a rerun sends nothing
    assert again.codebook == p.codebook


def test_induction_embeddings_need_an_openai_compatible_server():
    from qualcode.config import Config

    with pytest.raises(ValueError, match="induction.embeddings 'e' needs llm.provider: openai"):
        Config.model_validate({"llm": {"provider": "local"}, "induction": {"embeddings": "e"}})
