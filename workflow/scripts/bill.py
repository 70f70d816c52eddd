"""Before the first request of a run: count the requests in the cache and the new ones, say why they are new and what
they cost, and stop the run before paying when more are new than limits.confirm_new_requests allows."""

import json

from qualcode import config, logs
from qualcode.coding import cache, estimate, prompts
from qualcode.inputs import codebook
from qualcode.outputs import tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    cfg = config.Config.model_validate(params.settings)
    cb = codebook.load(inp.codebook)
    label = cfg.prompt_context.label_continued_turn
    templates = prompts.load(inp.system, inp.user, cb, cfg.llm.structured_output, label)
    chunks = tables.read_chunks(inp.chunks)
    with cache.AnswerCache(params.cache_dir) as answers:
        previous = estimate.read_record(params.record)
        bill = estimate.bill(cfg, chunks, templates, answers, previous, params.replicate)
    coding = snakemake.wildcards.coding  # noqa: F821
    for what, amount in estimate.bill_rows(bill):
        log.info("bill%s: %s: %s", "" if coding == "run" else f" {coding}", what, amount)
    estimate.confirm(bill, cfg.limits.confirm_new_requests)
    if bill.pop("settings_changed"):
        removed = estimate.forget_codings(params.codings)
        if removed:
            log.info("%d coding job output(s) made with other settings removed: they run again", removed)
    estimate.write_record(params.record, bill.pop("record"))
    with open(snakemake.output.bill, "w", encoding="utf-8") as out:  # noqa: F821
        json.dump(bill, out, indent=1)
