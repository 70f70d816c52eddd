"""Shards: the chunks one coding job codes.

Shard boundaries are content-defined, as in rsync or restic: a chunk closes its shard when its own id (a hash of
its document and text) falls in a bucket of the hash's values. Adding, editing or removing a document therefore
changes only the shard that holds its chunks (and, at most, a neighbour); every other shard keeps its chunks, and
so its name, which is a hash of its chunk ids. A coding job whose shard is unchanged finds its output
already there and does not run again. Positional shards (chunks 0-24, 25-49, ...) would all move when one document
is inserted near the start.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .ids import stable_hash

AUTO_TARGET_SHARDS = 16  # `auto`: about this many shards, whatever the corpus size
AUTO_MIN_SIZE = 8
NAME_LENGTH = 12


@dataclass(frozen=True)
class Shard:
    name: str  # a hash of its chunk ids: a new name whenever its chunks change
    first: int  # row of its first chunk in the chunks table (chunks are in document order)
    count: int


def resolve_size(setting: int | str, n_chunks: int) -> int:
    """`coding.shard_size`, or for 'auto' a power of two near n_chunks / 16 (at least 8). A power of two changes
    only when the corpus doubles or halves, so adding a few documents never reshuffles every shard."""
    if setting != "auto":
        return int(setting)
    want = max(AUTO_MIN_SIZE, n_chunks / AUTO_TARGET_SHARDS)
    return 2 ** math.ceil(math.log2(want))


def _hash(chunk_id: str) -> int:
    return int(stable_hash(chunk_id)[:8], 16)


def plan(chunk_ids: Sequence[str], size: int) -> list[Shard]:
    """Cut the chunks (in document order) into shards of `size` chunks on average, between `size / 2` and
    `2 x size`, at content-defined boundaries: past the minimum, a chunk closes its shard when its id's hash falls
    in a 1-in-(size / 2) bucket (so the mean is `size`); the maximum cuts an unlucky run. Bounded sizes keep the
    jobs balanced; after a changed region, cuts fall back in step with the old ones within a shard or two."""
    low, high = max(1, size // 2), 2 * size
    bucket = max(1, size - low)
    shards: list[Shard] = []
    first = 0
    for i, chunk_id in enumerate(chunk_ids):
        count = i - first + 1
        last = i == len(chunk_ids) - 1
        if last or count >= high or (count >= low and _hash(chunk_id) % bucket == 0):
            shards.append(Shard(stable_hash(list(chunk_ids[first : i + 1]))[:NAME_LENGTH], first, count))
            first = i + 1
    return shards


def write(shards: Sequence[Shard], path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(s) for s in shards], indent=0) + "\n", encoding="utf-8")


def read(path: str | Path) -> list[Shard]:
    return [Shard(**s) for s in json.loads(Path(path).read_text(encoding="utf-8"))]


def find(path: str | Path, name: str) -> Shard:
    for shard in read(path):
        if shard.name == name:
            return shard
    raise KeyError(f"no shard {name} in {path}: the chunks changed since this job was planned; run the workflow again")
