"""Candidates that mean the same, merged: each candidate code as a vector, agglomerative clustering with a stated
distance threshold, groups numbered in the order the sample first met them; and saturation, how many new groups each
batch of chunks added. Pure functions: the same candidates give the same groups."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering

from ..analysis.embeddings import offline_vectors

Vectoriser = Callable[[Sequence[str]], np.ndarray]


def candidate_text(label: str, definition: str) -> str:
    """What a candidate means, as it is compared: its label and its definition."""
    return f"{label.strip()}. {definition.strip()}".strip()


def offline(dims: int, seed: int) -> Vectoriser:
    # every term counts: a word only one candidate uses makes it unlike the others (a corpus's themes leave such
    # terms out for size; a few dozen candidates need not, and lose their differences if they do)
    return lambda texts: offline_vectors(texts, dims, seed, min_df=1)


def cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of L2-normalised rows; a row of zeros (a text with no known term) is at distance 1
    from everything, so it joins nothing by accident."""
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors, dtype=float), where=norms[:, None] > 0)
    d = 1.0 - unit @ unit.T
    empty = norms == 0
    d[empty, :] = 1.0
    d[:, empty] = 1.0
    np.fill_diagonal(d, 0.0)
    return np.clip(d, 0.0, 2.0)


def cluster(texts: Sequence[str], threshold: float, vectorise: Vectoriser) -> list[int]:
    """Group numbers for `texts`, numbered from 0 in the order of each group's first text: average linkage on cosine
    distances, merging while the groups are closer than `threshold`."""
    n = len(texts)
    if n == 0:
        return []
    if n == 1:
        return [0]
    distances = cosine_distances(np.asarray(vectorise(texts), dtype=float))
    labels = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=threshold
    ).fit_predict(distances)
    renumber: dict[int, int] = {}
    return [renumber.setdefault(int(label), len(renumber)) for label in labels]


def group_candidates(
    candidates: pd.DataFrame, threshold: float, vectorise: Vectoriser, anchors: Sequence[str] = ()
) -> tuple[list[int], list[int]]:
    """The group of each candidate (rows in the sample's order) and of each anchor (the codes of a codebook being
    extended, clustered with them: a group holding one is a code the codebook has). Anchors come first, so their
    groups have the lowest numbers."""
    pairs = zip(candidates["label"], candidates["definition"], strict=True)
    texts = list(anchors) + [candidate_text(a, b) for a, b in pairs]
    groups = cluster(texts, threshold, vectorise)
    return groups[len(anchors) :], groups[: len(anchors)]


def saturation(order: Sequence[str], candidates: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """For each batch of `batch_size` chunks in the sample's order (`order`: chunk ids), the groups first seen in
    it, the groups seen so far and the chunks read so far. Chunks without any candidate count as read."""
    first_batch: dict[int, int] = {}
    batch_of = {c: i // batch_size for i, c in enumerate(order)}
    for chunk_id, group in zip(candidates["chunk_id"], candidates["group"], strict=True):
        if pd.isna(group) or chunk_id not in batch_of:
            continue
        b = batch_of[chunk_id]
        first_batch[int(group)] = min(first_batch.get(int(group), b), b)
    n_batches = -(-len(order) // batch_size)
    rows, total = [], 0
    for b in range(n_batches):
        new = sum(1 for v in first_batch.values() if v == b)
        total += new
        rows.append(
            {
                "batch": b + 1,
                "chunks": min((b + 1) * batch_size, len(order)),
                "new_codes": new,
                "codes": total,
            }
        )
    return pd.DataFrame(rows, columns=["batch", "chunks", "new_codes", "codes"]).astype("int64")


def methods_sentence(table: pd.DataFrame, proposed: int) -> str:
    """ "N codes from M chunks; the last K chunks added J new codes", so a reader can judge the sample's size."""
    if table.empty:
        return "No chunk was sampled, so no code was proposed."
    last = table.iloc[-1]
    k = int(last["chunks"]) - (int(table.iloc[-2]["chunks"]) if len(table) > 1 else 0)
    sentence = (
        f"{int(last['codes'])} codes from {int(last['chunks'])} chunks; the last {k} chunks added "
        f"{int(last['new_codes'])} new codes."
    )
    if proposed != int(last["codes"]):
        sentence += f" {proposed} of them were proposed (induction.max_codes, and codes the extended codebook has)."
    return sentence
