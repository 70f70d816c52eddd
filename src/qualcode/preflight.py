"""Everything that can stop a run, found before the first request. The workflow runs `before_reading` when it is
parsed (workflow/rules/common.smk); `qualcode check` runs the same, then reads the inputs as the ingest job does and
the human codings as the validate job does, so that what passes the check does not stop the run after it has paid.
"""

from __future__ import annotations

from pathlib import Path

from .coding import client
from .config import Config, model_raters
from .errors import ConfigError
from .inputs import ingest
from .inputs.codebook import Codebook
from .inputs.ingest import InputFile
from .validity import gold, sampling, validation


def inputs(cfg: Config) -> tuple[list[InputFile], list[str]]:
    """The input files as the listing records them (never the run's results or cache), and warnings: files whose
    names look like the folder's documentation rather than texts to code."""
    root = Path(cfg.ingest.input_dir)
    files = ingest.list_inputs(root, cfg.ingest.include, cfg.ingest.exclude, cfg.never_inputs)
    if not files:
        raise ConfigError(f"ingest: no files in {cfg.ingest.input_dir} match {cfg.ingest.include}")
    notes = []
    docs = ingest.documentation_like(files)
    if docs:
        shown = ", ".join(docs[:5]) + (f" and {len(docs) - 5} more" if len(docs) > 5 else "")
        notes.append(
            f"ingest: {len(docs)} input file(s) in {cfg.ingest.input_dir} look like documentation, not texts to "
            f"code, and will be coded: {shown}. To leave them out, list them in ingest.exclude (e.g. "
            "exclude: [README*, SOURCES*]) or move them out of the folder"
        )
    return files, notes


def human_codings(cfg: Config, cb: Codebook, files: list[InputFile]) -> None:
    """The human codings (validation.gold) as far as they can be checked before any document is read: each file
    exists and can be read, names at least one document of the listed files, and its coders' names are free."""
    for path in cfg.validation.gold:
        if not Path(path).is_file():
            raise ConfigError(f"validation.gold: {path} not found (paths are relative to the working directory)")
    if not cfg.validation.gold:
        return
    names = {f.name for f in files}
    where = f"the {len(files)} files listed from ingest.input_dir ({cfg.ingest.input_dir})"
    v = cfg.validation
    sample = cfg.pilot.documents is not None
    read = gold.preflight(
        v.gold, cb, lambda doc_id: ingest.from_listed(doc_id, names), where, v.unit, v.on_error, sample
    )
    coders = {c for df in read.values() for c in df["coder"].dropna()}
    validation.check_coders(coders, model_raters(cfg), v.reference)


def before_reading(cfg: Config, cb: Codebook, gold_too: bool = True) -> tuple[list[InputFile], list[str]]:
    """What the workflow checks when it is parsed, before any job runs: the model file for the provider, the
    inputs, the human codings. Returns the input listing and warnings to show. `gold_too=False` skips reading the
    human codings: each job parses the workflow again, and once, in the main process, is enough."""
    if cfg.llm.provider == "local":
        client.local_model_path(cfg.llm.model)
    files, notes = inputs(cfg)
    if gold_too:
        human_codings(cfg, cb, files)
        if cfg.validation.sample is not None:  # the validation sample's file: its probabilities are read later
            sampling.read_sample(cfg.validation.sample)
    return files, notes


def after_reading(cfg: Config, cb: Codebook, files: list[InputFile]) -> tuple[int, int, list[str]]:
    """What the ingest and validate jobs stop on, found by doing their reading (nothing is sent): the documents
    read as the ingest job reads them, then the human codings checked against their texts. Returns the number of
    documents, of input files that would be skipped as unreadable, and the human coding rows that would be."""
    root = Path(cfg.ingest.input_dir)
    docs, problems = ingest.ingest(files, root, cfg.ingest)
    ingest.check_enough(docs, problems, len(files), cfg.ingest.max_skipped_share)
    if cfg.pilot.documents is not None:
        docs = ingest.pilot_sample(docs, cfg.pilot.documents, cfg.pilot.seed)
    unreadable = len({p.source_file for p in problems})
    if not cfg.validation.gold:
        return len(docs), unreadable, []
    texts = {d.doc_id: d.text for d in docs}
    v = cfg.validation
    human, skipped = gold.load(
        v.gold, cb, texts, unit=v.unit, on_error=v.on_error, sample=cfg.pilot.documents is not None
    )
    validation.check_coders(set(human["coder"]), model_raters(cfg), v.reference if not human.empty else None)
    return len(docs), unreadable, skipped
