"""Shards: the chunks one coding job codes.

A chunk's shard is a bucket of the hash of its own id (a hash of its document and text), out of a number of
shards that is a power of two. Adding, editing or removing a document therefore changes only the shards its chunks
fall in; every other shard keeps its chunks, and so its name, which is a hash of its chunk ids, and its coding job,
whose output is already there, does not run again. Positional shards (chunks 0-24, 25-49, ...) would all move when
one document is inserted near the start. Hash buckets are also balanced (sizes within a few square roots of each
other), so jobs that run side by side finish together and the requests in flight stay at their cap to the end.

The number of buckets follows the size of the corpus, but a new plan keeps the number of the plan it replaces (made
with the same `coding.shard_size`) until the corpus has grown or shrunk by a factor of two to four: at a boundary (the
example's 32 chunks is one) deleting a single document would otherwise change the number, and every shard with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .ids import stable_hash

AUTO_SHARDS = 16  # `auto`: at most this many shards ...
AUTO_MIN_SIZE = 8  # ... of at least about this many chunks
NAME_LENGTH = 12


@dataclass(frozen=True)
class Shard:
    name: str  # a hash of its chunk ids: a new name whenever its chunks change
    rows: tuple[int, ...]  # rows of its chunks in the chunks table, in document order

    @property
    def count(self) -> int:
        return len(self.rows)


def number_of_shards(setting: int | str, n_chunks: int, previous: int | None = None) -> int:
    """A power of two: about n_chunks / shard_size shards, or for 'auto' up to 16 of at least 8 chunks. `previous`
    (the number of the plan this one replaces, under the same setting) is kept while the number for n_chunks is
    within a factor of two of it, so adding or deleting a few documents never reshuffles every shard: the number
    changes only once the corpus has grown or shrunk by a factor of two to four since the shards were planned
    anew, and shards stay within a factor of three of their intended size."""
    if n_chunks == 0:
        ideal = 1
    elif setting == "auto":
        ideal = min(AUTO_SHARDS, 2 ** max(0, math.floor(math.log2(n_chunks / AUTO_MIN_SIZE))))
    else:
        ideal = 2 ** max(0, round(math.log2(n_chunks / int(setting)))) if n_chunks > int(setting) else 1
    return previous if previous is not None and previous // 2 <= ideal <= 2 * previous else ideal


def _bucket(chunk_id: str, k: int) -> int:
    return int(stable_hash(chunk_id)[:8], 16) % k


def plan(chunk_ids: Sequence[str], setting: int | str, previous: int | None = None) -> list[Shard]:
    """The shards of these chunks (in document order), in `number_of_shards` buckets; empty buckets make no shard."""
    k = number_of_shards(setting, len(chunk_ids), previous)
    buckets: list[list[int]] = [[] for _ in range(k)]
    for row, chunk_id in enumerate(chunk_ids):
        buckets[_bucket(chunk_id, k)].append(row)
    return [Shard(stable_hash([chunk_ids[r] for r in rows])[:NAME_LENGTH], tuple(rows)) for rows in buckets if rows]


def write(shards: Sequence[Shard], path: str | Path, setting: int | str, buckets: int) -> None:
    """The plan, with the setting and number of buckets it was made with (what the next plan keeps)."""
    rows = [{"name": s.name, "rows": list(s.rows)} for s in shards]
    plan = {"shard_size": setting, "buckets": buckets, "shards": rows}
    Path(path).write_text(json.dumps(plan, separators=(",", ":")) + "\n", encoding="utf-8")


def _load(path: str | Path) -> dict:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return raw if isinstance(raw, dict) else {"shards": raw}  # a plan written before it recorded its setting


def read(path: str | Path) -> list[Shard]:
    return [Shard(s["name"], tuple(s["rows"])) for s in _load(path)["shards"]]


def previous_buckets(path: str | Path, setting: int | str) -> int | None:
    """The number of buckets of the plan at `path`, if there is one and it was made with this setting."""
    try:
        plan = _load(path)
    except (OSError, ValueError):
        return None
    return plan.get("buckets") if plan.get("shard_size") == setting else None


def find(path: str | Path, name: str) -> Shard:
    for shard in read(path):
        if shard.name == name:
            return shard
    raise KeyError(f"no shard {name} in {path}: the chunks changed since this job was planned; run the workflow again")
