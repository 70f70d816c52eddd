"""Write results/manifest.json (hashes, versions, settings, models served and counts of this run) and, from it,
results/methods.md (a paragraph for the methods section, the parameters, the full prompts and codebook) with its
report page."""

import json
from pathlib import Path

from qualcode import config, logs
from qualcode.inputs import codebook, ingest
from qualcode.outputs import provenance, tables
from qualcode.reporting import methods, pages

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    # `in inp` would look among the paths: the names are its keys (the theme tables are inputs when themes.enabled)
    theme_tables = [n for n in tables.THEME_TABLES if n in inp.keys()]  # noqa: SIM118
    names = (*tables.PUBLISHED, *tables.VALIDATION, "prevalence", *theme_tables)
    manifest = provenance.manifest(
        cfg=config.resolve(params.config),
        config_files=params.config_files,
        inputs=ingest.listed_paths(inp.documents_in),
        outputs={**{n: inp[n] for n in names}, "replay_archive": inp.archive},
        answer_schema=inp.answer_schema,
        tables=provenance.read_counted(inp),
        workflow_dir=params.workflow_dir,
        started_at=provenance.jobs_started_at(inp.shards),
        execution={**params.execution, "coding_jobs": provenance.coding_jobs(inp.shards)},
    )
    Path(out.manifest).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info("run %s: %s", manifest["run"]["id"], manifest["counts"])

    cb = codebook.load(inp.codebook)
    appendix = {
        f"System prompt template ({inp.system})": Path(inp.system).read_text(encoding="utf-8"),
        f"User prompt template ({inp.user})": Path(inp.user).read_text(encoding="utf-8"),
        f"Codebook ({inp.codebook})": Path(inp.codebook).read_text(encoding="utf-8"),
    }
    validation = methods.validation_paragraph(
        tables.read(inp.agreement, "agreement").to_pandas(),
        params.validation,
        tables.read(inp.stability, "stability").to_pandas(),
        tables.read(inp.history, "agreement_history").to_pandas(),
    )
    themes = Path(inp.themes_methods).read_text(encoding="utf-8") if inp.get("themes_methods") else None
    held = methods.holdout_paragraph(manifest["holdout"])
    prevalence = methods.prevalence_paragraph(
        tables.read(inp.prevalence, "prevalence").to_pandas(), params.validation
    )
    validation = " ".join(p for p in (validation, held, prevalence) if p) or None
    text = methods.document(manifest, cb.name, cb.version, appendix, validation, themes)
    Path(out.methods).write_text(text, encoding="utf-8")
    pages.methods_html(text, out.methods_page)
    log.info("methods paragraph written")
