"""A loopback OpenAI-compatible server (stdlib only) with latency, capacity limits and fault injection.

It answers ``POST /v1/chat/completions``, ``POST /v1/completions`` and ``GET /v1/models`` like OpenAI, vLLM or
llama.cpp do, so the real ``openai`` client (and :class:`s3_hf.llm_engine.LLMEngine`) can be tested end to end.

Faults (:data:`FAULTS`), drawn per call by a :class:`~s3_hf.testing.faults.FaultPlan` (or any
``(call_index, body) -> fault | None``):

- ``"429"``: rate limited, with a ``retry-after`` header; ``"500"``, ``"503"``: server errors;
- ``"timeout"``: the server stalls ``hang_s`` seconds before answering; ``"drop"``: the connection is closed
  without a response; ``"garbled"``: a 200 whose HTTP body is not valid JSON (a broken proxy);
- ``"truncated_json"``: a 200 whose JSON is cut in half (``finish_reason="length"``); ``"wrong_label"``: a valid
  object with ``"label": "__wrong__"``; ``"refusal"``: "I'm sorry, but I can't help with that."

Example:

```python
>>> with FakeOpenAIServer(latency_s=0.01, faults=FaultPlan({"429": 0.2}, seed=0)) as server:
...     client = openai.OpenAI(base_url=server.url, api_key="unused")
...     client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
...     server.stats()["ok"]
```
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from .faults import FaultPlan
from .loopback import LoopbackServer

FAULTS = ("429", "500", "503", "timeout", "drop", "garbled", "truncated_json", "wrong_label", "refusal")
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
_TOKEN = re.compile(r"\w+|[^\w\s]")  # the fake server's "tokens": words and single punctuation marks

Responder = Callable[[dict[str, Any]], str]


def body_digest(body: dict[str, Any]) -> str:
    """sha256 (16 hex) of what identifies a request: model, messages/prompt, and generation parameters."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def last_user_text(body: dict[str, Any]) -> str:
    """The last user message of a chat body, or the prompt of a completions body."""
    if "messages" in body:
        users = [m.get("content") or "" for m in body["messages"] if m.get("role") == "user"]
        return str(users[-1]) if users else ""
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def default_responder(body: dict[str, Any]) -> str:
    """A valid JSON reply that is distinct per request: ``{"text": "Synthetic example <digest>.", "label": "positive",
    "summary": ...}`` (the summary answers an error-description request)."""
    digest = body_digest({"m": body.get("messages"), "p": body.get("prompt"), "s": body.get("seed")})
    return json.dumps(
        {
            "text": f"Synthetic example {digest} about a film.",
            "label": "positive",
            "summary": f"A film described in other words, case {digest}.",
        }
    )


class _TokenBucket:
    def __init__(self, rps: float, burst: float = 1.0):
        self.rps = rps
        self.burst = max(1.0, burst)
        self.level = self.burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def try_take(self) -> float:
        """0 if a request may pass now (and takes it), else the seconds to wait."""
        with self.lock:
            now = time.monotonic()
            self.level = min(self.burst, self.level + (now - self.stamp) * self.rps)
            self.stamp = now
            if self.level >= 1.0:
                self.level -= 1.0
                return 0.0
            return (1.0 - self.level) / self.rps


class FakeOpenAIServer(LoopbackServer):
    """An OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

    Args:
        responder: request body -> completion text (default :func:`default_responder`). For the completions
            endpoint, a reply that starts with the prompt's assistant prefill is trimmed to the continuation.
        latency_s: fixed time each successful call takes.
        max_concurrency: calls served at once (``None``: unlimited). Calls above it wait (``over_capacity=
            "queue"``) or get a 429 (``"reject"``).
        rps: requests per second accepted (token bucket, burst 1); above it calls get a 429 with ``retry-after``
            (``over_capacity="reject"``) or wait (``"queue"``).
        rps_burst: how many requests the rate cap lets through at once after a quiet spell.
        faults: a :class:`FaultPlan` or ``(call_index, body) -> fault name | None``.
        retry_after_s: the ``retry-after`` a 429 fault sends.
        hang_s: how long a ``"timeout"`` fault stalls.
        reject_response_format: answer 400 to any request with ``response_format`` (a server without JSON mode).
        logprobs: answer ``logprobs`` requests with top alternatives of the first generated tokens (the token written
            at logprob -0.05, a filler at -6); ``False``: ``"logprobs": null``, as servers without them do.
        answer_n: how a request with ``n`` > 1 is answered: ``"all"``, ``n`` choices as OpenAI and vLLM do (choice
            ``i`` is the responder's reply to the body with ``seed + i``; the prompt's tokens counted once);
            ``"one"``, one choice, as llama-cpp-python's own server does; ``"reject"``, a 400.
        port: port to bind (0: a free one).
    """

    thread_name = "fake-openai"

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        latency_s: float = 0.0,
        max_concurrency: int | None = None,
        rps: float | None = None,
        rps_burst: float = 1.0,
        over_capacity: str = "queue",
        faults: Callable[[int, dict[str, Any]], str | None] | None = None,
        retry_after_s: float = 0.1,
        hang_s: float = 2.0,
        reject_response_format: bool = False,
        logprobs: bool = True,
        answer_n: str = "all",
        port: int = 0,
    ):
        if over_capacity not in ("queue", "reject"):
            raise ValueError(f"over_capacity must be 'queue' or 'reject', got {over_capacity!r}")
        if answer_n not in ("all", "one", "reject"):
            raise ValueError(f"answer_n must be 'all', 'one' or 'reject', got {answer_n!r}")
        self.answer_n = answer_n
        self.responder = responder or default_responder
        self.latency_s = latency_s
        self.max_concurrency = max_concurrency
        self.over_capacity = over_capacity
        self.faults = faults.check(FAULTS) if isinstance(faults, FaultPlan) else faults
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.reject_response_format = reject_response_format
        self.logprobs = logprobs
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self._bucket = _TokenBucket(rps, rps_burst) if rps else None
        self._lock = threading.Lock()
        self._calls = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._counts: Counter[str] = Counter()
        self._by_digest: Counter[str] = Counter()
        self._ok_by_digest: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []
        self._ok_times: list[float] = []
        super().__init__(self._handler_class(), port=port)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The base URL to give the ``openai`` client (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """Counts so far: ``calls``, ``ok``, one count per fault / rejection, ``max_in_flight``, per-body calls."""
        with self._lock:
            return {
                "calls": self._calls,
                "ok": self._counts["ok"],
                "counts": dict(self._counts),
                "max_in_flight": self._max_in_flight,
                "calls_by_digest": dict(self._by_digest),
                "ok_by_digest": dict(self._ok_by_digest),
                "ok_times": list(self._ok_times),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._calls = 0
            self._max_in_flight = 0
            self._counts.clear()
            self._by_digest.clear()
            self._ok_by_digest.clear()
            self._ok_times.clear()
            self.log.clear()

    # ------------------------------------------------------------------ request handling
    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/_stats"):  # for a server run in another process
                    self._send(200, {k: v for k, v in server.stats().items() if k != "ok_times"})
                elif self.path.rstrip("/").endswith("/_reset"):
                    server.reset_stats()
                    self._send(200, {"reset": True})
                elif self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "s3"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
                    return
                path = self.path.rstrip("/")
                if path.endswith("/chat/completions"):
                    server._serve(self, body, chat=True)
                elif path.endswith("/completions"):
                    server._serve(self, body, chat=False)
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _drop(self):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        return Handler

    def _record(self, digest: str, outcome: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._counts[outcome] += 1
            if outcome == "ok":
                self._ok_by_digest[digest] += 1
                self._ok_times.append(time.monotonic())
            self.log.append({"digest": digest, "outcome": outcome, "user": last_user_text(body)[:300], "body": body})

    def _reject_429(self, handler, digest: str, body: dict[str, Any], retry_after: float, outcome: str) -> None:
        self._record(digest, outcome, body)
        handler._send(
            429,
            {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded", "code": "rate_limit"}},
            {"retry-after": f"{retry_after:.3f}", "retry-after-ms": str(int(retry_after * 1000))},
        )

    def _serve(self, handler, body: dict[str, Any], *, chat: bool) -> None:
        digest = body_digest(body)
        with self._lock:
            call_index = self._calls
            self._calls += 1
            self._by_digest[digest] += 1
        if self.answer_n == "reject" and (body.get("n") or 1) > 1:
            self._record(digest, "rejected_n", body)
            handler._send(400, {"error": {"message": "n > 1 is not supported", "type": "invalid_request_error"}})
            return
        if self.reject_response_format and "response_format" in body:
            self._record(digest, "rejected_format", body)
            handler._send(
                400, {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}
            )
            return
        # rate cap
        if self._bucket is not None:
            wait = self._bucket.try_take()
            while wait > 0 and self.over_capacity == "queue":
                time.sleep(wait)
                wait = self._bucket.try_take()
            if wait > 0:
                self._reject_429(handler, digest, body, wait, "rejected_rate")
                return
        # concurrency cap
        if self._slots is not None:
            if not self._slots.acquire(blocking=self.over_capacity == "queue"):
                self._reject_429(handler, digest, body, max(self.latency_s, 0.01), "rejected_concurrency")
                return
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            self._answer(handler, body, chat=chat, digest=digest, call_index=call_index)
        finally:
            with self._lock:
                self._in_flight -= 1
            if self._slots is not None:
                self._slots.release()

    def _answer(self, handler, body: dict[str, Any], *, chat: bool, digest: str, call_index: int) -> None:
        fault = self.faults(call_index, body) if self.faults else None
        if fault == "429":
            self._reject_429(handler, digest, body, self.retry_after_s, "429")
            return
        if fault in ("500", "503"):
            self._record(digest, fault, body)
            handler._send(int(fault), {"error": {"message": "server error", "type": "server_error"}})
            return
        if fault == "drop":
            self._record(digest, fault, body)
            handler._drop()
            return
        if fault == "garbled":
            self._record(digest, fault, body)
            data = b'{"id": "chatcmpl-garbled", "choices": [{"index": 0, "mess'
            handler.send_response(200)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        if fault == "timeout":
            self._record(digest, fault, body)
            time.sleep(self.hang_s)
            handler._drop()
            return
        if self.latency_s:
            time.sleep(self.latency_s)
        n = (body.get("n") or 1) if self.answer_n == "all" else 1
        seed = body.get("seed") or 0
        replies = [self._reply(body if i == 0 else {**body, "seed": seed + i}, fault, chat) for i in range(n)]
        self._record(digest, "ok" if fault is None else fault, body)
        prompt_tokens = max(1, len(json.dumps(body.get("messages") or body.get("prompt") or "")) // 4)
        completion_tokens = sum(max(1, len(text) // 4) for text, _ in replies)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        created = int(time.time())
        model = body.get("model", "fake")
        choices = [self._choice(body, index, text, finish, chat) for index, (text, finish) in enumerate(replies)]
        if chat:
            payload = {"id": f"chatcmpl-{call_index}", "object": "chat.completion", "created": created}
        else:
            payload = {"id": f"cmpl-{call_index}", "object": "text_completion", "created": created}
        payload.update({"model": model, "choices": choices, "usage": usage})
        handler._send(200, payload)

    def _reply(self, body: dict[str, Any], fault: str | None, chat: bool) -> tuple[str, str]:
        """``(text, finish_reason)`` of one choice."""
        finish = "stop"
        if fault == "refusal":
            text = REFUSAL_TEXT
        elif fault == "wrong_label":
            reply = self.responder(body)
            try:
                obj = json.loads(reply)
                obj["label"] = "__wrong__"
                text = json.dumps(obj)
            except (json.JSONDecodeError, TypeError):
                text = reply + ' {"label": "__wrong__"}'
        else:
            text = self.responder(body)
            if fault == "truncated_json":
                text, finish = text[: max(1, len(text) // 2)], "length"
        if not chat:
            text = _continuation(str(body.get("prompt", "")), text)
        return text, finish

    def _choice(self, body: dict[str, Any], index: int, text: str, finish: str, chat: bool) -> dict[str, Any]:
        tokens = _TOKEN.findall(text)[:8] if self.logprobs and body.get("logprobs") else []
        if chat:
            logprobs = None
            if tokens:
                logprobs = {
                    "content": [
                        {
                            "token": t,
                            "logprob": -0.05,
                            "bytes": None,
                            "top_logprobs": [
                                {"token": t, "logprob": -0.05, "bytes": None},
                                {"token": " the", "logprob": -6.0, "bytes": None},
                            ],
                        }
                        for t in tokens
                    ]
                }
            return {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": logprobs,
            }
        logprobs = None
        if tokens:
            logprobs = {
                "tokens": tokens,
                "token_logprobs": [-0.05] * len(tokens),
                "top_logprobs": [{t: -0.05, " the": -6.0} for t in tokens],
                "text_offset": [0] * len(tokens),
            }
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}


def _continuation(prompt: str, reply: str) -> str:
    """Trim the part of ``reply`` that the prompt already holds as an assistant prefill."""
    marker = prompt.rfind("<|im_start|>assistant\n")
    prefill = prompt[marker + len("<|im_start|>assistant\n") :] if marker >= 0 else ""
    if prefill and reply.startswith(prefill):
        return reply[len(prefill) :]
    return reply


def main(argv: list[str] | None = None) -> int:
    """``python -m s3_hf.testing.openai_server --port P [--latency S] [--max-concurrency C] [--rps R]``.

    Serves until killed; prints ``ready <url>`` once listening. ``GET /v1/_stats`` returns the counts and
    ``GET /v1/_reset`` clears them.
    """
    import argparse

    parser = argparse.ArgumentParser(description="loopback OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--rps", type=float, default=None)
    parser.add_argument("--rps-burst", type=float, default=1.0)
    parser.add_argument("--over-capacity", choices=("queue", "reject"), default="queue")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        latency_s=args.latency,
        max_concurrency=args.max_concurrency,
        rps=args.rps,
        rps_burst=args.rps_burst,
        over_capacity=args.over_capacity,
        port=args.port,
    )
    print(f"ready {server.url}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
