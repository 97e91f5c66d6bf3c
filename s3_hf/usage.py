"""Token usage and estimated cost per stage and per round, with a configurable price table.

Example:

```python
>>> tracker = UsageTracker(prices={"gpt-4o-mini": (0.15, 0.60)})
>>> tracker.add(stage="seed", round_index=0, model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)
>>> round(tracker.total()["cost_usd"], 6)
0.00027
```
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

# $ per 1M prompt tokens, $ per 1M completion tokens (public list prices; override with LLMConfig.prices)
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "local": (0.0, 0.0),
}


class PriceTable(dict):
    """``model -> ($ per 1M prompt tokens, $ per 1M completion tokens)``; also built from a JSON object string, so
    ``--prices '{"my-model": [0.2, 0.8]}'`` works on a CLI (``HfArgumentParser`` calls the field's type on it)."""

    def __init__(self, value: Any = (), /):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"prices must be a JSON object {{model: [prompt, completion]}}: {err}") from None
            if not isinstance(value, dict):
                raise ValueError(f"prices must be a JSON object {{model: [prompt, completion]}}, got {value!r}")
        items = value.items() if isinstance(value, dict) else value
        super().__init__((model, tuple(price) if isinstance(price, list) else price) for model, price in items)


def llm_tokens(usage: dict[str, Any]) -> int:
    """Prompt + completion tokens of one usage record: a reply's ``usage``, a :class:`UsageRow` as a dict, or a
    :meth:`UsageTracker.total` (missing or ``None`` counts: 0)."""
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


def price_for(model: str, prices: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The price of ``model``: an exact entry, else the longest entry that prefixes it (``gpt-4o-mini-2024...``)."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


@dataclass
class UsageRow:
    """Usage of one (stage, round, model): API calls, tokens, cost, and replies replayed from the cache."""

    stage: str
    round_index: int
    model: str
    requests: int = 0
    cached_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True


class UsageTracker:
    """Accumulates usage per ``(stage, round, model)``; thread-safe.

    Replies replayed from the response cache count as ``cached_requests`` and cost nothing in this run.

    Args:
        prices: model -> (``$`` per 1M prompt tokens, ``$`` per 1M completion tokens); models missing from it are
            reported with ``priced=False`` and cost 0.
    """

    def __init__(self, prices: dict[str, tuple[float, float]] | None = None):
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        self._rows: dict[tuple[str, int, str], UsageRow] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[UsageTracker], None]] = []  # called after each add (outside the lock)

    def add(
        self,
        *,
        stage: str,
        round_index: int,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached: bool = False,
    ) -> None:
        """Record one reply (from the API, or replayed from the cache when ``cached``), then tell the listeners."""
        with self._lock:
            row = self._rows.setdefault((stage, round_index, model), UsageRow(stage, round_index, model))
            if cached:
                row.cached_requests += 1
            else:
                row.requests += 1
                row.prompt_tokens += int(prompt_tokens or 0)
                row.completion_tokens += int(completion_tokens or 0)
                price = price_for(model, self.prices)
                if price is None:
                    row.priced = False
                else:
                    row.cost_usd += (prompt_tokens or 0) * price[0] / 1e6 + (completion_tokens or 0) * price[1] / 1e6
        for listener in list(self.listeners):
            listener(self)

    def rows(self) -> list[UsageRow]:
        with self._lock:
            return [UsageRow(**asdict(row)) for _, row in sorted(self._rows.items())]

    def total(self, *, stage: str | None = None, round_index: int | None = None) -> dict[str, Any]:
        """Sums over all rows, or over one stage and/or round."""
        rows = [
            r
            for r in self.rows()
            if (stage is None or r.stage == stage) and (round_index is None or r.round_index == round_index)
        ]
        return {
            "requests": sum(r.requests for r in rows),
            "cached_requests": sum(r.cached_requests for r in rows),
            "prompt_tokens": sum(r.prompt_tokens for r in rows),
            "completion_tokens": sum(r.completion_tokens for r in rows),
            "cost_usd": sum(r.cost_usd for r in rows),
            "priced": all(r.priced for r in rows),
        }

    def summary(self) -> dict[str, Any]:
        """``{"rows": [...], "by_stage": {...}, "by_round": {...}, "total": {...}}``."""
        rows = self.rows()
        return {
            "rows": [asdict(r) for r in rows],
            "by_stage": {s: self.total(stage=s) for s in sorted({r.stage for r in rows})},
            "by_round": {str(k): self.total(round_index=k) for k in sorted({r.round_index for r in rows})},
            "total": self.total(),
        }

    def format_table(self) -> str:
        """A plain-text table, one line per (stage, round, model), and a total."""
        header = f"{'stage':<14}{'round':>6} {'model':<24}{'calls':>7}{'cached':>8}{'prompt':>10}{'compl.':>9}{'cost $':>11}"
        lines = [header, "-" * len(header)]
        for r in self.rows():
            cost = f"{r.cost_usd:.4f}" if r.priced else "n/a"
            lines.append(
                f"{r.stage:<14}{r.round_index:>6} {r.model[:23]:<24}{r.requests:>7}{r.cached_requests:>8}"
                f"{r.prompt_tokens:>10}{r.completion_tokens:>9}{cost:>11}"
            )
        t = self.total()
        lines.append(
            f"{'total':<14}{'':>6} {'':<24}{t['requests']:>7}{t['cached_requests']:>8}{t['prompt_tokens']:>10}"
            f"{t['completion_tokens']:>9}{t['cost_usd']:>11.4f}"
        )
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`summary` as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.summary(), indent=2) + "\n")


# ---------------------------------------------------------------------- usage across resumed runs
USAGE_SUMS = ("requests", "cached_requests", "prompt_tokens", "completion_tokens", "cost_usd")


def _usage_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {key: sum(r.get(key, 0) for r in rows) for key in USAGE_SUMS}
    totals["priced"] = all(r.get("priced", True) for r in rows)
    return totals


def merge_usage(previous: dict[str, Any] | None, session: dict[str, Any], *, ended: bool = True) -> dict[str, Any]:
    """``llm_usage.json`` after one more process (``session``: :meth:`UsageTracker.summary`): the sessions so far
    plus this one under ``sessions``, and ``rows``/``by_stage``/``by_round``/``total`` summed over all of them, so a
    resumed run keeps the tokens of the runs before it. The session is stamped ``ended_at`` when ``ended``, else
    ``saved_at`` (a process still running, or one killed after that save: its calls up to then are counted)."""
    sessions = list((previous or {}).get("sessions") or ([previous] if previous and previous.get("rows") else []))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sessions.append({**session, ("ended_at" if ended else "saved_at"): stamp})
    merged: dict[tuple, dict[str, Any]] = {}
    for one in sessions:
        for row in one.get("rows", []):
            key = (row["stage"], row["round_index"], row["model"])
            into = merged.setdefault(key, {"stage": key[0], "round_index": key[1], "model": key[2], "priced": True})
            for name in USAGE_SUMS:
                into[name] = into.get(name, 0) + row.get(name, 0)
            into["priced"] = into["priced"] and row.get("priced", True)
    rows = [merged[key] for key in sorted(merged)]
    return {
        "rows": rows,
        "by_stage": {
            s: _usage_totals([r for r in rows if r["stage"] == s]) for s in sorted({r["stage"] for r in rows})
        },
        "by_round": {
            str(k): _usage_totals([r for r in rows if r["round_index"] == k])
            for k in sorted({r["round_index"] for r in rows})
        },
        "total": _usage_totals(rows),
        "sessions": sessions,
    }


class UsageRecord:
    """A run folder's ``llm_usage.json``, kept current while a process runs, so a process that is killed (or a
    machine that goes away) leaves the calls it paid for counted; the next process adds its own session.

    Args:
        path: the ``llm_usage.json`` file; what it holds when the record is made is kept as the earlier sessions.
        min_interval_s: :meth:`watch` saves at most this often (the last save before a kill bounds what is lost).

    Example:

    ```python
    >>> import tempfile
    >>> record = UsageRecord(Path(tempfile.mkdtemp()) / "llm_usage.json", min_interval_s=0)
    >>> tracker = UsageTracker(prices={})
    >>> record.watch(tracker)
    >>> tracker.add(stage="seed", round_index=0, model="m", prompt_tokens=10, completion_tokens=2)
    >>> json.loads(record.path.read_text())["total"]["prompt_tokens"]
    10
    ```
    """

    def __init__(self, path: str | Path, *, min_interval_s: float = 2.0):
        self.path = Path(path)
        self.min_interval_s = min_interval_s
        self.previous: dict[str, Any] | None = None
        if self.path.is_file():
            try:
                self.previous = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:  # kept aside, not overwritten
                aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
                self.path.replace(aside)
                logger.warning(
                    "%s: line %d: invalid JSON (%s); moved to %s, usage recorded again from this run",
                    self.path, err.lineno, err.msg, aside.name,
                )  # fmt: skip
        self._lock = threading.Lock()
        self._saved_at = float("-inf")

    def save(self, tracker: UsageTracker, *, ended: bool = False) -> None:
        """Write the earlier sessions plus ``tracker``'s (this process) as its session (atomically)."""
        with self._lock:
            self._saved_at = time.monotonic()
            write_json_atomic(self.path, merge_usage(self.previous, tracker.summary(), ended=ended))

    def _on_add(self, tracker: UsageTracker) -> None:
        if time.monotonic() - self._saved_at >= self.min_interval_s:
            try:
                self.save(tracker)
            except OSError:  # the usage file is a record; never stop the run for it (saved again at the end)
                logger.warning("could not save %s", self.path, exc_info=True)

    def watch(self, tracker: UsageTracker) -> None:
        """Save after ``tracker``'s replies, at most every ``min_interval_s`` seconds."""
        tracker.listeners.append(self._on_add)
