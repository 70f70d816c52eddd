"""Scale (issue 8): the real workflow against a bare client over the same requests, cold and rerun.

    python benchmarks/scale.py [--chunks 5000] [--latency 0.5] [--jobs 4] [--concurrency 16]
                               [--source CSV --text-column text_long] [--skip-report]
                               [--runs cold,bare,cached,forceall,noop,incremental] [--ref HEAD]
                               [--json PATH] [--keep]

Run it with the project's virtualenv active (snakemake is taken from beside its python). It measures the
working tree (the workflow files are copied, the library is the installed editable one); --ref REV
measures a commit instead (git archive; its src/ goes first on the jobs' PYTHONPATH), which keeps
colleagues' half-done edits out of the numbers.

One document per CSV row and one chunk per document (chunking.max_tokens is raised so that no document
is split; the chunk count is checked in results/chunks.parquet). Synthetic short survey answers unless
--source names a CSV whose --text-column is reused; rows are cycled and a repeat gets " (copy K)" appended,
so every request is distinct. The corpus lives in a temporary scratch copy of the workflow, never in the
repository.

Runs, in one process, against a fixed-latency fake OpenAI-compatible server on 127.0.0.1 whose answers
are valid against the codebook's schema (each quote is the passage's first words):

    cold         snakemake --cores 4, empty cache; `--jobs` coding jobs of ceil(N/jobs) chunks, each with
                 `--concurrency` requests in flight (--resources llm_requests=jobs*concurrency)
    bare         openai.AsyncOpenAI(max_retries=0) + asyncio.Semaphore(jobs*concurrency) sending the request
                 bodies the cold run sent, in a subprocess (as the coding jobs are), to a fresh server
    cached       results/ deleted, cache kept
    forceall     --forceall, cache kept
    noop         nothing changed
    incremental  10 documents appended to the CSV (their ids sort last)

Prints, per run: wall time, CPU seconds (snakemake and all its jobs; for bare, the client process),
chunks/s, requests the server received, the phases (snakemake start to the
first request received, the coding window to the last answer sent, then to snakemake's exit), jobs
run, and per rule the peak RSS and the job seconds: from Snakemake's benchmark files
(results/benchmarks/<rule>/*.tsv) where the rule has a `benchmark:`, else (marked *) from VmHWM sampled
every 0.2 s in /proc over the job's processes, which also gives snakemake's own process. Timings
depend on the machine's load: on a shared machine quote the ratio to the bare client, measured side by
side, rather than the seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from qualcode.analysis.naming import SCHEMA as THEME_NAME_SCHEMA  # noqa: E402

from fakeserver import FakeServer, generate_instance, request_schema  # noqa: E402
from workflow_helpers import REPO, SNAKEMAKE, fake_config, scratch_copy, without_gold  # noqa: E402

ENV = {"QUALCODE_TEST_KEY": "sk-test-benchmark"}
RUNS = ("cold", "bare", "cached", "forceall", "noop", "incremental")
ADDED_DOCUMENTS = 10
RUN_TIMEOUT_S = 4 * 3600  # one snakemake run; beyond this it is killed and the benchmark fails
SAMPLE_EVERY_S = 0.2
JOB_LINE = re.compile(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):\s*$", re.MULTILINE)


# -- the server --------------------------------------------------------------------------------------


def quote_the_passage(body: dict[str, Any]) -> str:
    """A schema-valid answer whose quote is the passage's first words (as tests/conftest.py answers)."""
    user = body["messages"][-1]["content"]
    passage = user.split('"""')[1].strip() if user.count('"""') >= 2 else user
    return json.dumps(generate_instance(request_schema(body), passage))


class TimedServer(FakeServer):
    """FakeServer with a fixed latency that also records when each request arrived and was answered
    (it wraps FakeServer._chat, the one place every chat request goes through)."""

    def __init__(self, latency: float):
        super().__init__(seed=0, latency=(latency, latency))
        self.answer_fn = quote_the_passage
        self.arrived: list[float] = []
        self.answered: list[float] = []
        self.peak_in_flight = 0
        self.theme_names = 0  # requests naming themes (the themes stage), not in arrived/answered
        self._in_flight = 0
        self._times = threading.Lock()

    def _chat(self, handler: Any, body: dict[str, Any]) -> None:
        # The themes stage names its themes after the coding, through the same server: those requests are counted
        # apart, so that the coding window is the coding's alone
        coding = request_schema(body) != THEME_NAME_SCHEMA
        with self._times:
            if coding:
                self.arrived.append(time.monotonic())
            else:
                self.theme_names += 1
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            super()._chat(handler, body)
        finally:
            with self._times:
                self._in_flight -= 1
                if coding:
                    self.answered.append(time.monotonic())

    def mark(self) -> int:
        with self._times:
            self.peak_in_flight = self._in_flight
            return len(self.arrived)

    def since(self, mark: int) -> tuple[int, float | None, float | None, int]:
        """Requests since `mark`: count, first arrival, last answer, peak in flight."""
        with self._times:
            arrived, answered = self.arrived[mark:], self.answered[mark:]
            return len(arrived), min(arrived, default=None), max(answered, default=None), self.peak_in_flight


# -- the corpus --------------------------------------------------------------------------------------

_WHO = ["I", "My team", "We", "My manager", "The night shift", "Our ward", "My partner and I", "The crew"]
_DID = [
    "worked double shifts", "shared masks with the night team", "stopped seeing my parents",
    "slept in the car park", "covered for sick colleagues", "queued for tests every week",
    "got no clear guidance", "kept the shop open", "learned to do everything online", "lost a colleague",
]  # fmt: skip
_FELT = [
    "and I was frightened", "and it wore me out", "and honestly I am proud of us", "which made me furious",
    "and I still feel guilty", "but I hope it gets better", "and nobody listened", "and it was lonely",
]  # fmt: skip


def synthetic_texts(n: int, seed: int = 8) -> list[str]:
    """Short survey answers, all different."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        sentences = [f"{rng.choice(_WHO)} {rng.choice(_DID)} {rng.choice(_FELT)}." for _ in range(rng.randint(1, 3))]
        texts.append(" ".join(sentences) + f" That was in week {i % 52 + 1} of {2020 + i // 52}.")
    return texts


def source_texts(path: Path, column: str, n: int) -> list[str]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise SystemExit(f"--source {path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
        rows = [row[column].strip() for row in reader if row[column].strip()]
    if not rows:
        raise SystemExit(f"--source {path}: column {column!r} is empty")
    return [rows[i % len(rows)] + (f" (copy {i // len(rows) + 1})" if i >= len(rows) else "") for i in range(n)]


def write_corpus(csv_path: Path, texts: list[str], first: int = 0, append: bool = False) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "a" if append else "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if not append:
            w.writerow(["id", "text"])
        for i, text in enumerate(texts, start=first):
            w.writerow([f"R{i:07d}", text])  # zero-padded: documents sort (and so chunk, and shard) in row order


# -- one snakemake run -------------------------------------------------------------------------------


class ProcessSampler(threading.Thread):
    """Peak RSS (VmHWM) and lifetime of snakemake (`root`) and of every script job under it, by script."""

    def __init__(self, root: int):
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.stop_event = threading.Event()
        self.root_argv: list[bytes] = []
        self.procs: dict[tuple[int, str, str], dict[str, Any]] = {}  # (pid, start, label) -> first, last, hwm

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_EVERY_S):
            self.sample()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        starts: dict[int, str] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            starts[pid] = fields[19]
        now, todo = time.monotonic(), [self.root]
        for _ in range(100_000):  # bounded walk of the process tree
            if not todo:
                break
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                status = Path(f"/proc/{pid}/status").read_text(errors="replace")
                hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
            except (OSError, AttributeError):
                continue
            if pid == self.root:
                self.root_argv = argv
            elif argv == self.root_argv:  # forked by snakemake, not yet exec'd: its memory is snakemake's
                continue
            label = self._label(pid, [a.decode(errors="replace") for a in argv])
            if label is None:
                continue
            info = self.procs.setdefault((pid, starts.get(pid, "?"), label), {"label": label, "first": now, "hwm": 0.0})
            info["last"], info["hwm"] = now, max(info["hwm"], hwm)

    def _label(self, pid: int, argv: list[str]) -> str | None:
        """The script a job runs, or snakemake itself; None for shells and helpers (a few MB each)."""
        for arg in argv:
            if "/.snakemake/scripts/" in arg and arg.endswith(".py"):  # tmpXXXX.<script>.py
                return Path(arg).name.split(".", 1)[-1].removesuffix(".py")
        return "snakemake (main)" if pid == self.root else None

    def by_label(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for info in list(self.procs.values()):
            row = out.setdefault(info["label"], {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
            row["jobs"] += 1
            row["seconds"] += info.get("last", info["first"]) - info["first"]
            row["max_rss_mb"] = max(row["max_rss_mb"], info["hwm"])
        return out


@dataclass
class Run:
    name: str
    wall_s: float
    cpu_s: float  # the workflow: snakemake and every job; the bare run: the client process
    chunks: int
    requests: int
    before_first_s: float | None = None
    window_s: float | None = None
    after_last_s: float | None = None
    peak_in_flight: int = 0
    jobs: dict[str, int] = field(default_factory=dict)
    rules: dict[str, dict[str, float]] = field(default_factory=dict)  # rule -> jobs, seconds, max_rss_mb, source
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.wall_s if self.wall_s > 0 else float("nan")


def benchmark_files(workdir: Path, since: float) -> dict[str, dict[str, float]]:
    """Per rule, over the benchmark TSVs written since `since` (epoch seconds): jobs, seconds, max max_rss."""
    out: dict[str, dict[str, float]] = {}
    for tsv in sorted((workdir / "results" / "benchmarks").glob("*/*.tsv")):
        if tsv.stat().st_mtime < since:
            continue
        with open(tsv, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        row = out.setdefault(tsv.parent.name, {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
        for r in rows:
            row["jobs"] += 1
            row["seconds"] += float(r["s"])
            rss = r.get("max_rss", "NA")
            if rss not in ("", "NA", "-"):
                row["max_rss_mb"] = max(row["max_rss_mb"], float(rss))
    return out


def cpu_seconds(who: int) -> float:
    """User + system CPU of this process (RUSAGE_SELF: the servers, the sampler) or of its finished children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def snakemake(workdir: Path, logs: Path, name: str, args: list[str]) -> tuple[float, float, float, str, ProcessSampler]:
    """Run snakemake; returns its start (monotonic) and end, the CPU seconds of it and all its jobs, its
    output, and the process sampler."""
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.Popen(
            [SNAKEMAKE, *args], cwd=workdir, env={**os.environ, **ENV}, stdout=out, stderr=err, start_new_session=True
        )
        sampler = ProcessSampler(proc.pid)
        sampler.start()
        try:
            code = proc.wait(timeout=RUN_TIMEOUT_S)
        except BaseException:  # timeout or Ctrl-C: take the run's whole process group down with us
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            raise
        finally:
            ended = time.monotonic()
            sampler.stop()
    text = out_path.read_text(errors="replace") + err_path.read_text(errors="replace")
    if code != 0:
        raise SystemExit(f"snakemake ({name}) failed with code {code}; its output is in {logs}:\n{text[-4000:]}")
    return started, ended, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu, text, sampler


def workflow_run(
    name: str, workdir: Path, logs: Path, server: TimedServer, base_args: list[str], extra: list[str] | None = None
) -> Run:
    mark, since = server.mark(), time.time() - 1  # benchmark files keep whole-second mtimes on some file systems
    own = cpu_seconds(resource.RUSAGE_SELF)
    started, ended, cpu, output, sampler = snakemake(workdir, logs, name, [*base_args, *(extra or [])])
    requests, first, last, peak = server.since(mark)
    run = Run(
        name=name,
        wall_s=ended - started,
        cpu_s=cpu,
        chunks=pq.read_metadata(workdir / "results" / "chunks.parquet").num_rows,
        requests=requests,
        peak_in_flight=peak,
    )
    if first is not None and last is not None:
        run.before_first_s, run.window_s, run.after_last_s = first - started, last - first, ended - last
    for job in JOB_LINE.findall(output):
        run.jobs[job] = run.jobs.get(job, 0) + 1
    run.extra["server_and_sampler_cpu_s"] = cpu_seconds(resource.RUSAGE_SELF) - own
    sampled = sampler.by_label()
    run.rules = {rule: {**row, "source": "benchmark"} for rule, row in benchmark_files(workdir, since).items()}
    for label, row in sampled.items():
        run.rules.setdefault(label, {**row, "source": "sampled"})
    return run


# -- the bare client ---------------------------------------------------------------------------------


async def _send_all(bodies: list[dict[str, Any]], base_url: str, in_flight: int) -> dict[str, Any]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-test-benchmark", max_retries=0, timeout=600)
    sem = asyncio.Semaphore(in_flight)

    async def one(body: dict[str, Any]) -> None:
        rest = dict(body)
        model, messages = rest.pop("model"), rest.pop("messages")
        async with sem:  # the body goes out as is: model and messages as arguments, the rest as extra_body
            await client.chat.completions.create(model=model, messages=messages, extra_body=rest)

    started = time.monotonic()
    try:
        results = await asyncio.gather(*(one(b) for b in bodies), return_exceptions=True)
    finally:
        await client.close()
    seconds = time.monotonic() - started
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"seconds": seconds, "sent": len(bodies), "errors": len(errors), "first_error": errors[:1]}


def bare_main(bodies_path: str, base_url: str, in_flight: int) -> None:
    with open(bodies_path, encoding="utf-8") as fh:
        bodies = [json.loads(line) for line in fh]
    print(json.dumps(asyncio.run(_send_all(bodies, base_url, in_flight))))


def save_bodies(server: TimedServer, path: Path) -> tuple[int, dict[str, int]]:
    """Write the request bodies the server received to `path` (JSON lines) and drop them from its memory
    (at 100,000 chunks they are hundreds of MB); returns their number and counts by body hash."""
    with open(path, "w", encoding="utf-8") as fh:
        for body in server.requests:
            fh.write(json.dumps(body, ensure_ascii=False) + "\n")
    n, counts = len(server.requests), server.counts_by_hash()
    server.requests.clear()
    server.headers.clear()
    return n, counts


def bare_run(path: Path, n: int, expected: dict[str, int], latency: float, in_flight: int) -> Run:
    with TimedServer(latency) as server:
        cmd = [sys.executable, __file__, "--bare-client", str(path), server.base_url, str(in_flight)]
        own, children = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        ended = time.monotonic()
        own, children = cpu_seconds(resource.RUSAGE_SELF) - own, cpu_seconds(resource.RUSAGE_CHILDREN) - children
        if proc.returncode != 0:
            raise SystemExit(f"bare client failed:\n{proc.stderr[-4000:]}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        requests, first, last, peak = server.since(0)
        same = server.counts_by_hash() == expected
    # Wall time is the client's own, from its first request to its last answer: no interpreter start-up.
    run = Run("bare", wall_s=report["seconds"], cpu_s=children, chunks=n, requests=requests, peak_in_flight=peak)
    if first is not None and last is not None:
        run.before_first_s, run.window_s, run.after_last_s = first - started, last - first, ended - last
    run.extra = {
        "process_wall_s": ended - started, "server_cpu_s": own, "errors": report["errors"], "same_bodies": same,
    }  # fmt: skip
    if report["errors"]:
        run.extra["first_error"] = report["first_error"]
    return run


# -- the benchmark -----------------------------------------------------------------------------------


def revision_copy(ref: str, dest: Path) -> Path:
    """The workflow and the library as committed at `ref`, not as in the working tree; the job processes
    import that library, whatever is installed (its src/ goes first on PYTHONPATH)."""
    names = ["Snakefile", "workflow", "config", "schemas", "src"]
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref, *names], capture_output=True)
    if tar.returncode != 0:
        raise SystemExit(f"--ref {ref}: git archive failed: {tar.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
        archive.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (dest / "profiles").symlink_to("workflow/profiles")
    without_gold(dest)  # the corpus is synthetic, as with scratch_copy(data=False)
    ENV["PYTHONPATH"] = os.pathsep.join([str(dest / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return dest


def shard_mtimes(workdir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (workdir / "results" / "work" / "shards").glob("*.parquet")}


def benchmark(opts: argparse.Namespace) -> dict[str, Any]:
    n, jobs, concurrency = opts.chunks, opts.jobs, opts.concurrency
    in_flight, shard_size = jobs * concurrency, math.ceil(opts.chunks / opts.jobs)
    runs = [r for r in RUNS if r in opts.runs]
    if opts.source:
        texts = source_texts(Path(opts.source), opts.text_column, n + ADDED_DOCUMENTS)
    else:
        texts = synthetic_texts(n + ADDED_DOCUMENTS)
    tmp = Path(tempfile.mkdtemp(prefix="qualcode-scale-"))
    results: list[Run] = []
    try:
        workdir = revision_copy(opts.ref, tmp / "work") if opts.ref else scratch_copy(tmp / "work", data=False)
        logs = tmp / "logs"
        logs.mkdir()
        corpus = workdir / "data" / "raw" / "survey.csv"
        write_corpus(corpus, texts[:n])
        with TimedServer(opts.latency) as server:
            cfg = fake_config(
                workdir,
                server,
                {"concurrency": concurrency},
                cache=workdir / "cache",
                coding={"shard_size": shard_size},
                chunking={"max_tokens": 100_000, "overlap_tokens": 0},  # one chunk per document
            )
            args = ["--cores", str(opts.cores), "--configfile", str(cfg), "--resources", f"llm_requests={in_flight}"]
            if opts.skip_report:
                args += ["--omit-from", "report_plots"]

            def step(name: str, extra: list[str] | None = None) -> Run:
                print(f"... {name}", file=sys.stderr, flush=True)
                run = workflow_run(name, workdir, logs, server, args, extra)
                results.append(run)
                return run

            cold = step("cold")
            n_bodies, expected = save_bodies(server, tmp / "bodies.jsonl")
            if "bare" in runs:
                print("... bare", file=sys.stderr, flush=True)
                results.append(bare_run(tmp / "bodies.jsonl", n_bodies, expected, opts.latency, in_flight))
            if "cached" in runs:
                shutil.rmtree(workdir / "results")
                step("cached")
            if "forceall" in runs:
                step("forceall", ["--forceall"])
            if "noop" in runs:
                step("noop")
            if "incremental" in runs:
                before = shard_mtimes(workdir)
                write_corpus(corpus, texts[n:], first=n, append=True)
                run = step("incremental")
                after = shard_mtimes(workdir)
                changed = sorted(k for k in after if before.get(k) != after[k])
                run.extra.update(shards_changed=len(changed), shards=len(after), changed=changed[:20])
    finally:
        if opts.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    settings = {
        "chunks": n, "latency_s": opts.latency, "jobs": jobs, "concurrency": concurrency, "in_flight": in_flight,
        "shard_size": shard_size, "cores": opts.cores, "source": opts.source or "synthetic",
        "skip_report": opts.skip_report, "ref": opts.ref or "working tree", "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }  # fmt: skip
    rows = [{**asdict(r), "chunks_per_s": r.chunks_per_s} for r in results]
    return {"settings": settings, "cold_chunks": cold.chunks, "runs": rows, "_runs": results}


def _f(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def report(out: dict[str, Any]) -> None:
    s, runs = out["settings"], out["_runs"]
    by = {r.name: r for r in runs}
    print(
        f"{s['chunks']} chunks ({s['source']}; {s['ref']}), latency {s['latency_s']} s, {s['jobs']} coding jobs x "
        f"concurrency {s['concurrency']} = {s['in_flight']} in flight, shard_size {s['shard_size']}, "
        f"snakemake --cores {s['cores']}{' (report left out)' if s['skip_report'] else ''}; "
        f"{s['cpus']} CPUs, load {s['load_avg'][0]:.1f}; least possible coding window "
        f"ceil(chunks / in flight) x latency = {math.ceil(s['chunks'] / s['in_flight']) * s['latency_s']:.2f} s"
    )
    if out["cold_chunks"] != s["chunks"]:
        print(f"WARNING: results/chunks.parquet has {out['cold_chunks']} chunks, not one per document")
    head = f"{'run':<12}{'wall s':>8}{'cpu s':>8}{'chunks/s':>10}{'ms/chunk':>9}{'requests':>9}"
    print(f"\n{head}{'before 1st':>11}{'window':>8}{'after last':>11}{'in flight':>10}  jobs run")
    for r in runs:
        jobs = " ".join(f"{k}={v}" for k, v in sorted(r.jobs.items())) if r.jobs else "-"
        print(
            f"{r.name:<12}{r.wall_s:>8.2f}{r.cpu_s:>8.1f}{r.chunks_per_s:>10.1f}"
            f"{1000 * r.wall_s / max(r.chunks, 1):>9.2f}{r.requests:>9}{_f(r.before_first_s, '.2f'):>11}"
            f"{_f(r.window_s, '.2f'):>8}{_f(r.after_last_s, '.2f'):>11}{r.peak_in_flight:>10}  {jobs}"
        )
    if "bare" in by:
        cold, bare = by["cold"], by["bare"]
        window = f", coding window {bare.window_s / cold.window_s:.2f}" if cold.window_s and bare.window_s else ""
        print(
            f"\nworkflow speed / bare client speed: end to end {bare.wall_s / cold.wall_s:.2f}{window} "
            f"(bare: same bodies {bare.extra['same_bodies']}, {bare.extra['errors']} errors, "
            f"process wall {bare.extra['process_wall_s']:.2f} s, server CPU {bare.extra['server_cpu_s']:.1f} s)"
        )
    if "incremental" in by:
        e = by["incremental"].extra
        print(f"incremental: {e['shards_changed']} of {e['shards']} shard files rewritten")
    names = [r.name for r in runs if r.name != "bare"]
    labels = sorted({k for r in runs for k in r.rules}, key=lambda k: (k.startswith("snakemake"), k))
    for title, key, fmt in (("peak RSS MB", "max_rss_mb", ".0f"), ("job seconds (sum)", "seconds", ".1f")):
        print(f"\n{title + ', * sampled':<24}" + "".join(f"{n:>12}" for n in names))
        for label in labels:
            cells = []
            for name in names:
                row = by[name].rules.get(label)
                cells.append("-" if row is None else f"{format(row[key], fmt)}/{int(row['jobs'])}")
            star = "*" if any(by[n].rules.get(label, {}).get("source") == "sampled" for n in names) else ""
            print(f"{label + star:<24}" + "".join(f"{c:>12}" for c in cells))
    print("(cells: value/jobs; * = VmHWM sampled every 0.2 s over the job's processes, else benchmark files)")
    print(
        "wall/cpu s: snakemake's or, for bare, the client's (its wall from first request to last answer); "
        "before 1st/window/after last: server-side times"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bare-client"]:  # the subprocess of the bare run
        bare_main(argv[1], argv[2], int(argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chunks", type=int, default=5000, help="documents, one chunk each (default 5000)")
    p.add_argument("--latency", type=float, default=0.5, help="server latency per request, seconds (default 0.5)")
    p.add_argument("--jobs", type=int, default=4, help="coding jobs; shard_size = ceil(chunks/jobs) (default 4)")
    p.add_argument("--concurrency", type=int, default=16, help="llm.concurrency per coding job (default 16)")
    p.add_argument("--cores", type=int, default=4, help="snakemake --cores (default 4)")
    p.add_argument("--source", help="a CSV to take texts from (never copied into the repository)")
    p.add_argument("--text-column", default="text", help="its text column (default 'text')")
    p.add_argument("--skip-report", action="store_true", help="--omit-from report_plots")
    p.add_argument("--runs", default=",".join(RUNS), help=f"subset of {','.join(RUNS)}; cold always runs")
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--ref", help="measure this git revision (e.g. HEAD) instead of the working tree")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (printed)")
    opts = p.parse_args(argv)
    opts.runs = {r.strip() for r in opts.runs.split(",") if r.strip()}
    if unknown := opts.runs - set(RUNS):
        p.error(f"--runs: unknown {', '.join(sorted(unknown))}")
    if opts.chunks < 1 or opts.jobs < 1 or opts.concurrency < 1 or opts.latency < 0:
        p.error("--chunks, --jobs and --concurrency must be positive, --latency not negative")
    out = benchmark(opts)
    report(out)
    if opts.json:
        Path(opts.json).write_text(json.dumps({k: v for k, v in out.items() if k != "_runs"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
