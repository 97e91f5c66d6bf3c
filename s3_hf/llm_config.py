"""The LLM settings: :class:`LLMConfig`, how to reach the LLM and how to call it, validated on construction.

Every field carries ``metadata={"help": ...}``, so ``HfArgumentParser`` turns the dataclass into CLI flags. A key
never reaches a message: ``api_key_env`` holds the *name* of the environment variable with the key, and
:func:`looks_like_secret` decides which values an error must not echo.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from .assets import GGUF_MODELS
from .errors import S3ConfigError
from .usage import DEFAULT_PRICES, PriceTable

JSON_MODES = ("schema", "json_object", "off", "auto")
PREFILL_MODES = ("auto", "completions", "continue", "inline")
LOCAL_MODELS = GGUF_MODELS
CHAT_TEMPLATES = ("chatml",)


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
    local_logprob_servers: bool = field(
        default=True,
        metadata=_help(
            "local llama.cpp: answer requests that ask for logprobs (the LLM verifier) from servers of their own, "
            "started on the first such request, which keep every prompt token's logits as llama-cpp-python needs "
            "for logprobs; the servers that write text then keep only the last token's, which makes their prompts "
            "cheaper (benchmarks/local_logits.py: 0.89x the seconds, same text). False: one set of servers keeps "
            "every token's logits and answers everything"
        ),
    )
    local_prefix_reuse: bool = field(
        default=False,
        metadata=_help(
            "local llama.cpp: let a server reuse the KV cache of its previous prompt (llama-cpp-python's own "
            "behaviour; benchmarks/prefix_reuse.py: 0.91x the seconds per call, but a third of the replies then "
            "depend on which request the server answered before). False (the default since 2026-12-07): every prompt "
            "is evaluated whole, so a reply depends on the request and its seed alone"
        ),
    )
    shared_prompt_calls: bool = field(
        default=True,
        metadata=_help(
            "requests with the same affinity and the same prompt (the k candidates of one error) are asked in one call "
            "with OpenAI's n, a choice each: the prompt's tokens are paid once and the embedded server evaluates it "
            "once. Servers that answer fewer choices (llama-cpp-python's own, TGI) get the rest one call each"
        ),
    )
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
