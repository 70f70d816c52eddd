"""A methods paragraph, a parameter table and an appendix, written from the manifest.

Everything here derives from the manifest, the codebook and the prompt templates, so the text states
what was actually run, not what the config intended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..validity.history import revisions_text
from ..validity.validation import RARE, human_raters, majority_basis, positives, reference_used, too_rare

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
        f"{n('counts', 'quotes_ungrounded')} were not.{_empty(m)}{_usage(m)} The configuration is identified by "
        f"SHA-256 "
        f"{_short(_get(m, 'origin', 'qualcode.config_sha256'))} (resolved settings, see manifest.json); every "
        f"request and answer (replicates and comparison arms included) is in the replay archive, from which every "
        f"table can be rebuilt without the model."
    )


def _count(c: dict[str, Any], key: str) -> int:
    value = c.get(key)
    return value if isinstance(value, int) else 0


def _batch_ids(c: dict[str, Any]) -> list[str]:
    ids = c.get("batch_ids")
    return [str(i) for i in ids if i] if isinstance(ids, list) else []


def _usage(m: dict[str, Any]) -> str:
    """Tokens (cached and not), how the answers were obtained and what they cost, as the manifest counted them."""
    c = _get(m, "counts")
    if not isinstance(c, dict) or not isinstance(c.get("tokens_in"), int):
        return ""
    batch, realtime = _count(c, "answers_batch"), _count(c, "answers_realtime")
    if batch and realtime:
        how = f"{batch} through the provider's Batch API and {realtime} one request at a time"
    else:
        how = "through the provider's Batch API" if batch else "one request at a time"
    batches = _batch_ids(c)
    which = f" (batch{'es' if len(batches) > 1 else ''} {', '.join(batches)})" if batches else ""
    price = (_get(m, "config", "prices") or {}).get(_get(m, "config", "llm", "model") or "")
    cost = c.get("cost")
    if not isinstance(cost, (int, float)) or not isinstance(price, dict):
        paid = "no price was configured, so no cost is stated"
    else:
        cached_price = price.get("cached_input") if price.get("cached_input") is not None else price.get("input")
        discount = price.get("batch_discount")
        paid = (
            f"they cost {cost:.4f} at the configured prices (per million tokens: input {_text(price.get('input'))}, "
            f"cached input {_text(cached_price)}, output {_text(price.get('output'))}"
            + (f"; {discount:.0%} less in a batch" if batch and isinstance(discount, (int, float)) else "")
            + ")"
        )
    return (
        f" Answers were obtained {how}{which}: {c['tokens_in']} input tokens ({_count(c, 'tokens_cached')} of them "
        f"served from the provider's prompt cache) and {_count(c, 'tokens_out')} output tokens; {paid}."
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


def _spread(values: Any, n_units: Any = None, units: str = "units") -> str:
    """The spread of coefficients over codes and, given `n_units`, the units each rests on."""
    v = [x for x in values if x == x]
    n = [int(x) for x, e in zip(n_units, values, strict=True) if e == e] if n_units is not None else []
    if not v:
        return "undefined (no variation in the codes)"
    v.sort()
    mid = (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
    on = ""
    if n:
        on = f"; n = {min(n)} {units}" if min(n) == max(n) else f"; n = {min(n)} to {max(n)} {units}"
    return f"median {mid:.2f} (range {v[0]:.2f} to {v[-1]:.2f}, {len(v)} codes{on})"


def _coded(agreement: pd.DataFrame, raters: list[str], unit: str) -> str:
    """Who coded how many units, and how many units each pair shares."""
    # per split (dev and holdout hold different units) the most units any code was rated on, summed
    split = agreement["split"] if "split" in agreement else pd.Series("all", index=agreement.index)
    rated = agreement[(agreement.metric == "prevalence") & agreement.rater_a.isin(raters)]
    n = rated.groupby([split[rated.index], rated.rater_a]).n_units.max().groupby(level=1).sum()
    each = ", ".join(f"{r}: {int(n.get(r, 0))}" for r in raters)
    pairs = agreement[(agreement.metric == "krippendorff_alpha") & agreement.rater_a.isin(raters)
                      & agreement.rater_b.isin(raters)]  # fmt: skip
    shared = pairs.groupby([split[pairs.index], pairs.rater_a, pairs.rater_b]).n_units.max().groupby(level=[1, 2]).sum()
    both = "; ".join(f"{a} and {b} both: {int(k)}" for (a, b), k in shared.items())
    return f"{unit} coded by {each}" + (f"; {both}" if both else "")


def _arm(name: str, arm: dict[str, Any]) -> str:
    changed = [f"{k} {v}" for k, v in sorted(arm.get("llm", {}).items())]
    changed += [f"{k} prompt template {v}" for k, v in sorted(arm.get("prompts", {}).items())]
    return f"{name} ({', '.join(changed) or 'no change'})"


def holdout_paragraph(holdout: Mapping[str, Any] | None) -> str | None:
    """What was done with the holdout (the manifest's `holdout`: settings and every scoring, from
    validation.holdout_log): whether the configuration was fixed before it was scored, or how often and under how
    many configurations it was scored. None without a holdout."""
    if not holdout or not holdout.get("share"):
        return None
    scorings = holdout.get("scorings") or []
    text = (
        f"A share of {holdout['share']:g} of the units was set aside as a holdout (by a hash of each unit's id, seed "
        f"{holdout['seed']}); arms were compared, and the configuration chosen, on the other units (dev)."
    )
    if not scorings:
        return text + " The holdout has not been scored."
    configs = sorted({s["config_sha256"] for s in scorings})
    locked = all(s.get("lock") and s["config_sha256"].startswith(s["lock"]) for s in scorings)
    if locked and len(configs) == 1:
        return text + (f" Model, prompt and codebook were fixed (configuration hash {configs[0][:12]}) before the "
                       f"holdout was scored ({len(scorings)} time(s), always under that configuration).")  # fmt: skip
    return text + (
        f" The holdout was scored {len(scorings)} time(s) under {len(configs)} configuration(s) "
        f"({', '.join(c[:12] for c in configs)}), not only under one locked beforehand (validation.lock), so its "
        "figures may reflect choices made after seeing them."
    )


def validation_paragraph(
    agreement: pd.DataFrame,
    settings: dict[str, Any],
    stability: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
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
        # with a holdout, the numbers quoted are the holdout's where it was scored (the arms': dev's, where alone
        # they are compared), else dev's
        splits = set(agreement.split) if "split" in agreement else {"all"}
        final = "holdout" if "holdout" in splits else "dev" if "dev" in splits else "all"
        by_split = {m: agreement.split == ("dev" if m != "model" and final == "holdout" else final)
                    for m in models} if "split" in agreement else {}  # fmt: skip
        quoted = agreement[agreement.split == final] if "split" in agreement else agreement
        alpha = quoted[quoted.metric == "krippendorff_alpha"]
        raters = human_raters(agreement, models)
        pairs = alpha[alpha.rater_b.notna()]
        human = pairs[pairs.rater_a.isin(raters) & pairs.rater_b.isin(raters)]
        reference = reference_used(raters, settings["reference"])
        unit = "documents" if settings["unit"] == "document" else "chunks"
        ref_name = "the human coders' majority (ties left out)" if reference == "majority" else f"coder {reference}"
        text = (
            f"To assess validity, {len(raters)} human coder(s) ({', '.join(raters)}) coded a sample of {unit} with "
            f"the same codebook, independently of the model ({_coded(agreement, raters, unit)}). Each value of "
            "a choice field was compared as present or absent, and single-choice and boolean fields as a whole. For "
            "every pair of raters we computed observed agreement, Cohen's kappa, Krippendorff's alpha (nominal) and "
            "Gwet's AC1"
            + (", and among all raters Fleiss' kappa, alpha and AC1" if (agreement.rater_a == "all").any() else "")
            + f", each with a 95% percentile bootstrap interval over units ({settings['bootstrap']} resamples, seed "
            f"{settings['seed']}); against {ref_name} also the model's precision, recall and F1."
        )
        if reference == "majority" and (basis := majority_basis(agreement)) is not None:
            n, k1, kt = basis
            text += (f" The majority covers {n} {unit}: on {k1} of them only one coder coded the unit, so the "
                     f"majority there is that coder's code, and {kt} were left out as ties.")  # fmt: skip
        if final != "all":
            arms_on_dev = "; the arms', on dev, where they were compared." if final == "holdout" and arms else "."
            text += f" The figures below are on the {final} units{arms_on_dev}"
        if len(human):
            text += f" Krippendorff's alpha between human coders: {_spread(human.estimate, human.n_units, unit)}."
        all_pairs = agreement[(agreement.metric == "krippendorff_alpha") & agreement.rater_b.notna()]
        for m in models:
            mine = all_pairs[by_split[m][all_pairs.index]] if by_split else all_pairs
            vs_ref = mine[(mine.rater_a == m) & (mine.rater_b == reference)]
            poor = int((vs_ref.assessment == "poor").sum())
            who = "the model" if m == "model" else f"arm {m}"
            text += f" Between {who} and {ref_name}: {_spread(vs_ref.estimate, vs_ref.n_units, unit)}"
            text += (
                f"; for {poor} code(s) it was below 0.667, too low to rely on (Krippendorff, 2004)." if poor else "."
            )
        rare = alpha[too_rare(agreement)[alpha.index]]
        if len(rare):
            count = positives(agreement)
            names = sorted({f"{f}: {v}" for f, v in zip(rare.field, rare.value, strict=True)})
            splits = rare["split"] if "split" in rare else ["all"] * len(rare)
            fewest = min(count.get((s, f, v, r), 0) for s, f, v, a, b in zip(splits, rare.field, rare.value,
                         rare.rater_a, rare.rater_b, strict=True) for r in (a, b))  # fmt: skip
            text += (f" For {len(names)} code(s) ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}) a rater "
                     f"marked the code present on fewer than {RARE} {unit} (as few as {fewest}): their coefficients "
                     "and intervals rest on a handful of units and are not interpreted.")  # fmt: skip
        parts.append(text + " Every estimate, with its interval and number of units, is in agreement.parquet.")
        revised = revisions_text(history, reference) if history is not None else None
        if revised:
            parts.append(revised + " Per code and revision in agreement_history.parquet.")
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
            kalpha = mine[mine.metric == "krippendorff_alpha"]
            text += (f" For {who}, Krippendorff's alpha across replicates was "
                     f"{_spread(kalpha.estimate, kalpha.n_units, 'chunks')}, and the share of chunks whose "
                     f"code changed {_spread(changed.estimate, changed.n_units, 'chunks')}.")  # fmt: skip
        parts.append(text + " Per code and field, with intervals, in stability.parquet.")
    return " ".join(parts)


def prevalence_paragraph(prevalence: pd.DataFrame, settings: dict[str, Any]) -> str | None:
    """The corrected prevalence sentences, from prevalence.parquet: the estimator, the sample behind it and the
    largest correction, or why no corrected estimate is given. None without choice or boolean codes."""
    if prevalence.empty:
        return None
    unit = "documents" if settings["unit"] == "document" else "chunks"
    overall = prevalence[prevalence.by.isna()]
    n = int(overall.n_units.iloc[0])
    refused = overall.refused.dropna()
    if len(refused):
        return (f"The prevalence of each code over the {n} {unit} is given from the model's codes only "
                f"(prevalence.parquet); it is not corrected for the model's errors, and no interval is given, because "
                f"{refused.iloc[0]}.")  # fmt: skip
    n_sample = int(overall.n_sample.iloc[0])
    by = settings.get("by")
    text = (f"The prevalence of each code over the {n} {unit} was estimated from the model's codes and corrected "
            f"with the human-coded probability sample (n = {n_sample} {unit}, drawn with recorded inclusion "
            "probabilities) by the design-based difference estimator with Horvitz-Thompson weights (Egami et al., "
            "2023; Angelopoulos et al., 2023), with 95% normal intervals from the stratified variance"
            + (f", for the whole corpus and by {by}" if by else "") + ".")  # fmt: skip
    shift = (overall.corrected - overall.naive).abs()
    if shift.notna().any():
        r = overall.loc[shift.idxmax()]
        text += (f" The largest correction was for {r.field}: {r.value}: {r.naive:.3f} from the model's codes, "
                 f"{r.corrected:.3f} (95% CI {r.ci_low:.3f} to {r.ci_high:.3f}; n = {int(r.n_sample)} {unit}) "
                 "corrected.")  # fmt: skip
    fragile = overall.note.fillna("").str.startswith("fragile")
    if fragile.any():
        text += (f" For {int(fragile.sum())} code(s) the sample held fewer than 5 human positives or disagreements, "
                 "so their intervals may be too narrow.")  # fmt: skip
    return text + " Every estimate, with its interval and n, is in prevalence.parquet."


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
        ("Input tokens from the prompt cache", c.get("tokens_cached")),
        ("Answers obtained", _modes(c)),
        ("Cost (all answers, as paid)", c.get("cost") if c.get("cost") is not None else "no price set"),
        ("Config SHA-256", m["origin"].get("qualcode.config_sha256")),
        ("Codebook SHA-256", m["sha256"].get("codebook")),
        ("System prompt template SHA-256", m["sha256"]["prompts"].get("system")),
        ("User prompt template SHA-256", m["sha256"]["prompts"].get("user")),
        ("Answer schema SHA-256", m["sha256"].get("answer_schema")),
        ("Environment lock (uv.lock) SHA-256", (m.get("environment") or {}).get("lock_sha256") or "no uv.lock"),
        ("Workflow commit", (m.get("workflow") or {}).get("commit") or "not a git checkout"),
    ]
    lines = ["| Parameter | Value |", "|---|---|"]
    lines += [f"| {k} | {_text(v)} |" for k, v in rows]
    return "\n".join(lines)


def _modes(c: dict[str, Any]) -> str | None:
    if not isinstance(c.get("answers_realtime"), int) and not isinstance(c.get("answers_batch"), int):
        return None
    batches = ", ".join(_batch_ids(c))
    text = f"{_count(c, 'answers_realtime')} realtime, {_count(c, 'answers_batch')} in a batch"
    return text + (f" ({batches})" if batches else "")


def _environment(env: dict[str, Any]) -> str:
    n = len(env.get("packages") or {})
    if not env.get("lock_sha256"):
        return (
            f"The versions of all {n} installed Python packages are listed in `results/manifest.json` "
            "(`environment.packages`); no uv.lock was found beside the Snakefile, so the environment cannot be "
            "recreated from a lock file."
        )
    differs = env.get("differs_from_lock") or {}
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


def _pair(a: Any, b: Any) -> str:
    return f"{_text(a)} / {_text(b)}"


def _answers_dated(model: dict[str, Any]) -> str:
    first, last = model.get("first_answer_at"), model.get("last_answer_at")
    if not first or not last:
        return "not recorded (no answer carries a date)"
    return first if first == last else f"{first} to {last}"


def document(
    m: dict[str, Any],
    codebook_name: str,
    codebook_version: str,
    appendix: dict[str, str],
    validation: str | None = None,
    themes: str | None = None,
) -> str:
    """methods.md: paragraph (and the validation and themes paragraphs, if any), parameter table, how to cite, and
    the full prompts and codebook."""
    parts = [
        "# Methods",
        "",
        paragraph(m, codebook_name, codebook_version),
        "",
        *([validation, ""] if validation else []),
        *([themes.strip(), ""] if themes else []),
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
        _environment(m.get("environment") or {}),
        "",
        "## Appendix",
    ]
    for title, text in appendix.items():
        parts += ["", f"### {title}", "", "```", text.rstrip("\n"), "```"]
    return "\n".join(parts) + "\n"
