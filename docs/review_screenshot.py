"""Make docs/review.png, the README's picture of the review page: the example corpus coded through the real
workflow against the test suite's fake server (answers that vary with the passage, some quotes not in the text),
then the page in headless Chromium. Run from the repository root: python docs/review_screenshot.py"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser import chromium, open_file  # noqa: E402
from fakeserver import FakeServer, generate_instance, request_schema  # noqa: E402
from workflow_helpers import fake_config, run, scratch_copy  # noqa: E402


def _pick(options: list, key: str, n: int = 1) -> list:
    h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    return [options[(h >> (8 * i)) % len(options)] for i in range(n)]


def varied(body: dict) -> str:
    """A valid answer whose values and quotes depend on the passage; one field in five quotes words not in it."""
    user = body["messages"][-1]["content"]
    passage = user.split('"""')[1].strip() if user.count('"""') >= 2 else user
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", passage) if 20 <= len(s.strip()) <= 110] or [
        passage[:60]
    ]
    schema = request_schema(body)
    answer = generate_instance(schema, passage)
    for name, spec in schema["properties"].items():
        value = spec["properties"]["value"]
        key = name + passage
        if "enum" in value:
            answer[name]["value"] = _pick(value["enum"], key)[0]
        elif value.get("type") == "array":
            answer[name]["value"] = sorted(set(_pick(value["items"]["enum"], key, 2)))
        elif value.get("type") == "boolean":
            answer[name]["value"] = _pick([True, False], key)[0]
        if "quote" in answer[name]:
            quote = _pick(sentences, key)[0]
            answer[name]["quote"] = quote if _pick(range(5), "q" + key)[0] else "they never said thank you"
    return json.dumps(answer)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeServer(seed=1) as server:
        work = scratch_copy(Path(tmp) / "work")
        server.answer_fn = varied
        run(work, "--configfile", str(fake_config(work, server)), env={"QUALCODE_TEST_KEY": "demo-" + "k" * 20})
        with chromium(1280, 860) as driver:
            open_file(driver, work / "results" / "review" / "index.html")
            driver.save_screenshot(str(REPO / "docs" / "review.png"))
    print("wrote docs/review.png")


if __name__ == "__main__":
    main()
