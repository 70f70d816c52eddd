"""Merge the shards' results into the codings, codes, llm_calls and failures tables."""

import pyarrow.parquet as pq

from qualcode import codebook, logs, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out = snakemake.input, snakemake.output  # noqa: F821
    built = tables.coding_tables(
        codebook.load(inp.codebook),
        tables.read_chunks(inp.chunks),
        tables.read_results(inp.shards),
        pq.read_table(inp.ingest_failures),
    )
    for name, table in built.items():
        tables.write(table, out[name])
        log.info("%s: %d rows", name, table.num_rows)
