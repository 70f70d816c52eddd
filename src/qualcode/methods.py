"""A methods paragraph, a parameter table and an appendix, written from the manifest.

Everything here derives from the manifest, the codebook and the prompt templates, so the text states
what was actually run, not what the config intended.
"""

from __future__ import annotations

from typing import Any


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


def document(m: dict[str, Any], codebook_name: str, codebook_version: str, appendix: dict[str, str]) -> str:
    """methods.md: paragraph, parameter table, how to cite, and the full prompts and codebook."""
    parts = [
        "# Methods",
        "",
        paragraph(m, codebook_name, codebook_version),
        "",
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
