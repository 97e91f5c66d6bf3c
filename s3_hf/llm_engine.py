"""The LLM engine: every S3 generation goes through :class:`LLMEngine`.

It speaks to any OpenAI-compatible server (OpenAI, vLLM, TGI, llama.cpp) through the official ``openai`` client,
chosen by configuration only (``base_url``, ``model``, the *name* of the environment variable holding the key). With
``base_url=None`` it starts the embedded local llama.cpp server (:mod:`s3_hf.local_llm`).

- **Fast**: asyncio with bounded concurrency, RPM/TPM budgets (tokens reserved from an estimate, refunded from real
  usage), ``retry-after`` honoured and one shared cool-down after a 429 instead of a retry storm.
- **Nothing lost, nothing paid twice**: every raw response goes to an append-only, fsync'd cache
  (:mod:`s3_hf.response_cache`) keyed by everything that changes the output, including the request's identity
  (``GenerationRequest.key``) and the attempt index; parsing and validation re-run on replay, so a killed run
  restarted repeats no completed call. De-duplication rejections (which of two equal outputs came first) are recorded
  in the cache too and replayed, so a resumed run reaches the same decisions whatever order requests finish in.
- **Outputs you can trust**: JSON schema / JSON mode where the server has it, tolerant parsing otherwise
  (:mod:`s3_hf.output_parsing`), refusal detection, the request's own validator, optional de-duplication, retries of
  invalid outputs up to ``max_attempts``, and a :class:`~s3_hf.generation.GenerationReport` accounting for every
  request.
- **Cost-aware**: :class:`~s3_hf.usage.UsageTracker` per stage and round.

The types it works with have their own modules, re-exported here: :class:`~s3_hf.llm_config.LLMConfig`,
:mod:`s3_hf.generation` (request, result, report) and :mod:`s3_hf.llm_wire` (chat template, logprobs, retry-after).

Example:

```python
>>> engine = LLMEngine(LLMConfig(base_url="http://127.0.0.1:8000/v1", model="gpt-4o-mini", cache_dir="cache"))
>>> request = GenerationRequest(
...     messages=[{"role": "user", "content": 'Write a positive movie review. Answer as JSON: {"text": "..."}'}],
...     validate=lambda obj: ({"text": obj["text"], "label": 1}, None) if obj.get("text") else (None, "empty_text"),
...     key={"task": "imdb", "item": 0},
... )
>>> with engine:
...     results = engine.generate([request], stage="seed")
>>> print(engine.report.format())
```
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .atomic import write_json_atomic
from .dedup import Deduplicator
from .generation import REASON_TRUNCATED, GenerationReport, GenerationRequest, GenerationResult, _reason_code
from .llm_config import CHAT_TEMPLATES, JSON_MODES, LOCAL_MODELS, PREFILL_MODES, LLMConfig, looks_like_secret
from .llm_wire import LOGPROB_POSITIONS, _retry_after, completion_logprobs, render_chatml
from .output_parsing import REASON_REFUSAL, delimiter_leak, extract_json, refusal_reason, unwrap_delimited
from .rate_limit import RateLimiter, estimate_tokens
from .response_cache import ResponseCache, cache_key
from .usage import UsageTracker

__all__ = [
    "CHAT_TEMPLATES",
    "GenerationReport",
    "GenerationRequest",
    "GenerationResult",
    "JSON_MODES",
    "LLMConfig",
    "LLMEngine",
    "LOCAL_MODELS",
    "LOGPROB_POSITIONS",
    "PREFILL_MODES",
    "REASON_TRUNCATED",
    "completion_logprobs",
    "looks_like_secret",
    "render_chatml",
]

logger = logging.getLogger(__name__)

_CACHE_FORMAT = 1


class _CallFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _FormatRejected(Exception):
    """The server rejected response_format (400): fall back to plain output."""


class _LogprobsRejected(Exception):
    """The server rejected the logprobs parameter (400): ask without it."""


class _ChoicesRejected(Exception):
    """The server rejected ``n`` > 1 (400/422): ask the requests of a shared prompt one call each."""


class _Endpoint:
    def __init__(self, client: Any, capacity: int):
        self.client = client
        self.semaphore = asyncio.Semaphore(capacity)
        self.load = 0  # calls in flight or waiting for this endpoint


class _Route:
    """The endpoints of one :meth:`LLMEngine.agenerate` call, the overall concurrency gate, and the sticky
    assignment of request affinities to endpoints. The endpoints are connected on the first API call (:meth:`open`),
    so a batch answered wholly from the cache starts no embedded server."""

    def __init__(self, connect: Callable[[], Awaitable[list[_Endpoint]]], concurrency: Callable[[int], int]):
        self._connect = connect
        self._concurrency = concurrency
        self._lock = asyncio.Lock()
        self.endpoints: list[_Endpoint] = []
        self.gate: asyncio.Semaphore | None = None
        self._failed: BaseException | None = None
        self._sticky: dict[str, _Endpoint] = {}

    async def open(self) -> asyncio.Semaphore:
        """Connect the endpoints once (a failure is raised to every caller, not retried); returns the gate."""
        async with self._lock:
            if self._failed is not None:
                raise self._failed
            if self.gate is None:
                try:
                    self.endpoints = await self._connect()
                except BaseException as err:
                    self._failed = err
                    raise
                self.gate = asyncio.Semaphore(self._concurrency(len(self.endpoints)))
        return self.gate

    def pick(self, affinity: str | None) -> _Endpoint:
        if affinity is not None and affinity in self._sticky:
            return self._sticky[affinity]
        endpoint = min(self.endpoints, key=lambda e: e.load)
        if affinity is not None:
            self._sticky[affinity] = endpoint
        return endpoint


class LLMEngine:
    """Generate validated examples from an OpenAI-compatible LLM. A context manager: ``close()`` stops a local
    server the engine started.

    Args:
        config: how to reach and call the LLM.

    Attributes:
        usage: :class:`~s3_hf.usage.UsageTracker` (per stage/round tokens and cost; ``usage.save(path)``).
        report: :class:`~s3_hf.generation.GenerationReport` over every :meth:`generate` call of this engine.
        cache: the :class:`~s3_hf.response_cache.ResponseCache`, or ``None``.
    """

    def __init__(self, config: LLMConfig | None = None):
        self.config = config or LLMConfig()
        self.usage = UsageTracker(self.config.prices)
        self.report = GenerationReport()
        self.cache = ResponseCache(self.config.cache_dir) if self.config.cache_dir else None
        self.limiter = RateLimiter(self.config.rpm, self.config.tpm)
        # the embedded servers, keyed by whether they keep every prompt token's logits (needed for logprobs)
        self._local_servers: dict[bool, Any] = {}
        self._json_mode = self.config.json_mode
        self._logprobs_ok = True
        self._choices_ok = self.config.shared_prompt_calls  # off after a server answers n > 1 with fewer choices
        if self._json_mode == "auto" and self.config.is_local:
            self._json_mode = "json_object"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LLMEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Log the run's summary (report and usage) and stop the local server if this engine started one."""
        if self.report.requested:
            logger.info("LLM usage:\n%s", self.summary())
        while self._local_servers:
            self._local_servers.popitem()[1].close()

    def _base_urls(self, logprobs: bool = False) -> list[str]:
        """The endpoints to call; for the embedded LLM, the servers for requests with (or without) ``logprobs``,
        started on first use."""
        if not self.config.is_local:
            return [url.strip() for url in self.config.base_url.split(",")]
        logits_all = logprobs or not self.config.local_logprob_servers
        if logits_all not in self._local_servers:
            from .local_llm import LocalLLMServer

            self._local_servers[logits_all] = LocalLLMServer(
                self.config.local_model,
                n_ctx=self.config.local_n_ctx,
                n_threads=self.config.local_threads,
                n_batch=self.config.local_n_batch,
                replicas=self.config.local_replicas or min(os.cpu_count() or 1, 4),
                model_alias=self.config.model,
                logits_all=logits_all,
                prefix_reuse=self.config.local_prefix_reuse,
            ).start()
        return self._local_servers[logits_all].base_urls

    def _api_key(self) -> str:
        # servers without auth (vLLM, llama.cpp, TGI) accept any placeholder; the key itself is never stored
        return os.environ.get(self.config.api_key_env) or "EMPTY"

    # ------------------------------------------------------------------ call construction
    def _prefill_mode(self) -> str:
        if self.config.prefill_mode != "auto":
            return self.config.prefill_mode
        return "completions" if self.config.is_local else "inline"

    def _response_format(self, schema: dict | None, json_mode: str | None = None) -> dict | None:
        mode = json_mode or self._json_mode
        if mode == "auto":
            mode = "schema" if schema else "json_object"
        if mode == "off":
            return None
        if mode == "schema" and schema:
            strict = schema.get("additionalProperties") is False
            return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": strict}}
        fmt: dict[str, Any] = {"type": "json_object"}
        if self.config.is_local and schema:
            fmt["schema"] = schema  # llama.cpp's extension: grammar-constrained to the schema
        return fmt

    def _build_call(
        self,
        request: GenerationRequest,
        attempt: int,
        *,
        json_mode: str | None = None,
        feedback: tuple[str, str] | None = None,
        choices: int = 1,
    ) -> tuple[str, dict[str, Any], str, str | None]:
        """``(endpoint, payload, cache key, prefill the reply continues)`` for one attempt (``json_mode``: override
        the engine's current structured-output mode; ``feedback``: the rejected previous reply and the note that
        follows it, see ``GenerationRequest.retry_notes``; ``choices``: the size of the shared-prompt call whose
        choice answers this request's first attempt, part of its cache key: the choices of one call are other draws
        than calls of their own)."""
        cfg = self.config
        turns = [dict(m) for m in request.messages]
        if feedback is not None:
            turns += [{"role": "assistant", "content": feedback[0]}, {"role": "user", "content": feedback[1]}]
        params: dict[str, Any] = {
            "max_tokens": request.max_tokens or cfg.max_tokens,
            "temperature": cfg.temperature if request.temperature is None else request.temperature,
            "top_p": cfg.top_p,
        }
        prefill = request.prefill or None
        mode = self._prefill_mode() if prefill else None
        wants_logprobs = request.logprobs is not None and self._logprobs_ok
        if mode == "completions":
            if wants_logprobs:
                params["logprobs"] = request.logprobs
            endpoint = "completions"
            payload = {"prompt": render_chatml(turns, prefill), "stop": ["<|im_end|>"], **params}
        else:
            endpoint = "chat"
            messages = turns
            if wants_logprobs:
                params.update(logprobs=True, top_logprobs=request.logprobs)
            payload = {"messages": messages, **params}
            if mode == "continue":
                messages.append({"role": "assistant", "content": prefill})
                payload["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
            fmt = None if mode == "continue" else self._response_format(request.json_schema, json_mode)
            if fmt is not None:
                payload["response_format"] = fmt
        identity = {
            "format": _CACHE_FORMAT,
            "model": cfg.model_id,
            "endpoint": endpoint,
            "payload": payload,
            "schema": request.json_schema,
            "prefill": prefill,
            "prefill_mode": mode,
            "key": request.key,
            "attempt": attempt,
            "seed": cfg.seed,
        }
        if choices > 1:
            identity["choices"] = choices
        key = cache_key(identity)
        if cfg.seed is not None:  # distinct per request and attempt, reproducible
            payload["seed"] = int(hashlib.sha256(f"{cfg.seed}:{key}".encode()).hexdigest()[:8], 16) % (2**31 - 1)
        return endpoint, payload, key, prefill

    # ------------------------------------------------------------------ one HTTP call with retries
    async def _call_api(
        self, endpoint_kind: str, payload: dict[str, Any], route: _Route, affinity: str | None = None
    ) -> list[dict[str, Any]]:
        """The raw reply of each choice (:meth:`_raws`) of one call, retried on transport errors."""
        import openai

        cfg = self.config
        reserved = estimate_tokens(
            payload.get("messages") or payload.get("prompt", ""), payload["max_tokens"] * payload.get("n", 1)
        )
        last = "unknown"
        gate = await route.open()
        for retry in range(cfg.max_retries + 1):
            async with gate:
                endpoint = route.pick(affinity)
                endpoint.load += 1
                async with endpoint.semaphore:
                    try:
                        await self.limiter.acquire(reserved)
                        if endpoint_kind == "chat":
                            response = await endpoint.client.chat.completions.create(model=cfg.model, **payload)
                        else:
                            response = await endpoint.client.completions.create(model=cfg.model, **payload)
                    except openai.RateLimitError as err:
                        wait = _retry_after(err)
                        last = "429"
                        self.limiter.cool_down(wait if wait is not None else self._backoff(retry))
                        self.limiter.settle(reserved=reserved, used=0)
                        self.report.transport_errors["429"] += 1
                        continue  # the shared cool-down is the wait
                    except openai.APITimeoutError:
                        last = "timeout"
                    except openai.APIConnectionError:
                        last = "connection"
                        for server in list(self._local_servers.values()):
                            server.check_alive()  # a dead server is an error of the run, not a retry
                    except openai.InternalServerError as err:
                        last = str(err.status_code)
                    except openai.APIStatusError as err:
                        if err.status_code in (408, 409):
                            last = str(err.status_code)
                        elif err.status_code in (400, 422) and payload.get("n", 1) > 1:
                            raise _ChoicesRejected() from None  # the newest parameter first: asked alone, a
                            # request whose response_format is what the server rejects still falls back below
                        elif (
                            err.status_code == 400 and "response_format" in payload and self.config.json_mode == "auto"
                        ):
                            raise _FormatRejected() from None
                        elif err.status_code == 400 and "logprobs" in payload:
                            raise _LogprobsRejected() from None
                        else:
                            raise _CallFailed(f"api_error_{err.status_code}") from None
                    except (openai.APIError, ValueError):  # a 200 whose body is not a completion (broken proxy)
                        last = "bad_response"
                    else:
                        self.limiter.on_success()
                        return self._raws(response, endpoint_kind, reserved)
                    finally:
                        endpoint.load -= 1
            self.report.transport_errors[last] += 1
            self.limiter.settle(reserved=reserved, used=0)
            if retry < cfg.max_retries:
                await asyncio.sleep(self._backoff(retry))
        raise _CallFailed(f"api_error_{last}")

    def _backoff(self, retry: int) -> float:
        return min(30.0, self.config.backoff_s * 2**retry) * (0.5 + random.random() / 2)

    def _raws(self, response: Any, endpoint_kind: str, reserved: int) -> list[dict[str, Any]]:
        """One raw reply per choice, in the choices' ``index`` order (one, ``text`` ``None``, for a reply without
        choices). The call's whole ``usage`` is the first choice's; the others carry none, so that sums over cached
        replies (what a run paid) count every token once."""
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) or 0
        completion_tokens = getattr(usage, "completion_tokens", None) or 0
        self.limiter.settle(reserved=reserved, used=(prompt_tokens + completion_tokens) if usage else None)
        choices = sorted(response.choices or [None], key=lambda c: getattr(c, "index", None) or 0)
        raws = []
        for choice in choices:
            if endpoint_kind == "chat":
                message = getattr(choice, "message", None)
                text = getattr(message, "content", None) if message is not None else None
                refusal = getattr(message, "refusal", None) if message is not None else None
            else:
                text, refusal = getattr(choice, "text", None), None
            raws.append(
                {
                    "text": text,
                    "logprobs": completion_logprobs(choice, endpoint_kind) if choice is not None else None,
                    "finish_reason": getattr(choice, "finish_reason", None),
                    "refusal": refusal,
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0},
                    "model": getattr(response, "model", None),
                }
            )
        raws[0]["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        return raws

    # ------------------------------------------------------------------ interpretation
    def _interpret(self, request: GenerationRequest, raw: dict[str, Any], prefill: str | None):
        text = raw.get("text")
        if raw.get("refusal"):
            return None, REASON_REFUSAL
        truncated = raw.get("finish_reason") == "length"
        obj, reason = extract_json(text, prefill=prefill, truncated=truncated)
        if obj is None:
            if refusal_reason(text):
                return None, REASON_REFUSAL
            return None, REASON_TRUNCATED if truncated else reason
        if refusal_reason(text, obj):
            return None, REASON_REFUSAL
        for name in request.span_fields:
            if isinstance(obj.get(name), str):
                obj[name] = unwrap_delimited(obj[name])
        leak = delimiter_leak(obj)
        if leak:
            return None, leak
        try:
            example, why = request.validate(obj)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            example, why = None, f"invalid_output: {type(err).__name__}: {err}"
        if example is None:  # a cut-off reply that lost a needed field is "truncated", whatever the validator says
            return None, REASON_TRUNCATED if truncated else (why or "invalid")
        return example, None

    async def _run_one(
        self,
        request: GenerationRequest,
        *,
        stage: str,
        round_index: int,
        route: _Route,
        dedup: Deduplicator | None,
        choices: int = 1,
        prefetched: tuple[dict[str, Any], int] | None = None,
    ) -> GenerationResult:
        """One request through its attempts. ``choices`` > 1: its first attempt is a choice of a shared-prompt call
        (:meth:`_run_group`), given as ``prefetched`` = ``(raw reply, the choice's index)`` (the call counts once,
        with its first choice; the cache records both numbers with the reply) or, where that call gave it no choice,
        asked on its own."""
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "api_calls": 0, "cached": 0}
        reasons: list[str] = []
        text = logprobs = None
        feedback: tuple[str, str] | None = None  # the rejected reply and its note, for the next attempt
        attempt = 0
        choice: int | None = None  # the index of the reply in a shared-prompt call
        while attempt < request.max_attempts:
            shared = choices if attempt == 0 else 1
            endpoint_kind, payload, key, prefill = self._build_call(
                request, attempt, feedback=feedback, choices=shared
            )
            raw = self.cache.get(key) if self.cache is not None else None
            if (
                raw is None
                and self.cache is not None
                and "response_format" in payload
                and self.config.json_mode == "auto"
            ):
                # a run against a server that rejected response_format cached the plain variant: replay it
                fallback = self._build_call(request, attempt, json_mode="off", feedback=feedback, choices=shared)
                if self.cache.get(fallback[2]) is not None:
                    endpoint_kind, payload, key, prefill = fallback
                    raw = self.cache.get(key)
            if raw is not None:
                usage["cached"] += 1
                self.report.cache_hits += 1
                self.usage.add(stage=stage, round_index=round_index, model=self.config.model_id, cached=True)
            else:
                try:
                    if prefetched is not None and attempt == 0:
                        (raw, choice), prefetched = prefetched, None
                        calls = 1 if choice == 0 else 0
                    else:
                        raw, calls, choice = (
                            (await self._call_api(endpoint_kind, payload, route, request.affinity))[0],
                            1,
                            None,
                        )
                except _FormatRejected:
                    logger.warning("the server rejected response_format; falling back to json_mode='off'")
                    self._json_mode = "off"
                    continue  # same attempt, without response_format
                except _LogprobsRejected:
                    logger.warning("the server rejected logprobs; asking without them")
                    self._logprobs_ok = False
                    continue
                except _CallFailed as failed:
                    reasons.append(failed.reason)
                    attempt += 1
                    break  # the call itself failed after every retry: no point in another attempt
                usage["api_calls"] += calls
                usage["prompt_tokens"] += raw["usage"]["prompt_tokens"]
                usage["completion_tokens"] += raw["usage"]["completion_tokens"]
                self.report.api_calls += calls
                self.usage.add(
                    stage=stage,
                    round_index=round_index,
                    model=self.config.model_id,
                    prompt_tokens=raw["usage"]["prompt_tokens"],
                    completion_tokens=raw["usage"]["completion_tokens"],
                )
                if self.cache is not None:
                    audit = {"endpoint": endpoint_kind, "model": self.config.model_id, "key": request.key}
                    audit.update({"attempt": attempt, "stage": stage, "round": round_index, "payload": payload})
                    if choice is not None:  # the call was the payload with "n": choices, this its choice'th reply
                        audit.update({"choice": choice, "choices": choices})
                    self.cache.put(key, raw, request=audit)
            text, logprobs = raw.get("text"), raw.get("logprobs")
            attempt += 1
            example, reason = self._interpret(request, raw, prefill)
            if example is not None and dedup is not None:
                # which of two equal outputs wins depends on completion order, which differs on a resumed run
                # (cached requests finish in request order): replay the original run's rejection instead of
                # re-deciding it, or the other member of the pair would lose and pay for a new attempt
                recorded = self.cache.verdict(key) if self.cache is not None else None
                reason = recorded or dedup.check_and_add(example)
                if reason and recorded is None and self.cache is not None:
                    self.cache.put_verdict(key, reason)
                example = None if reason else example
            if example is not None:
                return GenerationResult(request, example, None, attempt, usage, reasons, text, logprobs)
            reasons.append(_reason_code(reason))
            note = request.retry_notes.get(reasons[-1])
            feedback = None
            if note and text:
                written = text if not prefill or text.lstrip().startswith(prefill.strip()) else prefill + text
                feedback = (written, note)
        last = reasons[-1] if reasons else "invalid"
        return GenerationResult(request, None, last, attempt, usage, reasons, text, logprobs)

    async def _run_group(
        self,
        requests: Sequence[GenerationRequest],
        *,
        stage: str,
        round_index: int,
        route: _Route,
        dedup: Deduplicator | None,
    ) -> list[GenerationResult]:
        """Requests whose first calls would be the same but for the seed (the k candidates of one error): one call
        with ``n`` = their number answers every first attempt, a choice each; each then goes on as
        :meth:`_run_one` (validation, dedup, its own retries). If any of them is in the cache (a resumed run), or the
        server rejected ``n`` or gave fewer choices before, the requests without a choice ask one call each."""
        n = len(requests)
        calls = [self._build_call(r, 0, choices=n) for r in requests]
        endpoint_kind, payload = calls[0][:2]  # the members' payloads differ in the seed alone
        keys = [call[2] for call in calls]
        prefetched: list[tuple[dict[str, Any], int] | None] = [None] * n  # (raw reply, choice index)
        if self._choices_ok and not (self.cache is not None and any(self.cache.get(k) is not None for k in keys)):
            try:
                raws = await self._call_api(endpoint_kind, {**payload, "n": n}, route, requests[0].affinity)
            except _ChoicesRejected:
                logger.warning("the server rejected n=%d; asking requests that share a prompt one call each", n)
                self._choices_ok, raws = False, []
            except (_FormatRejected, _LogprobsRejected, _CallFailed):
                raws = []  # each request asks on its own, where these are handled
            if 0 < len(raws) < n and self._choices_ok:
                logger.warning(
                    "the server answered n=%d with %d choice(s); asking the rest one call each", n, len(raws)
                )
                self._choices_ok = False
            for index, raw in enumerate(raws[:n]):
                prefetched[index] = (raw, index)
        return list(
            await asyncio.gather(
                *(
                    self._run_one(
                        r, stage=stage, round_index=round_index, route=route, dedup=dedup, choices=n, prefetched=p
                    )
                    for r, p in zip(requests, prefetched)
                )
            )
        )

    def _shared_prompt_units(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Indices of ``requests`` in units asked together: requests with the same ``affinity`` whose first calls
        differ in the seed alone share one call (``LLMConfig.shared_prompt_calls``); every other request is a unit of
        its own."""
        units: list[list[int]] = []
        groups: dict[tuple[str, str], list[int]] = {}
        for index, request in enumerate(requests):
            if not self.config.shared_prompt_calls or request.affinity is None or request.logprobs is not None:
                units.append([index])
                continue
            payload = {k: v for k, v in self._build_call(request, 0)[1].items() if k != "seed"}
            groups.setdefault((request.affinity, cache_key(payload)), []).append(index)
        return sorted(units + list(groups.values()), key=lambda unit: unit[0])

    # ------------------------------------------------------------------ public API
    async def agenerate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        stage: str,
        round_index: int = 0,
        desc: str | None = None,
        dedup: Deduplicator | None = None,
    ) -> list[GenerationResult]:
        """Async :meth:`generate`."""
        import openai
        from tqdm.auto import tqdm

        requests = list(requests)
        if not requests:
            return []
        # a call whose requests ask for logprobs (the verifier's) goes to the embedded servers that can give them
        logprobs = any(r.logprobs is not None for r in requests)
        per_endpoint = 2 if self.config.is_local else self.config.max_concurrency
        clients: list[Any] = []

        async def connect() -> list[_Endpoint]:
            for url in await asyncio.to_thread(self._base_urls, logprobs):
                clients.append(
                    openai.AsyncOpenAI(
                        base_url=url, api_key=self._api_key(), max_retries=0, timeout=self.config.timeout_s
                    )
                )
            return [_Endpoint(client, per_endpoint) for client in clients]

        route = _Route(connect, lambda n: min(self.config.max_concurrency, per_endpoint * n))
        bar = tqdm(total=len(requests), desc=desc or stage, unit="req", disable=not self.config.progress)
        accepted = 0
        started = time.monotonic()

        async def run(unit: list[int]) -> list[GenerationResult]:
            nonlocal accepted
            asked = [requests[i] for i in unit]
            context = {"stage": stage, "round_index": round_index, "route": route, "dedup": dedup}
            if len(asked) == 1:
                done = [await self._run_one(asked[0], **context)]
            else:
                done = await self._run_group(asked, **context)
            for result in done:
                self.report._add(result, stage)
                accepted += result.example is not None
            bar.update(len(done))
            bar.set_postfix(accepted=accepted, refresh=False)
            return done

        units = self._shared_prompt_units(requests)
        results: list[Any] = [None] * len(requests)
        try:
            for unit, done in zip(units, await asyncio.gather(*(run(u) for u in units))):
                for index, result in zip(unit, done):
                    results[index] = result
        finally:
            bar.close()
            for client in clients:
                await client.close()
        logger.info(
            "%s round %d: %d requests, %d accepted in %.1fs; %s",
            stage,
            round_index,
            len(requests),
            accepted,
            time.monotonic() - started,
            self.report.format(),
        )
        return list(results)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        stage: str,
        round_index: int = 0,
        desc: str | None = None,
        dedup: Deduplicator | None = None,
    ) -> list[GenerationResult]:
        """Generate one result per request, in order.

        Args:
            requests: what to generate.
            stage: usage/report bucket (``"rationale"``, ``"seed"``, ``"extrapolate"``...).
            round_index: S3 round, for usage per round.
            desc: progress-bar label (default: ``stage``).
            dedup: drop (and retry) examples that repeat one already seen; accepted examples are added to it.

        Returns:
            a :class:`GenerationResult` per request; ``report`` counts every one of them.
        """
        coroutine = self.agenerate(requests, stage=stage, round_index=round_index, desc=desc, dedup=dedup)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from a running loop (e.g. Jupyter)
            return pool.submit(asyncio.run, coroutine).result()

    def summary(self) -> str:
        """The report and the usage table, for the end of a run."""
        return f"{self.report.format()}\n{self.usage.format_table()}"

    def save_summary(self, path: str | os.PathLike) -> str:
        """Write ``{"model", "report", "usage"}`` as JSON (atomically); returns the path."""
        payload = {"model": self.config.model_id, "report": self.report.as_dict(), "usage": self.usage.summary()}
        return os.fspath(write_json_atomic(path, payload))
