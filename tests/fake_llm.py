"""An in-process stand-in for :class:`s3_hf.llm_engine.LLMEngine` used by the synthesis/extrapolation unit tests.

It answers each request with ``responder(request)`` (a dict, as the LLM's parsed JSON), runs the request's own
validator like the real engine does, and records every request it saw.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace


class FakeEngine:
    def __init__(self, responder, usage=None):
        self.responder = responder
        self.seen = []
        self.calls = Counter()
        self.usage = usage  # an optional UsageTracker: each request adds 10 prompt + 5 completion tokens

    def generate(self, requests, *, stage, round_index=0, desc=None, dedup=None):
        out = []
        for request in requests:
            self.seen.append((stage, round_index, request))
            self.calls[stage] += 1
            if self.usage is not None:
                self.usage.add(
                    stage=stage, round_index=round_index, model="fake", prompt_tokens=10, completion_tokens=5
                )
            example, reason = request.validate(self.responder(request))
            if example is not None and dedup is not None:
                reason = dedup.check_and_add(example)
                example = None if reason else example
            out.append(SimpleNamespace(request=request, example=example, reason=reason, attempts=1, usage=None))
        return out


def user_prompt(request) -> str:
    return request.messages[-1]["content"]
