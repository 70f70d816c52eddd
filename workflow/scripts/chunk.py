"""Split documents into token-bounded chunks."""

from qualcode import chunking, config, logs, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    cfg = config.ChunkingConfig.model_validate(snakemake.params.chunking)  # noqa: F821
    docs = tables.read_documents(snakemake.input.documents)  # noqa: F821
    chunks = chunking.chunk_documents(docs, cfg)
    tables.write(tables.chunks_table(chunks), snakemake.output.chunks)  # noqa: F821
    log.info("%d documents -> %d chunks", len(docs), len(chunks))
