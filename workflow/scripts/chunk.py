"""Split documents into token-bounded chunks, and the chunks into shards for the coding jobs."""

from qualcode import config, logs, shards
from qualcode.inputs import chunking
from qualcode.outputs import tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    cfg = config.ChunkingConfig.model_validate(snakemake.params.chunking)  # noqa: F821
    docs = tables.read_documents(snakemake.input.documents)  # noqa: F821
    chunks = chunking.chunk_documents(docs, cfg, snakemake.params.context_keys)  # noqa: F821
    tables.write(tables.chunks_table(chunks), snakemake.output.chunks)  # noqa: F821
    setting, path, ids = snakemake.params.shard_size, snakemake.output.shards, [c.chunk_id for c in chunks]  # noqa: F821
    previous = shards.previous_buckets(path, setting)  # the plan this one replaces, kept by update()
    plan = shards.plan(ids, setting, previous)
    shards.write(plan, path, setting, shards.number_of_shards(setting, len(ids), previous))
    sizes = sorted(s.count for s in plan)
    log.info("%d documents -> %d chunks -> %d shards (%s chunks each)", len(docs), len(chunks), len(plan),
             f"{sizes[0]} to {sizes[-1]}" if sizes else "no")  # fmt: skip
