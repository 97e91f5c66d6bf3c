"""The OpenAI wire format, independent of the engine.

:func:`render_chatml` (the chat template for the legacy completions endpoint), :func:`completion_logprobs` (top
alternatives from a chat or a completions choice) and the ``retry-after`` headers of a 429.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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
