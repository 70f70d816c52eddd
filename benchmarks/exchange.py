"""Cost of the exchange outputs at scale: the REFI-QDA export, its import and the review page for a synthetic corpus
of N chunks (documents of 10 chunks, 5 codes per chunk, quotes in the text). Prints seconds and output sizes.

    python benchmarks/exchange.py 5000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from qualcode.exchange import qdpx, review
from qualcode.inputs import codebook

REPO = Path(__file__).resolve().parent.parent
SENTENCE = "We reuse the same mask all week and nobody from management checks on us. "


def corpus(n_chunks: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    docs, chunks, codes, codings = [], [], [], []
    per_doc, chunk_chars = 10, 20 * len(SENTENCE)
    for d in range(max(1, n_chunks // per_doc)):
        doc_id = f"interviews/{d:05d}.txt"
        text = SENTENCE * 20 * per_doc
        docs.append({"doc_id": doc_id, "source_file": doc_id, "format": "txt", "text": text})
        for i in range(per_doc):
            cid = f"{d:08x}{i:08x}"
            start = i * chunk_chars
            chunks.append(
                {"chunk_id": cid, "doc_id": doc_id, "chunk_index": i, "start": start, "end": start + chunk_chars}
            )
            codings.append({"doc_id": doc_id, "chunk_id": cid, "chunk_index": i, "status": "coded"})
            for k, (field, value) in enumerate(
                [
                    ("emotions", "fear"),
                    ("emotions", "anger"),
                    ("solidarity", "absent"),
                    ("themes", "invisibility"),
                    ("own_health_mentioned", "false"),
                ]
            ):
                q0 = start + (k % 3) * len(SENTENCE)
                codes.append(
                    {
                        "doc_id": doc_id,
                        "chunk_id": cid,
                        "chunk_index": i,
                        "field": field,
                        "value": value,
                        "quote": SENTENCE.strip(),
                        "quote_start": q0,
                        "quote_end": q0 + len(SENTENCE) - 1,
                        "grounding": "exact",
                        "grounded": True,
                    }
                )
    return pd.DataFrame(docs), pd.DataFrame(chunks), pd.DataFrame(codes), pd.DataFrame(codings)


def main(n_chunks: int) -> None:
    cb = codebook.load(REPO / "config" / "codebook.yaml")
    docs, chunks, codes, codings = corpus(n_chunks)
    failures = pd.DataFrame({"chunk_id": pd.Series([], dtype=str), "reason": pd.Series([], dtype=str)})
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        data = qdpx.project_qdpx(cb, docs, chunks, codes, "model", "qualcode bench")
        export_s = time.perf_counter() - t
        path = Path(tmp) / "p.qdpx"
        path.write_bytes(data)
        t = time.perf_counter()
        gold, _ = qdpx.read_codings(path, cb, dict(zip(docs.doc_id, docs.text, strict=True)))
        import_s = time.perf_counter() - t
        t = time.perf_counter()
        page = "".join(review.page(cb, docs, chunks, codings, codes, failures, "model"))
        page_s = time.perf_counter() - t
    print(f"{len(chunks)} chunks, {len(codes)} codes, {len(docs)} documents")
    print(f"export (with schema check): {export_s:.2f} s, {len(data) / 1e6:.1f} MB")
    print(f"import: {import_s:.2f} s, {len(gold)} codings")
    print(f"review page: {page_s:.2f} s, {len(page.encode()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
