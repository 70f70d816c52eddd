"""What a run will cost before it starts: requests still to send after the cache, tokens, money; and the bill, which
says why the new requests are new, and stops a run that would send more of them than `limits.confirm_new_requests`.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Config, Price, PromptContext
from ..errors import LimitReached
from ..ids import file_sha256, stable_hash
from ..inputs import chunking, ingest
from ..inputs.codebook import Codebook
from ..inputs.codebook import load as load_codebook
from ..records import Chunk, LLMRequest
from . import prompts
from .cache import AnswerCache
from .coder import Requests
from .limits import count_tokens, estimate_prompt_tokens


def estimate(cfg: Config) -> dict[str, Any]:
    """Requests, tokens and cost still to come after the cache. With `pilot.documents` set, for the pilot run, and
    under `full_run_adds` for the full run that follows it (pilot removed), counting the pilot's answers as cached."""
    root = Path(cfg.ingest.input_dir)
    skip_errors = cfg.ingest.model_copy(update={"on_error": "skip"})
    docs, problems = ingest.ingest(
        ingest.discover(root, cfg.ingest.include, cfg.ingest.exclude, cfg.never_inputs), root, skip_errors
    )
    chunks = chunking.chunk_documents(docs, cfg.chunking, cfg.prompt_context.metadata)
    cb = load_codebook(cfg.codebook)
    templates = prompts.load(
        cfg.prompts["system"], cfg.prompts["user"], cb, cfg.llm.structured_output,
        cfg.prompt_context.label_continued_turn,
    )  # fmt: skip
    sample = {d.doc_id for d in ingest.pilot_sample(docs, cfg.pilot.documents, cfg.pilot.seed)}
    with AnswerCache(cfg.cache_dir) as cache:
        the_bill = bill(
            cfg, [c for c in chunks if c.doc_id in sample], templates, cache, read_record(record_path(cfg.results_dir))
        )
        build = Requests(cfg.llm, templates)
        later = [r for c in chunks if c.doc_id not in sample and (r := build(c)).key() not in cache]
    out = {
        "documents": len(sample),
        "unreadable_files": len(problems),
        "chunks": the_bill["requests"],
        "cached": the_bill["cached"],
        **{k: the_bill[k] for k in COST_KEYS},
        "output_tokens_basis": the_bill["output_tokens_basis"],
        "model": cfg.llm.model,
        "budget": cfg.limits.budget,
        "bill": the_bill,
        "pilot": None,
        **modes(cfg.prices.get(cfg.llm.model), templates, the_bill),
    }
    if cfg.pilot.documents is not None:
        adds = _requests(cfg, later, the_bill["output_tokens_per_answer"])
        out["pilot"] = {
            "documents_in_corpus": len(docs),
            "seed": cfg.pilot.seed,
            "full_run_adds": {"documents": len(docs) - len(sample), **adds},
        }
    return out


COST_KEYS = ("requests_to_send", "input_tokens", "output_tokens_expected", "cost_expected", "cost_at_most")


def _requests(cfg: Config, to_send: Sequence[LLMRequest], per_answer: float) -> dict[str, Any]:
    # The system message is the same in every request: count each distinct message once.
    counted: dict[str, int] = {}
    tokens_in = 0
    for r in to_send:
        for m in r.messages:
            content = m.get("content") or ""
            if content not in counted:
                counted[content] = estimate_prompt_tokens([m])
            tokens_in += counted[content]
    tokens_out = round(per_answer * len(to_send))
    price = cfg.prices.get(cfg.llm.model)
    cost = cost_max = None
    if price is not None:
        cost = price.cost(tokens_in, tokens_out)
        cost_max = price.cost(tokens_in, cfg.llm.max_tokens * len(to_send))
    return {
        "requests_to_send": len(to_send),
        "input_tokens": tokens_in,
        "output_tokens_expected": tokens_out,
        "cost_expected": cost,
        "cost_at_most": cost_max,
    }


# -- realtime or batch, with the prompt cache or without: the same requests at each mode's prices -------------------

MODES = ("realtime", "realtime, prefix cached", "batch", "batch, prefix cached")


def prefix(templates: prompts.Prompts, price: Price | None) -> dict[str, Any]:
    """The stable prefix every request starts with (the system prompt: the codebook, its instructions and, with
    structured_output 'prompt', the schema), its tokens, and whether it is long enough for the provider to cache."""
    least = price.cache_min_tokens if price else Price.model_fields["cache_min_tokens"].default
    tokens = count_tokens(templates.system_text)
    return {"tokens": tokens, "cache_min_tokens": least, "cacheable": tokens >= least}


def costs_by_mode(
    price: Price, requests: int, tokens_in: int, tokens_out: int, prefix_tokens: int, cacheable: bool
) -> dict[str, float]:
    """The cost of `requests` requests in each of `MODES`. With the prefix cached, every request but the first gets
    its prefix at the cached-input price: a best case, as a provider keeps a prefix for minutes, not for a whole run
    (OpenAI also caches in steps of 128 tokens past the first 1,024)."""
    cached = prefix_tokens * max(requests - 1, 0) if cacheable else 0
    return {
        "realtime": price.cost(tokens_in, tokens_out),
        "realtime, prefix cached": price.cost(tokens_in, tokens_out, cached),
        "batch": price.cost(tokens_in, tokens_out, batch=True),
        "batch, prefix cached": price.cost(tokens_in, tokens_out, cached, batch=True),
    }


def modes(price: Price | None, templates: prompts.Prompts, b: dict[str, Any]) -> dict[str, Any]:
    """The bill's new requests per chunk (the tokens behind every cost) and their cost in each mode (None without a
    price)."""
    stable = prefix(templates, price)
    n = b["new"]
    per_chunk = {
        "input_tokens": b["input_tokens"] / n if n else None,
        "prefix_tokens": stable["tokens"],
        "output_tokens": b["output_tokens_per_answer"],
    }
    by_mode = None
    if price is not None:
        by_mode = costs_by_mode(
            price, n, b["input_tokens"], b["output_tokens_expected"], stable["tokens"], stable["cacheable"]
        )
    return {"prefix": stable, "per_chunk": per_chunk, "cost_by_mode": by_mode}


def mode_rows(e: dict[str, Any]) -> list[tuple[str, str]]:
    """The prefix, the tokens per chunk and the costs side by side, as `render` shows them."""
    p, per = e["prefix"], e["per_chunk"]
    where = f"prices.{e['model']}.cache_min_tokens"
    rows = [(
        "stable prefix (system prompt)",
        f"{p['tokens']:,} tokens: "
        + (f"cacheable (the provider caches from {p['cache_min_tokens']:,}, {where})"
           if p["cacheable"] else
           f"not cacheable (under the {p['cache_min_tokens']:,} the provider caches, {where})"),
    )]  # fmt: skip
    if per["input_tokens"] is not None:
        rows.append((
            "tokens per new request",
            f"{per['input_tokens']:,.0f} in (of which {per['prefix_tokens']:,} the prefix), "
            f"{per['output_tokens']:,.0f} out",
        ))  # fmt: skip
    by_mode = e["cost_by_mode"]
    if by_mode is None:
        rows.append(("cost by mode", "no price for this model in `prices`"))
        return rows
    widths = [max(len(m), len(f"{by_mode[m]:.4f}")) for m in MODES]
    rows.append(("cost by mode", "  ".join(f"{m:>{w}}" for m, w in zip(MODES, widths, strict=True))))
    rows.append(("", "  ".join(f"{by_mode[m]:>{w}.4f}" for m, w in zip(MODES, widths, strict=True))))
    return rows


def _money(e: dict[str, Any]) -> str:
    if e["cost_expected"] is None:
        return "no price for this model in `prices`"
    return f"{e['cost_expected']:.4f} expected, {e['cost_at_most']:.4f} at most (every answer at llm.max_tokens)"


def render(e: dict[str, Any]) -> str:
    pilot = e.get("pilot")
    documents = f"{e['documents']} ({e['unreadable_files']} unreadable files skipped)"
    if pilot:
        documents = (
            f"{e['documents']} of {pilot['documents_in_corpus']}, sampled by pilot (seed {pilot['seed']}; "
            f"{e['unreadable_files']} unreadable files skipped)"
        )
    rows = [
        ("documents", documents),
        ("chunks", e["chunks"]),
        ("already answered (cache)", e["cached"]),
        ("requests to send", e["requests_to_send"]),
        ("input tokens (estimated)", e["input_tokens"]),
        ("output tokens (expected)", f"{e['output_tokens_expected']} ({e['output_tokens_basis']})"),
        (f"cost for {e['model']}", _money(e)),
        *mode_rows(e),
        ("budget (limits.budget)", e["budget"] if e["budget"] is not None else "none"),
        *bill_rows(e["bill"], cost=False),
    ]
    if pilot:
        adds = pilot["full_run_adds"]
        rows += [
            ("the full run then adds", f"{adds['documents']} documents, {adds['requests_to_send']} requests "
             "(the pilot's answers come from the cache)"),
            ("  input tokens (estimated)", adds["input_tokens"]),
            ("  output tokens (expected)", adds["output_tokens_expected"]),
            (f"  cost for {e['model']}", _money(adds)),
        ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# -- the bill: before the first request of a run, what is cached, what is new and why --------------------------

# The bill job's record of the requests it let through, under results_dir: what the next bill compares with to say
# why a request is new (the cache keeps answers by key alone, which cannot say what changed).
RECORD = Path("work") / "requests" / "run.json"  # the run's own coding's; each arm and replicate has its own
# Settings of llm that are part of every request (and so of its key), besides the model.
REQUEST_SETTINGS = ("temperature", "top_p", "max_tokens", "seed", "structured_output", "strict_schema", "extra_body")
# Cached answers whose output length predicts the new ones': a sample is as good as all, and reading is not free.
OUTPUT_SAMPLE = 1000


def record_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / RECORD


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record the last bill that let a run go on left, or None (none yet, or unreadable: the bill then says so
    and gives the counts only)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"chunks", "ingredients"} <= record.keys() else None


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a killed job leaves the old record whole, never half of the new one


def _codebook_parts(codebook: Codebook) -> dict[str, str]:
    """A hash per part of the codebook a researcher edits: its head, each field, each code (`field.value`)."""
    parts = {"": stable_hash(codebook.model_dump(mode="json", exclude={"fields"}))}
    for f in codebook.fields:
        parts[f.name] = stable_hash(f.model_dump(mode="json", exclude={"values"}))
        parts.update({f"{f.name}.{v.name}": stable_hash(v.model_dump(mode="json")) for v in f.values})
    return parts


def ingredients(
    requests: Requests, codebook: Codebook, templates: dict[str, str], prompt_context: PromptContext
) -> dict[str, Any]:
    """What every request of a run is built from besides its chunk, in parts that can be named when they change."""
    cfg, end = requests.cfg, requests.endpoint
    return {
        "model": f"{end.model_id} at {end.base_url}" if end.provider != "local" else end.model_id,
        "settings": {k: getattr(cfg, k) for k in REQUEST_SETTINGS},
        "templates": {name: file_sha256(templates[name]) for name in ("system", "user")},
        "prompt_context": prompt_context.model_dump(mode="json"),
        "codebook": _codebook_parts(codebook),
        "replicate": requests.replicate,
    }


def _changes(before: dict[str, Any], now: dict[str, Any]) -> str:
    """What changed between two runs' ingredients, in the settings' and codes' own names ('' if nothing)."""
    found = []
    old_cb, new_cb = before.get("codebook", {}), now["codebook"]
    if old_cb != new_cb:
        changed = [k or "its name, version or description" for k in new_cb if k in old_cb and old_cb[k] != new_cb[k]]
        added = [k for k in new_cb if k not in old_cb]
        removed = [k for k in old_cb if k not in new_cb]
        what = [f"changed: {', '.join(changed)}"] if changed else []
        what += [f"added: {', '.join(added)}"] if added else []
        what += [f"removed: {', '.join(removed)}"] if removed else []
        found.append(f"codebook changed ({'; '.join(what)})")
    templates = [k for k in now["templates"] if before.get("templates", {}).get(k) != now["templates"][k]]
    if templates:
        found.append(f"prompt template changed ({', '.join(f'prompts.{k}' for k in templates)})")
    if before.get("model") != now["model"]:
        found.append(f"model changed ({before.get('model')} -> {now['model']})")
    settings = [k for k in now["settings"] if before.get("settings", {}).get(k) != now["settings"][k]]
    if settings:
        found.append(f"generation settings changed ({', '.join(f'llm.{k}' for k in settings)})")
    if before.get("prompt_context") != now["prompt_context"]:
        found.append("prompt_context changed")
    if before.get("replicate") != now["replicate"]:
        found.append("replicate changed")
    return "; ".join(found)


NO_RECORD = "no earlier run recorded (so no reason can be given)"
NEW_TEXT = "new or changed text"
NOT_KEPT = (
    "the same request as in the last run, but no answer is cached: it failed or was not sent then, the cache_dir "
    "is another one, or the document's metadata shown in the prompt changed"
)


def bill(
    cfg: Config,
    chunks: Sequence[Chunk],
    templates: prompts.Prompts,
    cache: AnswerCache,
    previous: dict[str, Any] | None,
    replicate: int = 1,
) -> dict[str, Any]:
    """The requests these chunks make, counted: in the cache, or new and why (compared with `previous`, the record
    of the last run let through), with tokens and cost of the new ones. `record` is this run's, to keep once it goes
    on. Builds every request key as the coding jobs do (`coding.Requests`) and sends nothing."""
    build = Requests(cfg.llm, templates, replicate)
    now = ingredients(build, templates.codebook, cfg.prompts, cfg.prompt_context)
    known = set(previous["chunks"]) if previous else set()
    changed = _changes(previous["ingredients"], now) if previous else ""
    cached, to_send, why = 0, [], Counter()
    outputs: list[float] = []
    for c in chunks:
        req = build(c)
        key = req.key()
        if key in cache:
            cached += 1
            if len(outputs) < OUTPUT_SAMPLE:
                hit = cache.get(key)
                if hit is not None and hit.tokens_out:
                    outputs.append(hit.tokens_out / max(hit.attempts, 1))
            continue
        to_send.append(req)
        if previous is None:
            why[NO_RECORD] += 1
        elif c.chunk_id not in known:
            why[NEW_TEXT] += 1
        else:
            why[changed or NOT_KEPT] += 1
    # Output length: what this model wrote per answer so far, else half the ceiling.
    per_answer = statistics.median(outputs) if outputs else cfg.llm.max_tokens / 2
    return {
        "requests": len(chunks),
        "cached": cached,
        "new": len(to_send),
        "why_new": dict(why.most_common()),
        **_requests(cfg, to_send, per_answer),
        "output_tokens_per_answer": per_answer,
        "output_tokens_basis": "median of cached answers" if outputs else "half of llm.max_tokens",
        "model": cfg.llm.model,
        # not only new chunks: the codings already made were made with other settings, or nothing says with which
        "settings_changed": previous is None or previous.get("ingredients") != now,
        "record": {"chunks": [c.chunk_id for c in chunks], "ingredients": now},
    }


def forget_codings(directory: str | Path) -> int:
    """Delete the coding jobs' outputs in `directory` (shards coded with other settings than the bill's); returns how
    many. Their answers stay in the cache. Why here: the coding jobs wait for the bill, a checkpoint, and Snakemake
    then looks only for their missing outputs, not at their changed params; so a run stopped after the bill (a kill,
    a quota) would otherwise leave the shards it had not reached coded with the old model or codebook."""
    removed = 0
    for path in sorted(Path(directory).glob("*.parquet")):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def bill_rows(b: dict[str, Any], cost: bool = True) -> list[tuple[str, str]]:
    """The bill in a few lines, each (what, how much): the run's log and `qualcode estimate` show the same (the
    estimate has rows of its own for the cost)."""
    rows = [("requests", f"{b['requests']}: {b['cached']} in the cache, {b['new']} new")]
    rows += [("new because", f"{n}: {reason}") for reason, n in b["why_new"].items()]
    if b["new"] and cost:
        rows.append((
            "new requests cost",
            f"about {b['input_tokens']} input tokens, {b['output_tokens_expected']} output tokens "
            f"({b['output_tokens_basis']}); {b['model']}: {_money(b)}",
        ))  # fmt: skip
    return rows


def confirm(b: dict[str, Any], limit: int | None) -> None:
    """Stop before paying when more requests are new than the researcher agreed to (`limits.confirm_new_requests`)."""
    if limit is None or b["new"] <= limit:
        return
    # Not `--config limits=...`: Snakemake passes the values inside a mapping as strings, which the schema refuses.
    raise LimitReached(
        f"{b['new']} new requests ({b['cached']} cached) would be sent, more than limits.confirm_new_requests "
        f"({limit}); nothing was sent. The lines above say why they are new and what they cost. To send them, set "
        f"limits.confirm_new_requests to {b['new']} or more (or null) in your config file and run the same command "
        "again; to send none, undo the change named above"
    )
