"""Shards: content-defined, so a new document changes only the shard that holds it, and the workflow reruns only
the coding jobs whose shard changed."""

from __future__ import annotations

import random
import time

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualcode import shards

from workflow_helpers import fake_config, run, scratch_copy, tables


def _ids(rng: random.Random, n: int) -> list[str]:
    return [f"{rng.getrandbits(64):016x}" for _ in range(n)]


@given(n=st.integers(0, 3000), size=st.integers(1, 300), seed=st.integers(0, 10**6))
@settings(max_examples=60, deadline=None)
def test_a_plan_covers_every_chunk_once_in_order_within_the_size_bounds(n, size, seed):
    ids = _ids(random.Random(seed), n)
    plan = shards.plan(ids, size)
    assert sum(s.count for s in plan) == n
    assert [s.first for s in plan] == [sum(s.count for s in plan[:i]) for i in range(len(plan))]
    assert all(s.count <= 2 * size for s in plan)
    assert all(s.count >= max(1, size // 2) for s in plan[:-1])  # only the last may be short
    assert len({s.name for s in plan}) == len(plan)


@pytest.mark.parametrize("size", [4, 25, 400])
def test_inserting_a_document_changes_only_the_shards_around_it(size):
    rng = random.Random(size)
    ids = _ids(rng, 5000)
    before = {s.name for s in shards.plan(ids, size)}
    at = rng.randrange(len(ids))
    after = shards.plan(ids[:at] + _ids(rng, 3) + ids[at:], size)
    changed = [i for i, s in enumerate(after) if s.name not in before]
    assert 1 <= len(changed) <= 3  # the shard that holds it, and at most a neighbour or two as cuts fall back in step
    assert changed == list(range(changed[0], changed[-1] + 1))  # one contiguous stretch ...
    first, last = after[changed[0]], after[changed[-1]]
    assert first.first <= at < last.first + last.count  # ... around the new chunks


def test_auto_size_changes_only_when_the_corpus_doubles():
    sizes = [shards.resolve_size("auto", n) for n in (1, 32, 128, 129, 200, 256, 257, 5000, 100_000)]
    assert sizes[:3] == [8, 8, 8]
    assert sizes[3] == sizes[4] == sizes[5] == 16 and sizes[6] == 32
    assert all(s & (s - 1) == 0 for s in sizes)  # powers of two
    assert shards.resolve_size(25, 10_000) == 25


@pytest.mark.e2e
def test_a_new_document_sends_only_its_chunks_and_reruns_only_its_shard(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "wf", data=False)
    raw = wd / "data" / "raw"
    raw.mkdir(parents=True)
    rng = random.Random(5)
    words = "masks shifts bus night patients fear proud tired gloves union neighbours rent kids".split()
    for i in range(60):
        (raw / f"answer_{i:03d}.txt").write_text(f"R{i}: " + " ".join(rng.choice(words) for _ in range(30)))
    cfg = fake_config(wd, fake_server, coding={"shard_size": 6})
    env = {"QUALCODE_TEST_KEY": "sk-test-shards"}
    run(wd, "--configfile", str(cfg), env=env)
    shard_dir = wd / "results/work/shards"
    mtimes = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}
    sent = fake_server.count()
    time.sleep(1.1)  # mtimes of a rerun must differ from the first run's at coarse file-system resolution

    (raw / "answer_030a.txt").write_text("R30a: a new answer about masks, the night bus and the union rep.")
    run(wd, "--configfile", str(cfg), env=env)
    t = tables(wd)
    new_chunks = t["chunks"][t["chunks"].doc_id == "answer_030a.txt"]
    assert len(new_chunks) == 1 and fake_server.count() - sent == len(new_chunks)  # only its chunks were sent
    kept = [n for n, m in mtimes.items() if (shard_dir / n).stat().st_mtime_ns == m]
    plan = pd.read_json(wd / "results/work/shards.json")
    rerun = [n for n in plan.name if f"{n}.parquet" not in kept]
    assert len(kept) >= len(mtimes) - 2 and 1 <= len(rerun) <= 3
    assert (t["codings"].status == "coded").all() and len(t["codings"]) == 61
