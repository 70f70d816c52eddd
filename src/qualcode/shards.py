"""Shards: the chunks one coding job codes.

A chunk's shard is a bucket of the hash of its own id (a hash of its document and text), out of a number of
shards that is a power of two. Adding, editing or removing a document therefore changes only the shards its chunks
fall in; every other shard keeps its chunks, and so its name, which is a hash of its chunk ids, and its coding job,
whose output is already there, does not run again. Positional shards (chunks 0-24, 25-49, ...) would all move when
one document is inserted near the start. Hash buckets are also balanced (sizes within a few square roots of each
other), so jobs that run side by side finish together and the requests in flight stay at their cap to the end.
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


def number_of_shards(setting: int | str, n_chunks: int) -> int:
    """A power of two: about n_chunks / shard_size shards, or for 'auto' up to 16 of at least 8 chunks. It changes
    only when the corpus doubles or halves, so adding a few documents never reshuffles every shard."""
    if n_chunks == 0:
        return 1
    if setting == "auto":
        return min(AUTO_SHARDS, 2 ** max(0, math.floor(math.log2(n_chunks / AUTO_MIN_SIZE))))
    return 2 ** max(0, round(math.log2(n_chunks / int(setting)))) if n_chunks > int(setting) else 1


def _bucket(chunk_id: str, k: int) -> int:
    return int(stable_hash(chunk_id)[:8], 16) % k


def plan(chunk_ids: Sequence[str], setting: int | str) -> list[Shard]:
    """The shards of these chunks (in document order); empty buckets make no shard."""
    k = number_of_shards(setting, len(chunk_ids))
    buckets: list[list[int]] = [[] for _ in range(k)]
    for row, chunk_id in enumerate(chunk_ids):
        buckets[_bucket(chunk_id, k)].append(row)
    return [Shard(stable_hash([chunk_ids[r] for r in rows])[:NAME_LENGTH], tuple(rows)) for rows in buckets if rows]


def write(shards: Sequence[Shard], path: str | Path) -> None:
    rows = [{"name": s.name, "rows": list(s.rows)} for s in shards]
    Path(path).write_text(json.dumps(rows, separators=(",", ":")) + "\n", encoding="utf-8")


def read(path: str | Path) -> list[Shard]:
    return [Shard(s["name"], tuple(s["rows"])) for s in json.loads(Path(path).read_text(encoding="utf-8"))]


def find(path: str | Path, name: str) -> Shard:
    for shard in read(path):
        if shard.name == name:
            return shard
    raise KeyError(f"no shard {name} in {path}: the chunks changed since this job was planned; run the workflow again")
