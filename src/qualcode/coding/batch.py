"""Requests sent in batches: a provider's Batch API (`llm.mode: batch`) or a batch file for vLLM's batch runner
(`llm.mode: batch_files`).

A transport behind the client interface (`Client.complete`): the coder asks as it does in real time, and the requests
of a job that are waiting at the same moment go out together, as one round; each `complete()` returns when its line
is answered. The asking, re-asking, validation, cache, journal and leases stay the coder's, shared with real time.
A line's `custom_id` is the request's cache key and its body is exactly the body a realtime request sends, so an
answer by batch and one in real time are answers to the same request.

Nothing is submitted twice: each batch is recorded (its id and its custom ids, written and fsync'd beside the cache)
before it is waited for. A run that needs a request held by a recorded batch takes the answer from that batch
(waiting for it, or stopping, as `llm.batch.running` says) instead of sending it again. A batch that ended without
answering every line (expired, failed, cancelled) keeps the answers it has; only the rest are sent again.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from ..config import LLMConfig
from ..errors import BatchPending, ProviderError, RequestError
from ..ids import utc_now
from ..logs import redact
from ..records import Completion, LLMRequest, encodable
from .api import OpenAIClient, chat_body, completion, sdk_client, with_retries

logger = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
# The lines of one round arrive within a few turns of the event loop (the coder looks each chunk up in the cache
# first, without waiting): a round is closed once no new request has come for this long.
SETTLE_S = 0.2

# Set in a coder task once its first request was asked: the task's next request is a re-ask.
_asked = contextvars.ContextVar("qualcode_batch_asked", default=False)


def vllm_command(requests: Path, answers: Path, model: str) -> str:
    """The command that answers a batch file on a GPU node with vLLM's batch runner."""
    return f"python -m vllm.entrypoints.openai.run_batch -i {requests} -o {answers} --model {model}"


def batch_line(request: LLMRequest) -> str:
    """One line of a batch input file (OpenAI's and vLLM's format)."""
    line = {"custom_id": request.key(), "method": "POST", "url": ENDPOINT, "body": chat_body(request)}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def split_lines(lines: Iterable[str], max_requests: int, max_bytes: int) -> Iterator[list[str]]:
    """Lines in files of at most `max_requests` lines and `max_bytes` bytes (newlines included)."""
    part: list[str] = []
    size = 0
    for line in lines:
        n = len(line.encode("utf-8")) + 1
        if part and (len(part) >= max_requests or size + n > max_bytes):
            yield part
            part, size = [], 0
        part.append(line)
        size += n
    if part:
        yield part


def parse_output(text: str, batch_id: str) -> dict[str, Completion | str]:
    """custom_id -> its answer, or the provider's message for a line that failed. Lines of an output file and of an
    error file look alike (OpenAI's and vLLM's): `response` holds the status code and body, `error` a failure."""
    out: dict[str, Completion | str] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            key = line["custom_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("batch %s: a line that is not a batch answer was skipped: %r", batch_id, raw[:120])
            continue
        response, error = line.get("response") or {}, line.get("error")
        status = response.get("status_code")
        body = response.get("body")
        if error or status != 200 or not isinstance(body, dict):
            detail = error or (body.get("error") if isinstance(body, dict) else body)
            message = detail.get("message") if isinstance(detail, dict) else detail
            out[key] = encodable(redact(f"batch {batch_id}: HTTP {status}: {message or 'no message'}"))[:500]
            continue
        try:
            out[key] = completion(ChatCompletion.model_validate(body), batch_id=batch_id)
        except (ValueError, TypeError) as exc:
            out[key] = f"batch {batch_id}: the answer is not a chat completion ({str(exc)[:200]})"
    return out


def _write_durably(path: Path, text: str) -> None:
    """Written whole or not at all, and on disk (fsync'd, the directory too) when this returns."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Records:
    """The batches sent, one JSON file each: `id`, `kind` ("api" or "file"), `custom_ids`, `consumed` (a run has
    taken every answer it holds into the cache: its requests not answered may be sent again)."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def all(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                logger.warning("batch record %s cannot be read (%s); ignored", path, exc)
        return sorted(found, key=lambda r: r.get("created_at", ""))

    def write(self, record: dict[str, Any]) -> None:
        _write_durably(self.directory / f"{record['id']}.json", json.dumps(record, indent=1))

    def remove(self, record_id: str) -> None:
        (self.directory / f"{record_id}.json").unlink(missing_ok=True)


@dataclass
class _Wait:
    request: LLMRequest
    futures: list[asyncio.Future[Completion]] = field(default_factory=list)
    errors: int = 0  # error lines (and unanswered lines of ended batches) so far


class BatchClient:
    """`complete()` through batches. `state_dir` is the cache's directory: the batch records live beside it."""

    def __init__(self, cfg: LLMConfig, state_dir: str | Path):
        self.cfg = cfg
        self.settings = cfg.batch
        self.records = Records(Path(state_dir) / "batches")
        files = cfg.batch.files_dir or Path(state_dir) / "batch_files"
        self.files_dir = Path(files).resolve()
        self._queue: dict[str, _Wait] = {}
        self._runner: asyncio.Task[None] | None = None
        self._realtime: OpenAIClient | None = None
        self._sdk: openai.AsyncOpenAI | None = None
        self._stopped: Exception | None = None
        self._taken: set[str] = set()  # records whose answers this job took
        self.batch_ids: list[str] = []  # the batches this job sent or took answers from

    # -- the client interface --------------------------------------------------------------------------------

    async def complete(self, request: LLMRequest) -> Completion:
        if self._stopped is not None:
            raise self._stopped
        if _asked.get() and self.settings.reasks == "realtime":
            return await self._realtime_client().complete(request)
        _asked.set(True)
        key = request.key()
        wait = self._queue.setdefault(key, _Wait(request))
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        wait.futures.append(future)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def aclose(self) -> None:
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
        # Every answer taken is in the journal and the cache by now (the coder closes its client last): those batches
        # are done with, and a request they did not answer may be sent again by a later run.
        for record in self.records.all():
            if record["id"] in self._taken and not record.get("consumed"):
                self.records.write({**record, "consumed": True})
        if self._realtime is not None:
            await self._realtime.aclose()
        if self._sdk is not None:
            await self._sdk.close()

    # -- rounds ----------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._queue:
                await self._settle()
                round_, self._queue = self._queue, {}
                await self._round(round_)
        except Exception as exc:  # a stop (BatchPending, ProviderError, a full disk): every waiting request hears it
            self._stopped = exc
            for wait in self._queue.values():
                _fail(wait, exc)
            self._queue.clear()

    async def _settle(self) -> None:
        seen = -1
        while seen != len(self._queue):
            seen = len(self._queue)
            await asyncio.sleep(SETTLE_S)

    async def _round(self, waits: dict[str, _Wait]) -> None:
        try:
            answers = await (self._file_round(waits) if self.cfg.mode == "batch_files" else self._api_round(waits))
        except BaseException as exc:
            for wait in waits.values():
                _fail(wait, exc)
            raise
        for key, wait in waits.items():
            answer = answers.get(key)
            if isinstance(answer, Completion):
                _resolve(wait, dataclasses.replace(answer, retries=wait.errors))
                continue
            wait.errors += 1
            why = answer or "the batch ended without answering this request"
            if wait.errors >= self.cfg.max_attempts:
                _fail(wait, RequestError(f"{why} (after {wait.errors} attempts)", retries=wait.errors - 1))
            else:
                logger.warning("request %s: %s; asked again in the next batch", key[:12], why)
                self._queue.setdefault(key, _Wait(wait.request)).futures.extend(wait.futures)
                self._queue[key].errors = wait.errors

    def _unconsumed(self, kind: str, keys: Iterable[str]) -> list[dict[str, Any]]:
        """Recorded batches holding some of `keys` whose answers no job has taken yet (this one included)."""
        wanted = set(keys)
        return [
            r for r in self.records.all()
            if r.get("kind") == kind and not r.get("consumed") and r["id"] not in self._taken
            and wanted & set(r["custom_ids"])
        ]  # fmt: skip

    # -- the Batch API ---------------------------------------------------------------------------------------

    def _client(self) -> openai.AsyncOpenAI:
        if self._sdk is None:
            # output files hold many answers: bounded by the input file's size limit, not by one answer's
            self._sdk = sdk_client(self.cfg, max(self.cfg.max_response_bytes, 4 * self.settings.max_bytes))
        return self._sdk

    def _realtime_client(self) -> OpenAIClient:
        if self._realtime is None:
            self._realtime = OpenAIClient(self.cfg)
        return self._realtime

    async def _call(self, what: str, call: Any) -> Any:
        try:
            return await with_retries(call, cfg=self.cfg, what=f"{self.cfg.api_base_url}: {what}")
        except openai.APIStatusError as exc:
            detail = encodable(redact(getattr(exc, "message", "") or ""))[:300]
            raise ProviderError(
                f"{self.cfg.api_base_url} refused {what} with HTTP {exc.status_code}: {detail}"
            ) from None
        except openai.APIError as exc:
            raise ProviderError(f"{self.cfg.api_base_url}: {what} failed ({type(exc).__name__}); run again") from None

    async def _api_round(self, waits: dict[str, _Wait]) -> dict[str, Completion | str]:
        answers: dict[str, Completion | str] = {}
        for record in self._unconsumed("api", waits):
            if record.get("pending"):  # its run stopped while creating it: created or not?
                found = await self._find(record["input_file_id"])
                self.records.remove(record["id"])
                if found is None:
                    continue  # never created: its requests are sent now
                record = {**record, "id": found.id, "pending": False}
                self.records.write(record)
            held = len(waits.keys() & set(record["custom_ids"]))
            logger.info("batch %s holds %d of this job's requests: taking its answers", record["id"], held)
            answers.update(await self._collect(record["id"], attached=True))
            self._taken.add(record["id"])
        # a request an earlier batch failed goes to the next round as a retry (counted), not into this one
        lines = [batch_line(w.request) for k, w in waits.items() if k not in answers]
        sent = []
        for part in split_lines(lines, self.settings.max_requests, self.settings.max_bytes):
            sent.append(await self._submit(part))
        for batch_id in sent:
            answers.update(await self._collect(batch_id, attached=False))
            self._taken.add(batch_id)
        return answers

    async def _submit(self, lines: list[str]) -> str:
        data = ("\n".join(lines) + "\n").encode("utf-8")
        name = f"qualcode-{hashlib.sha256(data).hexdigest()[:16]}.jsonl"
        sdk = self._client()
        uploaded = await self._call(
            "the batch file upload", lambda: sdk.files.create(file=(name, data), purpose="batch")
        )
        custom_ids = [json.loads(line)["custom_id"] for line in lines]
        # Recorded before the batch is created: a run stopped from here on finds the batch by its input file and takes
        # its answers; once created, under the batch's id, before any wait.
        pending = {
            "id": f"pending-{uploaded.id}", "pending": True, "kind": "api", "base_url": self.cfg.api_base_url,
            "model": self.cfg.model, "input_file_id": uploaded.id, "created_at": utc_now(), "consumed": False,
            "custom_ids": custom_ids,
        }  # fmt: skip
        self.records.write(pending)
        batch = await self._create(uploaded.id)
        self.records.write({**pending, "id": batch.id, "pending": False})
        self.records.remove(pending["id"])
        self.batch_ids.append(batch.id)
        logger.info("batch %s: %d request(s) submitted (%s, %d bytes)", batch.id, len(lines), name, len(data))
        return batch.id

    async def _create(self, file_id: str) -> Any:
        """Create the batch of an uploaded file. Creating is not idempotent: before trying again after a failure
        (which may have come after the provider created it), look for a batch of that file."""
        sdk, tries = self._client(), 0

        async def create() -> Any:
            nonlocal tries
            tries += 1
            if tries > 1 and (found := await self._find(file_id)) is not None:
                return found
            return await sdk.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")

        return await self._call("creating a batch", create)

    async def _find(self, file_id: str) -> Any:
        """The provider's most recent batch of input file `file_id`, or None."""
        sdk = self._client()
        page = await self._call("listing batches", lambda: sdk.batches.list(limit=100))
        return next((b for b in page.data if b.input_file_id == file_id), None)

    async def _collect(self, batch_id: str, attached: bool) -> dict[str, Completion | str]:
        sdk = self._client()
        started, first = time.monotonic(), True
        while True:
            batch = await self._call(f"looking at batch {batch_id}", lambda: sdk.batches.retrieve(batch_id))
            counts = batch.request_counts
            done, total, failed = (counts.completed, counts.total, counts.failed) if counts else (0, 0, 0)
            logger.info("batch %s: %s, %d/%d completed, %d failed", batch_id, batch.status, done, total, failed)
            if batch.status in TERMINAL:
                break
            if attached and first and self.settings.running == "exit":
                raise BatchPending(
                    f"batch {batch_id} (sent by an earlier run) is still {batch.status}, {done}/{total} completed; "
                    "run again later to take its answers (llm.batch.running: wait waits for it instead)"
                )
            waited_h = (time.monotonic() - started) / 3600
            if waited_h >= self.settings.max_wait_h:
                raise BatchPending(
                    f"batch {batch_id} is still {batch.status} after llm.batch.max_wait_h "
                    f"({self.settings.max_wait_h:g} h), {done}/{total} completed; run again to take its answers: "
                    "nothing is sent again"
                )
            first = False
            await asyncio.sleep(self.settings.poll_s)
        if batch_id not in self.batch_ids:
            self.batch_ids.append(batch_id)
        answers: dict[str, Completion | str] = {}
        for file_id in (batch.error_file_id, batch.output_file_id):  # answers win over errors for the same line
            if file_id:
                content = await self._call(f"downloading {file_id}", lambda f=file_id: sdk.files.content(f))
                answers.update(parse_output(content.text, batch_id))
        if batch.status != "completed":
            reason = "; ".join(e.message or "" for e in (batch.errors.data or [])) if batch.errors else ""
            logger.warning(
                "batch %s ended %s%s with %d answer(s): the rest are sent again",
                batch_id, batch.status, f" ({reason[:300]})" if reason else "", len(answers),
            )  # fmt: skip
        return answers

    # -- batch files (vLLM's batch runner) -------------------------------------------------------------------

    async def _file_round(self, waits: dict[str, _Wait]) -> dict[str, Completion | str]:
        answers: dict[str, Completion | str] = {}
        unanswered: list[dict[str, Any]] = []
        for record in self._unconsumed("file", waits):
            out = Path(record["answers"])
            if out.is_file():
                answers.update(parse_output(out.read_text(encoding="utf-8"), record["id"]))
                self._taken.add(record["id"])
                self.batch_ids.append(record["id"])
            else:
                unanswered.append(record)
        waiting = {k for r in unanswered for k in r["custom_ids"]}
        lines = [batch_line(w.request) for k, w in waits.items() if k not in answers and k not in waiting]
        self.files_dir.mkdir(parents=True, exist_ok=True)
        for part in split_lines(lines, self.settings.max_requests, self.settings.max_bytes):
            data = "\n".join(part) + "\n"
            name = f"qualcode-{hashlib.sha256(data.encode('utf-8')).hexdigest()[:16]}"
            requests, out = self.files_dir / f"{name}.requests.jsonl", self.files_dir / f"{name}.answers.jsonl"
            _write_durably(requests, data)
            record = {
                "id": name, "kind": "file", "requests": str(requests), "answers": str(out), "model": self.cfg.model,
                "created_at": utc_now(), "consumed": False, "custom_ids": [json.loads(x)["custom_id"] for x in part],
            }  # fmt: skip
            self.records.write(record)
            unanswered.append(record)
        if unanswered:
            commands = "; ".join(vllm_command(Path(r["requests"]), Path(r["answers"]), r["model"]) for r in unanswered)
            raise BatchPending(
                f"{sum(len(r['custom_ids']) for r in unanswered)} request(s) wait in batch file(s) for their answers: "
                f"run `{commands}` (on a GPU node), then run the workflow again"
            )
        return answers


def _resolve(wait: _Wait, answer: Completion) -> None:
    for future in wait.futures:
        if not future.done():
            future.set_result(answer)


def _fail(wait: _Wait, exc: BaseException) -> None:
    for future in wait.futures:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
