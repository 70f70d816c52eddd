"""The proposal of a codebook, start to end: sample, open coding of each sampled chunk, consolidation, one naming
request per group, and everything the researcher receives. Every request goes through the shared asker
(`coding.asker`): the cache (a rerun sends nothing; new documents send only their chunks), validation and re-asks,
limits, the journal. The function `ask` is that asker with its cache and settings bound."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import embeddings
from ..coding.asker import Asked, Question, request_for
from ..coding.cache import AnswerCache
from ..coding.validate import AnswerValidator
from ..config import InductionConfig, LimitsConfig, LLMConfig, Price
from ..errors import QualcodeError
from ..inputs.codebook import Codebook
from ..records import CachedAnswer, Chunk, LLMRequest
from . import asking, consolidate, proposal, sample

logger = logging.getLogger(__name__)

Ask = Callable[[list[Question]], list[Asked]]


def sampled_chunks(chunks: Sequence[Chunk], documents: pd.DataFrame, cfg: InductionConfig) -> list[Chunk]:
    """The chunks open coding reads, in the sample's order. `documents`: the documents table (doc_id and the
    meta_ columns)."""
    strata = None
    if cfg.stratify_by is not None:
        column = f"meta_{cfg.stratify_by}"
        if column not in documents.columns:
            known = ", ".join(c[5:] for c in documents.columns if c.startswith("meta_")) or "none"
            raise ValueError(
                f"induction.stratify_by: the documents have no metadata {cfg.stratify_by!r} (they have: {known})"
            )
        strata = dict(zip(documents["doc_id"], documents[column].astype("string").fillna(""), strict=True))
    order = sample.sample_documents(list(documents["doc_id"]), cfg.seed, cfg.documents, cfg.share, strata)
    return sample.sample_chunks(chunks, order)


@dataclass
class Proposal:
    candidates: pd.DataFrame
    saturation: pd.DataFrame
    codes: list[proposal.ProposedCode]
    codebook: dict[str, Any]
    sentence: str
    status: str
    pairs: list[tuple[LLMRequest, CachedAnswer, str | None]]
    asked: list[Asked]


def _validator(schema: dict[str, Any], model: type) -> AnswerValidator:
    return AnswerValidator(schema, model)


def open_code(chunks: Sequence[Chunk], templates: asking.Templates, llm: LLMConfig, ask: Ask) -> list[Asked]:
    schema = asking.open_schema(templates.max_candidates)
    validate = _validator(schema, asking.OpenAnswer)
    questions = [Question(c.chunk_id, request_for(llm, templates.open_messages(c), schema), validate) for c in chunks]
    return ask(questions)


def name_groups(
    prompts: Sequence[proposal.GroupPrompt], templates: asking.Templates, llm: LLMConfig, ask: Ask
) -> list[Asked]:
    questions = []
    for p in prompts:
        schema = asking.name_schema(len(p.quotes))
        request = request_for(llm, templates.name_messages(p.labels, p.quotes), schema)
        validate = _validator(schema, asking.NameAnswer)
        questions.append(Question(f"group {p.group}", request, validate))
    return ask(questions)


def propose(
    chunks: Sequence[Chunk],
    cfg: InductionConfig,
    llm: LLMConfig,
    templates: asking.Templates,
    ask: Ask,
    vectorise: consolidate.Vectoriser,
    extend: tuple[Codebook, Mapping[str, Any]] | None = None,
) -> Proposal:
    """Everything from the sampled chunks (in the sample's order) to the proposed codebook."""
    opened = open_code(chunks, templates, llm, ask)
    answers = [
        (c, i, a.answer.answer if a.answer is not None else None)
        for i, (c, a) in enumerate(zip(chunks, opened, strict=True))
    ]
    for c, a in zip(chunks, opened, strict=True):
        if a.error is not None:
            logger.warning("chunk %s: open coding failed: %s", c.chunk_id, a.error)
    candidates = proposal.candidates_from(answers)
    existing = proposal.existing_codes(extend[0]) if extend is not None else []
    anchors = [consolidate.candidate_text(e.label, e.definition) for e in existing]
    groups, anchor_groups = consolidate.group_candidates(candidates, cfg.distance_threshold, vectorise, anchors)
    candidates["group"] = pd.array(groups, dtype="Int64")
    to_name = proposal.groups_to_name(candidates, sorted(set(anchor_groups)), cfg.max_codes)
    prompts = [proposal.group_prompt(candidates, g) for g in to_name]
    named = name_groups(prompts, templates, llm, ask)
    support = proposal.group_support(candidates)
    taken = {e.name for e in existing}
    codes = [
        proposal.name_code(p, a.answer.answer if a.answer is not None else None, a.error, support.loc[p.group], taken)
        for p, a in zip(prompts, named, strict=True)
    ]
    if not codes and extend is None:
        failed = sum(1 for a in opened if a.answer is None)
        raise QualcodeError(
            f"no code could be proposed: of {len(chunks)} sampled chunks, {failed} failed and the others proposed no "
            "candidate code (the answers are cached; see the propose_codebook log). Sample more documents "
            "(induction.documents) or use a larger model"
        )
    status = "new" if extend is not None else "proposed"
    by_group = {c.group: c.name for c in codes}
    candidates["code"] = [by_group.get(int(g)) if not pd.isna(g) else None for g in candidates["group"]]
    existing_set = set(anchor_groups)
    candidates["status"] = [
        "existing" if int(g) in existing_set else status if int(g) in by_group else "not proposed"
        for g in candidates["group"]
    ]
    table = consolidate.saturation([c.chunk_id for c in chunks], candidates, cfg.batch_size)
    sentence = consolidate.methods_sentence(table, len(codes))
    book = proposal.codebook_dict(codes, cfg.field_name, cfg.research_question, extend[1] if extend else None)
    pairs = [(a.question.request, a.answer, a.key) for a in (*opened, *named) if a.answer is not None]
    return Proposal(candidates, table, codes, book, sentence, status, pairs, [*opened, *named])


@dataclass(frozen=True)
class Setup:
    chunks: list[Chunk]  # the sampled chunks, in the sample's order
    templates: asking.Templates
    vectorise: consolidate.Vectoriser
    extend: tuple[Codebook, Mapping[str, Any]] | None
    texts: dict[str, str]  # each sampled document's text, for the review page


def prepare(
    cfg: InductionConfig,
    llm: LLMConfig,
    prompts: Mapping[str, Any],
    chunks_path: str,
    documents_path: str,
    extend_path: str | None = None,
) -> Setup:
    """Everything read before the first request: the sample, the templates, the codebook being extended. A problem
    with any of them stops here, before anything is paid for."""
    from ..inputs import codebook as codebook_mod
    from ..outputs import tables

    documents = tables.read(documents_path, "documents").to_pandas()
    chosen = sampled_chunks(tables.read_chunks(chunks_path), documents, cfg)
    extend = None
    if extend_path:
        raw = codebook_mod.read(extend_path)
        extend = (codebook_mod.parse(raw, extend_path), raw)
    existing = proposal.existing_codes(extend[0]) if extend else []
    templates = asking.load(dict(prompts), cfg, llm.structured_output, existing)
    sampled = {c.doc_id for c in chosen}
    texts = {d: t for d, t in zip(documents["doc_id"], documents["text"], strict=True) if d in sampled}
    return Setup(chosen, templates, consolidate.offline(cfg.vector_dims, cfg.seed), extend, texts)


class ProviderVectors:
    """The candidates compared by `induction.embeddings`' vectors from the endpoint, through the answer cache (a text
    embedded before is not sent again); remembers the texts, so their requests join the proposal's replay archive."""

    def __init__(
        self,
        cfg: InductionConfig,
        llm: LLMConfig,
        cache: AnswerCache,
        limits: LimitsConfig | None = None,
        price: Price | None = None,
    ):
        self.cfg, self.llm, self.cache, self.limits, self.price = cfg, llm, cache, limits, price
        self.texts: list[str] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        model = self.cfg.embeddings
        return embeddings.vectors(texts, model, self.llm, self.cache, self.limits, self.price,
                                  self.cfg.vector_dims, self.cfg.seed)  # fmt: skip

    def pairs(self) -> list[tuple[LLMRequest, CachedAnswer, str | None]]:
        return list(embeddings.archived(self.texts, self.cfg.embeddings or "", self.llm, self.cache))


def summary(asked: Sequence[Asked]) -> str:
    sent = sum(1 for a in asked if a.answer is not None and not a.cache_hit)
    cached = sum(1 for a in asked if a.cache_hit)
    failed = sum(1 for a in asked if a.answer is None)
    return f"Requests: {len(asked)} ({cached} from the cache, {sent} answered now, {failed} failed)."
