"""The sample open coding reads: documents drawn by a seeded hash, optionally in proportion to a metadata value, and
their chunks in the sample's order (the order the saturation table follows).

A document's rank is the hash of (seed, doc_id), as in the pilot's sample (`inputs.ingest.pilot_sample`): it depends
on nothing but the seed and the id, so adding documents keeps the others' order, and a document added later enters
a sample of a fixed size only if its own hash is lower than a sampled one's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..ids import stable_hash
from ..records import Chunk


def rank(doc_id: str, seed: int) -> str:
    return stable_hash({"seed": seed, "doc_id": doc_id})


def sample_size(n_docs: int, documents: int | None, share: float | None) -> int:
    if share is not None:
        return max(1, math.ceil(share * n_docs))
    return n_docs if documents is None else min(documents, n_docs)


def allocate(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """Documents per stratum, in proportion to its size (largest remainders), each stratum at least one while `n`
    allows; strata in sorted order break ties, so the split is the same for the same sizes."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    strata = sorted(sizes)
    base = {s: min(sizes[s], max(1, math.floor(n * sizes[s] / total))) for s in strata}
    while sum(base.values()) > n:  # more strata than documents to draw: the smallest allocations go first
        s = max(strata, key=lambda k: (base[k], k))
        base[s] -= 1
    remainders = sorted(strata, key=lambda s: (-(n * sizes[s] / total - math.floor(n * sizes[s] / total)), s))
    while sum(base.values()) < n:
        grew = False
        for s in remainders:
            if sum(base.values()) < n and base[s] < sizes[s]:
                base[s] += 1
                grew = True
        if not grew:
            break
    return base


def sample_documents(
    doc_ids: Sequence[str],
    seed: int,
    documents: int | None = None,
    share: float | None = None,
    strata: Mapping[str, str | None] | None = None,
) -> list[str]:
    """The sampled documents in the sample's order (by rank). `strata`: each document's value of the stratifying
    metadata key (a document without one is its own stratum, '')."""
    ranked = sorted(dict.fromkeys(doc_ids), key=lambda d: rank(d, seed))
    n = sample_size(len(ranked), documents, share)
    if strata is None:
        return ranked[:n]
    groups: dict[str, list[str]] = {}
    for d in ranked:
        groups.setdefault(strata.get(d) or "", []).append(d)
    take = allocate({s: len(g) for s, g in groups.items()}, n)
    chosen = {d for s, g in groups.items() for d in g[: take[s]]}
    return [d for d in ranked if d in chosen]


def sample_chunks(chunks: Sequence[Chunk], order: Sequence[str]) -> list[Chunk]:
    """The chunks of the sampled documents, document by document in the sample's order, each document's in its
    own order."""
    position = {d: i for i, d in enumerate(order)}
    kept = [c for c in chunks if c.doc_id in position]
    return sorted(kept, key=lambda c: (position[c.doc_id], c.index))
