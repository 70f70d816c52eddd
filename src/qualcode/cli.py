"""`qualcode`: small commands around the workflow (the workflow itself runs with `snakemake`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import config, logs, preflight
from .coding import archive, cache, estimate, prompts
from .inputs import codebook


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qualcode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-archive", help="load a replay archive into the answer cache")
    imp.add_argument("archive", help="e.g. results/replay/answers.jsonl.gz")
    imp.add_argument(
        "--config", action="append", help="config naming cache_dir; repeat to override (default: config/config.yaml)"
    )
    imp.add_argument("--cache-dir", help="cache directory (default: cache_dir from the config)")
    est = sub.add_parser("estimate", help="requests, tokens and cost still to come, after the cache")
    est.add_argument("--config", action="append", help="config file; repeat to override (default: config/config.yaml)")
    chk = sub.add_parser(
        "check", help="check the config files, codebook and templates as the workflow will, naming file and line"
    )
    chk.add_argument("--config", action="append", help="config file; repeat to override (default: config/config.yaml)")
    imp_cb = sub.add_parser(
        "codebook-from-csv", help="a codebook from a CSV of code names and descriptions (QDA program, Taguette)"
    )
    imp_cb.add_argument("csv", help="e.g. taguette_codebook.csv, with columns tag,description (or code,memo ...)")
    imp_cb.add_argument("--field", default="codes", help="name of the field the codes become values of")
    imp_cb.add_argument("--type", default="multiple_choice", choices=["multiple_choice", "single_choice"])
    imp_cb.add_argument("--name", help="codebook name (default: the file's name)")
    imp_cb.add_argument("--out", help="write the YAML here (default: print it)")
    args = parser.parse_args(argv)

    with logs.job(
        None, level=logging.WARNING if args.command in ("estimate", "check", "codebook-from-csv") else logging.INFO
    ) as log:
        if args.command == "codebook-from-csv":
            text = codebook.from_csv(args.csv, args.field, args.type, args.name)
            if args.out:
                Path(args.out).write_text(text, encoding="utf-8")
            else:
                print(text, end="")
            return
        if args.command == "check":
            print(check(args.config or ["config/config.yaml"]))
            return
        if args.command == "estimate":
            print(estimate.render(estimate.estimate(config.load(*(args.config or ["config/config.yaml"])))))
            return
        cache_dir = args.cache_dir or config.load(*(args.config or ["config/config.yaml"])).cache_dir
        with cache.AnswerCache(cache_dir) as answers:
            n = archive.import_(args.archive, answers)
        log.info("%d answers now in %s; `snakemake --cores 4` rebuilds the tables from them", n, cache_dir)


def check(config_files: list[str]) -> str:
    """What `snakemake --configfile` would load, checked before anything is sent: YAML syntax (with the line, which
    Snakemake does not give), settings, the model for the provider, the codebook, the templates, then what the
    workflow checks when it is parsed (the inputs, the human codings), then the inputs read as the ingest job reads
    them and the human codings checked against them as the validate job does."""
    cfg = config.load(*config_files)
    cb = codebook.load(cfg.codebook)
    prompts.load(cfg.prompts["system"], cfg.prompts["user"], cb, cfg.llm.structured_output)
    files, notes = preflight.before_reading(cfg, cb)
    for note in notes:
        logging.getLogger(__name__).warning("%s", note)
    n_docs, unreadable, skipped = preflight.after_reading(cfg, cb, files)
    where = "in-process" if cfg.llm.provider == "local" else f"at {cfg.llm.api_base_url}"
    gold = f"{len(cfg.validation.gold)} human coding files" if cfg.validation.gold else "no human codings"
    return (
        f"ok: {', '.join(config_files)}\n"
        f"codebook {cb.name!r} version {cb.version}: {len(cb.fields)} fields\n"
        f"model {cfg.llm.model} ({cfg.llm.provider}, {where})\n"
        f"{len(files)} input files in {cfg.ingest.input_dir}: {n_docs} documents"
        + (f", {unreadable} unreadable file(s) (listed above; the run skips them)" if unreadable else "")
        + "\n"
        f"{gold}" + (f", {len(skipped)} rows skipped (validation.on_error: skip)" if skipped else "")
    )


if __name__ == "__main__":
    main()
