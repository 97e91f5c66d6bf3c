"""What one LLM generation asks for and what it gives back.

:class:`GenerationRequest` (messages, validator, cache identity), :class:`GenerationResult` (an accepted example or
the reason it was dropped) and :class:`GenerationReport` (every request accounted for), as used by
:class:`~s3_hf.llm_engine.LLMEngine`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import S3ConfigError

REASON_TRUNCATED = "truncated"


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
        affinity: requests with the same affinity go to the same server when there are several; those of them
            whose first calls differ in the seed alone (the k candidates of one error) are asked in one call with
            OpenAI's ``n`` (``LLMConfig.shared_prompt_calls``): their prompt is paid once.
        retry_notes: rejection reason code -> a note for the model. The attempt after a reply rejected for such a
            reason sees that reply and the note as the next turns of the chat, as validation feedback (e.g. copied
            text: "write new sentences"); after other rejections the same prompt is asked again.
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
    retry_notes: dict[str, str] = field(default_factory=dict)

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


def _reason_code(reason: str | None) -> str:
    return (reason or "invalid").split(":", 1)[0].strip() or "invalid"
