"""Loopback servers for tests and benchmarks (no network beyond 127.0.0.1).

- :class:`~s3_hf.testing.openai_server.FakeOpenAIServer`: an OpenAI-compatible chat/completions server with fixed
  latency, a concurrency or rate cap, and fault injection.
"""

from .openai_server import FAULTS, FakeOpenAIServer, FaultPlan, default_responder

__all__ = ["FAULTS", "FakeOpenAIServer", "FaultPlan", "default_responder"]
