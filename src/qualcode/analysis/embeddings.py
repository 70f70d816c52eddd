"""Passages as vectors, for grouping them (themes, the consolidation of proposed codes).

The offline default needs no model and no network: word and word-pair counts hashed into a fixed space (stateless,
so one passage's counts never depend on the others and can be stored by shard and reused), weighted by TF-IDF over
the texts at hand and reduced to a few dense dimensions with a seeded truncated SVD. Rows are L2-normalised, so
Euclidean distances order pairs as cosine distances do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.preprocessing import normalize

# 2**18 buckets: collisions are rare for a study's vocabulary, and the sparse counts stay small.
HASH_FEATURES = 2**18


def term_counts(texts: Sequence[str]) -> sparse.csr_matrix:
    """Each text's word and word-pair counts in the hashed space; a pure function of the text alone."""
    vectorizer = HashingVectorizer(
        n_features=HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm=None, lowercase=True
    )
    return vectorizer.transform(list(texts)).tocsr()


def offline_vectors(texts: Sequence[str], dims: int = 64, seed: int = 0) -> np.ndarray:
    """Dense, L2-normalised vectors of `dims` dimensions (fewer when there are fewer texts or terms), the same for
    the same texts, dims and seed."""
    return reduce_counts(term_counts(texts), dims, seed)


def reduce_counts(counts: sparse.spmatrix, dims: int = 64, seed: int = 0) -> np.ndarray:
    """TF-IDF weights over these rows, then a seeded truncated SVD to at most `dims` dimensions, rows normalised."""
    n = counts.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    weighted = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    used = np.unique(weighted.nonzero()[1]).size
    k = min(dims, n - 1, used - 1)
    if k < 1:  # one text, or texts sharing one term: nothing to reduce
        dense = weighted[:, np.unique(weighted.nonzero()[1])].toarray() if used else np.zeros((n, 1))
        return normalize(dense)
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed)
    return normalize(svd.fit_transform(weighted))
