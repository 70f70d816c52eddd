"""Human review: a static page showing every quote in place, a spreadsheet to record decisions in, and the decisions
applied to the model's codes.

The page (results/review/index.html) is one self-contained file, no server, no network: each document's
normalised text, cut where its chunks start (chunks overlap; each piece of text is shown once, beside the codes of
the chunk that ends there), every grounded quote highlighted at its offsets, and beside each chunk its codes, its
quotes that were not found and its failure. Documents come in the order read (files, then rows), listed at the top
in a list that folds away when long. A menu filters by code: it shows the chunks with that code and those whose
text shows a quote of it (a quote in the overlap with the previous chunk is shown there). Above the documents,
"disagreements first": each unit and field where sources disagree (results/disagreements.parquet), in its review
order, their values side by side beside the passage. The same run gives the same bytes.

The spreadsheet (results/review/review.csv) has one row per chunk and field: the model's answer, and empty
`decision` (accept, reject or correct), `corrected_value`, `reviewer` and `note` columns.
"""

from __future__ import annotations

import html
import sys
from collections import defaultdict, namedtuple
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..inputs.codebook import Codebook
from ..outputs import tables
from .qdpx import PALETTE, code_name, coded_fields

REVIEW_COLUMNS = [
    "doc_id", "chunk_id", "chunk_index", "field", "status", "model_value", "quote", "grounding",
    "decision", "corrected_value", "reviewer", "note",
]  # fmt: skip
DECISIONS = ("accept", "reject", "correct")
LIST_SEPARATOR = "; "
NAV_OPEN_MAX = 12  # documents listed open at the top of the page; more are behind a click, so the text shows first

CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#212529}
header{position:sticky;top:0;background:#f8f9fa;border-bottom:1px solid #dee2e6;padding:.6em 1.2em;z-index:1}
header h1{font-size:1.15em;margin:0 0 .2em}
header p{margin:.2em 0;color:#495057}
main{padding:0 1.2em 3em}
details.docs{margin:.8em 0;font-size:.9em}
details.docs summary{cursor:pointer;color:#495057}
nav{display:flex;flex-wrap:wrap;gap:.2em .9em;max-height:7.5em;overflow:auto;margin-top:.3em}

h2{font-size:1.05em;margin:1.6em 0 .4em;border-bottom:2px solid #adb5bd}
.chunk{display:grid;grid-template-columns:minmax(0,3fr) minmax(14em,2fr);gap:1em;border-top:1px solid #e9ecef;
padding:.4em 0}
.chunk.hidden{display:none}
#disagreements table{border-collapse:collapse;width:100%}
#disagreements td{border-top:1px solid #e9ecef;vertical-align:top;padding:.3em .5em}
#disagreements .text{max-height:12em;overflow:auto}
.text{white-space:pre-wrap;font-family:Georgia,serif}
mark{background:var(--c);background:color-mix(in srgb,var(--c) 30%,white);border-bottom:2px solid var(--c);
padding:0}
mark.dim{background:none;border-bottom:1px dotted #adb5bd}
aside{font-size:.88em}
aside .head{color:#6c757d}
aside ul{margin:.2em 0;padding-left:1.1em}
.field{color:#6c757d}
.flag{color:#c92a2a}
.failed{background:#fff5f5;border-left:3px solid #e03131;padding:.2em .5em}
.legend span{display:inline-block;width:.8em;height:.8em;margin:0 .2em 0 .8em;background:var(--c)}
"""

SCRIPT = """
(function () {
  var select = document.getElementById('code-filter');
  var flagged = document.getElementById('flagged-only');
  function apply() {
    var code = select.value;
    var chunks = document.querySelectorAll('.chunk');
    for (var i = 0; i < chunks.length; i++) {
      var c = chunks[i];
      // a chunk's codes, and those of the quotes shown in its text: a quote in the overlap with the previous
      // chunk is shown there
      var codes = ((c.getAttribute('data-codes') || '') + '|' + (c.getAttribute('data-marks') || '')).split('|');
      var show = (!code || codes.indexOf(code) >= 0) && (!flagged.checked || c.hasAttribute('data-flagged'));
      c.classList.toggle('hidden', !show);
    }
    var marks = document.querySelectorAll('mark');
    for (var j = 0; j < marks.length; j++) {
      var m = marks[j];
      var own = (m.getAttribute('data-codes') || '').split('|');
      m.classList.toggle('dim', !!code && own.indexOf(code) < 0);
    }
    document.getElementById('shown').textContent =
      document.querySelectorAll('.chunk:not(.hidden)').length + ' of ' + chunks.length + ' chunks shown';
  }
  select.addEventListener('change', apply);
  flagged.addEventListener('change', apply);
  apply();
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def quote_id(doc_index: int, start: int, end: int) -> str:
    """The id a highlighted quote's pieces share (`data-q`): its document's position and its offsets."""
    return f"q{doc_index}-{start}-{end}"


class _Answers:
    """Each chunk's row of the wide codings table, by chunk id, read from the table's columns when asked for: a
    dict per chunk would cost about a kilobyte each."""

    def __init__(self, codings: pd.DataFrame):
        self._columns = {name: codings[name].tolist() for name in codings.columns}
        self._row = {chunk_id: i for i, chunk_id in enumerate(self._columns["chunk_id"])}
        self.n_failed = sum(1 for status in self._columns["status"] if status != "coded")

    def get(self, chunk_id: str) -> dict[str, Any] | None:
        i = self._row.get(chunk_id)
        return None if i is None else {name: values[i] for name, values in self._columns.items()}


def _value_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return LIST_SEPARATOR.join(str(v) for v in list(value))
    return str(value)


def review_rows(codebook: Codebook, chunks: pd.DataFrame, codings: pd.DataFrame, codes: pd.DataFrame) -> pd.DataFrame:
    """review.csv: one row per chunk and field, with the model's answer and empty decision columns."""
    return pd.concat(list(review_row_batches(codebook, chunks, codings, codes)), ignore_index=True)


def review_row_batches(
    codebook: Codebook, chunks: pd.DataFrame, codings: pd.DataFrame, codes: pd.DataFrame, batch: int = 10_000
) -> Iterator[pd.DataFrame]:
    """The rows of review.csv, `batch` chunks at a time (a row per field of 100,000 chunks would be most of a
    gigabyte as Python objects)."""
    answers = _Answers(codings)
    grounding = {(c.chunk_id, c.field): c.grounding for c in codes.itertuples()}
    rows: list[dict[str, Any]] = []
    for n, c in enumerate(chunks.itertuples(), start=1):
        answer = answers.get(c.chunk_id) or {}
        status = answer.get("status", "failed")
        for f in codebook.fields:
            coded = status == "coded"
            rows.append({
                "doc_id": c.doc_id, "chunk_id": c.chunk_id, "chunk_index": c.chunk_index, "field": f.name,
                "status": status,
                "model_value": _value_text(answer.get(f.name)) if coded else "",
                "quote": (answer.get(f"{f.name}_quote") or "") if coded and f.quote else "",
                "grounding": grounding.get((c.chunk_id, f.name), "" if f.quote else "not_asked") if coded else "",
                "decision": "", "corrected_value": "", "reviewer": "", "note": "",
            })  # fmt: skip
        if n % batch == 0 or n == len(chunks):
            yield pd.DataFrame(rows, columns=REVIEW_COLUMNS)
            rows = []
    if not len(chunks):
        yield pd.DataFrame(rows, columns=REVIEW_COLUMNS)


def _segments(text: str, cuts: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """The text between consecutive boundaries, each with the spans (by index) covering it. `spans` is sorted, so
    a sweep keeps the open spans: linear in the text's boundaries times the quotes open at once."""
    bounds = sorted({0, len(text), *cuts, *(p for s in spans for p in s)})
    out, open_, nxt = [], [], 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        while nxt < len(spans) and spans[nxt][0] <= a:
            open_.append(nxt)
            nxt += 1
        open_ = [i for i in open_ if spans[i][1] > a]
        out.append((a, b, [i for i in open_ if spans[i][1] >= b]))
    return out


_Code = namedtuple("_Code", "field value grounding grounded quote_start quote_end quote")


def _codes_by_chunk(codes: pd.DataFrame) -> dict[str, list[_Code]]:
    """Each chunk's codes, keeping only what the page shows: a quote's text only where it was not found, and one
    string object per distinct field, value and grounding (at 100,000 chunks a row object per code with all its
    columns was a third of a gigabyte)."""

    def column(name: str) -> list[Any]:
        return [sys.intern(v) if isinstance(v, str) else v for v in codes[name].tolist()]

    grounding = column("grounding")
    quotes = [q if g == "ungrounded" else None for q, g in zip(codes["quote"].tolist(), grounding, strict=True)]
    rows = zip(column("field"), column("value"), grounding, codes["grounded"].tolist(), codes["quote_start"].tolist(),
               codes["quote_end"].tolist(), quotes, strict=True)  # fmt: skip
    by_chunk: dict[str, list[_Code]] = defaultdict(list)
    for chunk_id, row in zip(codes["chunk_id"].tolist(), rows, strict=True):
        by_chunk[chunk_id].append(_Code(*row))
    return by_chunk


def page(
    codebook: Codebook,
    documents: pd.DataFrame,
    chunks: pd.DataFrame,
    codings: pd.DataFrame,
    codes: pd.DataFrame,
    failures: pd.DataFrame,
    model: str,
    disagreements: pd.DataFrame | None = None,
) -> Iterator[str]:
    """The review page's HTML, a document at a time, so that writing it never holds the whole page. Every table is
    walked once (no per-document selection: at thousands of documents that cost seconds). With `disagreements`
    (validity.disagreements' table) the page opens with them, each unit and field's values side by side."""
    colour = {f.name: PALETTE[i % len(PALETTE)] for i, f in enumerate(coded_fields(codebook))}
    answers = _Answers(codings)
    reasons = {f.chunk_id: f.reason for f in failures.itertuples() if f.chunk_id is not None}
    by_chunk = _codes_by_chunk(codes)
    chunks_of: dict[str, list[Any]] = defaultdict(list)
    for ch in chunks.itertuples(index=False):
        chunks_of[ch.doc_id].append(ch)
    n_ungrounded = int((codes.grounding == "ungrounded").sum())
    n_failed = answers.n_failed
    options = "".join(
        f'<option value="{_e(code_name(f.name, v))}">{_e(code_name(f.name, v))}</option>'
        for f in coded_fields(codebook)
        for v in ([x.name for x in f.values] or ["true", "false"])
    )
    legend = "".join(f'<span style="--c:{c}"></span>{_e(name)}' for name, c in colour.items())
    # in the documents table's order, as read (files, then rows): sorted as text, row #10 would come before #2
    docs = list(zip(documents["doc_id"], documents["text"], strict=True))
    many = len(docs) > NAV_OPEN_MAX
    yield (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Review: {_e(codebook.name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<header>\n"
        f"<h1>Review: {_e(codebook.name)} (codebook {_e(codebook.version)})</h1>\n"
        f"<p>Coded by {_e(model)}: {len(docs)} documents, {len(chunks)} chunks, {len(codes)} codes; "
        f'<span class="flag">{n_ungrounded} quotes not found, {n_failed} chunks failed</span>. '
        "Highlights are the model's quotes, found in the text; record decisions in review.csv.</p>\n"
        f'<p><label>Code: <select id="code-filter"><option value="">all codes</option>{options}</select></label> '
        '<label><input type="checkbox" id="flagged-only"> only chunks with a quote not found or a failure</label> '
        f'· <span id="shown"></span></p>\n<p class="legend">{legend}</p>\n</header>\n<main>\n'
        f'<details class="docs"{"" if many else " open"}><summary>{len(docs)} documents</summary><nav>'
        + "".join(f'<a href="#doc-{i}">{_e(doc_id)}</a>' for i, (doc_id, _) in enumerate(docs))
        + "</nav></details>\n"
    )
    if disagreements is not None and len(disagreements):
        yield disagreements_html(disagreements, dict(docs), {d: i for i, (d, _) in enumerate(docs)})
    for i, (doc_id, text) in enumerate(docs):
        out = [f'<section class="doc" id="doc-{i}">\n<h2>{_e(doc_id)}</h2>\n']
        doc_chunks = sorted(chunks_of.get(doc_id, []), key=lambda ch: ch.chunk_index)
        doc_codes = [c for ch in doc_chunks for c in by_chunk.get(ch.chunk_id, [])]
        span_codes: dict[tuple[int, int], list[str]] = defaultdict(list)
        for c in doc_codes:
            if c.grounded and c.field in colour:
                key = (int(c.quote_start), int(c.quote_end))
                if code_name(c.field, c.value) not in span_codes[key]:
                    span_codes[key].append(code_name(c.field, c.value))
        spans = sorted(span_codes)
        field_of = {k: v[0].split(": ", 1)[0] for k, v in span_codes.items()}
        pieces_of, shown = [], 0  # each chunk's display range: from where the previous one ended
        for ch in doc_chunks:
            pieces_of.append((ch, max(ch.start, shown), ch.end))
            shown = max(shown, ch.end)
        segments = _segments(text, [p for _, lo, hi in pieces_of for p in (lo, hi)], spans)
        k = 0
        for ch, lo, hi in pieces_of:
            pieces, marked = [], {}
            while k < len(segments) and segments[k][1] <= hi:
                a, b, covering = segments[k]
                k += 1
                if a < lo:
                    continue
                piece = _e(text[a:b])
                if covering:
                    ids = " ".join(quote_id(i, *spans[n]) for n in covering)
                    in_piece = dict.fromkeys(name for n in covering for name in span_codes[spans[n]])
                    marked.update(in_piece)
                    names = "|".join(in_piece)
                    c = colour[field_of[spans[covering[0]]]]
                    piece = (f'<mark style="--c:{c}" data-q="{ids}" data-codes="{_e(names)}" title="{_e(names)}">'
                             f"{piece}</mark>")  # fmt: skip
                pieces.append(piece)
            out.append(_chunk_html(ch, answers.get(ch.chunk_id), by_chunk.get(ch.chunk_id, []), reasons, codebook,
                                   "".join(pieces), list(marked)))  # fmt: skip
        out.append("</section>\n")
        yield "".join(out)
    yield f"</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"


PASSAGE_MAX = 1200  # characters of a document shown beside its disagreements (a chunk is shown whole)


def disagreements_html(disagreements: pd.DataFrame, texts: Mapping[str, str], doc_index: Mapping[str, int]) -> str:
    """The "disagreements first" view: one row per unit and field in the table's review order, every source's
    values side by side, the passage, and a link to the unit below."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    where: dict[tuple[str, str], Any] = {}
    for r in disagreements.itertuples(index=False):
        key = (r.unit, r.field)
        seen = groups.setdefault(key, {})
        seen.setdefault(r.source_a, r.value_a)
        seen.setdefault(r.source_b, r.value_b)
        where.setdefault(key, r)
    rows = []
    for key, values in groups.items():
        r = where[key]
        text = texts.get(r.doc_id, "")
        whole = pd.isna(r.start)
        passage = text[:PASSAGE_MAX] + ("…" if len(text) > PASSAGE_MAX else "") if whole else text[r.start : r.end]
        target = f"doc-{doc_index.get(r.doc_id, 0)}" if whole else f"chunk-{r.unit}"
        sides = "".join(f"<li><b>{_e(s)}</b>: {_e(v) or '—'}</li>" for s, v in values.items())
        rows.append(f'<tr><td><a href="#{_e(target)}">{_e(r.unit)}</a></td><td>{_e(r.field)}</td>'
                    f'<td><ul>{sides}</ul></td><td><div class="text">{_e(passage)}</div></td></tr>')  # fmt: skip
    return (
        f'<section id="disagreements"><h2>Disagreements first ({len(groups)} units and fields)</h2>\n'
        "<p>Where sources (human coders, their majority, the model, its arms and replicates) gave a field different "
        "values: most sources in conflict first, rare codes before common. Decide in review.csv.</p>\n"
        "<table><thead><tr><th>unit</th><th>field</th><th>values</th><th>passage</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table></section>\n"
    )


def _chunk_html(ch: Any, answer: Mapping[str, Any] | None, codes: list[Any], reasons: Mapping[str, str],
                codebook: Codebook, text_html: str, marked: Sequence[str]) -> str:  # fmt: skip
    """A chunk's text and codes; `marked`: the codes of the quotes highlighted in its text, its own or, in the
    overlap with the previous chunk, the next chunk's, so that the code filter shows them."""
    coded = {f.name for f in coded_fields(codebook)}
    names = [code_name(c.field, c.value) for c in codes if c.field in coded]
    items, flagged = [], False
    status = answer["status"] if answer else "failed"
    if status != "coded":
        flagged = True
        reason = reasons.get(ch.chunk_id, "no answer")
        items.append(f'<div class="failed">Failed: {_e(reason)}</div>')
    else:
        lines = []
        for f in codebook.fields:
            value = _value_text(answer.get(f.name)) if answer else ""
            mark = ""
            field_codes = [c for c in codes if c.field == f.name]
            g = field_codes[0].grounding if field_codes else None
            if g == "ungrounded":
                flagged = True
                mark = f' <span class="flag">quote not found: “{_e(field_codes[0].quote)}”</span>'
            elif g in ("exact", "normalised"):
                mark = " ✓"
            lines.append(f'<li><span class="field">{_e(f.label or f.name)}:</span> {_e(value) or "—"}{mark}</li>')
        items.append("<ul>" + "".join(lines) + "</ul>")
    attrs = f' data-codes="{_e("|".join(dict.fromkeys(names)))}"' + (" data-flagged" if flagged else "")
    others = [name for name in marked if name not in names]
    if others:
        attrs += f' data-marks="{_e("|".join(others))}"'
    return (
        f'<div class="chunk" id="chunk-{_e(ch.chunk_id)}"{attrs}>\n<div class="text">{text_html}</div>\n'
        f'<aside><div class="head">chunk {ch.chunk_index} · {_e(ch.chunk_id)}</div>{"".join(items)}</aside>\n</div>\n'
    )


def write_review(
    *,
    codebook: Codebook,
    documents: str | Path,
    chunks: str | Path,
    codings: str | Path,
    codes: str | Path,
    failures: str | Path,
    model: str,
    page_out: str | Path,
    csv_out: str | Path,
    disagreements: str | Path | None = None,
) -> dict[str, int]:
    """Write the review page and review.csv from the published tables (and the disagreements table, shown first)."""
    docs = tables.read(documents, "documents", ["doc_id", "text"]).to_pandas()
    chunk_table = tables.read(chunks, "chunks", ["chunk_id", "doc_id", "chunk_index", "start", "end"]).to_pandas()
    wide = tables.read(codings, "codings").to_pandas()
    code_columns = ["chunk_id", "field", "value", "quote", "quote_start", "quote_end", "grounding", "grounded"]
    code_table = tables.read(codes, "codes", code_columns).to_pandas()
    fail = tables.read(failures, "failures", ["chunk_id", "reason"]).to_pandas()
    Path(page_out).parent.mkdir(parents=True, exist_ok=True)
    with open(page_out, "w", encoding="utf-8") as fh:
        found = tables.read(disagreements, "disagreements").to_pandas() if disagreements else None
        fh.writelines(page(codebook, docs, chunk_table, wide, code_table, fail, model, found))
    n_rows = 0
    with tables.open_csv(csv_out) as fh:
        for rows in review_row_batches(codebook, chunk_table, wide, code_table):
            tables.write_csv(rows, fh, header=n_rows == 0)
            n_rows += len(rows)
    return {"documents": len(docs), "chunks": len(chunk_table), "rows": n_rows}
