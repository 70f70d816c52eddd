"""Codebook recovery: does `snakemake propose` find the codes human coders used?

The data: educators' open-ended answers on online exam proctoring, with the codes two human coders gave them
(Balash et al., USENIX Security 2023; ../shared/extdata/gwusec_proctoring_openended, not in the repository). One
question's answers become one CSV (one answer a document). The script runs the real workflow in a scratch folder:
`propose` on the answers (no codebook), then the coding run (`tables`) with the proposed codebook as it is. For each
human code (top level, the primary coder's), the proposed code whose documents best match its documents by F1;
printed per human code and as a mean ("codebook recovery").

    python benchmarks/induction.py --base-url http://127.0.0.1:8080/v1 --model my-model [--question Q5]
    python benchmarks/induction.py --local        # the embedded SmolLM2-135M: plumbing only, meaningless numbers

The key, if the endpoint needs one, is read from the variable named by --api-key-env (default OPENAI_API_KEY).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT = REPO.parent.parent / "shared" / "extdata" / "gwusec_proctoring_openended"


def _name(code: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", code.strip().lower()).strip("_")


def read_question(folder: Path, question: str) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """The answers (id, text) and, per human code, the answers the primary coder gave it."""
    (path,) = sorted((folder / "irr_inputs").glob(f"* - {question} (primary).csv"))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    text_col, code_cols = df.columns[1], [c for c in df.columns if c.startswith("Code")]
    answers, human = [], {}
    for rec in df.to_dict("records"):
        if not rec[text_col].strip():
            continue
        answers.append({"id": rec["ResponseId"], "text": rec[text_col]})
        for c in code_cols:
            if rec[c].strip():
                human.setdefault(_name(rec[c].split("->")[0]), set()).add(rec["ResponseId"])
    # a respondent listed twice is one document (their codes are pooled above)
    return pd.DataFrame(answers).drop_duplicates("id"), human


def f1(a: set[str], b: set[str]) -> float:
    both = len(a & b)
    return 2 * both / (len(a) + len(b)) if a or b else 0.0


def recovery(human: dict[str, set[str]], proposed: dict[str, set[str]]) -> pd.DataFrame:
    rows = []
    for code, docs in sorted(human.items()):
        best = max(proposed.items(), key=lambda kv: (f1(docs, kv[1]), kv[0]), default=(None, set()))
        rows.append({"human_code": code, "documents": len(docs), "best_proposed": best[0], "f1": f1(docs, best[1])})
    return pd.DataFrame(rows)


def snakemake(workdir: Path, *args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "snakemake"), *args, "--cores", "2", "--configfile", "bench.yaml"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-4000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--question", default="Q5", help="which question's answers (Q5: 124 answers, both coders)")
    ap.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY")
    ap.add_argument("--structured-output", default="json_schema")
    ap.add_argument("--local", action="store_true", help="the embedded model (meaningless numbers)")
    ap.add_argument("--documents", type=int, default=None, help="answers sampled for propose (default: all)")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()

    answers, human = read_question(args.folder, args.question)
    work = args.keep or Path(tempfile.mkdtemp(prefix="qualcode-induction-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "schemas"):
        src, dest = REPO / name, work / name
        if not dest.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
    (work / "data").mkdir(exist_ok=True)
    answers.to_csv(work / "data" / "answers.csv", index=False)
    llm = (
        {"provider": "local", "model": "smollm2-135m-instruct", "max_tokens": 512}
        if args.local
        else {"provider": "openai", "base_url": args.base_url, "model": args.model,
              "api_key_env": args.api_key_env, "structured_output": args.structured_output}
    )  # fmt: skip
    bench = {
        "ingest": {"input_dir": "data", "include": ["answers.csv"]},
        "validation": {"gold": []},
        "llm": llm,
        "codebook": "none-yet.yaml",
        "induction": {"documents": args.documents, "share": None},
        "cache_dir": str(work / "cache"),
    }
    (work / "bench.yaml").write_text(yaml.safe_dump(bench))
    snakemake(work, "propose")
    bench["codebook"] = "results/induction/codebook.yaml"
    (work / "bench.yaml").write_text(yaml.safe_dump(bench))
    snakemake(work, "tables")

    codes = pd.read_parquet(work / "results" / "codes.parquet")
    docs = pd.read_parquet(work / "results" / "documents.parquet", columns=["doc_id"])
    # a row's document id is `answers.csv#<id>`
    codes["answer"] = codes["doc_id"].str.rsplit("#", n=1).str[-1]
    proposed = {v: set(g["answer"]) for v, g in codes.groupby("value")}
    n_proposed = len(yaml.safe_load((work / "results/induction/codebook.yaml").read_text())["fields"][0]["values"])
    table = recovery(human, proposed)
    pd.set_option("display.width", 140)
    print(f"question {args.question}: {len(docs)} answers, {len(human)} human codes, {n_proposed} proposed codes")
    print((work / "results/induction/methods.md").read_text().strip())
    print(table.to_string(index=False, float_format="%.2f"))
    print(f"mean best F1 over human codes (codebook recovery): {table['f1'].mean():.3f}")
    # what a useless proposal scores: one code on every answer
    everything = recovery(human, {"every_answer": set(answers["id"])})
    print(f"baseline, one code on every answer: {everything['f1'].mean():.3f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
