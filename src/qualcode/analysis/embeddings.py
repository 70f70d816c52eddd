"""Passages as vectors, for grouping them (themes, the consolidation of proposed codes).

The offline default needs no model and no network: word and word-pair counts hashed into a fixed space (stateless,
so one passage's counts never depend on the others and can be stored by shard and reused), weighted by TF-IDF over
the texts at hand and reduced to a few dense dimensions with a seeded truncated SVD. Rows are L2-normalised, so
Euclidean distances order pairs as cosine distances do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

from ..coding import embeddings as provider
from ..coding.cache import AnswerCache
from ..config import LimitsConfig, LLMConfig, Price
from ..records import CachedAnswer, LLMRequest

# 2**18 buckets: collisions are rare for a study's vocabulary, and the sparse counts stay small.
HASH_FEATURES = 2**18


def term_counts(texts: Sequence[str]) -> sparse.csr_matrix:
    """Each text's word and word-pair counts in the hashed space; a pure function of the text alone."""
    vectorizer = HashingVectorizer(
        n_features=HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm=None, lowercase=True
    )
    texts = list(texts)
    if not texts:  # a shard whose chunks all failed coding (the hasher cannot take no text)
        return sparse.csr_matrix((0, HASH_FEATURES), dtype=np.float64)
    return vectorizer.transform(texts).tocsr()


def offline_vectors(texts: Sequence[str], dims: int = 64, seed: int = 0, min_df: int = 2) -> np.ndarray:
    """Dense, L2-normalised float32 vectors of `dims` dimensions (fewer when there are fewer texts or shared terms),
    the same for the same texts, dims and seed. Terms in fewer than `min_df` texts are left out (see
    `reduce_pieces`); a few short texts compared with each other (proposed codes) keep them all with `min_df=1`."""
    return reduce_counts(term_counts(texts), dims, seed, min_df)


def reduce_counts(counts: sparse.spmatrix, dims: int = 64, seed: int = 0, min_df: int = 2) -> np.ndarray:
    """TF-IDF weights over these rows, then a seeded truncated SVD to at most `dims` dimensions, rows normalised:
    `reduce_pieces` on one piece, so a few texts and a corpus stored by shard are reduced the same way."""
    counts = counts.tocsr()
    return reduce_pieces(lambda: iter([counts]), dims, seed, min_df=min_df)


# -- stored by shard, reduced over all: bounded memory at any corpus size -------------------------------------------

# At most this many rows fit the weights and the reduction; the rest are only transformed, a shard at a time.
FIT_ROWS = 20_000


def count_rows(texts: Sequence[str]) -> tuple[pa.ListArray, pa.ListArray]:
    """Each text's hashed term counts as Arrow lists (term indices, counts): what a shard's store keeps for the
    offline vectors (built from the sparse matrix's own arrays, never as Python lists)."""
    counts = term_counts(texts)
    offsets = pa.array(counts.indptr.astype(np.int32))
    return (
        pa.ListArray.from_arrays(offsets, pa.array(counts.indices.astype(np.int32))),
        pa.ListArray.from_arrays(offsets, pa.array(counts.data.astype(np.float64))),
    )


def stored_matrix(terms: pa.ListArray | None, values: pa.ListArray) -> sparse.csr_matrix:
    """The sparse matrix of a store's rows, from its Arrow lists: hashed term counts (`terms`, `values`), or dense
    vectors of one width (`terms` None)."""
    n = len(values)
    offsets = values.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0] if n else 0
    data = values.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    if terms is None:
        return sparse.csr_matrix(data.reshape(n, int(offsets[1]) if n else 1))
    indices = terms.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    return sparse.csr_matrix((data, indices, offsets), shape=(n, HASH_FEATURES))


def reduce_pieces(
    pieces: Callable[[], Iterator[sparse.csr_matrix]],
    dims: int = 64,
    seed: int = 0,
    tfidf: bool = True,
    min_df: int = 2,
) -> np.ndarray:
    """Dense, L2-normalised float32 vectors of every row of `pieces()` (called once or twice; each call yields the
    same sparse matrices in the same order, e.g. one per shard read from disk), in bounded memory: the IDF weights
    are counted over all rows, the seeded truncated SVD is fitted on at most FIT_ROWS of them (a seeded sample) and
    every piece is then transformed in turn. `tfidf=False` reduces stored dense vectors (a provider's embeddings) the
    same way. A row with no term shared with another row stays all zeros."""
    sizes, df, width = [], None, 0
    for piece in pieces():
        sizes.append(piece.shape[0])
        width = piece.shape[1]
        if tfidf:  # in how many rows each term occurs
            col = np.bincount(piece.indices, minlength=width)
            df = col if df is None else df + col
    n = sum(sizes)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if tfidf:
        # a term in one passage only cannot make two passages alike: left out, which keeps the reduction's matrices
        # small at any corpus size (most word pairs occur once)
        shared = np.flatnonzero(df >= min_df)
        if not shared.size:  # no two passages share a term (a few short texts): every row stays all zeros
            return np.zeros((n, 1), dtype=np.float32)
        idf = np.log((1 + n) / (1 + df[shared])) + 1

    def weighted(m: sparse.csr_matrix) -> sparse.csr_matrix:
        if not tfidf:
            return normalize(m)
        m = m[:, shared].astype(np.float64)
        m.data = 1 + np.log(m.data)
        return normalize(m @ sparse.diags(idf))

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=FIT_ROWS, replace=False)) if n > FIT_ROWS else None
    sample, offset = [], 0
    for piece in pieces():
        if chosen is None:
            sample.append(weighted(piece))
        else:
            lo, hi = np.searchsorted(chosen, [offset, offset + piece.shape[0]])
            sample.append(weighted(piece[chosen[lo:hi] - offset]))
        offset += piece.shape[0]
    fit = sparse.vstack(sample).tocsr()
    used = np.unique(fit.indices).size
    # No more shared terms than dimensions asked (a few dozen proposed codes, a small corpus): the weighted rows
    # themselves, exact, rather than an SVD squeezed below the data's own rank (it put 10 distinct candidate codes on
    # one line). Otherwise up to one component per row fitted.
    k = 0 if used <= dims else min(dims, fit.shape[0], used - 1)
    if k < 1:
        keep = np.unique(fit.indices)
        out = [weighted(p)[:, keep].toarray() for p in pieces()] if used else [np.zeros((s, 1)) for s in sizes]
        return normalize(np.vstack(out)).astype(np.float32)
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed).fit(fit)
    del fit, sample
    return np.vstack([normalize(svd.transform(weighted(p))) for p in pieces()]).astype(np.float32)


def vectors(
    texts: Sequence[str],
    model: str | None = None,
    llm: LLMConfig | None = None,
    cache: AnswerCache | None = None,
    limits: LimitsConfig | None = None,
    price: Price | None = None,
    dims: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """The one way to turn passages into vectors: a row per text, L2-normalised, at most `dims` wide, the same for
    the same inputs. Without `model`, the offline vectors (no model, no network); with it, `model`'s embeddings
    from llm's OpenAI-compatible endpoint through the answer cache (`coding.embeddings.embed`: only texts never
    embedded before are sent), reduced to `dims` by the same seeded SVD."""
    if model is None:
        return offline_vectors(texts, dims, seed).astype(np.float32)
    if llm is None or cache is None:
        raise ValueError("provider embeddings need the llm settings and the answer cache")
    embedded, _ = provider.embed(texts, llm, model, cache, limits, price)
    dense = sparse.csr_matrix(np.asarray(embedded, dtype=np.float64).reshape(len(texts), -1))
    return reduce_pieces(lambda: iter([dense]), dims, seed, tfidf=False)


def archived(
    texts: Sequence[str], model: str, llm: LLMConfig, cache: AnswerCache
) -> list[tuple[LLMRequest, CachedAnswer, str]]:
    """The embedding requests of `texts` with the answers the cache holds for them, for a replay archive (each text
    once; a text never embedded is left out)."""
    pairs = []
    for text in dict.fromkeys(texts):
        req = provider.embedding_request(llm, model, text)
        hit = cache.get(req.key())
        if hit is not None:
            pairs.append((req, hit, req.key()))
    return pairs
