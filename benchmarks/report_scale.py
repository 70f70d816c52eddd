"""Scale: the report's cost per chunk, on synthetic tables of 1k, 10k and 100k chunks.

    python benchmarks/report_scale.py [--sizes 1000,10000,100000] [--chunks-per-doc 1] [--failed 0.05]
                                      [--codebook config/codebook.yaml] [--keep DIR]

For each size, builds codes, codings, llm_calls and failures Parquet tables with the schemas of
qualcode.outputs.tables, as a run with that codebook would write them: every choice and boolean field answered
(1 to max_items values of a multiple-choice field), a quote with a grounding category per quoted field, a
share `--failed` of chunks failed with a reason and a 2,000-character raw answer, and a few unreadable
files. One chunk per document by default (a survey with one short answer per row, as benchmarks/scale.py
builds), the worst case for the documents heatmap.

Then runs `report.write_report`, the one function workflow/scripts/report_plots.py runs, in a fresh Python
process per size (so one size's peak memory is not another's), and prints per size, side by side: wall time
("report s") and CPU time ("cpu s") of write_report, the job's time with Python's start and the imports
("job s"), and peak RSS (VmHWM, else getrusage's ru_maxrss), which includes Python, pandas, pyarrow and
matplotlib (">imports" subtracts the peak reached after importing them); each per chunk, and per chunk
between consecutive sizes (Δ, of CPU time and of peak RSS), which is the cost that grows with the corpus.
Timings depend on the machine's load (the CPU time less so). The PNG sizes in pixels and the size of
failures.html are printed too, to show that they do not grow.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from qualcode.inputs import codebook as codebook_mod
from qualcode.outputs import tables

REPO = Path(__file__).resolve().parent.parent
GROUNDING = (["exact", "normalised", "ungrounded", "empty"], [0.6, 0.15, 0.2, 0.05])
REASONS = (
    "not valid JSON: Expecting ',' delimiter at character {n}",
    "does not match the schema: emotions/value/{n}: 'sadness' is not one of ['fear', 'grief']",
    "http://127.0.0.1:8000/v1 answered HTTP 500 after {n} attempts",
    "the model refused: I cannot help with passage {n}",
)
OUTPUTS = {
    "frequencies": "code_frequencies.png",
    "cooccurrence": "code_cooccurrence.png",
    "documents": "documents_by_codes.png",
    "grounding": "quote_grounding.png",
    "failures": "failures.html",
    "usage": "model_calls.html",
}


def _strings(indices: np.ndarray, values: list[str]) -> pa.Array:
    """Strings from integer indices into `values`, built in Arrow rather than one Python string per row."""
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(values, pa.string())).cast(
        pa.string()
    )


def build_tables(cb: codebook_mod.Codebook, n: int, chunks_per_doc: int, failed_share: float, out: Path) -> dict:
    """Write the four tables for `n` chunks into `out`; returns their row counts."""
    rng = np.random.default_rng(n)
    n_docs = -(-n // chunks_per_doc)
    doc = np.arange(n) // chunks_per_doc
    chunk_index = (np.arange(n) % chunks_per_doc).astype(np.int32)
    doc_ids = [f"answers.csv#{i:07d}" for i in range(n_docs)]
    chunk_ids = [rng.bytes(8).hex() for _ in range(n)]
    failed = rng.random(n) < failed_share
    coded = np.flatnonzero(~failed)

    # codes: one row per coded chunk, field and value, in chunk then codebook order
    parts = []  # (chunk, field number, value, grounding number) per row
    value_names: list[str] = []
    wide: dict[str, pa.Array] = {}
    for fi, f in enumerate(cb.fields):
        g = rng.choice(len(GROUNDING[0]), size=n, p=GROUNDING[1]) if f.quote else np.full(n, -1)
        if f.type == "text":
            chunk = coded
            first = len(value_names)
            value_names += [f"A worker describes passage {i}." for i in range(n)]
            values = first + chunk
            text = _strings(np.arange(n), value_names[first : first + n])
            wide[f.name] = pa.array(text.to_pylist(), mask=failed)
        else:
            names = [v.name for v in f.values] if f.values else ["true", "false"]
            first = len(value_names)
            value_names += names
            k = rng.integers(1, (f.max_items or 1) + 1, size=n) if f.type == "multiple_choice" else np.ones(n, int)
            order = np.argsort(rng.random((n, len(names))), axis=1)  # a random ranking of the values per chunk
            take = np.arange(len(names))[None, :] < k[:, None]
            take[failed] = False
            chunk, col = np.nonzero(take)
            values = first + order[chunk, col]
            if f.type == "multiple_choice":
                offsets = np.concatenate([[0], np.cumsum(take.sum(axis=1))]).astype(np.int32)
                wide[f.name] = pa.ListArray.from_arrays(
                    pa.array(offsets), _strings(values - first, names), mask=pa.array(failed)
                )
            elif f.type == "boolean":
                wide[f.name] = pa.array(order[:, 0] == 0, mask=failed)
            else:
                wide[f.name] = pa.array(_strings(order[:, 0], names).to_pylist(), mask=failed)
        if f.quote:
            wide[f"{f.name}_quote"] = pa.array(["the night bus stopped running"] * n, mask=failed)
        parts.append((chunk, np.full(len(chunk), fi), values, g[chunk]))
    chunk, field, value, g = (np.concatenate(p) for p in zip(*parts, strict=True))
    rows = np.argsort(chunk, kind="stable")  # per chunk, fields in codebook order
    chunk, field, value, g = chunk[rows], field[rows], value[rows], g[rows]
    grounding = np.where(g >= 0, g, len(GROUNDING[0]))
    quoted = g >= 0
    codes = pa.table(
        {
            "doc_id": _strings(doc[chunk], doc_ids),
            "chunk_id": _strings(chunk, chunk_ids),
            "chunk_index": pa.array(chunk_index[chunk]),
            "field": _strings(field, [f.name for f in cb.fields]),
            "value": _strings(value, value_names),
            "quote": pa.array(np.where(quoted, "the night bus stopped running", None)),
            "quote_start": pa.array(np.where(quoted, 0, None), pa.int64()),
            "quote_end": pa.array(np.where(quoted, 29, None), pa.int64()),
            "grounding": _strings(grounding, [*GROUNDING[0], "not_asked"]),
            "grounded": pa.array(np.isin(grounding, [0, 1])),
        },
        schema=tables.CODES,
    )
    base = {
        "doc_id": _strings(doc, doc_ids),
        "chunk_id": pa.array(chunk_ids),
        "chunk_index": pa.array(chunk_index),
        "status": _strings(failed.astype(int), ["coded", "failed"]),
    }
    schema = tables.codings_schema(cb)
    codings = pa.table({name: (base | wide)[name] for name in schema.names}, schema=schema)

    tokens_in = rng.integers(800, 1200, size=n)
    tokens_out = rng.integers(60, 200, size=n)
    calls = pa.table(
        {
            "chunk_id": pa.array(chunk_ids),
            "doc_id": base["doc_id"],
            "status": base["status"],
            "request_hash": pa.array([rng.bytes(32).hex() for _ in range(n)]),
            "provider": _strings(np.zeros(n, int), ["openai"]),
            "base_url": _strings(np.zeros(n, int), ["http://127.0.0.1:8000/v1"]),
            "model_asked": _strings(np.zeros(n, int), ["gpt-4o-mini"]),
            "model_served": pa.array(np.where(failed, None, "gpt-4o-mini-2024-07-18")),
            "system_fingerprint": pa.array(np.where(failed, None, "fp_0123456789")),
            "finish_reason": pa.array(np.where(failed, "length", "stop")),
            "tokens_in": pa.array(tokens_in),
            "tokens_out": pa.array(tokens_out),
            "latency_s": pa.array(rng.gamma(2.0, 0.8, size=n).round(3)),
            "attempts": pa.array(np.where(failed, 3, 1).astype(np.int32)),
            "reasks": pa.array(np.where(failed, 2, 0).astype(np.int32)),
            "retries": pa.array((rng.random(n) < 0.01).astype(np.int32)),
            "answered_at": pa.array(["2025-01-01T00:00:00Z"] * n),
            "cache_hit": pa.array(rng.random(n) < 0.3),
            "cost": pa.array(tokens_in * 0.15e-6 + tokens_out * 0.6e-6),
        },
        schema=tables.LLM_CALLS,
    )

    bad = np.flatnonzero(failed)
    kind = rng.integers(0, len(REASONS), size=len(bad))
    number = rng.integers(1, 5000, size=len(bad))
    raw = '{"emotions": {"value": ["fear", "fear", "fear' + ', "fear' * 330  # a looping model, ~2,000 chars
    coding_failures = pa.table(
        {
            "stage": pa.array(["coding"] * len(bad)),
            "source_file": pa.array([None] * len(bad), pa.string()),
            "doc_id": _strings(doc[bad], doc_ids),
            "chunk_id": _strings(bad, chunk_ids),
            "reason": pa.array([REASONS[k].format(n=m) for k, m in zip(kind, number, strict=True)]),
            "raw_answer": pa.array([raw] * len(bad)),
            "attempts": pa.array(np.full(len(bad), 3, np.int32)),
        },
        schema=tables.FAILURES,
    )
    ingest = [
        {"stage": "ingest", "source_file": f"scans/page{i}.pdf", "reason": "unsupported file type '.pdf'"}
        for i in range(3)
    ]
    failures = pa.concat_tables([pa.Table.from_pylist(ingest, schema=tables.FAILURES), coding_failures])

    for name, table in {"codes": codes, "codings": codings, "llm_calls": calls, "failures": failures}.items():
        tables.write(table, out / f"{name}.parquet")
    return {"chunks": n, "documents": n_docs, "codes_rows": codes.num_rows, "failures": failures.num_rows}


def peak_rss_kb() -> int:
    """This process's peak resident memory: VmHWM where /proc has it, which starts afresh at exec, unlike
    getrusage's ru_maxrss, which Linux carries over from the parent (here the process that built the tables)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux; bytes on macOS


def measure(tables_dir: Path, codebook_path: Path) -> None:
    """In a fresh process: run what report_plots.py runs, and print time and peak memory as JSON."""
    from qualcode.reporting import report

    imports_kb = peak_rss_kb()
    out = tables_dir / "report"
    start, cpu = time.perf_counter(), time.process_time()
    n_coded = report.write_report(
        codes=tables_dir / "codes.parquet",
        codings=tables_dir / "codings.parquet",
        llm_calls=tables_dir / "llm_calls.parquet",
        failures=tables_dir / "failures.parquet",
        cb=codebook_mod.load(codebook_path),
        out={k: out / v for k, v in OUTPUTS.items()},
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    from PIL import Image

    pixels = {k: Image.open(out / v).size for k, v in OUTPUTS.items() if v.endswith(".png")}
    result = {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_kb": peak_rss_kb(),
        "imports_kb": imports_kb,
        "arrow_peak_kb": pa.default_memory_pool().max_memory() // 1024,
        "n_coded": n_coded,
        "pixels": pixels,
        "failures_html_kb": (out / "failures.html").stat().st_size // 1024,
    }
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="chunk counts, comma-separated")
    ap.add_argument("--chunks-per-doc", type=int, default=1)
    ap.add_argument("--failed", type=float, default=0.05, help="share of chunks that failed")
    ap.add_argument("--codebook", type=Path, default=REPO / "config/codebook.yaml")
    ap.add_argument("--keep", type=Path, help="write the tables and figures here and keep them")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.measure:
        measure(args.measure, args.codebook)
        return

    cb = codebook_mod.load(args.codebook)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="report_scale_") as tmp:
        root = args.keep or Path(tmp)
        for n in sizes:
            d = root / f"n{n}"
            d.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            counts = build_tables(cb, n, args.chunks_per_doc, args.failed, d)
            built = time.perf_counter() - t0
            t0 = time.perf_counter()
            child = subprocess.run(
                [sys.executable, __file__, "--measure", str(d), "--codebook", str(args.codebook)],
                check=True,
                capture_output=True,
                text=True,
            )
            job = time.perf_counter() - t0
            result = json.loads(child.stdout.strip().splitlines()[-1])
            mb = sum(p.stat().st_size for p in d.glob("*.parquet")) / 2**20
            rows.append({**counts, **result, "job_s": job, "tables_mb": mb})
            print(
                f"built {n:,} chunks ({counts['codes_rows']:,} code rows, {mb:.1f} MB of Parquet) in {built:.1f} s;"
                f" report {result['seconds']:.2f} s, peak RSS {result['peak_kb'] / 1024:.0f} MB",
                file=sys.stderr,
            )

    print(f"\ncodebook {args.codebook.name}, {args.chunks_per_doc} chunk(s) per document, {args.failed:.0%} failed\n")
    head = (
        f"{'chunks':>8} {'code rows':>10} {'report s':>9} {'cpu s':>6} {'job s':>6}"
        f" {'ms/chunk':>9} {'Δcpu ms/chunk':>14}"
        f" {'peak MB':>8} {'>imports':>9} {'KB/chunk':>9} {'ΔKB/chunk':>10} {'arrow MB':>9}"
    )
    print(head)
    print("-" * len(head))
    prev = None
    for r in rows:
        above = (r["peak_kb"] - r["imports_kb"]) / 1024
        marginal_ms = marginal_kb = "-"
        if prev is not None:
            dn = r["chunks"] - prev["chunks"]
            marginal_ms = f"{1000 * (r['cpu_s'] - prev['cpu_s']) / dn:.4f}"
            marginal_kb = f"{(r['peak_kb'] - prev['peak_kb']) / dn:.3f}"
        print(
            f"{r['chunks']:>8,} {r['codes_rows']:>10,} {r['seconds']:>9.2f} {r['cpu_s']:>6.1f} {r['job_s']:>6.1f}"
            f" {1000 * r['seconds'] / r['chunks']:>9.4f} {marginal_ms:>14}"
            f" {r['peak_kb'] / 1024:>8.0f} {above:>9.0f} {r['peak_kb'] / r['chunks']:>9.2f} {marginal_kb:>10}"
            f" {r['arrow_peak_kb'] / 1024:>9.1f}"
        )
        prev = r
    print("\nfigure sizes in pixels (width x height) and failures.html size:")
    for r in rows:
        px = ", ".join(f"{k} {w}x{h}" for k, (w, h) in r["pixels"].items())
        print(f"{r['chunks']:>8,}: {px}; failures.html {r['failures_html_kb']} KB")


if __name__ == "__main__":
    main()
