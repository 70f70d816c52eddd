"""A methods paragraph, a parameter table and an appendix, written from the manifest.

Everything here derives from the manifest, the codebook and the prompt templates, so the text states
what was actually run, not what the config intended.
"""

from __future__ import annotations

from typing import Any

NOT_RECORDED = "not recorded"


def _text(value: Any, missing: str = NOT_RECORDED) -> str:
    """A value as text: None, an empty string or an empty list is `missing`, never an empty cell or "None"."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value if v not in (None, ""))
    return missing if value is None or value == "" else str(value)


def _short(h: str | None) -> str:
    return h[:12] if h else NOT_RECORDED


def _date(ts: str | None) -> str:
    return ts[:10] if ts else "n/a"


def _asked(m: dict[str, Any], key: str) -> list[str]:
    """The model facts of the answers (`model.<key>`); a run with no answer falls back to the configuration."""
    found = (m.get("model") or {}).get(key) or []
    if found:
        return list(found)
    llm = (m.get("config") or {}).get("llm") or {}
    if key == "model_asked":
        return [llm["model"]] if llm.get("model") else []
    if key == "provider":
        return [llm["provider"]] if llm.get("provider") else []
    if key == "base_url" and llm.get("provider") == "openai":
        return [llm.get("base_url") or "https://api.openai.com/v1"]
    return []


def _provider(m: dict[str, Any]) -> str:
    providers, urls = _asked(m, "provider"), _asked(m, "base_url")
    if providers == ["local"]:
        return "run locally in-process with llama-cpp-python"
    if not urls:
        return "through an API whose address was not recorded"
    return "through the OpenAI-compatible API at " + ", ".join(urls)


def _base_url(m: dict[str, Any]) -> str:
    if _asked(m, "provider") == ["local"]:
        return "local (in-process)"
    return _text(_asked(m, "base_url"))


def _get(m: dict[str, Any], *path: str) -> Any:
    """m[path[0]][path[1]]..., or None where any part is missing."""
    for key in path:
        m = m.get(key) if isinstance(m, dict) else None
    return m


def paragraph(m: dict[str, Any], codebook_name: str, codebook_version: str) -> str:
    def t(*path: str, missing: str = NOT_RECORDED) -> str:
        return _text(_get(m, *path), missing)

    def n(*path: str) -> int:
        value = _get(m, *path)
        return value if isinstance(value, int) else 0

    model = m.get("model") or {}
    first, last = _date(model.get("first_answer_at")), _date(model.get("last_answer_at"))
    if first == "n/a" or last == "n/a":
        when = "at dates not recorded (no answer carries a date)"
    elif first == last:
        when = f"on {first}"
    else:
        when = f"between {first} and {last}"
    failed = (
        f"{n('counts', 'chunks_failed')} chunk(s) could not be coded and are listed with the reason in the failures "
        "table"
        if n("counts", "chunks_failed")
        else "no chunk failed"
    )
    unreadable = n("counts", "files_unreadable")
    unreadable_text = f" {unreadable} input file(s) could not be read and were excluded." if unreadable else ""
    prompts = _get(m, "sha256", "prompts") or {}
    sampled = _get(m, "config", "pilot", "documents")
    pilot = (
        f" This was a pilot run: {n('counts', 'documents')} documents sampled reproducibly (at most {sampled}, "
        f"pilot seed {t('config', 'pilot', 'seed')}); the rest of the corpus was not coded."
        if isinstance(sampled, int)
        else ""
    )
    served_as = _text(_get(m, "model", "models_served"), "")
    served = f"reported by the server as {served_as}" if served_as else "the server did not report a model name"
    return (
        f"Texts were coded with the language model {_text(_asked(m, 'model_asked'))} ({served}), "
        f"{_provider(m)}, {when}, using the qualcode "
        f"pipeline (version {t('software', 'qualcode')}; Snakemake {t('software', 'snakemake')}). The "
        f"{n('counts', 'documents')} documents were split into {n('counts', 'chunks')} chunks of at most "
        f"{t('chunking', 'max_tokens')} tokens ({t('chunking', 'encoding')} tokenizer) with "
        f"{t('chunking', 'overlap_tokens')} tokens of overlap, cutting preferably at speaker turns and paragraph "
        f"breaks.{unreadable_text}{pilot} Each chunk was sent with the codebook "
        f'"{_text(codebook_name, "unnamed")}" (version {_text(codebook_version)}; SHA-256 '
        f"{_short(_get(m, 'sha256', 'codebook'))}) rendered into the system prompt (templates: system "
        f"{_short(prompts.get('system'))}, user {_short(prompts.get('user'))}), at temperature "
        f"{t('config', 'llm', 'temperature')}, top-p {t('config', 'llm', 'top_p')}, seed "
        f"{t('config', 'llm', 'seed', missing='none')} and at most {t('config', 'llm', 'max_tokens')} output "
        f"tokens, asking for JSON constrained by a schema generated from the codebook ({t('structured_output')} "
        f"mode; schema SHA-256 {_short(_get(m, 'sha256', 'answer_schema'))}). Every answer was validated against "
        f"that schema; an invalid answer was asked again, with the validation error, up to "
        f"{t('config', 'llm', 'max_reasks')} times. {n('counts', 'chunks_coded')} of {n('counts', 'chunks')} "
        f"chunks were coded and {failed}. Each code came with a verbatim evidence quote where the codebook asked "
        f"for one: {n('counts', 'quotes_grounded')} of {n('counts', 'quotes')} quotes (one per chunk and field) "
        f"were found in the source text (exactly or up to whitespace, case and quotation marks) and "
        f"{n('counts', 'quotes_ungrounded')} were not.{_empty(m)} The configuration is identified by SHA-256 "
        f"{_short(_get(m, 'origin', 'qualcode.config_sha256'))} (resolved settings, see manifest.json); every "
        f"request and answer is in the replay archive, from which the tables can be rebuilt without the model."
    )


def _empty(m: dict[str, Any]) -> str:
    found = _get(m, "counts", "answers_empty")
    if not isinstance(found, dict) or not found:
        return " No answer was empty." if isinstance(found, dict) else ""
    by_field = ", ".join(f"{name} {count}" for name, count in found.items())
    total = sum(v for v in found.values() if isinstance(v, int))
    return (
        f" {total} answer(s) were empty (no value, or a text without a letter or digit), kept and counted by "
        f"field: {by_field}."
    )


def _table(m: dict[str, Any]) -> str:
    llm, c = _get(m, "config", "llm") or {}, m.get("counts") or {}
    m = {**m, "model": m.get("model") or {}, "chunking": m.get("chunking") or {}, "origin": m.get("origin") or {}}
    m["sha256"] = {**(m.get("sha256") or {}), "prompts": _get(m, "sha256", "prompts") or {}}
    rows = [
        ("Model asked for", _asked(m, "model_asked")),
        ("Model served", _text(m["model"].get("models_served"), "not reported")),
        ("System fingerprint", _text(m["model"].get("system_fingerprints"), "not reported")),
        ("Provider / base URL", _base_url(m)),
        ("Answers dated", _answers_dated(m["model"])),
        ("Structured output", m.get("structured_output")),
        ("Temperature", llm.get("temperature")),
        ("Top-p", llm.get("top_p")),
        ("Seed", llm.get("seed")),
        ("Max output tokens", llm.get("max_tokens")),
        ("Re-asks allowed", llm.get("max_reasks")),
        ("Chunk size / overlap (tokens)", _pair(m["chunking"].get("max_tokens"), m["chunking"].get("overlap_tokens"))),
        ("Tokenizer", m["chunking"].get("encoding")),
        ("Documents / chunks", _pair(c.get("documents"), c.get("chunks"))),
        ("Chunks coded / failed", _pair(c.get("chunks_coded"), c.get("chunks_failed"))),
        ("Quotes grounded / ungrounded", _pair(c.get("quotes_grounded"), c.get("quotes_ungrounded"))),
        ("Empty answers", _text(", ".join(f"{k} {v}" for k, v in (c.get("answers_empty") or {}).items()), "none")),
        ("Tokens in / out (all answers)", _pair(c.get("tokens_in"), c.get("tokens_out"))),
        ("Cost (all answers)", c.get("cost") if c.get("cost") is not None else "no price set"),
        ("Config SHA-256", m["origin"].get("qualcode.config_sha256")),
        ("Codebook SHA-256", m["sha256"].get("codebook")),
        ("System prompt template SHA-256", m["sha256"]["prompts"].get("system")),
        ("User prompt template SHA-256", m["sha256"]["prompts"].get("user")),
        ("Answer schema SHA-256", m["sha256"].get("answer_schema")),
        ("Workflow commit", (m.get("workflow") or {}).get("commit") or "not a git checkout"),
    ]
    lines = ["| Parameter | Value |", "|---|---|"]
    lines += [f"| {k} | {_text(v)} |" for k, v in rows]
    return "\n".join(lines)


def _pair(a: Any, b: Any) -> str:
    return f"{_text(a)} / {_text(b)}"


def _answers_dated(model: dict[str, Any]) -> str:
    first, last = model.get("first_answer_at"), model.get("last_answer_at")
    if not first or not last:
        return "not recorded (no answer carries a date)"
    return first if first == last else f"{first} to {last}"


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
        f"`{_text(_get(m, 'origin', 'qualcode.config_sha256'))}`, the codebook hash "
        f"`{_text(_get(m, 'sha256', 'codebook'))}` and the model as served "
        f"({_text(_get(m, 'model', 'models_served'), 'not reported')}). Publish `config/`, the codebook, "
        "`results/manifest.json` and `results/replay/answers.jsonl.gz`: with them a reader can rebuild the "
        "tables exactly (`qualcode import-archive`, then `snakemake --cores 4`) without the model or a key.",
        "",
        "## Appendix",
    ]
    for title, text in appendix.items():
        parts += ["", f"### {title}", "", "```", text.rstrip("\n"), "```"]
    return "\n".join(parts) + "\n"
