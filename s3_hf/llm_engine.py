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
  invalid outputs up to ``max_attempts``, and a :class:`GenerationReport` accounting for every request.
- **Cost-aware**: :class:`~s3_hf.usage.UsageTracker` per stage and round.

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
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .atomic import write_json_atomic
from .dedup import Deduplicator
from .errors import S3ConfigError
from .output_parsing import REASON_REFUSAL, delimiter_leak, extract_json, refusal_reason, unwrap_delimited
from .rate_limit import RateLimiter, estimate_tokens
from .response_cache import ResponseCache, cache_key
from .usage import DEFAULT_PRICES, PriceTable, UsageTracker

logger = logging.getLogger(__name__)

JSON_MODES = ("schema", "json_object", "off", "auto")
PREFILL_MODES = ("auto", "completions", "continue", "inline")
LOCAL_MODELS = ("qwen2.5-coder-0.5b", "smollm2")
CHAT_TEMPLATES = ("chatml",)
REASON_TRUNCATED = "truncated"
_CACHE_FORMAT = 1


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_PREFIXES = ("sk-", "sk_", "hf_", "gsk_", "xai-", "ghp_", "gho_", "github_pat_", "glpat-", "AIza", "Bearer ")


def looks_like_secret(value: Any) -> bool:
    """Whether ``value`` could be a credential and must not be echoed: a known key prefix (``sk-``, ``hf_``...), a URL
    with credentials (``https://user:key@host``), or a long token mixing lower case and digits (paths aside)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    if text.startswith(_SECRET_PREFIXES):
        return True
    if "://" in text:
        return "@" in text.split("://", 1)[1].split("/", 1)[0]
    if len(text) < 20 or any(c.isspace() or c in "/\\" for c in text):
        return False
    return any(c.islower() for c in text) and any(c.isdigit() for c in text)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class LLMConfig:
    """How to reach the LLM and how to call it. Every field can come from a CLI via ``HfArgumentParser``."""

    base_url: str | None = field(
        default=None,
        metadata=_help(
            "OpenAI-compatible base URL (e.g. https://api.openai.com/v1); None starts the local llama.cpp server"
        ),
    )
    model: str = field(default="local", metadata=_help("model name sent to the server"))
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata=_help("name of the environment variable holding the API key (never the key)"),
    )
    local_model: str = field(
        default="qwen2.5-coder-0.5b", metadata=_help(f"local GGUF model when base_url is None: one of {LOCAL_MODELS}")
    )
    max_concurrency: int = field(default=8, metadata=_help("requests in flight at once"))
    rpm: int | None = field(default=None, metadata=_help("requests-per-minute budget (None: unlimited)"))
    tpm: int | None = field(default=None, metadata=_help("tokens-per-minute budget (None: unlimited)"))
    timeout_s: float = field(default=120.0, metadata=_help("timeout of one HTTP call, seconds"))
    max_retries: int = field(
        default=6, metadata=_help("retries of one call after 429/5xx/timeouts/dropped connections (then dropped)")
    )
    backoff_s: float = field(default=0.5, metadata=_help("first retry delay; doubles per retry, capped at 30 s"))
    temperature: float = field(default=1.0, metadata=_help("sampling temperature"))
    top_p: float = field(default=1.0, metadata=_help("nucleus sampling top_p"))
    max_tokens: int = field(default=256, metadata=_help("completion token limit per call"))
    seed: int | None = field(
        default=None, metadata=_help("base seed; each call gets its own seed derived from it and the request key")
    )
    json_mode: str = field(
        default="auto",
        metadata=_help(
            "structured output: 'schema' (json_schema response_format), 'json_object', 'off' (tolerant parsing "
            "only) or 'auto' (schema if given, else json_object; falls back to 'off' if the server rejects it)"
        ),
    )
    prefill_mode: str = field(
        default="auto",
        metadata=_help(
            "how GenerationRequest.prefill reaches the model: 'completions' (chat template applied here, legacy "
            "completions endpoint), 'continue' (vLLM continue_final_message), 'inline' (not sent; parsing accepts "
            "replies with or without it) or 'auto' (completions for the local server, inline otherwise)"
        ),
    )
    chat_template: str = field(
        default="chatml", metadata=_help(f"template for prefill_mode='completions': {CHAT_TEMPLATES}")
    )
    cache_dir: str | None = field(default=None, metadata=_help("folder of the append-only response cache (None: off)"))
    prices: PriceTable = field(
        default_factory=lambda: PriceTable(DEFAULT_PRICES),
        metadata=_help(
            "model -> ($ per 1M prompt tokens, $ per 1M completion tokens): a dict, or on a CLI a JSON object "
            """such as '{"my-model": [0.2, 0.8]}' (replaces the default table)"""
        ),
    )
    local_replicas: int = field(
        default=0,
        metadata=_help(
            "local llama.cpp servers to start, each serving one request at a time (0: auto = one per core, at "
            "most 4, each with cores/replicas threads; see benchmarks/llm_throughput.py --local)"
        ),
    )
    local_threads: int | None = field(
        default=None, metadata=_help("CPU threads per local server (None: cores/replicas)")
    )
    local_n_ctx: int = field(default=2048, metadata=_help("context size of the local server"))
    local_n_batch: int = field(default=512, metadata=_help("prompt batch size of the local server"))
    progress: bool = field(default=True, metadata=_help("show tqdm progress bars"))

    def __post_init__(self):
        def bad(name: str, rule: str):
            value = getattr(self, name)
            shown = "a value that looks like an API key (not shown)" if looks_like_secret(value) else repr(value)
            raise S3ConfigError(f"LLMConfig.{name} {rule}, got {shown}")

        if self.base_url is not None and not all(
            url.strip().startswith(("http://", "https://")) for url in str(self.base_url).split(",")
        ):
            bad("base_url", "must start with http:// or https:// (or be None for the local server)")
        if not self.model:
            bad("model", "must be a non-empty model name")
        # never echo api_key_env: a key pasted here by mistake must not reach a log or a traceback
        if looks_like_secret(self.api_key_env):
            raise S3ConfigError(
                "LLMConfig.api_key_env looks like an API key, not the NAME of an environment variable (e.g. "
                "OPENAI_API_KEY); the value is not shown. Put the key in that variable, never in the config"
            )
        if not isinstance(self.api_key_env, str) or not _ENV_NAME.fullmatch(self.api_key_env):
            raise S3ConfigError(
                "LLMConfig.api_key_env must be the NAME of an environment variable (letters, digits, _; e.g. "
                f"OPENAI_API_KEY), got a value of {len(str(self.api_key_env or ''))} characters (not shown)"
            )
        if self.base_url is None and self.local_model not in LOCAL_MODELS and not self.local_model.endswith(".gguf"):
            bad("local_model", f"must be one of {LOCAL_MODELS} or a .gguf path")
        if self.local_replicas < 0:
            bad("local_replicas", "must be >= 0 (0: auto)")
        for name in ("max_concurrency", "max_tokens", "local_n_batch"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        for name in ("rpm", "tpm", "local_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad(name, "must be >= 1 or None")
        if self.max_retries < 0:
            bad("max_retries", "must be >= 0")
        if not self.timeout_s > 0:
            bad("timeout_s", "must be > 0")
        if self.backoff_s < 0:
            bad("backoff_s", "must be >= 0")
        if not 0 <= self.temperature <= 2:
            bad("temperature", "must be in [0, 2]")
        if not 0 < self.top_p <= 1:
            bad("top_p", "must be in (0, 1]")
        if self.json_mode not in JSON_MODES:
            bad("json_mode", f"must be one of {JSON_MODES}")
        if self.prefill_mode not in PREFILL_MODES:
            bad("prefill_mode", f"must be one of {PREFILL_MODES}")
        if self.chat_template not in CHAT_TEMPLATES:
            bad("chat_template", f"must be one of {CHAT_TEMPLATES}")
        if self.local_n_ctx < 256:
            bad("local_n_ctx", "must be >= 256")
        try:
            self.prices = PriceTable(self.prices)
        except (TypeError, ValueError) as err:
            raise S3ConfigError(f"LLMConfig.prices: {err}") from None
        for model, price in self.prices.items():
            if len(tuple(price)) != 2 or any(float(p) < 0 for p in price):
                raise S3ConfigError(
                    f"LLMConfig.prices[{model!r}] must be (prompt $/1M, completion $/1M), got {price!r}"
                )

    @property
    def is_local(self) -> bool:
        return self.base_url is None

    @property
    def model_id(self) -> str:
        """The model identity used in cache keys and usage: ``model`` for a server, ``local:<name>`` locally."""
        return f"local:{os.path.basename(self.local_model)}" if self.is_local else self.model


@dataclass
class GenerationRequest:
    """One thing to generate.

    Args:
        messages: chat messages (``{"role": ..., "content": ...}``).
        validate: parsed JSON object -> ``(example, None)`` or ``(None, reason)``; reasons are short codes such as
            ``"wrong_label"`` (text after a ``":"`` is detail and is not counted separately).
        key: stable identity for the cache: task fingerprint, prompt version, stage, item id, sample index...
        json_schema: JSON schema of the expected object (used for structured output where supported).
        prefill: assistant-turn prefill (e.g. ``'{"text": "'``) for local models; the reply continues it.
        max_attempts: invalid outputs are retried up to this many attempts, then dropped with the last reason.
        meta: passed through to the result untouched.
        max_tokens: overrides :attr:`LLMConfig.max_tokens` for this request.
        temperature: overrides :attr:`LLMConfig.temperature` for this request.
        span_fields: fields the model is asked to copy from the delimited data (a QA answer span): a delimiter tag
            pair wrapped around such a field (``"<data>1833</data>"``) is removed instead of rejecting the reply as a
            delimiter leak; the validator still checks the span.
        logprobs: ask for this many top alternatives per generated token (``GenerationResult.logprobs``); servers
            that do not return them (or reject the parameter) give ``None``, never an error.
        affinity: requests with the same affinity go to the same server when there are several (a local server
            reuses the KV cache of a prompt it has just processed: the k candidates of one error cost one prompt).
    """

    messages: list[dict[str, str]]
    validate: Callable[[dict], tuple[dict | None, str | None]]
    key: dict
    json_schema: dict | None = None
    prefill: str | None = None
    max_attempts: int = 3
    meta: dict = field(default_factory=dict)
    max_tokens: int | None = None
    temperature: float | None = None
    span_fields: tuple[str, ...] = ()
    logprobs: int | None = None
    affinity: str | None = None

    def __post_init__(self):
        if self.logprobs is not None and not 1 <= self.logprobs <= 20:
            raise S3ConfigError(f"GenerationRequest.logprobs must be in 1..20 or None, got {self.logprobs!r}")
        if not self.messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in self.messages):
            raise S3ConfigError(
                f"GenerationRequest.messages must be chat messages with role/content, got {self.messages!r}"
            )
        if self.max_attempts < 1:
            raise S3ConfigError(f"GenerationRequest.max_attempts must be >= 1, got {self.max_attempts!r}")
        if not isinstance(self.key, dict):
            raise S3ConfigError(f"GenerationRequest.key must be a dict, got {self.key!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise S3ConfigError(f"GenerationRequest.max_tokens must be >= 1 or None, got {self.max_tokens!r}")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise S3ConfigError(f"GenerationRequest.temperature must be in [0, 2] or None, got {self.temperature!r}")


@dataclass
class GenerationResult:
    """The outcome of one request: ``example`` (accepted) or ``reason`` (dropped), never both.

    Attributes:
        attempts: attempts used (each attempt is one completion, from the API or the cache).
        usage: ``{"prompt_tokens", "completion_tokens", "api_calls", "cached"}`` spent on this request.
        reasons: the rejection reason of each failed attempt, in order.
        text: the last raw completion.
        logprobs: top alternatives of the last completion's first tokens, one ``{token: logprob}`` per position
            (``None`` when not asked for or the server gave none).
    """

    request: GenerationRequest
    example: dict | None
    reason: str | None
    attempts: int
    usage: dict
    reasons: list[str] = field(default_factory=list)
    text: str | None = None
    logprobs: list[dict[str, float]] | None = None

    @property
    def accepted(self) -> bool:
        return self.example is not None


@dataclass
class GenerationReport:
    """Every request accounted for: ``requested == accepted + sum(rejected.values())``.

    Attributes:
        rejected: final drop reason -> count. ``attempt_rejections``: reason -> count over all failed attempts.
        api_calls: completions bought from the API; ``cache_hits``: completions replayed from the cache.
        transport_errors: retried HTTP failures by kind (429, 5xx, timeout, connection).
        by_stage: the same counts per stage.
    """

    requested: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    attempt_rejections: Counter = field(default_factory=Counter)
    api_calls: int = 0
    cache_hits: int = 0
    transport_errors: Counter = field(default_factory=Counter)
    by_stage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _add(self, result: GenerationResult, stage: str) -> None:
        row = self.by_stage.setdefault(stage, {"requested": 0, "accepted": 0, "rejected": Counter()})
        self.requested += 1
        row["requested"] += 1
        if result.example is not None:
            self.accepted += 1
            row["accepted"] += 1
        else:
            self.rejected[result.reason] += 1
            row["rejected"][result.reason] += 1
        self.attempt_rejections.update(result.reasons)

    @property
    def consistent(self) -> bool:
        return self.requested == self.accepted + sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "attempt_rejections": dict(self.attempt_rejections),
            "api_calls": self.api_calls,
            "cache_hits": self.cache_hits,
            "transport_errors": dict(self.transport_errors),
            "by_stage": {
                s: {"requested": r["requested"], "accepted": r["accepted"], "rejected": dict(r["rejected"])}
                for s, r in self.by_stage.items()
            },
        }

    def format(self) -> str:
        rejected = ", ".join(f"{k}={v}" for k, v in self.rejected.most_common()) or "none"
        return (
            f"requested {self.requested}, accepted {self.accepted}, rejected {sum(self.rejected.values())} "
            f"({rejected}); api calls {self.api_calls}, cache hits {self.cache_hits}"
            + (f", retried errors {dict(self.transport_errors)}" if self.transport_errors else "")
        )


class _CallFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _FormatRejected(Exception):
    """The server rejected response_format (400): fall back to plain output."""


class _LogprobsRejected(Exception):
    """The server rejected the logprobs parameter (400): ask without it."""


LOGPROB_POSITIONS = 8  # generated positions kept: a label word, after an un-prefilled `{"label": "` on chat endpoints


def completion_logprobs(choice: Any, endpoint_kind: str) -> list[dict[str, float]] | None:
    """``[{token: logprob}, ...]`` for the first :data:`LOGPROB_POSITIONS` generated tokens of a choice, from the
    chat form (``logprobs.content[i].top_logprobs``) or the legacy completions form (``logprobs.top_logprobs``)."""
    data = getattr(choice, "logprobs", None)
    if data is None:
        return None
    out: list[dict[str, float]] = []
    if endpoint_kind == "chat":
        for item in (getattr(data, "content", None) or [])[:LOGPROB_POSITIONS]:
            top = {t.token: float(t.logprob) for t in (getattr(item, "top_logprobs", None) or [])}
            if getattr(item, "token", None) is not None and item.logprob is not None:
                top.setdefault(item.token, float(item.logprob))
            out.append(top)
    else:
        tokens = getattr(data, "tokens", None) or []
        chosen = getattr(data, "token_logprobs", None) or []
        tops = getattr(data, "top_logprobs", None) or []
        for i in range(min(len(tokens), LOGPROB_POSITIONS)):
            top = {str(k): float(v) for k, v in dict(tops[i] or {}).items()} if i < len(tops) else {}
            if i < len(chosen) and chosen[i] is not None:
                top.setdefault(tokens[i], float(chosen[i]))
            out.append(top)
    return out if any(out) else None


def render_chatml(messages: Sequence[dict[str, str]], prefill: str = "") -> str:
    """ChatML (Qwen, SmolLM2): ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, then the open assistant turn."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + f"<|im_start|>assistant\n{prefill}"


def _reason_code(reason: str | None) -> str:
    return (reason or "invalid").split(":", 1)[0].strip() or "invalid"


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return min(seconds, 60.0)
    return None


class _Endpoint:
    def __init__(self, client: Any, capacity: int):
        self.client = client
        self.semaphore = asyncio.Semaphore(capacity)
        self.load = 0  # calls in flight or waiting for this endpoint


class _Route:
    """The endpoints of one :meth:`LLMEngine.agenerate` call, the overall concurrency gate, and the sticky
    assignment of request affinities to endpoints."""

    def __init__(self, endpoints: list[_Endpoint], gate: asyncio.Semaphore):
        self.endpoints = endpoints
        self.gate = gate
        self._sticky: dict[str, _Endpoint] = {}

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
        report: :class:`GenerationReport` over every :meth:`generate` call of this engine.
        cache: the :class:`~s3_hf.response_cache.ResponseCache`, or ``None``.
    """

    def __init__(self, config: LLMConfig | None = None):
        self.config = config or LLMConfig()
        self.usage = UsageTracker(self.config.prices)
        self.report = GenerationReport()
        self.cache = ResponseCache(self.config.cache_dir) if self.config.cache_dir else None
        self.limiter = RateLimiter(self.config.rpm, self.config.tpm)
        self._local_server = None
        self._json_mode = self.config.json_mode
        self._logprobs_ok = True
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
        if self._local_server is not None:
            self._local_server.close()
            self._local_server = None

    def _base_urls(self) -> list[str]:
        if not self.config.is_local:
            return [url.strip() for url in self.config.base_url.split(",")]
        if self._local_server is None:
            from .local_llm import LocalLLMServer

            self._local_server = LocalLLMServer(
                self.config.local_model,
                n_ctx=self.config.local_n_ctx,
                n_threads=self.config.local_threads,
                n_batch=self.config.local_n_batch,
                replicas=self.config.local_replicas or min(os.cpu_count() or 1, 4),
                model_alias=self.config.model,
            ).start()
        return self._local_server.base_urls

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
        self, request: GenerationRequest, attempt: int, *, json_mode: str | None = None
    ) -> tuple[str, dict[str, Any], str, str | None]:
        """``(endpoint, payload, cache key, prefill the reply continues)`` for one attempt (``json_mode``: override
        the engine's current structured-output mode)."""
        cfg = self.config
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
            payload = {"prompt": render_chatml(request.messages, prefill), "stop": ["<|im_end|>"], **params}
        else:
            endpoint = "chat"
            messages = [dict(m) for m in request.messages]
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
        key = cache_key(identity)
        if cfg.seed is not None:  # distinct per request and attempt, reproducible
            payload["seed"] = int(hashlib.sha256(f"{cfg.seed}:{key}".encode()).hexdigest()[:8], 16) % (2**31 - 1)
        return endpoint, payload, key, prefill

    # ------------------------------------------------------------------ one HTTP call with retries
    async def _call_api(
        self, endpoint_kind: str, payload: dict[str, Any], route: _Route, affinity: str | None = None
    ) -> dict[str, Any]:
        import openai

        cfg = self.config
        reserved = estimate_tokens(payload.get("messages") or payload.get("prompt", ""), payload["max_tokens"])
        last = "unknown"
        for retry in range(cfg.max_retries + 1):
            async with route.gate:
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
                    except openai.InternalServerError as err:
                        last = str(err.status_code)
                    except openai.APIStatusError as err:
                        if err.status_code in (408, 409):
                            last = str(err.status_code)
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
                        return self._raw(response, endpoint_kind, reserved)
                    finally:
                        endpoint.load -= 1
            self.report.transport_errors[last] += 1
            self.limiter.settle(reserved=reserved, used=0)
            if retry < cfg.max_retries:
                await asyncio.sleep(self._backoff(retry))
        raise _CallFailed(f"api_error_{last}")

    def _backoff(self, retry: int) -> float:
        return min(30.0, self.config.backoff_s * 2**retry) * (0.5 + random.random() / 2)

    def _raw(self, response: Any, endpoint_kind: str, reserved: int) -> dict[str, Any]:
        choice = response.choices[0] if response.choices else None
        if endpoint_kind == "chat":
            message = getattr(choice, "message", None)
            text = getattr(message, "content", None) if message is not None else None
            refusal = getattr(message, "refusal", None) if message is not None else None
        else:
            text, refusal = getattr(choice, "text", None), None
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) or 0
        completion_tokens = getattr(usage, "completion_tokens", None) or 0
        self.limiter.settle(reserved=reserved, used=(prompt_tokens + completion_tokens) if usage else None)
        return {
            "text": text,
            "logprobs": completion_logprobs(choice, endpoint_kind) if choice is not None else None,
            "finish_reason": getattr(choice, "finish_reason", None),
            "refusal": refusal,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
            "model": getattr(response, "model", None),
        }

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
    ) -> GenerationResult:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "api_calls": 0, "cached": 0}
        reasons: list[str] = []
        text = logprobs = None
        attempt = 0
        while attempt < request.max_attempts:
            endpoint_kind, payload, key, prefill = self._build_call(request, attempt)
            raw = self.cache.get(key) if self.cache is not None else None
            if raw is None and self.cache is not None and "response_format" in payload and self.config.json_mode == "auto":
                # a run against a server that rejected response_format cached the plain variant: replay it
                fallback = self._build_call(request, attempt, json_mode="off")
                if self.cache.get(fallback[2]) is not None:
                    endpoint_kind, payload, key, prefill = fallback
                    raw = self.cache.get(key)
            if raw is not None:
                usage["cached"] += 1
                self.report.cache_hits += 1
                self.usage.add(stage=stage, round_index=round_index, model=self.config.model_id, cached=True)
            else:
                try:
                    raw = await self._call_api(endpoint_kind, payload, route, request.affinity)
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
                usage["api_calls"] += 1
                usage["prompt_tokens"] += raw["usage"]["prompt_tokens"]
                usage["completion_tokens"] += raw["usage"]["completion_tokens"]
                self.report.api_calls += 1
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
        last = reasons[-1] if reasons else "invalid"
        return GenerationResult(request, None, last, attempt, usage, reasons, text, logprobs)

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
        base_urls = await asyncio.to_thread(self._base_urls)
        per_endpoint = 2 if self.config.is_local else self.config.max_concurrency
        clients = [
            openai.AsyncOpenAI(base_url=url, api_key=self._api_key(), max_retries=0, timeout=self.config.timeout_s)
            for url in base_urls
        ]
        endpoints = [_Endpoint(client, per_endpoint) for client in clients]
        route = _Route(endpoints, asyncio.Semaphore(min(self.config.max_concurrency, per_endpoint * len(endpoints))))
        bar = tqdm(total=len(requests), desc=desc or stage, unit="req", disable=not self.config.progress)
        accepted = 0
        started = time.monotonic()

        async def run(request: GenerationRequest) -> GenerationResult:
            nonlocal accepted
            result = await self._run_one(
                request, stage=stage, round_index=round_index, route=route, dedup=dedup
            )
            self.report._add(result, stage)
            accepted += result.example is not None
            bar.update(1)
            bar.set_postfix(accepted=accepted, refresh=False)
            return result

        try:
            results = await asyncio.gather(*(run(r) for r in requests))
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
