"""Loopback servers for tests and benchmarks (no network beyond 127.0.0.1).

- :class:`~s3_hf.testing.openai_server.FakeOpenAIServer`: an OpenAI-compatible chat/completions server with fixed
  latency, a concurrency or rate cap, and fault injection.
- :class:`~s3_hf.testing.hub_server.HubServer`: the Hub's HTTP API for pushes and ``load_dataset``.
- :class:`~s3_hf.testing.faults.FaultPlan`: seeded faults for both.
"""

from .faults import FaultPlan
from .openai_server import FAULTS, FakeOpenAIServer, default_responder

__all__ = ["FAULTS", "FakeOpenAIServer", "FaultPlan", "default_responder"]
