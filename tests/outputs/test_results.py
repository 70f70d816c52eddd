"""The tables job streams shard by shard: the tables must not depend on how the chunks were sharded, nor on how
many row groups the writer used."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from qualcode.outputs import results, tables
from qualcode.records import Chunk, ChunkResult, Document

from fakeserver import generate_instance


def _corpus(codebook, n: int):
    docs, chunks, res = [], [], []
    for i in range(n):
        text = f"NURSE {i}: we had no masks on ward {i % 7} and the night shift was long."
        docs.append(Document(f"d{i:04d}", f"d{i:04d}.txt", "txt", "utf-8", text))
        chunk = Chunk(f"{i:016x}", f"d{i:04d}", 0, 0, len(text), 20, (f"NURSE {i}",), text)
        chunks.append(chunk)
        ok = i % 5 != 3
        answer = generate_instance(codebook.answer_schema(), text) if ok else None
        res.append(
            ChunkResult(
                chunk_id=chunk.chunk_id,
                doc_id=chunk.doc_id,
                status="coded" if ok else "failed",
                answer_json=json.dumps(answer, sort_keys=True) if ok else None,
                raw="{}",
                error=None if ok else "bad",
                request_hash=f"{i:064x}",
                provider="openai",
                base_url="http://x/v1",
                model_asked="m",
                latency_s=0.5,
                attempts=1,
                tokens_in=10,
                tokens_out=5,
                cache_hit=False,
            )  # fmt: skip
        )
    return docs, chunks, res


def _write(tmp, codebook, docs, chunks, res, cuts):
    tables.write(tables.documents_table(docs), tmp / "documents.parquet")
    tables.write(tables.chunks_table(chunks), tmp / "chunks.parquet")
    tables.write(tables.problems_table([]), tmp / "problems.parquet")
    shard_files = []
    for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(res)], strict=True)):
        shard_files.append(tmp / f"shard{k}.parquet")
        tables.write(tables.results_table(res[a:b]), shard_files[-1])
    out = {name: tmp / "out" / f"{name}.parquet" for name in tables.PUBLISHED}
    rows = results.write_tables(
        codebook=codebook, documents=tmp / "documents.parquet", chunks=tmp / "chunks.parquet",
        shard_files=shard_files, ingest_failures=tmp / "problems.parquet", out=out, codings_csv=tmp / "out/c.csv",
        metadata={"qualcode.test": "1"},
    )  # fmt: skip
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp / "out").iterdir())}
    return rows, digest, out


@pytest.mark.parametrize("row_group_rows", [7, 65_536])
def test_tables_do_not_depend_on_sharding_or_row_groups(codebook, tmp_path, monkeypatch, row_group_rows):
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", row_group_rows)
    docs, chunks, res = _corpus(codebook, 40)
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    rows_one, one, out = _write(tmp_path / "one", codebook, docs, chunks, res, [])
    rows_many, many, _ = _write(tmp_path / "many", codebook, docs, chunks, res, [3, 4, 17, 30])
    assert one == many and rows_one == rows_many
    assert rows_one["codings"] == 40 and rows_one["failures"] == sum(r.status == "failed" for r in res)
    codings = pq.read_table(out["codings"])
    assert codings.column("chunk_id").to_pylist() == [c.chunk_id for c in chunks]  # the chunks' order
    assert pq.ParquetFile(out["codings"]).metadata.num_row_groups == -(-40 // row_group_rows)
    assert codings.schema.metadata[b"qualcode.test"] == b"1"


def test_tables_follow_the_chunks_order_whatever_the_shards_hold(codebook, tmp_path):
    docs, chunks, res = _corpus(codebook, 12)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, in_order, _ = _write(tmp_path / "a", codebook, docs, chunks, res, [5])
    _, shuffled, _ = _write(tmp_path / "b", codebook, docs, chunks, res[7:] + res[:7], [2, 9])  # as hash buckets
    assert in_order == shuffled


def test_a_chunk_without_a_result_stops_the_tables_job(codebook, tmp_path):
    docs, chunks, res = _corpus(codebook, 6)
    with pytest.raises(ValueError, match="1 of 6 chunk"):
        _write(tmp_path, codebook, docs, chunks, res[:5], [])


def test_a_table_from_elsewhere_is_named_not_a_key_error(tmp_path):
    import pyarrow as pa

    from qualcode.errors import QualcodeError

    path = tmp_path / "codes.parquet"
    pq.write_table(pa.table({"doc_id": ["a"], "chunk_id": ["c"]}), path)
    with pytest.raises(QualcodeError, match=r"codes.parquet: not a qualcode codes table \(no column 'field'\)"):
        tables.read(path, "codes", ["chunk_id", "field", "grounding"])
    pq.write_table(pa.table({"doc_id": [1], "chunk_id": ["c"]}), path)
    with pytest.raises(QualcodeError, match="column 'doc_id' is int64, not string"):
        tables.read(path, "codes", ["doc_id"])
    assert tables.read(path, "codes", ["chunk_id"]).num_rows == 1
