"""Bad input through the real workflow: every unreadable file is listed with a reason and skipped, every
readable one is coded, every bad setting stops the run at parse time, before any request, naming itself, and a
bad endpoint (no key, nothing listening, unknown model) stops the run naming the setting to fix.

One Snakemake run codes the example corpus plus all the odd files (and a rerun checks nothing cached is lost);
each file then has its own test against that run's tables and ingest log. Settings get one small run each.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from conftest import _quote_the_passage
from fakeserver import FakeServer, Fault
from workflow_helpers import CODING, REPO, assert_invariants, coding_requests, run, scratch_copy, tables, write_config

pytestmark = pytest.mark.e2e

KEY = "sk-test-FAKE-key-0123456789abcdef"
KEY_ENV = "QUALCODE_TEST_KEY"
INGEST_LOG = "results/logs/ingest/ingest.log"


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _config(workdir: Path, base_url: str, overrides: dict | None = None) -> Path:
    base = {
        "llm": {
            "provider": "openai",
            "base_url": base_url,
            "model": "fake-model",
            "structured_output": "json_schema",
            "api_key_env": KEY_ENV,
        },
        "cache_dir": str(workdir / "cache"),
    }
    return write_config(workdir, _merge(base, overrides or {}))


def _text(proc) -> str:
    return proc.stdout + proc.stderr


def _shard_logs(workdir: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted((workdir / "results/logs/code_shard").glob("*.log")))


# ---------------------------------------------------------------------------------------------------------------
# The odd files, all in one run next to the example corpus

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00" + b"\x00" * 200
CP1252_TEXT = "Interviewer: Was the café still open?\n\nR: “We’re done,” the owner said — after forty years."
LATIN1_TEXT = "Interviewer: ¿Dónde trabajaba?\n\nR: En la panadería de São Paulo; mi niña se quedó con su abuela."
UTF16_TEXT = "Interviewer: How did the night go?\n\nNURSE 2: Ça va. We had three admissions and one death."
BOM_TEXT = "Interviewer: And the buses?\n\nDRIVER: Empty at first, then packed. Nobody wore a mask after June."
CRLF_TEXT = (
    "Interviewer: What changed?\n\nR: The rota. Twelve-hour shifts,\nfour on, three off.\n\nR: And the pay did not."
)
JOSE_TEXT = "Interviewer: ¿Cómo fue el primer día?\n\nJosé: Largo. No teníamos mascarillas y los pacientes no paraban."
MULTILINE_ANSWER = "First line of the answer.\nSecond line, same answer: we shared one mask a day."


@dataclass(frozen=True)
class Unreadable:
    """A file that cannot be read: it must be a row in failures, with a reason holding every fragment."""

    content: bytes
    reason: tuple[str, ...]


UNREADABLE = {
    "edge/empty.txt": Unreadable(b"", ("empty",)),
    "edge/whitespace_only.md": Unreadable(b" \r\n\t\n\n   \n", ("empty",)),
    "edge/image.txt": Unreadable(PNG, ("binary",)),
    "edge/utf16_odd_bytes.txt": Unreadable(
        b"\xff\xfe" + "Interviewer: hi".encode("utf-16-le") + b"\x00\xd8", ("utf-16",)
    ),
    "edge/not_a_zip.docx": Unreadable(b"PK\x03\x04 this is a text file renamed to .docx", ("not a valid .docx", "zip")),
    "edge/broken_timestamps.vtt": Unreadable(
        b"WEBVTT\n\n00:00:01.000 --> 00:00:04.000\nNURSE: We were short again.\n\n"
        b"00:00:05.000 --> 00:0X:09.500\nNURSE: Nobody came.\n",
        ("broken timestamps", "line 6", "00:0X:09.500"),
    ),
    "edge/no_text_column.csv": Unreadable(
        b"id,answer\n1,I was scared every day.\n2,We managed.\n",
        ("text column 'text'", "id, answer", "ingest.table.text_column"),
    ),
    "edge/duplicate_ids.csv": Unreadable(
        b"id,text\nr1,The masks ran out.\nr2,We were fine.\nr2,Nobody listened to us.\n",
        ("duplicate ids", "'id'", "r2"),
    ),
    "edge/all_rows_empty.csv": Unreadable(b"id,text\n1,\n2,   \n", ("empty", "'text'")),
    "edge/bad_line.jsonl": Unreadable(
        b'{"id": "a", "text": "Fine."}\n{"id": "b", "text": "unterminated\n', ("line 2", "not valid JSON")
    ),
}


@dataclass(frozen=True)
class Readable:
    """A file that must be read and coded: its documents (doc_id -> text) and the encoding detected."""

    content: bytes
    docs: dict[str, str]
    encoding: str
    warning: tuple[str, ...] = ()  # fragments of a warning in the ingest log, besides the file's name


READABLE = {
    "edge/utf16.txt": Readable(UTF16_TEXT.encode("utf-16"), {"edge/utf16.txt": UTF16_TEXT}, "utf-16"),
    "edge/cp1252.txt": Readable(
        CP1252_TEXT.encode("cp1252"), {"edge/cp1252.txt": CP1252_TEXT}, "cp1252", ("not valid UTF-8", "cp1252")
    ),
    # Latin-1 text without C1 bytes decodes identically as cp1252: the letters must come out right either way.
    "edge/latin1.txt": Readable(
        LATIN1_TEXT.encode("latin-1"), {"edge/latin1.txt": LATIN1_TEXT}, "cp1252", ("not valid UTF-8",)
    ),
    # 0x81 is undefined in cp1252: only the latin-1 fallback reads this one.
    "edge/latin1_c1.txt": Readable(
        LATIN1_TEXT.encode("latin-1") + b" \x81",
        {"edge/latin1_c1.txt": LATIN1_TEXT + " \x81"},
        "latin-1",
        ("not valid UTF-8", "latin-1"),
    ),
    "edge/utf8_bom.txt": Readable(b"\xef\xbb\xbf" + BOM_TEXT.encode(), {"edge/utf8_bom.txt": BOM_TEXT}, "utf-8-sig"),
    "edge/crlf.txt": Readable(CRLF_TEXT.replace("\n", "\r\n").encode(), {"edge/crlf.txt": CRLF_TEXT}, "utf-8"),
    "edge/Entrevista José 1.txt": Readable(JOSE_TEXT.encode(), {"edge/Entrevista José 1.txt": JOSE_TEXT}, "utf-8"),
    "edge/empty_rows.csv": Readable(
        b"id,text,site\nq1,The ward was calm that week.,north\nq2,,north\n"
        b"q3,   ,south\nq4,We clapped on Thursdays.,south\n",
        {
            "edge/empty_rows.csv#q1": "The ward was calm that week.",
            "edge/empty_rows.csv#q4": "We clapped on Thursdays.",
        },
        "utf-8",
        ("row q2 has no text in column 'text'; skipped",),
    ),
    "edge/multiline.csv": Readable(
        f'id,text\nm1,"{MULTILINE_ANSWER}"\nm2,One line only.\n'.encode(),
        {"edge/multiline.csv#m1": MULTILINE_ANSWER, "edge/multiline.csv#m2": "One line only."},
        "utf-8",
    ),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The example corpus plus every odd file, coded once against the fake server, then rerun from the cache."""
    root = tmp_path_factory.mktemp("bad_input")
    workdir = scratch_copy(root / "wf")
    for name, case in {**UNREADABLE, **READABLE}.items():
        path = workdir / "data/raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.content)
    env = {KEY_ENV: KEY, "HOME": str(root / "home")}
    with pytest.MonkeyPatch.context() as mp, FakeServer(seed=1) as server:
        for var in ("OPENAI_API_KEY", "OPENROUTER_API_KEY"):
            mp.delenv(var, raising=False)
        server.answer_fn = _quote_the_passage
        cfg = _config(workdir, server.base_url)
        run(workdir, "--configfile", str(cfg), env=env)
        first = SimpleNamespace(
            t=tables(workdir),
            requests=coding_requests(server),  # the themes' naming requests apart
            sent=server.count(),
            log=(workdir / INGEST_LOG).read_text(encoding="utf-8"),
        )
        # every coding job again, answers from the cache (the first run made every output of these odd files)
        run(workdir, CODING, "--configfile", str(cfg), "--forceall", env=env)
        yield SimpleNamespace(**vars(first), rerun_t=tables(workdir), rerun_sent=server.count())


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_file_is_listed_with_its_reason(corpus, name):
    case = UNREADABLE[name]
    failures = corpus.t["failures"]
    rows = failures[(failures.stage == "ingest") & (failures.source_file == name)]
    assert len(rows) == 1, f"{name} is not listed once in failures.parquet:\n{failures[['stage', 'source_file']]}"
    reason = rows.reason.iloc[0]
    for fragment in case.reason:
        assert fragment in reason, f"{name}: {fragment!r} missing from the reason {reason!r}"
    assert f"{name}: {reason}" in corpus.log  # the ingest log names the file and the problem
    assert name not in set(corpus.t["documents"].source_file)


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_file_is_coded(corpus, name):
    case = READABLE[name]
    docs = corpus.t["documents"].set_index("doc_id")
    from_file = docs[docs.source_file == name]
    assert dict(zip(from_file.index, from_file.text, strict=True)) == case.docs
    assert set(from_file.encoding) == {case.encoding}
    assert "\r" not in "".join(from_file.text) and "\ufeff" not in "".join(from_file.text)
    codings = corpus.t["codings"]
    mine = codings[codings.doc_id.isin(case.docs)]
    assert set(mine.doc_id) == set(case.docs)  # every document has chunks...
    assert (mine.status == "coded").all()  # ...and every chunk is coded
    assert name not in set(corpus.t["failures"].source_file.dropna())
    if case.warning:
        warnings = [line for line in corpus.log.splitlines() if "WARNING" in line and name in line]
        assert warnings, f"no warning naming {name} in {INGEST_LOG}"
        for fragment in case.warning:
            assert any(fragment in line for line in warnings), f"{fragment!r} not in {warnings}"


def test_file_name_with_spaces_and_accents_keeps_its_name(corpus):
    name = "edge/Entrevista José 1.txt"
    for table in ("documents", "chunks", "codings", "codes", "llm_calls"):
        assert name in set(corpus.t[table].doc_id), table


def test_every_example_document_is_still_coded(corpus):
    t = corpus.t
    assert_invariants(t)
    examples = {p.relative_to(REPO / "data/raw").as_posix() for p in (REPO / "data/raw").rglob("*") if p.is_file()}
    assert examples <= set(t["documents"].source_file)
    assert set(t["documents"].source_file) == examples | set(READABLE)  # nothing else slipped in
    assert (t["codings"].status == "coded").all()
    assert set(t["codings"].doc_id) == set(t["documents"].doc_id)
    assert corpus.requests == len(t["chunks"])  # one request per chunk: no retries, nothing sent for bad files
    assert set(t["failures"].stage) == {"ingest"}
    assert f"{len(t['documents'])} documents read, {len(UNREADABLE)} files skipped" in corpus.log


def test_rerun_sends_nothing_and_loses_nothing(corpus):
    assert corpus.rerun_sent == corpus.sent
    before, after = corpus.t, corpus.rerun_t
    assert after["llm_calls"].cache_hit.all()
    for name in ("documents", "chunks", "codings", "codes", "failures"):
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)


# ---------------------------------------------------------------------------------------------------------------
# A 50 MB transcript: ingested and chunked (coding it against the fake server would only time the fake server)

BIG_MB = 50


def _big_transcript(n_bytes: int) -> str:
    """Varied sentences in speaker turns, deterministic, about n_bytes of ASCII."""
    rng = random.Random(0)
    words = (
        "the clinic shift nurse bus route mask gloves fear tired proud manager rota overtime family virus ward "
        "patient queue shelf cleaning rubbish depot sick pay night visitors testing isolation canteen union"
    ).split()
    paragraphs = [
        " ".join(
            " ".join(rng.choice(words) for _ in range(rng.randint(6, 18))).capitalize() + rng.choice(".?!.")
            for _ in range(rng.randint(2, 6))
        )
        for _ in range(3000)
    ]
    out, size, i = [], 0, 0
    while size < n_bytes:
        turn = f"{('Interviewer', 'R')[i % 2]}: {paragraphs[i % len(paragraphs)]} (turn {i})"
        out.append(turn)
        size += len(turn) + 2
        i += 1
    return "\n\n".join(out)


def test_50mb_transcript_is_ingested_and_chunked(tmp_path, fake_server):
    workdir = scratch_copy(tmp_path / "wf", data=False)
    text = _big_transcript(BIG_MB * 1024 * 1024)
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/big.txt").write_text(text, encoding="utf-8")
    cfg = _config(workdir, fake_server.base_url, {"coding": {"shard_size": 100_000}})
    t0 = time.monotonic()
    run(workdir, "results/work/chunks.parquet", "--configfile", str(cfg), env={KEY_ENV: KEY})
    seconds = time.monotonic() - t0
    docs = pd.read_parquet(workdir / "results/work/documents.parquet")
    chunks = pd.read_parquet(workdir / "results/work/chunks.parquet", columns=["doc_id", "start", "end"])
    assert list(docs.doc_id) == ["big.txt"] and docs.text.iloc[0] == text
    assert len(chunks) > 10_000 and (chunks.doc_id == "big.txt").all()
    assert chunks.start.iloc[0] == 0 and chunks.end.iloc[-1] == len(text)
    assert (chunks.start.iloc[1:].to_numpy() < chunks.end.iloc[:-1].to_numpy()).all()  # overlapping, no gaps
    assert fake_server.count() == 0
    print(f"\n{BIG_MB} MB transcript: ingest + chunk through Snakemake in {seconds:.1f} s, {len(chunks)} chunks")


# ---------------------------------------------------------------------------------------------------------------
# Bad settings: the run stops at parse time, before any job and any request, naming the setting

SMALL_DOC = "Interviewer: How was the week?\n\nR: Long. We ran out of gowns twice.\n"


def _small_workdir(tmp_path: Path) -> Path:
    workdir = scratch_copy(tmp_path / "wf", data=False)
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/one.txt").write_text(SMALL_DOC, encoding="utf-8")
    return workdir


def _fails_at_parse_time(workdir: Path, cfg: Path, server: FakeServer) -> str:
    proc = run(workdir, "--configfile", str(cfg), check=False, env={KEY_ENV: KEY})
    assert proc.returncode != 0
    assert not (workdir / "results").exists(), "a job ran before the bad setting was caught"
    assert server.count() == 0
    return _text(proc)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        pytest.param({"chunkng": {"max_tokens": 200}}, ("chunkng",), id="unknown-top-level-key"),
        pytest.param({"llm": {"temprature": 0.2}}, ("llm", "temprature"), id="unknown-llm-key"),
        pytest.param({"ingest": {"table": {"text_col": "answer"}}}, ("table", "text_col"), id="unknown-nested-key"),
    ],
)
def test_unknown_key_is_named(tmp_path, fake_server, overrides, fragments):
    workdir = _small_workdir(tmp_path)
    message = _fails_at_parse_time(workdir, _config(workdir, fake_server.base_url, overrides), fake_server)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        pytest.param({"chunking": {"max_tokens": "lots"}}, ("max_tokens", "lots", "integer"), id="string-for-int"),
        pytest.param({"llm": {"concurrency": 0}}, ("concurrency", "0"), id="out-of-range"),
        pytest.param({"ingest": {"on_error": "ignore"}}, ("on_error", "ignore"), id="not-an-option"),
        pytest.param({"ingest": {"include": "*.txt"}}, ("include", "*.txt", "list"), id="string-for-list"),
        pytest.param(
            {"chunking": {"max_tokens": 100, "overlap_tokens": 60}}, ("overlap_tokens", "max_tokens"), id="overlap"
        ),
        pytest.param({"validation": {"gold": ["nowhere.csv"]}}, ("validation.gold", "nowhere.csv"), id="no-gold"),
        pytest.param(
            {"validation": {"arms": {"hot": {"llm": {"temperature": 9}}}}},
            ("validation.arms.hot.llm.temperature",),
            id="bad-arm",
        ),
    ],
)
def test_wrong_type_is_named(tmp_path, fake_server, overrides, fragments):
    workdir = _small_workdir(tmp_path)
    message = _fails_at_parse_time(workdir, _config(workdir, fake_server.base_url, overrides), fake_server)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        pytest.param({"chunkng": {"max_tokens": 200}}, "chunkng", id="top-level"),
        pytest.param({"llm": {"temprature": 0.2}}, "llm.temprature", id="llm"),
    ],
)
def test_unknown_key_message_is_short_and_names_the_setting(tmp_path, fake_server, overrides, setting):
    workdir = _small_workdir(tmp_path)
    message = _fails_at_parse_time(workdir, _config(workdir, fake_server.base_url, overrides), fake_server)
    assert setting in message
    assert len(message.splitlines()) < 60, f"{len(message.splitlines())} lines of output for one misspelt key"


def test_missing_codebook_is_named(tmp_path, fake_server):
    workdir = _small_workdir(tmp_path)
    cfg = _config(workdir, fake_server.base_url, {"codebook": "config/no_such_codebook.yaml"})
    message = _fails_at_parse_time(workdir, cfg, fake_server)
    assert "config/no_such_codebook.yaml" in message and "not found" in message
    assert "codebook" in message.replace("no_such_codebook", "")  # names the setting, not only the path


def _codebook_with(workdir: Path, edit) -> str:
    raw = yaml.safe_load((REPO / "config/codebook.yaml").read_text(encoding="utf-8"))
    edit(raw)
    path = workdir / "config/bad_codebook.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return "config/bad_codebook.yaml"


def test_codebook_with_duplicate_field_names(tmp_path, fake_server):
    workdir = _small_workdir(tmp_path)
    path = _codebook_with(workdir, lambda cb: cb["fields"].append(copy.deepcopy(cb["fields"][0])))
    message = _fails_at_parse_time(workdir, _config(workdir, fake_server.base_url, {"codebook": path}), fake_server)
    assert path in message and "emotions" in message and "more than once" in message


def test_codebook_with_empty_list_of_values(tmp_path, fake_server):
    def empty(cb):
        cb["fields"][1]["values"] = []

    workdir = _small_workdir(tmp_path)
    path = _codebook_with(workdir, empty)
    message = _fails_at_parse_time(workdir, _config(workdir, fake_server.base_url, {"codebook": path}), fake_server)
    assert path in message and "material_conditions" in message and "empty" in message


def test_codebook_schema_error_names_the_codebook_file(tmp_path, fake_server):
    def misspell(cb):
        cb["fields"][0]["desciption"] = cb["fields"][0].pop("description")

    workdir = _small_workdir(tmp_path)
    path = _codebook_with(workdir, misspell)
    message = _fails_at_parse_time(workdir, _config(workdir, fake_server.base_url, {"codebook": path}), fake_server)
    assert "desciption" in message
    assert path in message


# ---------------------------------------------------------------------------------------------------------------
# Bad endpoints: the run stops with a message naming the setting, having sent nothing it should not


def test_missing_api_key_names_the_setting_not_its_value(tmp_path, monkeypatch):
    # a value naming no variable may be a key pasted in place of a name (issue 18, item 4): it is never repeated
    monkeypatch.delenv("QUALCODE_TEST_NO_SUCH_KEY", raising=False)
    workdir = _small_workdir(tmp_path)
    cfg = _config(workdir, "https://api.example.invalid/v1", {"llm": {"api_key_env": "QUALCODE_TEST_NO_SUCH_KEY"}})
    proc = run(workdir, "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    for text in (_text(proc), _shard_logs(workdir)):
        assert "QUALCODE_TEST_NO_SUCH_KEY" not in text and "no environment variable named by llm.api_key_env" in text


def test_unreachable_base_url_stops_naming_it(tmp_path, fake_server):
    url = "http://127.0.0.1:9/v1"  # the discard port: nothing listens on it
    workdir = _small_workdir(tmp_path)
    # several chunks, so the test shows the job gives up on the server, not just on one chunk
    (workdir / "data/raw/two.txt").write_text(SMALL_DOC.replace("week", "month"), encoding="utf-8")
    cfg = _config(workdir, url, {"llm": {"max_attempts": 2, "retry_initial_s": 0.1, "retry_max_s": 0.2}})
    proc = run(workdir, "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    for text in (_text(proc), _shard_logs(workdir)):
        assert url in text and "llm.base_url" in text
    assert fake_server.count() == 0


def test_unknown_model_stops_naming_it(tmp_path, fake_server):
    fake_server.script = [Fault("status", status=404, message="The model `no-such-model` does not exist")] * 50
    workdir = _small_workdir(tmp_path)
    cfg = _config(workdir, fake_server.base_url, {"llm": {"model": "no-such-model"}})
    proc = run(workdir, "--configfile", str(cfg), check=False, env={KEY_ENV: KEY})
    assert proc.returncode != 0
    assert "llm.model" in _text(proc) and "no-such-model" in _text(proc)
    assert 1 <= fake_server.count() <= 4  # a permanent error: no retries, no request per chunk


def test_on_error_fail_stops_naming_the_file(tmp_path, fake_server):
    workdir = _small_workdir(tmp_path)
    (workdir / "data/raw/broken.docx").write_bytes(b"this is not a zip")
    cfg = _config(workdir, fake_server.base_url, {"ingest": {"on_error": "fail"}})
    proc = run(workdir, "--configfile", str(cfg), check=False, env={KEY_ENV: KEY})
    assert proc.returncode != 0
    assert "broken.docx: not a valid .docx" in _text(proc)
    assert "broken.docx" in (workdir / INGEST_LOG).read_text(encoding="utf-8")
    assert not (workdir / "results/work/documents.parquet").exists()
    assert fake_server.count() == 0
