"""Write the answer schema generated from the codebook, and the rendered system prompt, for inspection."""

import json
from pathlib import Path

from qualcode import logs
from qualcode.coding import prompts
from qualcode.inputs import codebook

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    cb = codebook.load(snakemake.input.codebook)  # noqa: F821
    mode = snakemake.params.structured_output  # noqa: F821
    rendered = prompts.load(snakemake.input.system, snakemake.input.user, cb, mode)  # noqa: F821
    Path(snakemake.output.schema).write_text(json.dumps(cb.answer_schema(), indent=2) + "\n")  # noqa: F821
    Path(snakemake.output.system_prompt).write_text(rendered.messages("")[0]["content"] + "\n")  # noqa: F821
    log.info("answer schema for %d fields of codebook %r v%s", len(cb.fields), cb.name, cb.version)
