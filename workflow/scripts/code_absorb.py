"""On the submit host: put the answers the compute jobs received (their journals) into the cache, then delete the
journals of the finished shards."""

import json
from pathlib import Path

from qualcode import logs
from qualcode.coding import cache, journal

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    finished = [Path(p).stem for p in inp.shards]
    with cache.AnswerCache(params.cache_dir) as answers:
        added = journal.absorb(params.journals, answers, finished=finished)
    log.info("%d new answer(s) from %d shard(s) stored in the cache", added, len(finished))
    Path(snakemake.output.absorbed).write_text(json.dumps({"shards": finished, "answers_added": added}) + "\n")  # noqa: F821
