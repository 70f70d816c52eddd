"""From open-coding answers to a proposed codebook: the candidates (grounded against their chunk), the groups worth
naming, the named codes, and the codebook, table, spreadsheet, page and REFI-QDA codebook the researcher curates."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from ..coding.validate import ground_quote
from ..inputs.codebook import Codebook
from ..records import Chunk
from .asking import ExistingCode

QUOTES_SHOWN = 8  # quotes of a group shown to the model when it is named
LABELS_SHOWN = 12  # candidate labels of a group shown to the model
MAX_ITEMS = 5  # most proposed codes one answer of the proposed codebook may hold
CANDIDATE_COLUMNS = [
    "candidate_id", "chunk_id", "doc_id", "position", "label", "definition", "quote", "grounding", "grounded",
    "quote_start", "quote_end", "group", "code", "status",
]  # fmt: skip


def candidates_from(answers: Sequence[tuple[Chunk, int, Mapping[str, Any] | None]]) -> pd.DataFrame:
    """One row per candidate code: (chunk, its position in the sample, its validated answer or None when it
    failed). Each quote is grounded against its chunk; an ungrounded one is marked, never used as an example."""
    rows = []
    for chunk, position, answer in answers:
        for i, code in enumerate((answer or {}).get("codes", [])):
            g = ground_quote(code["quote"], chunk.text, chunk.start)
            rows.append(
                {
                    "candidate_id": f"{chunk.chunk_id}-{i + 1}",
                    "chunk_id": chunk.chunk_id,
                    "doc_id": chunk.doc_id,
                    "position": position,
                    "label": code["label"].strip(),
                    "definition": code["definition"].strip(),
                    "quote": code["quote"],
                    "grounding": g.status,
                    "grounded": g.grounded,
                    "quote_start": g.start,
                    "quote_end": g.end,
                }
            )
    df = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS[:11])
    return df.astype({"position": "int64", "grounded": "bool", "quote_start": "Int64", "quote_end": "Int64"})


def group_support(candidates: pd.DataFrame) -> pd.DataFrame:
    """Per group: chunks and documents it was proposed in, and where the sample first met it."""
    g = candidates.groupby("group")
    return pd.DataFrame(
        {"chunks": g["chunk_id"].nunique(), "documents": g["doc_id"].nunique(), "first": g["position"].min()}
    )


def groups_to_name(candidates: pd.DataFrame, existing_groups: Sequence[int], max_codes: int) -> list[int]:
    """The groups proposed as codes: not holding a code of the extended codebook, the `max_codes` found in the most
    chunks (ties: met first in the sample), in the order the sample met them."""
    support = group_support(candidates).drop(index=list(existing_groups), errors="ignore")
    best = support.sort_values(["chunks", "first"], ascending=[False, True], kind="stable").head(max_codes)
    return sorted(best.index.astype(int), key=lambda gr: int(support.loc[gr, "first"]))


@dataclass(frozen=True)
class GroupPrompt:
    """What the model is shown of one group: its distinct labels and definitions, and its grounded quotes."""

    group: int
    labels: tuple[tuple[str, str], ...]
    quotes: tuple[str, ...]


def group_prompt(candidates: pd.DataFrame, group: int) -> GroupPrompt:
    rows = candidates[candidates["group"] == group]
    labels = tuple(dict.fromkeys(zip(rows["label"], rows["definition"], strict=True)))[:LABELS_SHOWN]
    grounded = rows[rows["grounded"]]
    quotes = tuple(dict.fromkeys(q.strip() for q in grounded["quote"]))[:QUOTES_SHOWN]
    return GroupPrompt(group, labels, quotes)


@dataclass(frozen=True)
class ProposedCode:
    group: int
    name: str  # the value's name in the codebook
    label: str
    definition: str
    include: str
    exclude: str
    examples: tuple[str, ...]
    chunks: int
    documents: int
    naming: str  # "model", or why the model's naming failed and the group's own words were used
    candidates: tuple[str, ...] = field(default=())


def value_name(label: str, taken: set[str]) -> str:
    """A codebook value name (lower case, digits and _) from a label, not one of `taken`."""
    base = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40].strip("_") or "code"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def name_code(
    prompt: GroupPrompt, answer: Mapping[str, Any] | None, error: str | None, support: pd.Series, taken: set[str]
) -> ProposedCode:
    """The code of one group: the model's naming, its examples only quotes of the group that were grounded (chosen
    by number, so none can be invented); without an answer, the group's first label and quotes, marked."""
    if answer is not None:
        picked = [prompt.quotes[i - 1] for i in answer["examples"] if 1 <= i <= len(prompt.quotes)]
        label, definition = answer["name"].strip(), answer["definition"].strip()
        include, exclude, naming = answer["include"].strip(), answer["exclude"].strip(), "model"
    else:
        label, definition = prompt.labels[0]
        picked, include, exclude = [], "", ""
        naming = f"failed ({error}); the first candidate's words are used"
    examples = tuple(dict.fromkeys(picked)) or prompt.quotes[:2]
    return ProposedCode(
        group=prompt.group,
        name=value_name(label, taken),
        label=label,
        definition=definition or label,
        include=include,
        exclude=exclude,
        examples=examples[:2],
        chunks=int(support["chunks"]),
        documents=int(support["documents"]),
        naming=naming,
        candidates=tuple(lab for lab, _ in prompt.labels),
    )


def full_definition(code: ProposedCode) -> str:
    """The definition as the codebook holds it, with the inclusion and exclusion criteria (the codebook format has
    one definition per value, and the model sees it whole)."""
    parts = [code.definition]
    if code.include:
        parts.append(f"Include: {code.include}")
    if code.exclude:
        parts.append(f"Exclude: {code.exclude}")
    return " ".join(parts)


def existing_codes(codebook: Codebook) -> list[ExistingCode]:
    """The choice values of a codebook being extended (a boolean field is one code), as prompts list them."""
    out = []
    for f in codebook.fields:
        if f.type == "boolean":
            out.append(ExistingCode(f.name, f.label or f.name, f.description))
        for v in f.values:
            out.append(ExistingCode(v.name, v.label or v.name.replace("_", " "), v.definition))
    return out


def codebook_dict(
    codes: Sequence[ProposedCode],
    field_name: str,
    research_question: str = "",
    extend: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The proposed codebook as `codebook.yaml` holds it: one multiple-choice field of the proposed codes (the
    researcher regroups them into fields). Extending: the given codebook (as read) with the new codes as a field of
    its own, named as new."""
    values = [
        {"name": c.name, "label": c.label, "definition": full_definition(c), "examples": list(c.examples)}
        for c in codes
    ]
    purpose = f" The research question: {research_question.strip()}" if research_question.strip() else ""
    if extend is not None:
        cb = dict(extend)
        if not values:
            return cb
        taken = {f["name"] for f in cb.get("fields", [])}
        name = field_name
        n = 2
        while name in taken:
            name, n = f"{field_name}_{n}", n + 1
        new_field = {
            "name": name,
            "label": "New codes (proposed)",
            "type": "multiple_choice",
            "max_items": min(MAX_ITEMS, len(values)),
            "description": "Codes proposed from the data that the codebook did not have: NEW, not yet reviewed. "
            "Choose those the passage expresses.",
            "values": values,
        }
        return {**cb, "fields": [*cb.get("fields", []), new_field]}
    return {
        "name": "Proposed codebook",
        "version": "0.1-proposed",
        "description": "Codes proposed by a model from a sample of the texts, for the researcher to edit." + purpose,
        "fields": [
            {
                "name": field_name,
                "label": "Proposed codes",
                "type": "multiple_choice",
                "max_items": min(MAX_ITEMS, len(values)),
                "description": "Codes proposed from the data. Choose those the passage expresses.",
                "values": values,
            }
        ],
    }


YAML_HEADER = (
    "# Proposed by `snakemake propose` (qualcode induction) from a sample of the texts: a draft, not yet reviewed.\n"
    "# Edit it before use: merge, rename, delete, regroup into fields, sharpen the definitions. Then pilot with it\n"
    "# (codebook: <your copy>), compare with human coding, and run in full. See README, 'From texts to a codebook'.\n"
)


def codes_frame(codes: Sequence[ProposedCode], status: str) -> pd.DataFrame:
    """proposed_codes.csv: one row per proposed code."""
    return pd.DataFrame(
        [
            {
                "code": c.name,
                "label": c.label,
                "status": status,
                "definition": c.definition,
                "include": c.include,
                "exclude": c.exclude,
                "chunks": c.chunks,
                "documents": c.documents,
                "example_1": c.examples[0] if c.examples else "",
                "example_2": c.examples[1] if len(c.examples) > 1 else "",
                "candidate_labels": "; ".join(c.candidates),
                "naming": c.naming,
            }
            for c in codes
        ],
        columns=[
            "code", "label", "status", "definition", "include", "exclude", "chunks", "documents", "example_1",
            "example_2", "candidate_labels", "naming",
        ],
    )  # fmt: skip


def candidates_table(candidates: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    df = candidates[list(schema.names)].astype({"group": "Int64"})
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


# -- the review page -----------------------------------------------------------------------------------------------

CONTEXT_CHARS = 160
PAGE_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60em;padding:1em;color:#212529}
h2{margin-top:2em;border-top:1px solid #ccc;padding-top:.5em}.meta{color:#666}
blockquote{margin:.5em 0;padding:.3em .8em;border-left:4px solid #1f77b4;background:#f8f9fa}
mark{background:#ffe58f}.ungrounded{border-left-color:#d62728}.small{font-size:.9em}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _in_context(text: str, start: int, end: int) -> str:
    before = text[max(0, start - CONTEXT_CHARS) : start]
    after = text[end : end + CONTEXT_CHARS]
    return f"…{_e(before)}<mark>{_e(text[start:end])}</mark>{_e(after)}…"


def review_page(
    codes: Sequence[ProposedCode], candidates: pd.DataFrame, documents: Mapping[str, str], sentence: str, status: str
) -> str:
    """One self-contained page: each proposed code, its definition and criteria, and its group's quotes in their
    text (grounded ones highlighted; ungrounded ones shown apart, as the model wrote them). Everything escaped."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Proposed codes</title>",
        f"<style>{PAGE_CSS}</style></head><body><h1>Proposed codes</h1>",
        f"<p>{_e(sentence)} Nothing here is applied by itself: edit results/induction/codebook.yaml, then pilot "
        "with it.</p><ul>",
        *(
            f"<li><a href='#{_e(c.name)}'>{_e(c.label)}</a> <span class='meta'>({c.chunks} chunks)</span></li>"
            for c in codes
        ),  # fmt: skip
        "</ul>",
    ]
    for c in codes:
        rows = candidates[candidates["group"] == c.group]
        parts += [
            f"<h2 id='{_e(c.name)}'>{_e(c.label)} <span class='meta small'>{_e(c.name)} · {_e(status)} · "
            f"{c.chunks} chunks, {c.documents} documents</span></h2>",
            f"<p>{_e(c.definition)}</p>",
        ]
        if c.include:
            parts.append(f"<p><b>Include:</b> {_e(c.include)}</p>")
        if c.exclude:
            parts.append(f"<p><b>Exclude:</b> {_e(c.exclude)}</p>")
        if c.naming != "model":
            parts.append(f"<p class='meta'>Naming: {_e(c.naming)}</p>")
        parts.append(f"<p class='meta small'>Candidates: {_e('; '.join(c.candidates))}</p>")
        for r in rows.itertuples():
            text = documents.get(r.doc_id, "")
            if r.grounded and text:
                parts.append(
                    f"<blockquote>{_in_context(text, int(r.quote_start), int(r.quote_end))}"
                    f"<div class='meta small'>{_e(r.doc_id)} · {_e(r.label)}</div></blockquote>"
                )
            else:
                parts.append(
                    f"<blockquote class='ungrounded'>“{_e(r.quote)}” <div class='meta small'>{_e(r.doc_id)} · "
                    f"{_e(r.label)} · quote not found in the text ({_e(r.grounding)})</div></blockquote>"
                )
    parts.append("</body></html>\n")
    return "\n".join(parts)
