"""How well the themes stage's clustering recovers human codes (issue 21), on a corpus a person tagged.

    python benchmarks/themes_recovery.py [--source DIR] [--seed 0]

The corpus: the "Oral History as Data" demo transcripts (five poets interviewed about writing and computers), whose
paragraphs carry human tags; by default read from /work/shared/extdata/ohd_ctrlshift_oralhistory (never copied into
the repository; their rights statement allows educational use only). Paragraphs with exactly one tag and at least
eight words are the passages; their tag is the human code. The themes stage's vectors (`analysis.embeddings.vectors`,
offline) and clustering (`analysis.themes.cluster`) run on them as the stage runs them, with the number of themes
given (the number of tags) and chosen (`auto`, by silhouette).

Prints, per setting, the adjusted Rand index and the purity (the share of passages whose theme's most common tag is
theirs), beside the same for a seeded random assignment of as many themes (the floor).
"""

from __future__ import annotations

import argparse
import csv
import html
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from qualcode.analysis import embeddings, themes
from qualcode.config import ThemesConfig

SOURCE = Path("/work/shared/extdata/ohd_ctrlshift_oralhistory/transcripts")


def passages(source: Path) -> tuple[list[str], list[str]]:
    texts, tags = [], []
    for path in sorted(source.glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                found = [t.strip() for t in (row.get("tags") or "").split(";") if t.strip()]
                text = html.unescape(row.get("words") or "")
                if len(found) == 1 and len(text.split()) >= 8:
                    texts.append(text)
                    tags.append(found[0])
    return texts, tags


def purity(labels: np.ndarray, truth: list[str]) -> float:
    hits = 0
    for theme in np.unique(labels):
        hits += Counter(t for t, lab in zip(truth, labels, strict=True) if lab == theme).most_common(1)[0][1]
    return hits / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    texts, truth = passages(opts.source)
    n_tags = len(set(truth))
    print(f"{len(texts)} passages with one human tag, {n_tags} tags: {dict(Counter(truth).most_common())}")
    x = embeddings.vectors(texts, dims=64, seed=opts.seed)
    rng = np.random.default_rng(opts.seed)
    print(f"{'setting':<28}{'themes':>7}{'ARI':>8}{'purity':>8}{'random ARI':>12}{'random purity':>15}")
    for label, settings in (
        (f"n_themes={n_tags} (the tags)", ThemesConfig(n_themes=n_tags, seed=opts.seed)),
        ("n_themes=auto (silhouette)", ThemesConfig(seed=opts.seed)),
    ):
        c = themes.cluster(x, settings)
        random = rng.integers(1, c.k + 1, size=len(texts))
        print(f"{label:<28}{c.k:>7}{adjusted_rand_score(truth, c.labels):>8.3f}{purity(c.labels, truth):>8.3f}"
              f"{adjusted_rand_score(truth, random):>12.3f}{purity(random, truth):>15.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
