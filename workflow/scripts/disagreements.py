"""Write results/disagreements.parquet and .csv: every unit, field and pair of sources that disagree."""

from pathlib import Path

from qualcode import logs
from qualcode.inputs import codebook
from qualcode.validity import disagreements

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    codings = {("model", 1): list(inp.shards)}
    for path in inp.variants:  # results/work/variants/<variant>/<shard>.parquet
        arm, replicate = params.variants[Path(path).parent.name]
        codings.setdefault((arm or "model", replicate), []).append(path)
    n = disagreements.write_disagreements(
        cb=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codings=codings,
        gold_files=list(inp.gold),
        settings=params.validation,
        out=out,
        metadata=params.origin,
        sample=params.sample,
    )
    log.info("disagreements: %d rows", n)
