"""Shared fixtures. Every test gets its own cache directory and HOME, and no real API key."""

from __future__ import annotations

from pathlib import Path

import pytest

from qualcode import codebook as codebook_mod

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
def fake_server():
    from fakeserver import FakeServer

    with FakeServer(seed=1) as server:
        yield server
