"""Refinement proposed, never applied: for the codes the model agrees on least, the model reads the code's
definition and a sample of its disagreements (each with its passage) and proposes a revised definition, inclusion
and exclusion rules and examples. The proposal is a whole codebook (results/refine/codebook.proposed.yaml, valid
against schemas/codebook.schema.json) and a readable account of the changes (results/refine/changes.md: a diff
against the codebook in use and, per code, the disagreements each change answers). Nothing changes the codebook in
use: the researcher reads, edits and adopts it.

The requests go through the shared asker (`coding.asker`): the same endpoint, sampling settings, cache, validation
(JSON Schema, re-ask), limits and journal as coding, so a rerun finds every answer in the cache and sends nothing.
An example the model proposes is kept only if it is found in one of the passages it was shown (as coding grounds
quotes); the codebook has no inclusion and exclusion fields, so they are written into the definition.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..coding.asker import Asked, Question, ask_questions, request_for
from ..coding.validate import AnswerValidator, ground_quote
from ..config import CONSENSUS, LimitsConfig, LLMConfig, Price
from ..inputs.codebook import Codebook
from ..outputs import tables
from ..validity.validation import MODEL

PASSAGE_MAX = 1500  # characters of a passage shown to the model; a longer document is cut
HEADLINE = "cohen_kappa"

SYSTEM = (
    "You help a team of qualitative researchers refine one code of their codebook. Coders (people and a model) "
    "disagreed on whether the code applies to the passages below. Read the code's definition and each "
    "disagreement, and propose a clearer definition, an inclusion rule (what counts), an exclusion rule (what "
    "does not, and which neighbouring code it belongs to instead) and up to three short examples copied word for "
    "word from the passages. Name the disagreements (by their id) each part of your proposal settles. Answer with "
    "JSON only."
)


class Proposal(BaseModel):
    """The model's proposal for one code."""

    model_config = ConfigDict(extra="forbid")
    definition: str = Field(..., min_length=1, max_length=600)
    inclusion: str = Field(..., max_length=400)
    exclusion: str = Field(..., max_length=400)
    examples: list[str] = Field(default_factory=list, max_length=3)
    answers: list[str] = Field(default_factory=list, max_length=50)  # the disagreement ids the change settles
    rationale: str = Field("", max_length=600)


def proposal_schema() -> dict[str, Any]:
    """Bounded, strict JSON Schema (every string a maxLength, every array maxItems), as the coding answers'."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["definition", "inclusion", "exclusion", "examples", "answers", "rationale"],
        "properties": {
            "definition": {"type": "string", "minLength": 1, "maxLength": 600},
            "inclusion": {"type": "string", "maxLength": 400},
            "exclusion": {"type": "string", "maxLength": 400},
            "examples": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 200}},
            "answers": {"type": "array", "maxItems": 50, "items": {"type": "string", "maxLength": 20}},
            "rationale": {"type": "string", "maxLength": 600},
        },
    }


@dataclass(frozen=True)
class Target:
    """A code to refine: a field's value (or a field as a whole, `value` None) and its agreement."""

    field: str
    value: str | None
    estimate: float | None
    n_units: int

    @property
    def name(self) -> str:
        return self.field if self.value is None else f"{self.field}: {self.value}"


def lowest_agreement(agreement: pd.DataFrame, disagreements: pd.DataFrame, n_codes: int) -> list[Target]:
    """The `n_codes` values with the lowest Cohen's kappa on the development units (never the holdout) of the
    model against a reference (the majority, else
    the consensus, else any human coder), undefined kappas last; without human codings, the values most often in
    dispute between the model's replicates and arms."""
    pairs = agreement[(agreement["rater_a"] == MODEL) & agreement["value"].notna() & (agreement["split"] != "holdout")
                      & (agreement["metric"] == HEADLINE) & agreement["rater_b"].notna()]  # fmt: skip
    for reference in ("majority", CONSENSUS, *sorted(set(pairs["rater_b"]))):
        rows = pairs[pairs["rater_b"] == reference]
        if len(rows):
            rows = rows.sort_values(["estimate", "field", "value"], na_position="last", kind="stable")
            return [Target(r.field, r.value, None if pd.isna(r.estimate) else float(r.estimate), int(r.n_units))
                    for r in rows.head(n_codes).itertuples()]  # fmt: skip
    if disagreements.empty:
        return []
    long = disagreements.assign(value=disagreements["disputed"].str.split("; ")).explode("value")
    counts = long.groupby(["field", "value"])["unit"].nunique().reset_index(name="n")
    counts = counts.sort_values(["n", "field", "value"], ascending=[False, True, True], kind="stable")
    return [Target(r.field, r.value, None, int(r.n)) for r in counts.head(n_codes).itertuples()]


def sample(disagreements: pd.DataFrame, target: Target, k: int) -> pd.DataFrame:
    """The first `k` units (in the table's review order) where the code is disputed, each with every pair's view;
    ids d1, d2, ... in that order."""
    mine = disagreements[disagreements["field"] == target.field]
    if target.value is not None:
        mine = mine[mine["disputed"].str.split("; ").map(lambda vs: target.value in vs)]
    units = list(dict.fromkeys(mine["unit"]))[:k]
    picked = mine[mine["unit"].isin(units)]
    ids = {u: f"d{i + 1}" for i, u in enumerate(units)}
    return picked.assign(id=picked["unit"].map(ids))


def passage(texts: Mapping[str, str], row: Any) -> str:
    text = texts.get(row.doc_id, "")
    whole = row.start is None or pd.isna(row.start)
    cut = text if whole else text[int(row.start) : int(row.end)]
    return cut[:PASSAGE_MAX]


def messages(cb: Codebook, target: Target, picked: pd.DataFrame, texts: Mapping[str, str]) -> list[dict[str, str]]:
    field = next(f for f in cb.fields if f.name == target.field)
    value = next((v for v in field.values if v.name == target.value), None)
    lines = [
        f"Codebook: {cb.name} (version {cb.version}).",
        f"Field {field.name!r}: {field.description}",
        f"Code {target.name!r}: {value.definition if value else field.description}",
    ]
    if value is not None and value.examples:
        lines.append("Current examples: " + "; ".join(json.dumps(e) for e in value.examples))
    others = [f"- {v.name}: {v.definition}" for v in field.values if v.name != target.value]
    if others:
        lines += ["Neighbouring codes of the same field:", *others]
    lines.append("Disagreements:")
    for unit_id, rows in picked.groupby("id", sort=False):
        first = rows.iloc[0]
        views = dict(zip(rows["source_a"], rows["value_a"], strict=True))
        views |= dict(zip(rows["source_b"], rows["value_b"], strict=True))
        said = "; ".join(f"{s} gave {v or 'nothing'}" for s, v in views.items())
        lines += [f"[{unit_id}] {said}", '"""', passage(texts, first), '"""']
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def grounded_examples(examples: Sequence[str], passages: Sequence[str]) -> tuple[list[str], list[str]]:
    """The examples found in one of the passages (the passage's own words), and those not found."""
    kept, dropped = [], []
    for e in examples:
        hit = next((p for p in passages if ground_quote(e, p, 0).grounded), None)
        if hit is None:
            dropped.append(e)
        else:
            g = ground_quote(e, hit, 0)
            kept.append(hit[g.start : g.end])
    return kept, dropped


def proposed_codebook(raw: dict[str, Any], changes: Mapping[tuple[str, str | None], dict[str, Any]]) -> dict:
    """The codebook's YAML data with each changed code's definition (inclusion and exclusion written into it) and
    examples replaced, and its version marked as proposed."""
    out = json.loads(json.dumps(raw))
    out["version"] = f"{raw['version']}+proposed"
    for f in out["fields"]:
        for (field, value), change in changes.items():
            if f["name"] != field:
                continue
            text = change["definition"].strip()
            if change["inclusion"].strip():
                text += f" Include: {change['inclusion'].strip()}"
            if change["exclusion"].strip():
                text += f" Exclude: {change['exclusion'].strip()}"
            if value is None:
                f["description"] = text
                continue
            for v in f.get("values", []):
                if v["name"] == value:
                    v["definition"] = text
                    if change["examples"]:
                        v["examples"] = list(change["examples"])
    return out


def changes_markdown(
    old_text: str, new_text: str, targets: Sequence[Target], asked: Mapping[str, Asked],
    proposals: Mapping[str, dict[str, Any]], picked: Mapping[str, pd.DataFrame], dropped: Mapping[str, list[str]],
    codebook_path: str,
) -> str:  # fmt: skip
    """The readable account: per code, its agreement, the proposal, the disagreements it answers; then the diff."""
    parts = ["# Proposed codebook revision", "",
             f"Proposed by the model for the {len(targets)} code(s) with the lowest agreement; nothing was applied. "
             f"Read, edit, and copy what you adopt into `{codebook_path}` (and raise its version).", ""]  # fmt: skip
    for t in targets:
        a = asked[t.name]
        kappa = "undefined" if t.estimate is None else f"{t.estimate:.2f}"
        parts += [f"## {t.name}", "", f"Cohen's kappa (model against the reference): {kappa} on {t.n_units} units.", ""]
        if a.answer is None:
            parts += [f"No proposal: {a.error}", ""]
            continue
        p = proposals[t.name]
        parts += [
            f"- **Definition**: {p['definition']}",
            f"- **Include**: {p['inclusion'] or '—'}",
            f"- **Exclude**: {p['exclusion'] or '—'}",
            f"- **Examples** (found in the passages): {'; '.join(map(json.dumps, p['examples'])) or '—'}",
        ]
        if dropped.get(t.name):
            parts.append(
                f"- Examples left out (not found in any passage): {'; '.join(map(json.dumps, dropped[t.name]))}"
            )
        if p.get("rationale"):
            parts.append(f"- **Why**: {p['rationale']}")
        parts += ["", "Disagreements this answers:", ""]
        rows = picked[t.name]
        answered = set(p["answers"]) & set(rows["id"])
        if not answered:
            parts += ["(The model named none of them; all it was shown:)", ""]
            answered = set(rows["id"])
        for unit_id, g in rows.groupby("id", sort=False):
            if unit_id not in answered:
                continue
            views = "; ".join(f"{r.source_a} {r.value_a or '—'} vs {r.source_b} {r.value_b or '—'}"
                              for r in g.itertuples())  # fmt: skip
            parts.append(f"- [{unit_id}] {g['unit'].iloc[0]}: {views}")
        parts.append("")
    diff = difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), codebook_path, "codebook.proposed.yaml",
                                lineterm="")  # fmt: skip
    parts += ["## Diff", "", "```diff", *diff, "```", ""]
    return "\n".join(parts)


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def refine(
    *,
    llm: LLMConfig,
    limits: LimitsConfig,
    price: Price | None,
    cb: Codebook,
    codebook_path: str | Path,
    agreement: str | Path,
    disagreements: str | Path,
    documents: str | Path,
    cache: Any,
    n_codes: int,
    n_disagreements: int,
    out: Mapping[str, str | Path],
    journal: str | Path,
) -> dict[str, int]:
    """Ask for a proposal per lowest-agreement code and write the proposed codebook, the changes and the stage's
    (request, answer) pairs in the replay archive's format. Returns counts (codes, sent, cached, failed)."""
    from ..coding import archive

    a = tables.read(agreement, "agreement").to_pandas()
    d = tables.read(disagreements, "disagreements").to_pandas()
    docs = tables.read(documents, "documents", ["doc_id", "text"]).to_pandas()
    texts = dict(zip(docs["doc_id"], docs["text"], strict=True))
    targets = lowest_agreement(a, d, n_codes)
    schema = proposal_schema()
    picked = {t.name: sample(d, t, n_disagreements) for t in targets}
    questions = [
        Question(
            id=t.name,
            request=request_for(llm, messages(cb, t, picked[t.name], texts), schema),
            validate=AnswerValidator(schema, Proposal),
        )  # fmt: skip
        for t in targets
        if len(picked[t.name])
    ]
    asked = {q.id: q for q in ask_questions(questions, llm, cache, limits=limits, price=price,
                                               journal=str(journal), noun="proposal")}  # fmt: skip
    targets = [t for t in targets if t.name in asked]
    changes, proposals, dropped = {}, {}, {}
    for t in targets:
        got = asked[t.name]
        if got.answer is None:
            continue
        p = dict(got.answer.answer)
        passages = [passage(texts, r) for r in picked[t.name].drop_duplicates("unit").itertuples()]
        p["examples"], dropped[t.name] = grounded_examples(p["examples"], passages)
        changes[(t.field, t.value)] = proposals[t.name] = p
    raw = yaml.safe_load(Path(codebook_path).read_text(encoding="utf-8"))
    proposed = proposed_codebook(raw, changes)
    Codebook.model_validate(proposed)  # a proposal that does not parse is a bug here, not the researcher's problem
    new_text = _dump(proposed)
    old_text = _dump(raw)  # the codebook in use written the same way, so that the diff shows only the changes
    Path(out["codebook"]).parent.mkdir(parents=True, exist_ok=True)
    Path(out["codebook"]).write_text(new_text, encoding="utf-8")
    Path(out["changes"]).write_text(
        changes_markdown(old_text, new_text, targets, asked, proposals, picked, dropped, str(codebook_path)),
        encoding="utf-8",
    )
    archive.export(
        [(q.question.request, q.answer, q.key) for q in asked.values() if q.answer is not None], out["archive"]
    )
    return {"codes": len(targets), "sent": sum(1 for q in asked.values() if q.answer and not q.cache_hit),
            "cached": sum(1 for q in asked.values() if q.cache_hit),
            "failed": sum(1 for q in asked.values() if q.answer is None)}  # fmt: skip
