"""Merge the shards' results into the six tables (stamped with the run's content hashes) and a CSV."""

import pyarrow.parquet as pq

from qualcode import codebook, config, logs, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    cb = codebook.load(inp.codebook)
    chunks = tables.read_chunks(inp.chunks)
    built = {
        "documents": pq.read_table(inp.documents),
        "chunks": tables.chunks_table(chunks),
        **tables.coding_tables(
            cb,
            chunks,
            tables.read_results(inp.shards),
            pq.read_table(inp.ingest_failures),
            {k: config.Price(**v) for k, v in params.prices.items()},
        ),
    }
    for name, table in built.items():
        tables.write(table, out[name], metadata=params.origin)
        log.info("%s: %d rows", name, table.num_rows)
    tables.write_csv(tables.codings_for_spreadsheets(built["codings"], cb), out.codings_csv)
