"""Seeded fault injection shared by the loopback stand-ins (:mod:`~s3_hf.testing.openai_server`,
:mod:`~s3_hf.testing.hub_server`)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable


class FaultPlan:
    """Fail a share of a stand-in server's requests, reproducibly.

    Request ``index`` (the server's count of requests, per target) draws one number from a generator seeded with
    ``(seed, target, index)``, so the same requests fail whatever the thread timing; the number picks a fault by
    the cumulative ``rates``.

    Args:
        rates: fault name -> probability (each >= 0, summing to at most 1). The names are the server's own
            (:data:`s3_hf.testing.openai_server.FAULTS`, :data:`s3_hf.testing.hub_server.FAULTS`); it checks them.
        seed: the seed of every draw.
        max_faults: stop injecting after this many faults (``None``: never stop).
        targets: the kinds of request that may fail (the Hub stand-in's ``"commit"``, ``"lfs_upload"``...);
            ``None``: all.

    Example: ``FaultPlan({"429": 0.1, "drop": 0.05}, seed=3)``; for the Hub,
    ``FaultPlan({"500": 0.25, "drop": 0.25}, targets=("commit", "lfs_upload"), seed=22, max_faults=3)``.
    """

    def __init__(
        self,
        rates: dict[str, float],
        *,
        seed: int = 0,
        max_faults: int | None = None,
        targets: Iterable[str] | None = None,
    ):
        if sum(rates.values()) > 1 + 1e-9 or any(r < 0 for r in rates.values()):
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1, got {rates!r}")
        if max_faults is not None and max_faults < 0:
            raise ValueError(f"max_faults must be >= 0 or None, got {max_faults!r}")
        self.rates = dict(rates)
        self.seed = seed
        self.max_faults = max_faults
        self.targets = tuple(targets) if targets is not None else None
        self._count = 0
        self._lock = threading.Lock()

    def check(self, faults: Iterable[str], targets: Iterable[str] | None = None) -> FaultPlan:
        """Raise ``ValueError`` naming any fault (or target) this plan uses that the server does not know."""
        faults = tuple(faults)
        if unknown := sorted(set(self.rates) - set(faults)):
            raise ValueError(f"unknown faults {unknown}; known: {faults}")
        if targets is not None and self.targets is not None:
            targets = tuple(targets)
            if unknown := sorted(set(self.targets) - set(targets)):
                raise ValueError(f"unknown fault targets {unknown}; known: {targets}")
        return self

    def draw(self, index: int, target: str | None = None) -> str | None:
        """The fault of request ``index`` (to ``target``), or ``None``."""
        if self.targets is not None and target not in self.targets:
            return None
        key = f"{self.seed}:{index}" if target is None else f"{self.seed}:{target}:{index}"
        number, total = random.Random(key).random(), 0.0
        for fault, rate in self.rates.items():
            total += rate
            if number < total:
                with self._lock:
                    if self.max_faults is not None and self._count >= self.max_faults:
                        return None
                    self._count += 1
                return fault
        return None

    def __call__(self, call_index: int, body: dict) -> str | None:
        """:class:`~s3_hf.testing.openai_server.FakeOpenAIServer`'s ``faults`` hook: call ``call_index``'s fault."""
        return self.draw(call_index)
