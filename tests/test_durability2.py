"""Durability II (issue 25): a full disk never makes a run pay twice for what it could keep, and says which disk;
two runs opening one new cache at once see no false warning.

Real file systems (a small tmpfs, filled by the answers themselves and then enlarged, as a user frees space), real
coding processes and the fake OpenAI-compatible server counting requests. Where mounting is refused, the tests that
need it skip, saying why.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from qualcode import logs
from qualcode.coding.cache import AnswerCache
from qualcode.outputs import tables

from conftest import REPO
from fakeserver import default_answer

KEY_ENV = "QUALCODE_TEST_KEY"
KEY = "-".join(["not", "a", "real", "key", "durability", "tests"])
FIX = "free space, then run the same command"
CONCURRENCY = 8


class SmallDisk:
    """A tmpfs of `size` mounted at `path`; `resize` stands for the user freeing space."""

    def __init__(self, path, size: str):
        self.path = path
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def mount(size: str, name: str = "disk") -> SmallDisk:
        disks.append(SmallDisk(tmp_path / name, size))
        return disks[-1]

    yield mount
    for disk in disks:
        disk.unmount()


# -- A. a full disk while coding ---------------------------------------------------------------------------------

# One coding job, as `code_shard` runs it: logs.job, the cache, the journal, code_chunks; exits 1 with the message.
_CODING_JOB = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from qualcode import logs
    from qualcode.coding import prompts as P
    from qualcode.inputs import codebook
    from qualcode.coding.cache import AnswerCache
    from qualcode.coding.coder import code_chunks
    from qualcode.config import LLMConfig
    from qualcode.records import Chunk

    base_url, cache_dir, journal, repo = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    n, concurrency = int(sys.argv[5]), int(sys.argv[6])
    with logs.job(None):
        cb = codebook.load(repo / "tests/data/codebook.yaml")
        prompts = P.load(repo / "config/prompts/system.j2", repo / "config/prompts/user.j2", cb, "json_schema")
        cfg = LLMConfig(provider="openai", base_url=base_url, model="fake", structured_output="json_schema",
                        api_key_env="QUALCODE_TEST_KEY", concurrency=concurrency)
        chunks = []
        for i in range(n):
            text = f"NURSE {i}: We had no masks on ward {i} and I was scared for my kids."
            chunks.append(Chunk(f"c{i:04d}", "doc.txt", i, 0, len(text), 16, (f"NURSE {i}",), text))
        with AnswerCache(cache_dir) as cache:
            results = code_chunks(chunks, cfg, prompts, cache, journal=journal)
        print(sum(r.status == "coded" for r in results))
    """
)


def _coding_job(tmp_path, server, cache_dir, journal, n: int) -> subprocess.CompletedProcess:
    script = tmp_path / "coding_job.py"
    script.write_text(_CODING_JOB)
    args = [server.base_url, str(cache_dir), str(journal), str(REPO), str(n), str(CONCURRENCY)]
    return subprocess.run(
        [sys.executable, str(script), *args],
        env={**os.environ, KEY_ENV: KEY},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _paid_twice(server) -> int:
    """Valid answers the server gave more than once for the same request: paid for twice."""
    return sum(n - 1 for n in server.ok_counts_by_hash().values())


def _padded_answers(server) -> None:
    # valid answers padded with white space (kept in the raw answer): a few dozen fill the small disk
    server.answer_fn = lambda body: default_answer(body) + " " * 4000
    server.latency = (0.02, 0.1)  # several requests in flight when the disk fills


def test_results_disk_full_cache_disk_healthy_nothing_is_paid_twice(tmp_path, fake_server, small_disk):
    disk = small_disk("256k")
    journal = disk.path / "results/work/journal/00000.jsonl"
    n = 120
    _padded_answers(fake_server)
    first = _coding_job(tmp_path, fake_server, tmp_path / "cache", journal, n)
    assert first.returncode == 1, first.stderr
    assert "a bug in qualcode" not in first.stderr
    message = first.stderr
    assert f"answer journal {journal}" in message and "ENOSPC" in message and FIX in message
    assert re.search(rf"its file system is {re.escape(str(disk.path))} \([\d,]+ bytes free\)", message)
    paid = fake_server.count()
    assert paid < n  # the first failure stopped new requests

    disk.resize("16m")  # the user frees space and runs the same command
    again = _coding_job(tmp_path, fake_server, tmp_path / "cache", journal, n)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [str(n)]
    assert fake_server.count() == n  # every answer received in the first run was kept (in the cache)
    assert _paid_twice(fake_server) == 0


def test_everything_on_one_full_disk_pays_twice_at_most_what_was_in_flight_and_says_how_many(
    tmp_path, fake_server, small_disk
):
    disk = small_disk("512k")
    journal = disk.path / "results/work/journal/00000.jsonl"
    n = 200
    _padded_answers(fake_server)
    first = _coding_job(tmp_path, fake_server, disk.path / "cache", journal, n)
    assert first.returncode == 1, first.stderr
    assert "a bug in qualcode" not in first.stderr
    assert "ENOSPC" in first.stderr and FIX in first.stderr and str(disk.path) in first.stderr
    said = re.search(r"(\d+) answer\(s\) received could not be kept anywhere", first.stderr)
    not_kept = int(said.group(1)) if said else 0

    disk.resize("32m")
    again = _coding_job(tmp_path, fake_server, disk.path / "cache", journal, n)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [str(n)]
    assert _paid_twice(fake_server) == not_kept <= CONCURRENCY  # exactly those it said it could not keep


# -- A. every stage: a full, read-only or failing disk is named with its fix, never called a bug ----------------


def _job_output(tmp_path, fail) -> str:
    log_file = tmp_path / "logs" / "job.log"
    with pytest.raises(SystemExit) as exc, logs.job(log_file):
        fail()
    assert exc.value.code == 1
    text = log_file.read_text()
    assert "a bug in qualcode" not in text and "Traceback" not in text
    return text


def test_a_table_written_to_a_full_disk_is_named_with_its_file_system_and_the_fix(tmp_path, small_disk):
    disk = small_disk("64k")
    out = disk.path / "results" / "codings.parquet"
    big = pa.table({"x": [os.urandom(500).hex() for _ in range(500)]})  # random text: Parquet cannot shrink it
    text = _job_output(tmp_path, lambda: tables.write(big, out))
    assert f"{out}: cannot write" in text and "ENOSPC" in text and FIX in text
    assert re.search(rf"its file system is {re.escape(str(disk.path))} \([\d,]+ bytes free\)", text)


def test_a_read_only_disk_is_named_with_its_fix(tmp_path, small_disk):
    disk = small_disk("64k")
    subprocess.run(["mount", "-o", "remount,ro", str(disk.path)], check=True)
    out = disk.path / "report.html"
    text = _job_output(tmp_path, lambda: out.write_text("<html></html>"))
    assert f"{out}: cannot write" in text and "EROFS" in text and "mounted read-only" in text
    assert "make it writable (or use another disk), then run the same command" in text


@pytest.mark.parametrize("code", [errno.EDQUOT, errno.EIO], ids=errno.errorcode.get)
def test_over_quota_and_failing_disks_are_named_with_the_fix(tmp_path, code):
    # no quota or failing disk can be made here: the OSError that opening a file on one raises
    out = tmp_path / "results" / "codings.parquet"

    def write() -> None:
        raise OSError(code, os.strerror(code), str(out))

    text = _job_output(tmp_path, write)
    assert f"{out}: cannot" in text and errno.errorcode[code] in text and "then run the same command" in text
    assert re.search(r"its file system is /\S* \([\d,]+ bytes free\)", text)


def test_a_failed_write_that_names_no_file_names_the_jobs_file_systems(tmp_path):
    def write() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() to an open file raises it

    text = _job_output(tmp_path, write)
    assert "a write failed" in text and "ENOSPC" in text and FIX in text
    assert text.count("bytes free") >= 1


# -- B. two runs opening one new cache at the same moment --------------------------------------------------------


def _open_at_once(barrier, directories, warnings) -> None:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logging.getLogger("qualcode").addHandler(Keep(logging.WARNING))
    for directory in directories:
        barrier.wait()
        AnswerCache(directory).close()
    warnings.put(seen)


def test_two_runs_opening_one_new_cache_at_once_warn_of_nothing(tmp_path):
    processes, rounds = 4, 40
    ctx = multiprocessing.get_context("fork")
    barrier, warnings = ctx.Barrier(processes), ctx.Queue()
    directories = [tmp_path / f"cache{i}" for i in range(rounds)]
    procs = [ctx.Process(target=_open_at_once, args=(barrier, directories, warnings)) for _ in range(processes)]
    for p in procs:
        p.start()
    seen = [w for _ in procs for w in warnings.get(timeout=300)]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * processes
    assert seen == []
    for d in directories:  # and every cache opened is a working one
        with AnswerCache(d) as cache:
            assert cache.keys() == []
