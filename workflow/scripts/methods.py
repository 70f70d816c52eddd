"""Write results/methods.md: a paragraph for the methods section, the parameters, the full prompts and codebook."""

import json
from pathlib import Path

from qualcode import codebook, logs, methods, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp = snakemake.input  # noqa: F821
    manifest = json.loads(Path(inp.manifest).read_text())
    cb = codebook.load(inp.codebook)
    appendix = {
        f"System prompt template ({inp.system})": Path(inp.system).read_text(encoding="utf-8"),
        f"User prompt template ({inp.user})": Path(inp.user).read_text(encoding="utf-8"),
        f"Codebook ({inp.codebook})": Path(inp.codebook).read_text(encoding="utf-8"),
    }
    validation = methods.validation_paragraph(
        tables.read(inp.agreement, "agreement").to_pandas(),
        snakemake.params.validation,  # noqa: F821
        tables.read(inp.stability, "stability").to_pandas(),
    )
    text = methods.document(manifest, cb.name, cb.version, appendix, validation)
    Path(snakemake.output.methods).write_text(text, encoding="utf-8")  # noqa: F821
    log.info("methods paragraph written")
