"""Keys that leak (issue 18, items 2-4): credentials written into `llm.base_url`, a key a server echoes escaped, and
a key pasted into `llm.api_key_env` reach no file, table, log or cache key, in any encoding.

Unit tests drive the real openai client against the fake server on 127.0.0.1; one real Snakemake run (target `all`,
one small document) then checks every file under the run's folder, `.snakemake` and the cache included.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import sqlite3
import urllib.parse
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from qualcode import logs
from qualcode.coding import api
from qualcode.coding.cache import AnswerCache
from qualcode.coding.coder import Requests, code_chunks
from qualcode.config import ConfigError, LLMConfig, arm_llm, connectable, content_dict, job_llm, public_url, resolve
from qualcode.ids import stable_hash

from conftest import _quote_the_passage, nurse_chunk
from fakeserver import FakeServer
from workflow_helpers import run, scratch_copy, write_config

# Made up and assembled here, so that no key-shaped literal sits in the repository; each test file registers its own.
API_KEY = "-".join(["sk", "secrets", "test", "Fake0Fake0Fake0"])
URL_PASSWORD = "pw" + "Fake1" * 4
URL_QUERY_KEY = "qk" + "Fake2" * 4
ENV_VALUE = "AKIA" + "FAKE2345" * 2  # all capitals and digits: shaped like a variable name, passes the key filter
SECRETS = (API_KEY, URL_PASSWORD, URL_QUERY_KEY, ENV_VALUE)


def _with_credentials(base_url: str) -> str:
    """The fake server's URL with a user name and password and a key in its query."""
    parts = urllib.parse.urlsplit(base_url)
    return urllib.parse.urlunsplit(
        parts._replace(netloc=f"qualuser:{URL_PASSWORD}@{parts.netloc}", query=f"api-key={URL_QUERY_KEY}")
    )


def _json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def _base64_runs(secret: str) -> list[str]:
    """The base64 characters that encode `secret` at each of the 3 byte alignments (edges left out)."""
    raw, runs = secret.encode(), []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        runs.append(encoded[(shift * 8 + 5) // 6 : (shift + len(raw)) * 8 // 6])
    return runs


def _encodings(secret: str) -> list[str]:
    return [
        secret,
        urllib.parse.quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        _json_escaped(secret),
        "\\u" + f"{ord(secret[0]):04x}" + secret[1:],  # one character escaped, as in the issue
        *_base64_runs(secret),
    ]


def _leaks(text: str) -> list[str]:
    return [f"{secret} as {form!r}" for secret in SECRETS for form in _encodings(secret) if form in text]


def _echoing(*secrets: str):
    """An answer_fn whose valid answer repeats `secrets` in its summary, each JSON-escaped in the raw text."""

    def answer(body: dict) -> str:
        parsed = json.loads(_quote_the_passage(body))
        parsed["summary"]["value"] = "echo " + " ".join(secrets)
        raw = json.dumps(parsed)
        for secret in secrets:
            raw = raw.replace(secret, _json_escaped(secret))
        return raw

    return answer


# -- item 2: credentials in llm.base_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"http://qualuser:{URL_PASSWORD}@models.example/v1",
        f"https://models.example/v1?api-key={URL_QUERY_KEY}",
        f"https://{URL_QUERY_KEY}@models.example/v1?api-version=2024-06-01&token={URL_PASSWORD}",
    ],
)
def test_credentials_in_base_url_are_in_no_dump_and_no_cache_key(url, prompts):
    cfg = resolve({"llm": {"provider": "openai", "model": "m", "base_url": url}})
    public = cfg.llm.api_base_url
    assert "@" not in public and not _leaks(public)
    for written in (cfg.model_dump(mode="json"), job_llm(cfg.llm), content_dict(cfg)):
        assert not _leaks(json.dumps(written))
    request = Requests(cfg.llm, prompts)(nurse_chunk(1))
    assert not _leaks(request.canonical())
    # a new key (or no key) keeps every cache key: the answers paid for stay valid
    rotated = resolve({"llm": {"provider": "openai", "model": "m", "base_url": url.replace("Fake", "Newk")}})
    plain = resolve({"llm": {"provider": "openai", "model": "m", "base_url": public}})
    for other in (rotated, plain):
        assert Requests(other.llm, prompts)(nurse_chunk(1)).key() == request.key()
        assert stable_hash(content_dict(other)) == stable_hash(content_dict(cfg))


def test_a_url_without_credentials_is_recorded_as_given():
    for url in ("https://openrouter.ai/api/v1", "http://127.0.0.1:8080/v1?api-version=2024-06-01", "http://h/v1/"):
        assert public_url(url) == url


def test_arms_write_no_credentials_but_connect_with_them():
    raw = {
        "llm": {"provider": "openai", "model": "m", "base_url": "https://run.example/v1"},
        "validation": {"arms": {"other": {"llm": {"base_url": f"https://u:{URL_PASSWORD}@arm.example/v1"}}}},
    }
    cfg = resolve(raw)
    assert not _leaks(json.dumps(cfg.model_dump(mode="json")))
    arm = arm_llm(cfg, "other")
    job = connectable(job_llm(arm), raw)  # what the coding job of the arm connects with
    assert (
        job.connect_url == f"https://u:{URL_PASSWORD}@arm.example/v1" and job.api_base_url == "https://arm.example/v1"
    )
    assert connectable(job_llm(cfg.llm), raw).connect_url == "https://run.example/v1"


def test_the_credentials_of_the_url_are_sent_and_recorded_nowhere(prompts, tmp_path, monkeypatch):
    monkeypatch.setenv("QUALCODE_TEST_KEY", API_KEY)
    with FakeServer(seed=1) as server:
        server.answer_fn = _echoing(URL_PASSWORD, URL_QUERY_KEY)
        url = _with_credentials(server.base_url)
        cfg = LLMConfig(provider="openai", base_url=url, model="fake", structured_output="json_schema",
                        api_key_env="QUALCODE_TEST_KEY")  # fmt: skip
        with AnswerCache(tmp_path / "cache") as cache:
            [result] = code_chunks([nurse_chunk(1)], cfg, prompts, cache)
        # the user name and password reach the server as HTTP basic authentication
        basic = base64.b64encode(f"qualuser:{URL_PASSWORD}".encode()).decode()
        assert server.headers[0]["authorization"] == f"Basic {basic}"
    assert result.status == "coded" and result.base_url == server.base_url
    assert not _leaks(json.dumps(result.to_row())) and "[REDACTED]" in result.answer_json


def test_the_query_of_the_url_is_sent_with_every_request():
    url, query = api.connection(f"https://models.example/v1?api-version=1&api-key={URL_QUERY_KEY}")
    assert url == "https://models.example/v1" and query == {"api-version": "1", "api-key": URL_QUERY_KEY}


# -- item 3: an echoed key, escaped ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", _encodings(API_KEY) + ["&#115;" + API_KEY[1:], "%2573" + API_KEY[1:]])
def test_redaction_finds_the_key_however_it_is_encoded(form):
    logs.register_secret(API_KEY)
    text = logs.redact(f"the server said: {form}.")
    assert not _leaks(text) and text == "the server said: [REDACTED]."


def test_a_key_echoed_json_escaped_reaches_no_table(prompts, tmp_path, monkeypatch):
    monkeypatch.setenv("QUALCODE_TEST_KEY", API_KEY)
    with FakeServer(seed=1) as server:
        server.answer_fn = _echoing(API_KEY)
        cfg = LLMConfig(provider="openai", base_url=server.base_url, model="fake", structured_output="json_schema",
                        api_key_env="QUALCODE_TEST_KEY")  # fmt: skip
        with AnswerCache(tmp_path / "cache") as cache:
            [result] = code_chunks([nurse_chunk(2)], cfg, prompts, cache)
            cached = cache.get(result.request_hash)
    assert result.status == "coded"
    assert json.loads(result.answer_json)["summary"]["value"] == "echo [REDACTED]"
    assert not _leaks(result.raw) and not _leaks(json.dumps(cached.model_dump(mode="json")))


# -- item 4: a key in llm.api_key_env ----------------------------------------------------------------------------


def test_an_api_key_env_naming_no_variable_is_written_nowhere(monkeypatch):
    monkeypatch.delenv(ENV_VALUE, raising=False)
    cfg = resolve({"llm": {"provider": "openai", "model": "m", "api_key_env": ENV_VALUE}})
    assert cfg.llm.api_key_env == ENV_VALUE  # kept in memory, to look the variable up
    assert cfg.model_dump(mode="json")["llm"]["api_key_env"] is None
    assert not _leaks(json.dumps([cfg.model_dump(mode="json"), job_llm(cfg.llm), content_dict(cfg)]))
    with pytest.raises(ConfigError) as exc:
        api.resolve_api_key(cfg.llm, cfg.llm.api_base_url)
    assert "no environment variable named by llm.api_key_env" in str(exc.value) and not _leaks(str(exc.value))
    # a variable that is set is a name: it is recorded, so the run can be cited
    monkeypatch.setenv("QUALCODE_TEST_KEY", API_KEY)
    named = resolve({"llm": {"provider": "openai", "model": "m", "api_key_env": "QUALCODE_TEST_KEY"}})
    assert named.model_dump(mode="json")["llm"]["api_key_env"] == "QUALCODE_TEST_KEY"
    assert stable_hash(content_dict(named)) == stable_hash(content_dict(cfg))  # where the key lives is no content


# -- one real run: no file holds a secret ------------------------------------------------------------------------


def _texts(path: Path) -> list[str]:
    """What a file holds, decoded: gzip and zip members opened, Parquet tables read with their metadata."""
    data = path.read_bytes()
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return [
            json.dumps(table.to_pylist(), default=str, ensure_ascii=False),
            json.dumps(meta),
            data.decode("latin-1"),
        ]
    if data[:2] == b"\x1f\x8b":
        return [gzip.decompress(data).decode("utf-8", "replace")]
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [archive.read(n).decode("utf-8", "replace") for n in archive.namelist()]
    if data[:16] == b"SQLite format 3\x00":
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
            rows = [repr(db.execute(f'select * from "{t}"').fetchall()) for t in tables]
        return [*rows, data.decode("latin-1")]
    return [data.decode("utf-8", "replace")]


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory):
    """A run of the whole workflow whose base_url holds a password and a query key, whose api_key_env holds a key
    (no variable has that name), whose key comes from a file, and whose server echoes the key escaped."""
    root = tmp_path_factory.mktemp("secrets")
    workdir = scratch_copy(root / "wf", data=False)
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/one.txt").write_text(
        "NURSE: We had no masks for a week and I was scared for my kids.\n\nNURSE: The others covered my shifts.\n",
        encoding="utf-8",
    )
    key_file = root / "key.txt"
    key_file.write_text(API_KEY + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != ENV_VALUE}
    with FakeServer(seed=1) as server:
        server.answer_fn = _echoing(API_KEY, URL_PASSWORD)
        config = write_config(
            root,
            {
                "llm": {
                    "provider": "openai",
                    "base_url": _with_credentials(server.base_url),
                    "model": "fake-model",
                    "structured_output": "json_schema",
                    "api_key_env": ENV_VALUE,
                    "api_key_file": str(key_file),
                },
                "cache_dir": str(workdir / "cache"),
            },
        )
        proc = run(workdir, "--configfile", str(config), env=env)
        yield workdir, server, proc, config


@pytest.mark.e2e
def test_no_file_of_the_run_holds_a_secret(secret_run):
    workdir, server, proc, _ = secret_run
    assert server.count() > 0
    leaks = {}
    for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
        found = [leak for text in _texts(path) for leak in _leaks(text)]
        if found:
            leaks[str(path.relative_to(workdir))] = sorted(set(found))
    assert not leaks, leaks
    assert not _leaks(proc.stdout + proc.stderr)


@pytest.mark.e2e
def test_the_run_records_the_url_without_credentials_and_the_echo_redacted(secret_run):
    workdir, server, _, _ = secret_run
    manifest = json.loads((workdir / "results/manifest.json").read_text())
    assert manifest["config"]["llm"]["base_url"] == server.base_url
    assert manifest["config"]["llm"]["api_key_env"] is None
    assert manifest["model"]["base_url"] == [server.base_url]
    assert server.base_url in (workdir / "results/methods.md").read_text()
    codings = pq.read_table(workdir / "results/codings.parquet").to_pylist()
    assert codings and all(row["status"] == "coded" for row in codings)
    assert all(row["summary"] == "echo [REDACTED] [REDACTED]" for row in codings)


@pytest.mark.e2e
def test_a_new_key_reruns_no_coding_job(secret_run):
    workdir, server, _, config = secret_run
    raw = yaml.safe_load(config.read_text())
    raw["llm"]["base_url"] = raw["llm"]["base_url"].replace("Fake", "Newk")  # new password, new query key
    raw["llm"]["api_key_env"] = "QUALCODE_TEST_KEY"
    raw["llm"]["api_key_file"] = None
    rotated = config.with_name("rotated.yaml")
    rotated.write_text(yaml.safe_dump(raw))
    proc = run(workdir, "-n", "--configfile", str(rotated), env={"QUALCODE_TEST_KEY": API_KEY})
    assert "code_shard" not in proc.stdout + proc.stderr
