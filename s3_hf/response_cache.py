"""Append-only cache of raw LLM responses: nothing lost, nothing paid twice.

One JSONL file; each line is one complete record ``{"key": ..., "request": ..., "response": ..., "sha256": ...}``
where ``sha256`` covers the rest of the record. Every append is a single ``write`` followed by ``fsync``. On load,
lines that are not complete JSON or whose hash does not match (the torn last line of a process killed with
``kill -9``) are skipped, and a torn tail is cut off so the next append starts on a clean line.

The key (:func:`cache_key`) is a sha256 over everything that changes the output: the model, the endpoint, the
messages or prompt, the generation parameters, the schema, the prefill, the request's identity (task fingerprint,
prompt version, stage, item, sample index) and the attempt index. Credentials and headers are never part of it.
The raw completion is stored, and parsing/validation run again on replay, so a parser or validator change needs no
new calls. Decisions that depend on run order (a de-duplication rejection) are stored as small verdict records
(:meth:`ResponseCache.put_verdict`) and replayed as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

CACHE_FILE = "responses.jsonl"
_FORMAT = 1


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cache_key(identity: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``identity`` (everything that changes the output)."""
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


def _verdict_key(key: str) -> str:
    return cache_key({"verdict_for": key})


def _record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


class ResponseCache:
    """An append-only, crash-safe store of raw responses keyed by :func:`cache_key`.

    Args:
        directory: folder holding ``responses.jsonl`` (created if missing). Each record is one ``O_APPEND``
            write, so several processes may append to the same file; a process sees the records present when it
            opened the cache plus its own. Opening trims a torn tail, so open a cache while no other process is in
            the middle of appending to it (one run per cache folder is the supported use).

    Attributes:
        skipped_lines: lines ignored on load (torn or corrupted).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / CACHE_FILE
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.skipped_lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        while pos < len(data):
            newline = data.find(b"\n", pos)
            line = data[pos:] if newline < 0 else data[pos:newline]
            end = len(data) if newline < 0 else newline + 1
            record = self._parse_line(line)
            if record is not None and newline >= 0:
                self._records[record["key"]] = record
                good_end = end
            elif line.strip():
                self.skipped_lines += 1
                if newline >= 0:
                    good_end = end  # a bad line in the middle stays (append-only) but is ignored
            pos = end
        if good_end < len(data):  # torn tail without a newline: cut it so the next append is a clean line
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())

    @staticmethod
    def _parse_line(line: bytes) -> dict[str, Any] | None:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(record, dict) or "key" not in record or "response" not in record:
            return None
        if record.get("sha256") != _record_hash(record):
            return None
        return record

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored raw response for ``key`` (``{"text", "finish_reason", "usage", ...}``), or ``None``."""
        record = self._records.get(key)
        return None if record is None else record["response"]

    def put(self, key: str, response: dict[str, Any], *, request: dict[str, Any] | None = None) -> None:
        """Append one record and fsync it. ``request`` is stored for audit; it must hold no credentials."""
        record = {"format": _FORMAT, "key": key, "created": time.time(), "request": request, "response": response}
        record["sha256"] = _record_hash(record)
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._records[key] = record

    def put_verdict(self, key: str, reason: str) -> None:
        """Record that the response under ``key`` was rejected by a decision that depends on run order (the
        de-duplicator: which of two equal outputs came first), so a resumed run replays the decision instead of
        re-deciding it in another completion order and paying for a new attempt."""
        self.put(_verdict_key(key), {"verdict": reason}, request={"verdict_for": key})

    def verdict(self, key: str) -> str | None:
        """The rejection reason recorded by :meth:`put_verdict` for ``key``, or ``None``."""
        response = self.get(_verdict_key(key))
        return None if response is None else response.get("verdict")

    def records(self) -> list[dict[str, Any]]:
        """All loaded records (for inspection and tests)."""
        return list(self._records.values())
