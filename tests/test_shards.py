"""Shards: content-defined, so a new document changes only the shard that holds it, and the workflow reruns only
the coding jobs whose shard changed."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualcode import shards

from workflow_helpers import CODING, fake_config, run, scratch_copy, tables


def _ids(rng: random.Random, n: int) -> list[str]:
    return [f"{rng.getrandbits(64):016x}" for _ in range(n)]


@given(n=st.integers(0, 3000), size=st.one_of(st.integers(1, 300), st.just("auto")), seed=st.integers(0, 10**6))
@settings(max_examples=60, deadline=None)
def test_a_plan_puts_every_chunk_in_one_shard_in_document_order(n, size, seed):
    ids = _ids(random.Random(seed), n)
    plan = shards.plan(ids, size)
    rows = sorted(r for s in plan for r in s.rows)
    assert rows == list(range(n))  # every chunk once
    assert all(list(s.rows) == sorted(s.rows) for s in plan)  # document order inside a shard
    assert len({s.name for s in plan}) == len(plan)
    k = shards.number_of_shards(size, n)
    assert k & (k - 1) == 0 and len(plan) <= k  # a power of two; empty buckets make no shard


def test_shards_are_balanced():
    ids = _ids(random.Random(1), 5000)
    sizes = [s.count for s in shards.plan(ids, 1250)]
    assert len(sizes) == 4 and max(sizes) - min(sizes) < 6 * (5000 / 4) ** 0.5  # binomial spread, not geometric


@pytest.mark.parametrize("size", [4, 25, 400])
def test_a_new_document_changes_only_the_shards_its_chunks_fall_in(size):
    rng = random.Random(size)
    ids = _ids(rng, 5000)
    before = {s.name for s in shards.plan(ids, size)}
    at = rng.randrange(len(ids))
    new = _ids(rng, 3)
    after = shards.plan(ids[:at] + new + ids[at:], size)
    changed = [s for s in after if s.name not in before]
    assert 1 <= len(changed) <= 3  # one shard per new chunk at most; every other shard keeps its name
    rows_of_new = set(range(at, at + 3))
    assert all(rows_of_new & set(s.rows) for s in changed)


def test_the_number_of_shards_changes_only_when_the_corpus_doubles():
    auto = [shards.number_of_shards("auto", n) for n in (0, 1, 15, 16, 32, 100, 127, 128, 5000, 100_000)]
    assert auto == [1, 1, 1, 2, 4, 8, 8, 16, 16, 16]
    assert [shards.number_of_shards(1250, n) for n in (1000, 5000, 5010, 6000, 10_000)] == [1, 4, 4, 4, 8]


@pytest.mark.e2e
def test_a_new_document_sends_only_its_chunks_and_reruns_only_its_shard(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "wf", data=False)
    raw = wd / "data" / "raw"
    raw.mkdir(parents=True)
    rng = random.Random(5)
    words = "masks shifts bus night patients fear proud tired gloves union neighbours rent kids".split()
    for i in range(60):
        (raw / f"answer_{i:03d}.txt").write_text(f"R{i}: " + " ".join(rng.choice(words) for _ in range(30)))
    cfg = fake_config(wd, fake_server, coding={"shard_size": 8})
    env = {"QUALCODE_TEST_KEY": "sk-test-shards"}
    run(wd, CODING, "--configfile", str(cfg), env=env)
    shard_dir = wd / "results/work/shards"
    mtimes = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}
    sent = fake_server.count()
    time.sleep(1.1)  # mtimes of a rerun must differ from the first run's at coarse file-system resolution

    (raw / "answer_030a.txt").write_text("R30a: a new answer about masks, the night bus and the union rep.")
    run(wd, CODING, "--configfile", str(cfg), env=env)
    t = tables(wd)
    new_chunks = t["chunks"][t["chunks"].doc_id == "answer_030a.txt"]
    assert len(new_chunks) == 1 and fake_server.count() - sent == len(new_chunks)  # only its chunks were sent
    kept = [n for n, m in mtimes.items() if (shard_dir / n).stat().st_mtime_ns == m]
    plan = shards.read(wd / "results/work/shards.json")
    rerun = [s.name for s in plan if f"{s.name}.parquet" not in kept]
    assert len(plan) == 8 and len(rerun) == 1  # one shard got the new chunk: a new name, a new job
    assert len(kept) == len(mtimes)  # no earlier shard output was rewritten
    assert (t["codings"].status == "coded").all() and len(t["codings"]) == 61
