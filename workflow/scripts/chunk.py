"""Split documents into token-bounded chunks, and the chunks into shards for the coding jobs."""

from qualcode import chunking, config, logs, shards, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    cfg = config.ChunkingConfig.model_validate(snakemake.params.chunking)  # noqa: F821
    docs = tables.read_documents(snakemake.input.documents)  # noqa: F821
    chunks = chunking.chunk_documents(docs, cfg)
    tables.write(tables.chunks_table(chunks), snakemake.output.chunks)  # noqa: F821
    size = shards.resolve_size(snakemake.params.shard_size, len(chunks))  # noqa: F821
    plan = shards.plan([c.chunk_id for c in chunks], size)
    shards.write(plan, snakemake.output.shards)  # noqa: F821
    log.info("%d documents -> %d chunks -> %d shards of about %d chunks", len(docs), len(chunks), len(plan), size)
