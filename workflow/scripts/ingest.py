"""Read the files in the input listing into the documents table; unreadable files go to the failures table."""

from qualcode import config, logs
from qualcode.inputs import ingest
from qualcode.outputs import tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    cfg = config.IngestConfig.model_validate(snakemake.params.ingest)  # noqa: F821
    root, files = ingest.read_listing(snakemake.input.listing)  # noqa: F821
    docs, problems = ingest.ingest(files, root, cfg)
    ingest.check_enough(docs, problems, len(files), cfg.max_skipped_share)
    pilot = config.PilotConfig.model_validate(snakemake.params.pilot)  # noqa: F821
    if pilot.documents is not None:
        read, docs = len(docs), ingest.pilot_sample(docs, pilot.documents, pilot.seed)
        log.info("pilot run: %d of %d documents (pilot.seed %d)", len(docs), read, pilot.seed)
    tables.write(tables.documents_table(docs), snakemake.output.documents)  # noqa: F821
    tables.write(tables.problems_table(problems), snakemake.output.problems)  # noqa: F821
    log.info("%d documents read, %d files skipped", len(docs), len(problems))
