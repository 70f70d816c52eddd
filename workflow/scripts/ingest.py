"""Read the input files into the documents table; unreadable files go to the failures table."""

from pathlib import Path

from qualcode import config, ingest, logs, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    cfg = config.IngestConfig.model_validate(snakemake.params.ingest)  # noqa: F821
    docs, problems = ingest.ingest([Path(p) for p in snakemake.input], Path(cfg.input_dir), cfg)  # noqa: F821
    tables.write(tables.documents_table(docs), snakemake.output.documents)  # noqa: F821
    tables.write(tables.problems_table(problems), snakemake.output.problems)  # noqa: F821
    log.info("%d documents read, %d files skipped", len(docs), len(problems))
