"""An in-process stand-in for :class:`s3_hf.llm_engine.LLMEngine` used by the synthesis/extrapolation unit tests.

It answers each request with ``responder(request)`` (a dict, as the LLM's parsed JSON), runs the request's own
validator like the real engine does, and records every request it saw.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace


class FakeEngine:
    def __init__(self, responder):
        self.responder = responder
        self.seen = []
        self.calls = Counter()

    def generate(self, requests, *, stage, round_index=0, desc=None):
        out = []
        for request in requests:
            self.seen.append((stage, round_index, request))
            self.calls[stage] += 1
            example, reason = request.validate(self.responder(request))
            out.append(SimpleNamespace(request=request, example=example, reason=reason, attempts=1, usage=None))
        return out


def user_prompt(request) -> str:
    return request.messages[-1]["content"]


# TEMPORARY until s3_hf.llm_engine lands: a stub GenerationRequest with the contract's fields
try:
    import s3_hf.llm_engine  # noqa: F401
except ImportError:  # pragma: no cover
    import sys
    import types
    from dataclasses import dataclass, field

    @dataclass
    class GenerationRequest:
        messages: list
        validate: object
        key: dict
        json_schema: dict | None = None
        prefill: str | None = None
        max_attempts: int = 3
        meta: dict = field(default_factory=dict)

    _stub = types.ModuleType("s3_hf.llm_engine")
    _stub.GenerationRequest = GenerationRequest
    sys.modules["s3_hf.llm_engine"] = _stub
