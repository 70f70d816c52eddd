"""The OpenAI Files and Batches endpoints, added to the fake server (protocol level, for the real openai client).

    POST /v1/files                 multipart upload (purpose=batch), returns a file object
    GET  /v1/files/{id}            the file object
    GET  /v1/files/{id}/content    the file's bytes
    POST /v1/batches               create a batch from an uploaded input file
    GET  /v1/batches               the batches, newest first
    GET  /v1/batches/{id}          the batch; each look moves it one step:
                                   validating -> in_progress -> finalizing -> its end (completed by default)
    POST /v1/batches/{id}/cancel   cancelling, then cancelled at the next look

Each line is answered as the chat endpoint answers it (`answer_fn`, else a valid instance of the request's schema),
with the same usage counts. What a batch does is planned per batch, in order of creation (`plans`, a `Plan` each;
the default plan answers every line): its end status, how many lines it answers before it ends (an expired batch
with partial output), which lines become error-file lines, and whether it stays in progress until released (a run
killed while its batch is in flight). `create_faults` batches are created and then answered with HTTP 500 (the
client cannot tell whether they exist). `custom_ids_seen` counts every custom id submitted, across batches.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fakeserver import CREATED, FakeServer, _message_text, _words, default_answer

STEPS = ("validating", "in_progress", "finalizing")


@dataclass
class Plan:
    """What one batch does. `end`: completed, failed, expired or cancelled. `answered`: lines answered (None: all).
    `errors`: custom ids (or line numbers, from 0) answered with an error-file line (HTTP `error_status`).
    `hold`: stays in_progress until `BatchFake.release()`."""

    end: str = "completed"
    answered: int | None = None
    errors: set[Any] = field(default_factory=set)
    error_status: int = 500
    hold: bool = False


class BatchFake(FakeServer):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.plans: list[Plan] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.custom_ids_seen: Counter[str] = Counter()
        self.batch_bodies: list[dict[str, Any]] = []
        self.looks = 0
        self.create_faults = 0  # batches created whose creation is then answered with HTTP 500
        self._released = threading.Event()

    def release(self) -> None:
        """Batches planned with `hold` go on from in_progress at their next look."""
        self._released.set()

    # -- routing --------------------------------------------------------------------------------------------

    def route(self, handler: Any, method: str, path: str, raw: bytes) -> bool:
        parts = path.strip("/").split("/")  # v1, files|batches, id, content|cancel
        if len(parts) < 2 or parts[1] not in ("files", "batches"):
            return False
        with self._lock:
            status, payload = self._answer(method, parts[1:], raw, handler.headers.get("Content-Type", ""))
        if isinstance(payload, bytes):
            handler._send(status, payload, content_type="application/octet-stream")
        elif status >= 400:
            handler._error(status, payload)
        else:
            handler._send(status, payload)
        return True

    def _answer(self, method: str, parts: list[str], raw: bytes, content_type: str) -> tuple[int, Any]:
        kind, rest = parts[0], parts[1:]
        if kind == "files" and method == "POST" and not rest:
            return 200, self._upload(raw, content_type)
        if kind == "files" and method == "GET" and rest and rest[0] in self.files:
            f = self.files[rest[0]]
            return (200, f["data"]) if rest[1:] == ["content"] else (200, f["object"])
        if kind == "batches" and method == "POST" and not rest:
            status, batch = self._create(json.loads(raw))
            if status == 200 and self.create_faults > 0:  # created, but the client hears an error
                self.create_faults -= 1
                return 500, "injected fault after the batch was created"
            return status, batch
        if kind == "batches" and method == "GET" and not rest:
            newest = [b["object"] for b in reversed(self.batches.values())]
            return 200, {"object": "list", "data": newest, "has_more": False}
        if kind == "batches" and rest and rest[0] in self.batches:
            batch = self.batches[rest[0]]
            if method == "GET" and len(rest) == 1:
                self.looks += 1
                self._step(batch)
                return 200, batch["object"]
            if method == "POST" and rest[1:] == ["cancel"]:
                if batch["object"]["status"] not in ("completed", "failed", "expired", "cancelled"):
                    batch["object"]["status"] = "cancelling"
                    batch["plan"].end, batch["plan"].hold = "cancelled", False
                return 200, batch["object"]
        return 404, f"no route {method} /v1/{'/'.join(parts)}"

    # -- files ----------------------------------------------------------------------------------------------

    def _upload(self, raw: bytes, content_type: str) -> dict[str, Any]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
        )
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        filename, data = fields["file"]
        purpose = fields.get("purpose", (None, b"batch"))[1].decode()
        return self._file(data, filename or "upload.jsonl", purpose)["object"]

    def _file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-fake{len(self.files) + 1:04d}"
        obj = {
            "id": file_id, "object": "file", "bytes": len(data), "created_at": CREATED, "filename": filename,
            "purpose": purpose, "status": "processed",
        }  # fmt: skip
        self.files[file_id] = {"object": obj, "data": data}
        return self.files[file_id]

    # -- batches --------------------------------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        source = self.files.get(body.get("input_file_id", ""))
        if source is None:
            return 400, "input_file_id: no such file"
        lines = [json.loads(x) for x in source["data"].decode("utf-8").splitlines() if x.strip()]
        for line in lines:
            self.custom_ids_seen[line["custom_id"]] += 1
        batch_id = f"batch_fake{len(self.batches) + 1:04d}"
        obj = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": CREATED,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }  # fmt: skip
        plan = self.plans.pop(0) if self.plans else Plan()
        self.batches[batch_id] = {"object": obj, "plan": plan, "lines": lines}
        return 200, obj

    def _step(self, batch: dict[str, Any]) -> None:
        obj, plan = batch["object"], batch["plan"]
        status = obj["status"]
        if status in ("completed", "failed", "expired", "cancelled"):
            return
        if status == "in_progress" and plan.hold and not self._released.is_set():
            return
        if status in STEPS[:-1]:
            obj["status"] = STEPS[STEPS.index(status) + 1]
            return
        self._finish(batch)  # finalizing or cancelling

    def _finish(self, batch: dict[str, Any]) -> None:
        obj, plan, lines = batch["object"], batch["plan"], batch["lines"]
        out, errors = [], []
        for i, line in enumerate(lines):
            if plan.answered is not None and i >= plan.answered:
                continue
            request_id = f"req_{obj['id']}_{i:05d}"
            if line["custom_id"] in plan.errors or i in plan.errors:
                body = {"error": {"message": f"injected batch error on line {i}", "type": "server_error"}}
                response = {"status_code": plan.error_status, "request_id": request_id, "body": body}
                errors.append(
                    {"id": f"batch_req_{i}", "custom_id": line["custom_id"], "response": response, "error": None}
                )
                continue
            self.batch_bodies.append(line["body"])
            response = {"status_code": 200, "request_id": request_id, "body": self.chat_payload(line["body"], i)}
            out.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"], "response": response, "error": None})
        if out:
            obj["output_file_id"] = self._file(_jsonl(out), f"{obj['id']}_output.jsonl", "batch_output")["object"]["id"]
        if errors:
            obj["error_file_id"] = self._file(_jsonl(errors), f"{obj['id']}_error.jsonl", "batch_output")["object"][
                "id"
            ]
        obj["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}
        obj["status"] = plan.end
        if plan.end != "completed":
            obj["errors"] = {"object": "list", "data": [{"code": plan.end, "message": f"the batch {plan.end}"}]}

    def chat_payload(self, body: dict[str, Any], index: int) -> dict[str, Any]:
        """The chat endpoint's answer to `body` (no faults): the same content and usage as in real time."""
        content = self.answer_fn(body) if self.answer_fn is not None else default_answer(body)
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt_tokens = sum(_words(_message_text(m.get("content"))) for m in messages)
        completion_tokens = _words(content)
        return {
            "id": f"chatcmpl-fakebatch-{index:06d}", "object": "chat.completion", "created": CREATED,
            "model": self.model_served, "system_fingerprint": "fp_fake",
            "choices": [{
                "index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None, "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }  # fmt: skip


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
