"""Write results/manifest.json: hashes, versions, settings, models served and counts of this run."""

import json
from pathlib import Path

from qualcode import config, ingest, logs, provenance, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    names = (*tables.PUBLISHED, *tables.VALIDATION)
    manifest = provenance.manifest(
        cfg=config.resolve(params.config),
        config_files=params.config_files,
        inputs=ingest.listed_paths(inp.documents_in),
        outputs={**{n: inp[n] for n in names}, "replay_archive": inp.archive},
        answer_schema=inp.answer_schema,
        tables=provenance.read_counted(inp),
        workflow_dir=params.workflow_dir,
        started_at=provenance.jobs_started_at(inp.shards),
        execution={**params.execution, "coding_jobs": provenance.coding_jobs(inp.shards)},
    )
    Path(snakemake.output.manifest).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")  # noqa: F821
    log.info("run %s: %s", manifest["run"]["id"], manifest["counts"])
