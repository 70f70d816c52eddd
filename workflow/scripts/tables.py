"""Merge the shards' results into the published tables (stamped with the run's content hashes) and a CSV, one shard at
a time."""

from qualcode import config, logs
from qualcode.inputs import codebook
from qualcode.outputs import results

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    rows = results.write_tables(
        codebook=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        shard_files=inp.shards,
        ingest_failures=inp.ingest_failures,
        out=out,
        codings_csv=out.codings_csv,
        excerpts_csv=out.excerpts_csv,
        prices={k: config.Price(**v) for k, v in params.prices.items()},
        metadata=params.origin,
    )
    for name, n in rows.items():
        log.info("%s: %d rows", name, n)
