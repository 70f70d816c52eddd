"""From codes to themes: the coded passages sorted into themes by a seeded clustering of their vectors.

Everything here is seeded and ordered, so the same inputs and settings give byte-identical tables. Memory stays
bounded at any corpus size: the vectors are reduced shard by shard (`embeddings.reduce_pieces`) to a dense matrix of
`themes.dims` float32 columns, the clustering is mini-batch k-means, the number of themes and the silhouette are
judged on a seeded sample, and the repeats for stability are fitted on bootstrap samples of bounded size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

from ..config import ThemesConfig
from ..errors import QualcodeError
from ..outputs import tables
from . import embeddings, naming

logger = logging.getLogger(__name__)

SILHOUETTE_SAMPLE = 2_000  # passages the silhouette of each candidate number of themes is computed on
BOOTSTRAP_ROWS = 20_000  # largest bootstrap sample a repeat is fitted on
BATCH = 1_024


# -- the vectors of a shard, stored for the next run ------------------------------------------------------------


def shard_vectors(chunk_ids: Sequence[str], texts: Sequence[str], embedded: Sequence[Sequence[float]] | None):
    """A shard's store: hashed term counts of each text (offline), or the provider's vectors (`embedded`)."""
    if embedded is None:
        terms, values = embeddings.count_rows(texts)
    else:
        terms = pa.nulls(len(chunk_ids), pa.list_(pa.int32()))
        values = pa.array([list(map(float, v)) for v in embedded], pa.list_(pa.float64()))
    return pa.Table.from_arrays([pa.array(list(chunk_ids), pa.string()), terms, values], schema=tables.THEME_VECTORS)


def _pieces(paths: Sequence[str | Path], dense: bool) -> Iterator[sparse.csr_matrix]:
    for path in paths:
        t = tables.read(path, "theme_vectors", ["terms", "values"])
        terms = None if dense else t.column("terms").combine_chunks()
        yield embeddings.stored_matrix(terms, t.column("values").combine_chunks())


def archive_pairs(
    stores: Sequence[str | Path], chunks: str | Path, plan: Sequence[Any], llm: Any, model: str
) -> Iterator[tuple[Any, Any, None]]:
    """The provider embeddings' (request, answer) pairs for the replay archive, a shard at a time, from the stores
    (named after their shards) and the chunks' texts."""
    by_name = {s.name: s for s in plan}
    for path in stores:
        t = tables.read(path, "theme_vectors", ["chunk_id", "values"])
        text = {c.chunk_id: c.text for c in tables.read_chunks(chunks, by_name[Path(path).stem].rows)}
        ids = t.column("chunk_id").to_pylist()
        yield from embeddings.provider.archive_pairs([text[i] for i in ids], t.column("values").to_pylist(), llm, model)


def stored_chunk_ids(paths: Sequence[str | Path]) -> list[str]:
    return [c for path in paths for c in tables.read(path, "theme_vectors", ["chunk_id"]).column(0).to_pylist()]


def load_vectors(paths: Sequence[str | Path], provider: bool, dims: int, seed: int) -> np.ndarray:
    """Every stored vector reduced to at most `dims` L2-normalised dimensions, in the order of `paths` and rows."""
    return embeddings.reduce_pieces(lambda: _pieces(paths, provider), dims, seed, tfidf=not provider)


# -- the clustering ------------------------------------------------------------------------------------------


@dataclass
class Clustering:
    labels: np.ndarray  # theme per row, 1..k by size (largest first); 0 for an unassigned row
    distance: np.ndarray  # to the theme's centre; nan for an unassigned row
    k: int
    criterion: str  # how k was chosen, for the methods sentence
    silhouettes: dict[int, float] = field(default_factory=dict)


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int = 1) -> MiniBatchKMeans:
    return MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=BATCH, n_init=n_init, max_no_improvement=20).fit(
        x
    )


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)) if n > size else np.arange(n)


def choose_k(x: np.ndarray, settings: ThemesConfig) -> tuple[int, str, dict[int, float]]:
    """The number of themes: as given, else the best mean silhouette over min_themes..max_themes (ties: fewer)."""
    n = len(x)
    distinct = len(np.unique(x.round(6), axis=0)) if n else 0
    if settings.n_themes != "auto":
        k = max(1, min(settings.n_themes, distinct))
        return k, f"{settings.n_themes} themes, as set", {}
    sample = x[_sample(n, SILHOUETTE_SAMPLE, settings.seed)]
    scores: dict[int, float] = {}
    for k in range(settings.min_themes, min(settings.max_themes, distinct - 1, len(sample) - 1) + 1):
        labels = _kmeans(sample, k, settings.seed).labels_
        if len(np.unique(labels)) > 1:
            scores[k] = round(float(silhouette_score(sample, labels)), 6)
    if not scores:
        return max(1, min(distinct, 1)), "one theme (too few distinct passages to compare numbers of themes)", {}
    best = max(scores, key=lambda k: (scores[k], -k))
    criterion = (
        f"the number of themes between {settings.min_themes} and {settings.max_themes} with the highest mean "
        f"silhouette ({scores[best]:.2f}, on {len(sample):,} passages)"
    )
    return best, criterion, scores


def cluster(x: np.ndarray, settings: ThemesConfig) -> Clustering:
    """Seeded mini-batch k-means; rows of zeros (passages sharing no word with another) are left unassigned."""
    n = len(x)
    assigned = np.flatnonzero(np.abs(x).sum(axis=1) > 0) if n else np.zeros(0, dtype=int)
    labels = np.zeros(n, dtype=np.int32)
    distance = np.full(n, np.nan)
    if len(assigned) == 0:
        return Clustering(labels, distance, 0, "no passages to cluster")
    xa = x[assigned].astype(np.float64)  # distances in float64: the tables' numbers do not carry float32 noise
    k, criterion, scores = choose_k(xa, settings)
    if k == 1:
        raw, centres = np.zeros(len(xa), dtype=int), xa.mean(axis=0, keepdims=True)
    else:
        model = _kmeans(xa, k, settings.seed, n_init=3)  # the published themes: the best of three starts
        raw, centres = model.labels_, model.cluster_centers_
    d = np.linalg.norm(xa - centres[raw], axis=1)
    # themes numbered by size, largest first; ties by their first passage, so the numbers never depend on the seed's
    # arbitrary cluster order
    sizes = np.bincount(raw, minlength=k)
    first = np.array([np.flatnonzero(raw == c)[0] if sizes[c] else n for c in range(k)])
    order = sorted((c for c in range(k) if sizes[c]), key=lambda c: (-sizes[c], first[c]))
    renumber = np.zeros(k, dtype=np.int32)
    renumber[order] = np.arange(1, len(order) + 1)
    labels[assigned] = renumber[raw]
    distance[assigned] = np.round(d, 6)
    return Clustering(labels, distance, len(order), criterion, scores)


def stability(x: np.ndarray, c: Clustering, settings: ThemesConfig) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """The clustering repeated `stability_runs` times, each on a bootstrap sample with its own seed, then applied to
    every passage: the adjusted Rand index of each repeat with the published themes, and per theme the mean share
    of its passages that a repeat keeps in one theme (its largest part)."""
    assigned = np.flatnonzero(c.labels > 0)
    runs: list[dict[str, Any]] = []
    kept: dict[int, list[float]] = {t: [] for t in range(1, c.k + 1)}
    if c.k < 2 or len(assigned) < 3:
        return runs, {}
    xa, ref = x[assigned], c.labels[assigned]
    n = len(xa)
    for run in range(1, settings.stability_runs + 1):
        seed = settings.seed + run
        rows = np.random.default_rng(seed).integers(0, n, size=min(n, BOOTSTRAP_ROWS))
        model = _kmeans(xa[rows], min(c.k, len(np.unique(xa[rows].round(6), axis=0))), seed)
        again = model.predict(xa)
        runs.append({"run": run, "seed": seed, "sample": f"bootstrap of {len(rows):,}", "n_themes": c.k,
                     "ari": round(float(adjusted_rand_score(ref, again)), 6)})  # fmt: skip
        for t in kept:
            members = again[ref == t]
            kept[t].append(float(np.bincount(members).max() / len(members)) if len(members) else math.nan)
    return runs, {t: round(float(np.mean(v)), 6) for t, v in kept.items() if v}


def projection(x: np.ndarray, seed: int) -> np.ndarray:
    """Seeded 2-D coordinates for the map (PCA fitted on a sample, applied to all)."""
    if len(x) == 0:
        return np.zeros((0, 2))
    if x.shape[1] < 2 or len(x) < 3:
        return np.zeros((len(x), 2))
    pca = PCA(n_components=2, random_state=seed, svd_solver="randomized").fit(x[_sample(len(x), 20_000, seed)])
    return np.round(pca.transform(x).astype(np.float64), 6)


# -- the tables -------------------------------------------------------------------------------------------------


@dataclass
class Passages:
    """What the tables need of every coded chunk, in the stores' order."""

    chunk_ids: list[str]
    doc_ids: list[str]
    chunk_index: list[int]
    # the long columns stay Arrow arrays (lists are converted): at 100,000 passages, Python strings and dicts of
    # them would take most of the job's memory
    texts: Any  # pa.Array of strings
    codes: Any  # pa.Array of lists of {field, value, quote, grounding}, as excerpts.parquet has them
    group: list[str | None] | None  # the `themes.by` metadata value

    def __post_init__(self) -> None:
        if not isinstance(self.texts, pa.Array | pa.ChunkedArray):
            self.texts = pa.array(self.texts, pa.string())
        if not isinstance(self.codes, pa.Array | pa.ChunkedArray):
            self.codes = pa.array(self.codes, pa.list_(tables.EXCERPT_CODE))
        if isinstance(self.texts, pa.ChunkedArray):
            self.texts = self.texts.combine_chunks()
        if isinstance(self.codes, pa.ChunkedArray):
            self.codes = self.codes.combine_chunks()

    def text(self, i: int) -> str:
        return self.texts[i].as_py()

    def code_rows(self) -> pd.DataFrame:
        """One row per distinct (passage, field, value) with a value: `row` is the passage's position."""
        flat = pc.list_flatten(self.codes)
        frame = pd.DataFrame({
            "row": pc.list_parent_indices(self.codes).to_numpy(),
            "field": flat.field("field").to_pandas(),
            "value": flat.field("value").to_pandas(),
        })  # fmt: skip
        return frame[frame.value.notna() & (frame.value != "")].drop_duplicates()


def read_passages(excerpts: str | Path, chunk_ids: Sequence[str], by: str | None) -> Passages:
    """The coded chunks' rows of excerpts.parquet, in the order of `chunk_ids`."""
    cols = ["chunk_id", "doc_id", "chunk_index", "text", "codes"]
    meta = f"meta_{by}" if by else None
    names = tables.check(excerpts, "excerpts").schema_arrow.names
    if meta is not None and meta not in names:
        known = ", ".join(n.removeprefix("meta_") for n in names if n.startswith("meta_")) or "none"
        raise QualcodeError(f"themes.by: the documents have no metadata {by!r} (they have: {known})")
    t = tables.read(excerpts, "excerpts", cols + ([meta] if meta else []))
    where = {c: i for i, c in enumerate(t.column("chunk_id").to_pylist())}
    missing = [c for c in chunk_ids if c not in where]
    if missing:
        raise QualcodeError(f"{excerpts}: no row for chunk {missing[0]} (and {len(missing) - 1} more); "
                                   "rerun the tables rule")  # fmt: skip
    t = t.take(pa.array([where[c] for c in chunk_ids], pa.int64()))
    return Passages(
        chunk_ids=list(chunk_ids),
        doc_ids=t.column("doc_id").to_pylist(),
        chunk_index=t.column("chunk_index").to_pylist(),
        texts=t.column("text"),
        codes=t.column("codes"),
        group=t.column(meta).to_pylist() if meta else None,
    )


def theme_codes(c: Clustering, p: Passages) -> list[dict[str, Any]]:
    rows = p.code_rows()
    rows["theme"] = c.labels[rows.row.to_numpy()] if len(rows) else np.zeros(0, dtype=np.int32)
    rows = rows[rows.theme > 0]
    themed = int((c.labels > 0).sum())
    overall = rows.groupby(["field", "value"]).size()
    size = np.bincount(c.labels, minlength=c.k + 1)
    out = []
    for (t, f, v), n in rows.groupby(["theme", "field", "value"]).size().sort_index().items():
        share, base = n / size[t], overall[(f, v)] / themed
        out.append({"theme": int(t), "field": f, "value": v, "n_chunks": int(n), "share": round(share, 6),
                    "overall_share": round(base, 6), "lift": round(share / base, 6)})  # fmt: skip
    return out


def theme_groups(c: Clustering, p: Passages, by: str | None) -> list[dict[str, Any]]:
    if by is None or p.group is None:
        return []
    counts: dict[tuple[int, str | None], int] = {}
    per_group: dict[str | None, int] = {}
    for t, g in zip(c.labels.tolist(), p.group, strict=True):
        if t > 0:
            counts[(t, g)] = counts.get((t, g), 0) + 1
            per_group[g] = per_group.get(g, 0) + 1
    size = np.bincount(c.labels, minlength=c.k + 1)
    return [
        {
            "theme": t,
            "by": by,
            "group": g,
            "n_chunks": n,
            "share_of_theme": round(n / size[t], 6),
            "share_of_group": round(n / per_group[g], 6),
        }  # fmt: skip
        for (t, g), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or ""))
    ]


def ranks(c: Clustering) -> np.ndarray:
    """Each passage's rank by distance within its theme (1 = most central; ties by the stores' order)."""
    rank = np.zeros(len(c.labels), dtype=np.int32)
    for t in range(1, c.k + 1):
        members = np.flatnonzero(c.labels == t)
        rank[members[np.lexsort((members, c.distance[members]))]] = np.arange(1, len(members) + 1)
    return rank


def themes_rows(
    c: Clustering, p: Passages, codes: list[dict[str, Any]], kept: dict[int, float], settings: ThemesConfig,
    names: dict[int, naming.Named] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    rank = ranks(c)
    themed = int((c.labels > 0).sum())
    rows = []
    for t in range(1, c.k + 1):
        members = np.flatnonzero(c.labels == t)
        central = members[np.argsort(rank[members], kind="stable")][: settings.representatives]
        mine = [r for r in codes if r["theme"] == t and r["n_chunks"] >= 2 and r["lift"] > 1]
        top = sorted(mine, key=lambda r: (-r["lift"], -r["n_chunks"], r["field"], r["value"]))[:3]
        top_codes = [f"{r['field']}={r['value']}" for r in top]
        named = (names or {}).get(t)
        rows.append({
            "theme": t,
            "name": named.name if named else f"Theme {t}" + (f": {', '.join(r['value'] for r in top)}" if top else ""),
            "description": named.description if named else None,
            "quotes": list(named.quotes) if named else [],
            "n_chunks": len(members),
            "n_documents": len({p.doc_ids[i] for i in members}),
            "share": round(len(members) / themed, 6),
            "stability": kept.get(t),
            "top_codes": top_codes,
            "representatives": [p.chunk_ids[i] for i in central],
        })  # fmt: skip
    return rows


@dataclass
class Result:
    tables: dict[str, pa.Table]
    clustering: Clustering
    passages: Passages
    runs: list[dict[str, Any]]
    unassigned: int
    codes: list[dict[str, Any]]
    kept: dict[int, float]
    settings: ThemesConfig

    def evidence(self) -> list[naming.Evidence]:
        """What the model is shown to name each theme: its most central passages and its top codes."""
        where = {c: i for i, c in enumerate(self.passages.chunk_ids)}
        return [
            naming.Evidence(
                row["theme"],
                tuple(self.passages.text(where[c]) for c in row["representatives"]),
                tuple(row["top_codes"]),
            )  # fmt: skip
            for row in self.tables["themes"].to_pylist()
        ]

    def named(self, names: dict[int, naming.Named]) -> None:
        """The themes table again, with the model's names, descriptions and grounded quotes."""
        rows = themes_rows(self.clustering, self.passages, self.codes, self.kept, self.settings, names)
        self.tables["themes"] = pa.Table.from_pylist(rows, schema=tables.THEMES)

    def summary(self) -> dict[str, Any]:
        aris = [r["ari"] for r in self.runs]
        return {
            "n_chunks": len(self.passages.chunk_ids),
            "n_themes": self.clustering.k,
            "unassigned": self.unassigned,
            "criterion": self.clustering.criterion,
            "ari_mean": round(float(np.mean(aris)), 6) if aris else None,
            "ari_min": round(float(np.min(aris)), 6) if aris else None,
            "runs": len(aris),
        }


def build(x: np.ndarray, p: Passages, settings: ThemesConfig) -> Result:
    """Every theme table from the passages' vectors (rows in the passages' order)."""
    c = cluster(x, settings)
    runs, kept = stability(x, c, settings)
    codes = theme_codes(c, p)
    xy = projection(x, settings.seed)
    rank = ranks(c)
    chunk_rows = {
        "chunk_id": p.chunk_ids,
        "doc_id": p.doc_ids,
        "chunk_index": p.chunk_index,
        "theme": [int(t) if t > 0 else None for t in c.labels],
        "distance": [None if math.isnan(d) else float(d) for d in c.distance],
        "rank": [int(r) if r > 0 else None for r in rank],
        "x": xy[:, 0].tolist() if len(xy) else [],
        "y": xy[:, 1].tolist() if len(xy) else [],
    }
    out = {
        "themes": pa.Table.from_pylist(themes_rows(c, p, codes, kept, settings), schema=tables.THEMES),
        "chunk_themes": pa.table(chunk_rows, schema=tables.CHUNK_THEMES),
        "theme_codes": pa.Table.from_pylist(codes, schema=tables.THEME_CODES),
        "theme_groups": pa.Table.from_pylist(theme_groups(c, p, settings.by), schema=tables.THEME_GROUPS),
        "theme_runs": pa.Table.from_pylist(runs, schema=tables.THEME_RUNS),
    }
    return Result(out, c, p, runs, int((c.labels == 0).sum()), codes, kept, settings)


def methods_sentence(summary: dict[str, Any], settings: ThemesConfig) -> str:
    """What a methods section says of the themes, from the figures computed (never assumed)."""
    if not summary["n_chunks"]:
        return "No passage was coded, so no themes were formed."
    vectors = f"the embeddings of {settings.embeddings}" if settings.embeddings else "hashed word and word-pair TF-IDF"
    k = summary["n_themes"]
    text = (
        f"The {summary['n_chunks']:,} coded passages were represented by {vectors}, reduced by a seeded truncated SVD "
        f"to at most {settings.dims} dimensions, and grouped by seeded mini-batch k-means (seed {settings.seed}) "
        f"into {k} theme{'s' * (k != 1)}, {summary['criterion']}"
    )
    left = summary["unassigned"]
    if left:
        many = left != 1
        text += (
            f"; {left:,} passage{'s' * many} shared no word with any other passage and "
            f"{'were' if many else 'was'} left unassigned."
        )
    else:
        text += "; every passage was assigned a theme."
    if summary["runs"]:
        text += (
            f" Repeated on {summary['runs']} bootstrap samples with other seeds, the clustering agreed with the "
            f"published one with a mean adjusted Rand index of {summary['ari_mean']:.2f} (lowest "
            f"{summary['ari_min']:.2f}); each theme's share of passages kept together is in themes.parquet."
        )
    return text


CSV_ROWS = 20_000  # rows of the excerpts CSV put together at a time: the texts never all become Python strings


def write_excerpts_csv(result: Result, path: str | Path) -> int:
    """The themed passages for reading, by theme then from the most central (unassigned last), with a `theme`
    column first and each passage's codes (`field=value; ...`); written a slice at a time."""
    c, p = result.clustering, result.passages
    rank = ranks(c)
    names = dict(zip(result.tables["themes"].column("theme").to_pylist(),
                     result.tables["themes"].column("name").to_pylist(), strict=True))  # fmt: skip
    frame = pd.DataFrame({
        "theme": pd.array([int(t) if t > 0 else None for t in c.labels], dtype="Int64"),
        "theme_name": [names.get(int(t), "unassigned") for t in c.labels],
        "rank": pd.array([int(r) if r > 0 else None for r in rank], dtype="Int64"),
        "distance": [None if math.isnan(d) else float(d) for d in c.distance],
        "doc_id": p.doc_ids,
        "chunk_index": p.chunk_index,
        "chunk_id": p.chunk_ids,
    })  # fmt: skip
    order = np.lexsort((rank, np.where(c.labels > 0, c.labels, np.iinfo(np.int32).max)))
    codes = p.code_rows()
    codes["code"] = codes.field + "=" + codes.value
    by_row = codes.groupby("row", sort=False).code.agg("; ".join)
    with tables.open_csv(path) as fh:
        for start in range(0, max(len(order), 1), CSV_ROWS):
            rows = order[start : start + CSV_ROWS]
            part = frame.iloc[rows].reset_index(drop=True)
            part["codes"] = by_row.reindex(rows).fillna("").to_numpy()
            part["text"] = p.texts.take(pa.array(rows, pa.int64())).to_pylist()
            tables.write_csv(part, fh, header=start == 0)
    return len(order)


# -- the stage's jobs ---------------------------------------------------------------------------------------------


def embed_shard(
    chunks: Sequence[Any], results: Sequence[Any], settings: ThemesConfig, llm: Any = None, cache: Any = None,
    limits: Any = None, price: Any = None,
) -> pa.Table:  # fmt: skip
    """A shard's store: the vectors of its coded chunks (the provider's, through the answer cache, or the offline
    term counts), in the shard's order."""
    coded = {r.chunk_id for r in results if r.status == "coded"}
    mine = [c for c in chunks if c.chunk_id in coded]
    texts = [c.text for c in mine]
    embedded = None
    if settings.embeddings:
        if llm is None or cache is None:
            raise ValueError("provider embeddings need the llm settings and the answer cache")
        embedded, sent = embeddings.provider.embed(texts, llm, settings.embeddings, cache, limits, price)
        logger.info("embeddings: %d chunks, %d sent to the model, %d from the cache", len(texts), sent,
                    len(texts) - sent)  # fmt: skip
    return shard_vectors([c.chunk_id for c in mine], texts, embedded)


def write_outputs(
    stores: Sequence[str | Path],
    excerpts: str | Path,
    settings: ThemesConfig,
    out: dict[str, str | Path],
    metadata: dict[str, str] | None = None,
    namer: Callable[[list[naming.Evidence]], dict[int, naming.Named]] | None = None,
) -> Result:
    """Every theme table (`tables.THEME_TABLES`), the excerpts CSV by theme and centrality (`out['excerpts_csv']`)
    and the methods sentence (`out['methods']`), from the shards' stores and excerpts.parquet; `namer` (e.g.
    `naming.name_themes` with its settings) names the themes."""
    chunk_ids = stored_chunk_ids(stores)
    x = load_vectors(stores, bool(settings.embeddings), settings.dims, settings.seed)
    result = build(x, read_passages(excerpts, chunk_ids, settings.by), settings)
    if namer is not None and result.clustering.k:
        result.named(namer(result.evidence()))
    for name in tables.THEME_TABLES:
        tables.write(result.tables[name], out[name], metadata=metadata)
    write_excerpts_csv(result, out["excerpts_csv"])
    Path(out["methods"]).parent.mkdir(parents=True, exist_ok=True)
    Path(out["methods"]).write_text(methods_sentence(result.summary(), settings) + "\n", encoding="utf-8")
    return result
