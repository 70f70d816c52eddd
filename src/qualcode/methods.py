"""A methods paragraph, a parameter table and an appendix, written from the manifest.

Everything here derives from the manifest, the codebook and the prompt templates, so the text states
what was actually run, not what the config intended.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .validity import human_raters, reference_used


def _short(h: str | None) -> str:
    return h[:12] if h else "n/a"


def _date(ts: str | None) -> str:
    return ts[:10] if ts else "n/a"


def _provider(model: dict[str, Any]) -> str:
    urls = model["base_url"]
    if model["provider"] == ["local"]:
        return "run locally in-process with llama-cpp-python"
    return "through the OpenAI-compatible API at " + ", ".join(urls)


def paragraph(m: dict[str, Any], codebook_name: str, codebook_version: str) -> str:
    c, cfg, model, sw = m["counts"], m["config"], m["model"], m["software"]
    llm, chunking = cfg["llm"], m["chunking"]
    served = ", ".join(model["models_served"]) or "n/a"
    first, last = _date(model["first_answer_at"]), _date(model["last_answer_at"])
    if first == "n/a":
        when = "at dates not recorded"
    elif first == last:
        when = f"on {first}"
    else:
        when = f"between {first} and {last}"
    seed = llm["seed"] if llm["seed"] is not None else "none"
    failed = (
        f"{c['chunks_failed']} chunk(s) could not be coded and are listed with the reason in the failures table"
        if c["chunks_failed"]
        else "no chunk failed"
    )
    unreadable = (
        f" {c['files_unreadable']} input file(s) could not be read and were excluded." if c["files_unreadable"] else ""
    )
    return (
        f"Texts were coded with the language model {', '.join(model['model_asked'])} (reported by the server as "
        f"{served}), {_provider(model)}, {when}, using the qualcode pipeline (version {sw.get('qualcode')}; "
        f"Snakemake {sw.get('snakemake')}). The {c['documents']} documents were split into {c['chunks']} chunks of "
        f"at most {chunking['max_tokens']} tokens ({chunking['encoding']} tokenizer) with {chunking['overlap_tokens']} "
        f"tokens of overlap, cutting preferably at speaker turns and paragraph breaks.{unreadable} Each chunk was "
        f'sent with the codebook "{codebook_name}" (version {codebook_version}; SHA-256 '
        f"{_short(m['sha256']['codebook'])}) rendered into the system prompt (templates: system "
        f"{_short(m['sha256']['prompts'].get('system'))}, user {_short(m['sha256']['prompts'].get('user'))}), "
        f"at temperature {llm['temperature']}, top-p {llm['top_p']}, seed {seed} and at most {llm['max_tokens']} "
        f"output tokens, asking for JSON constrained by a schema generated from the codebook "
        f"({m['structured_output']} mode; schema SHA-256 {_short(m['sha256']['answer_schema'])}). Every answer was "
        f"validated against that schema; an invalid answer was asked again, with the validation error, up to "
        f"{llm['max_reasks']} times. {c['chunks_coded']} of {c['chunks']} chunks were coded and {failed}. Each code "
        f"came with a verbatim evidence quote where the codebook asked for one: {c['quotes_grounded']} of "
        f"{c['quotes']} quotes were found in the source text (exactly or up to whitespace, case and quotation "
        f"marks) and {c['quotes_ungrounded']} were not. The configuration is identified by SHA-256 "
        f"{_short(m['origin']['qualcode.config_sha256'])} (resolved settings, see manifest.json); every request and "
        f"answer is in the replay archive, from which the tables can be rebuilt without the model."
    )


def _spread(values: Any) -> str:
    v = [x for x in values if x == x]
    if not v:
        return "undefined (no variation in the codes)"
    v.sort()
    mid = (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
    return f"median {mid:.2f} (range {v[0]:.2f} to {v[-1]:.2f}, {len(v)} codes)"


def _arm(name: str, arm: dict[str, Any]) -> str:
    changed = [f"{k} {v}" for k, v in sorted(arm.get("llm", {}).items())]
    changed += [f"{k} prompt template {v}" for k, v in sorted(arm.get("prompts", {}).items())]
    return f"{name} ({', '.join(changed) or 'no change'})"


def validation_paragraph(
    agreement: pd.DataFrame, settings: dict[str, Any], stability: pd.DataFrame | None = None
) -> str | None:
    """The validation sentences, from the agreement and stability tables: who coded how many units, which
    statistics, the spread of Krippendorff's alpha between humans and between each model (the run's, each arm) and
    the humans, the arms, and the replicates' stability. None without human codings, arms or replicates."""
    stability = stability if stability is not None else pd.DataFrame(columns=["metric", "rater", "estimate"])
    arms = settings.get("arms") or {}
    if agreement.empty and stability.empty and not arms:
        return None
    models = ["model", *arms]
    parts = []
    if arms:
        parts.append(
            f"The same chunks were also coded in {len(arms)} further arm(s), each with the run's settings except: "
            + "; ".join(_arm(n, a) for n, a in arms.items())
            + ". Arms shared the answer cache, and are compared below with each other and with the human coders."
        )
    if not agreement.empty:
        alpha = agreement[agreement.metric == "krippendorff_alpha"]
        raters = human_raters(agreement, models)
        pairs = alpha[alpha.rater_b.notna()]
        human = pairs[pairs.rater_a.isin(raters) & pairs.rater_b.isin(raters)]
        reference = reference_used(raters, settings["reference"])
        unit = "documents" if settings["unit"] == "document" else "chunks"
        ref_name = "the human coders' majority (ties left out)" if reference == "majority" else f"coder {reference}"
        text = (
            f"To assess validity, {len(raters)} human coder(s) ({', '.join(raters)}) coded a sample of up to "
            f"{int(agreement.n_units.max())} {unit} with the same codebook, independently of the model. Each value of "
            "a choice field was compared as present or absent, and single-choice and boolean fields as a whole. For "
            "every pair of raters we computed observed agreement, Cohen's kappa, Krippendorff's alpha (nominal) and "
            "Gwet's AC1"
            + (", and among all raters Fleiss' kappa, alpha and AC1" if (agreement.rater_a == "all").any() else "")
            + f", each with a 95% percentile bootstrap interval over units ({settings['bootstrap']} resamples, seed "
            f"{settings['seed']}); against {ref_name} also the model's precision, recall and F1."
        )
        if len(human):
            text += f" Krippendorff's alpha between human coders: {_spread(human.estimate)}."
        for m in models:
            vs_ref = pairs[(pairs.rater_a == m) & (pairs.rater_b == reference)]
            poor = int((vs_ref.assessment == "poor").sum())
            who = "the model" if m == "model" else f"arm {m}"
            text += f" Between {who} and {ref_name}: {_spread(vs_ref.estimate)}"
            text += (
                f"; for {poor} code(s) it was below 0.667, too low to rely on (Krippendorff, 2004)." if poor else "."
            )
        parts.append(text + " Every estimate, with its interval and number of units, is in agreement.parquet.")
    if settings.get("replicates", 1) > 1:
        text = (
            f"Every chunk was coded {settings['replicates']} times by each model (the replicate number is part of the "
            "cache key, so each replicate is a separate request; at temperature 0 with a fixed seed, replicates "
            "measure only the provider's nondeterminism)."
        )
        for m in models:
            mine = stability[stability.rater == m]
            changed = mine[mine.metric == "share_changed"]
            who = "the model" if m == "model" else f"arm {m}"
            text += (f" For {who}, Krippendorff's alpha across replicates was "
                     f"{_spread(mine[mine.metric == 'krippendorff_alpha'].estimate)}, and the share of chunks whose "
                     f"code changed {_spread(changed.estimate)}.")  # fmt: skip
        parts.append(text + " Per code and field, with intervals, in stability.parquet.")
    return " ".join(parts)


def _table(m: dict[str, Any]) -> str:
    llm, c = m["config"]["llm"], m["counts"]
    rows = [
        ("Model asked for", ", ".join(m["model"]["model_asked"])),
        ("Model served", ", ".join(m["model"]["models_served"]) or "n/a"),
        ("System fingerprint", ", ".join(m["model"]["system_fingerprints"]) or "n/a"),
        ("Provider / base URL", ", ".join(m["model"]["base_url"])),
        ("Answers dated", f"{m['model']['first_answer_at']} to {m['model']['last_answer_at']}"),
        ("Structured output", m["structured_output"]),
        ("Temperature", llm["temperature"]),
        ("Top-p", llm["top_p"]),
        ("Seed", llm["seed"]),
        ("Max output tokens", llm["max_tokens"]),
        ("Re-asks allowed", llm["max_reasks"]),
        ("Chunk size / overlap (tokens)", f"{m['chunking']['max_tokens']} / {m['chunking']['overlap_tokens']}"),
        ("Tokenizer", m["chunking"]["encoding"]),
        ("Documents / chunks", f"{c['documents']} / {c['chunks']}"),
        ("Chunks coded / failed", f"{c['chunks_coded']} / {c['chunks_failed']}"),
        ("Quotes grounded / ungrounded", f"{c['quotes_grounded']} / {c['quotes_ungrounded']}"),
        ("Tokens in / out (all answers)", f"{c['tokens_in']} / {c['tokens_out']}"),
        ("Cost (all answers)", c["cost"] if c["cost"] is not None else "no price set"),
        ("Config SHA-256", m["origin"]["qualcode.config_sha256"]),
        ("Codebook SHA-256", m["sha256"]["codebook"]),
        ("System prompt template SHA-256", m["sha256"]["prompts"].get("system")),
        ("User prompt template SHA-256", m["sha256"]["prompts"].get("user")),
        ("Answer schema SHA-256", m["sha256"]["answer_schema"]),
        ("Environment lock (uv.lock) SHA-256", m["environment"]["lock_sha256"] or "no uv.lock"),
        ("Workflow commit", (m["workflow"] or {}).get("commit", "not a git checkout")),
    ]
    lines = ["| Parameter | Value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _environment(env: dict[str, Any]) -> str:
    n = len(env["packages"])
    if not env["lock_sha256"]:
        return (
            f"The versions of all {n} installed Python packages are listed in `results/manifest.json` "
            "(`environment.packages`); no uv.lock was found beside the Snakefile, so the environment cannot be "
            "recreated from a lock file."
        )
    differs = env["differs_from_lock"]
    drift = (
        f" {len(differs)} installed package(s) differ from the lock ({', '.join(sorted(differs))}); see "
        "`environment.differs_from_lock` in the manifest."
        if differs
        else " Every locked package was installed at its locked version."
    )
    return (
        f"The software environment is pinned by `uv.lock` (SHA-256 `{env['lock_sha256']}`); recreate it exactly "
        f"with `uv sync --frozen` in a checkout of the workflow's commit. The versions of all {n} installed Python "
        f"packages are in `results/manifest.json` (`environment.packages`).{drift}"
    )


def document(
    m: dict[str, Any],
    codebook_name: str,
    codebook_version: str,
    appendix: dict[str, str],
    validation: str | None = None,
) -> str:
    """methods.md: paragraph (and the validation paragraph, if any), parameter table, how to cite, and the full
    prompts and codebook."""
    parts = [
        "# Methods",
        "",
        paragraph(m, codebook_name, codebook_version),
        "",
        *([validation, ""] if validation else []),
        "## Parameters",
        "",
        _table(m),
        "",
        "## How to cite this configuration",
        "",
        f"Cite the software (CITATION.cff) and give the configuration hash "
        f"`{m['origin']['qualcode.config_sha256']}`, the codebook hash `{m['sha256']['codebook']}` and the "
        f"model as served ({', '.join(m['model']['models_served']) or 'n/a'}). Publish `config/`, the codebook, "
        "`results/manifest.json` and `results/replay/answers.jsonl.gz`: with them a reader can rebuild the "
        "tables exactly (`qualcode import-archive`, then `snakemake --cores 4`) without the model or a key.",
        "",
        _environment(m["environment"]),
        "",
        "## Appendix",
    ]
    for title, text in appendix.items():
        parts += ["", f"### {title}", "", "```", text.rstrip("\n"), "```"]
    return "\n".join(parts) + "\n"
