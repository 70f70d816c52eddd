"""Shared fixtures. Every test gets its own cache directory and HOME, and no real API key."""

from __future__ import annotations

from pathlib import Path

import pytest

from qualcode.inputs import codebook as codebook_mod

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("OPENAI_API_KEY", "OPENROUTER_API_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def codebook():
    return codebook_mod.load(DATA / "codebook.yaml")


@pytest.fixture
def prompts(codebook):
    from qualcode.coding.prompts import load

    return load(REPO / "config/prompts/system.j2", REPO / "config/prompts/user.j2", codebook, "json_schema")


def nurse_chunk(i: int):
    """A one-line chunk of a nurse's words, numbered `i`: for tests that code chunks without a workflow."""
    from qualcode.records import Chunk

    text = f"NURSE {i}: We had no masks on ward {i} and I was scared for my kids."
    return Chunk(f"c{i:04d}", "doc.txt", i, 0, len(text), 16, (f"NURSE {i}",), text)


def _quote_the_passage(body: dict) -> str:
    """Valid answers whose quotes are the passage's first words, so grounding has something to find."""
    import json

    from fakeserver import generate_instance, request_schema

    user = body["messages"][-1]["content"]
    passage = user.split('"""')[1].strip() if user.count('"""') >= 2 else user
    return json.dumps(generate_instance(request_schema(body), passage))


@pytest.fixture
def fake_server():
    from fakeserver import FakeServer

    with FakeServer(seed=1) as server:
        server.answer_fn = _quote_the_passage
        yield server
