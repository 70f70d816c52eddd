"""`qualcode`: small commands around the workflow (the workflow itself runs with `snakemake`)."""

from __future__ import annotations

import argparse
import logging

from . import archive, cache, config, estimate, logs


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
    args = parser.parse_args(argv)

    with logs.job(None, level=logging.WARNING if args.command == "estimate" else logging.INFO) as log:
        if args.command == "estimate":
            print(estimate.render(estimate.estimate(config.load(*(args.config or ["config/config.yaml"])))))
            return
        cache_dir = args.cache_dir or config.load(*(args.config or ["config/config.yaml"])).cache_dir
        with cache.AnswerCache(cache_dir) as answers:
            n = archive.import_(args.archive, answers)
        log.info("%d answers now in %s; `snakemake --cores 4` rebuilds the tables from them", n, cache_dir)


if __name__ == "__main__":
    main()
