"""The themes stage at scale (issue 21): peak memory and time of its jobs at 100,000 chunks.

    python benchmarks/themes_scale.py [--chunks 100000] [--shards 16] [--source CSV --text-column text_long]
                                      [--embeddings DIMS]

The stage's two jobs are run as the workflow runs them, each in its own process (peak RSS from getrusage): one
`theme_vectors` job (the vectors of one shard of the coded chunks) and the `themes` job (every shard's vectors
reduced, clustered, repeated for stability, and every table, the excerpts CSV and the methods sentence written).
The passages: --source CSV's --text-column cycled (a repeat gets " (copy K)"), by default the long COVID-19 worry
narratives of /work/shared/extdata/rwwd_covid19worry (never copied into the repository), else synthetic answers.
--embeddings DIMS stores random provider-like vectors of DIMS dimensions instead of the offline term counts (the
provider's path after the cache). `benchmarks/scale.py` runs the whole workflow, the themes stage included, and
reports each rule's peak RSS from its benchmark files.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import source_texts, synthetic_texts  # noqa: E402

from qualcode.analysis import themes  # noqa: E402
from qualcode.config import ThemesConfig  # noqa: E402
from qualcode.outputs import tables  # noqa: E402

SOURCE = Path("/work/shared/extdata/rwwd_covid19worry/rwwd_phase1_clean.csv")


def job(kind: str, work: Path, shard: int, dims: int) -> None:
    """One job, in this process (run by `main` in a subprocess of its own)."""
    if kind == "vectors":
        ids = (work / "ids.txt").read_text().split("\n")
        per = -(-len(ids) // int((work / "shards.txt").read_text()))
        rows = slice(shard * per, (shard + 1) * per)
        # memory-mapped, and only this shard's texts as Python strings, as the job reads only its shard's chunks
        texts = pa.ipc.open_file(pa.memory_map(str(work / "texts.arrow"))).read_all().column("text")
        texts = texts.slice(rows.start, per).to_pylist()
        ids = ids[rows]
        rows = slice(None)
        embedded = None
        if dims:
            rng = np.random.default_rng(shard)
            embedded = rng.normal(size=(len(ids[rows]), dims)).tolist()
        tables.write(themes.shard_vectors(ids[rows], texts[rows], embedded), work / "vectors" / f"{shard:03d}.parquet")
    else:
        stores = sorted((work / "vectors").glob("*.parquet"))
        out = {name: work / "out" / f"{name}.parquet" for name in tables.THEME_TABLES}
        out |= {"excerpts_csv": work / "out" / "themes_excerpts.csv", "methods": work / "out" / "methods.md"}
        settings = ThemesConfig(embeddings="bench" if dims else None)
        result = themes.write_outputs(stores, work / "excerpts.parquet", settings, out)
        print(result.summary())
    print(f"PEAK_RSS_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


def run_job(kind: str, work: Path, shard: int, dims: int) -> tuple[float, float, str]:
    start = time.perf_counter()
    cmd = [sys.executable, __file__, "--job", kind, "--work", str(work), "--shard", str(shard), "--embeddings",
           str(dims)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{kind} job failed:\n{proc.stderr[-3000:]}")
    peak = float(proc.stdout.rsplit("PEAK_RSS_MB", 1)[1])
    return time.perf_counter() - start, peak, proc.stdout.split("PEAK_RSS_MB")[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--text-column", default="text_long")
    parser.add_argument("--embeddings", type=int, default=0)
    parser.add_argument("--job", choices=["vectors", "themes"])
    parser.add_argument("--work", type=Path)
    parser.add_argument("--shard", type=int, default=0)
    opts = parser.parse_args()
    if opts.job:
        job(opts.job, opts.work, opts.shard, opts.embeddings)
        return
    n = opts.chunks
    texts = source_texts(opts.source, opts.text_column, n) if opts.source.is_file() else synthetic_texts(n)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ids = [f"{i:016x}" for i in range(n)]
        (work / "ids.txt").write_text("\n".join(ids))
        (work / "shards.txt").write_text(str(opts.shards))
        with pa.ipc.new_file(work / "texts.arrow", pa.schema([("text", pa.string())])) as w:
            w.write_table(pa.table({"text": texts}))
        excerpts = pa.table({
            "doc_id": [f"doc{i // 4}" for i in range(n)], "chunk_index": [i % 4 for i in range(n)], "chunk_id": ids,
            "status": ["coded"] * n, "start": [0] * n, "end": [len(t) for t in texts], "speakers": [[]] * n,
            "text": texts,
            "codes": [[{"field": "topic", "value": f"v{i % 9}", "quote": t[:20], "grounding": "exact"}]
                      for i, t in enumerate(texts)],
            "codes_text": [f"topic=v{i % 9}" for i in range(n)],
        }, schema=tables.EXCERPTS)  # fmt: skip
        tables.write(excerpts, work / "excerpts.parquet")
        del excerpts
        words = sum(len(t.split()) for t in texts) / n
        kind = f"provider vectors of {opts.embeddings} dims" if opts.embeddings else "offline vectors"
        print(f"{n:,} chunks (mean {words:.0f} words), {opts.shards} shards, {kind}")
        timings = [run_job("vectors", work, s, opts.embeddings) for s in range(opts.shards)]
        secs, peaks = [t for t, _, _ in timings], [p for _, p, _ in timings]
        print(f"theme_vectors: {opts.shards} jobs, {np.mean(secs):.1f} s each (max {max(secs):.1f}), "
              f"peak RSS max {max(peaks):.0f} MB")  # fmt: skip
        secs, peak, summary = run_job("themes", work, 0, opts.embeddings)
        print(f"themes: {secs:.1f} s, peak RSS {peak:.0f} MB; {summary}")


if __name__ == "__main__":
    main()
