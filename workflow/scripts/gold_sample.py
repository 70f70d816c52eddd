"""Draw the validation sample: results/gold_sample/sample.csv (units, strata, inclusion probabilities), the blind
coding sheet sheet.csv, sample.qdpx for QDA programs and design.json (how the size was found)."""

from qualcode import logs
from qualcode.inputs import codebook
from qualcode.validity import sampling

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    design = sampling.write_gold_sample(
        cb=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codes=inp.codes[0] if inp.codes else None,
        settings=params.settings,
        out=dict(out.items()),
        version=params.version,
    )
    log.info("drew %d of %d %ss (%s)", design["drawn"], design["population"], design["unit"], design["formula"])
    for stratum, counts in design["strata"].items():
        log.info("stratum %s: %d of %d", stratum, counts["drawn"], counts["size"])
