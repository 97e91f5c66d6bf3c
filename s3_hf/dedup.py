"""Exact and near-duplicate removal of generated texts, across rounds.

A text's *normalised* form (lower case, Unicode NFKC, punctuation dropped, whitespace collapsed) catches copies that
differ only in case, spacing or punctuation; the word-shingle overlap coefficient (shared shingles over those of the
shorter text, ``near_threshold``) catches copies with a few words changed and copies of an excerpt of a longer text. Seed the deduplicator with the data that already exists (earlier rounds, gold
examples shown to the LLM) so nothing generated repeats them; save/load it to resume.

Example:

```python
>>> dedup = Deduplicator(field="text")
>>> dedup.check_and_add({"text": "A great movie!"})
>>> dedup.check_and_add({"text": "a great   movie"})
'duplicate'
```
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic

REASON_DUPLICATE = "duplicate"
REASON_NEAR_DUPLICATE = "near_duplicate"

_NON_WORD = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sentences(text: str) -> list[tuple[int, str]]:
    """``(start offset, sentence)`` pairs of a paragraph (a simple, deterministic splitter)."""
    spans, start = [], 0
    for match in _SENTENCE.finditer(text):
        spans.append((start, text[start : match.start()]))
        start = match.end()
    spans.append((start, text[start:]))
    return [(s, t) for s, t in spans if t.strip()]


def normalise_text(text: str) -> str:
    """Lower case, NFKC, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text)).strip()


def content_digest(example: Mapping[str, Any], fields: Iterable[str]) -> str:
    """sha256 of the normalised ``fields`` of an example: two rows with the same digest hold the same text(s),
    whatever their labels, case or spacing (used to keep the error pool apart from the validation and test rows)."""
    payload = json.dumps([normalise_text(example[name]) for name in fields], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _shingles(normalised: str, size: int) -> set[int]:
    words = normalised.split()
    if len(words) < size:
        return {hash(" ".join(words))} if words else set()
    return {hash(" ".join(words[i : i + size])) for i in range(len(words) - size + 1)}


class Deduplicator:
    """Remembers generated texts and says whether a new one repeats any of them.

    Args:
        field: the generated field to compare (the task's ``generated_field``), used when examples are dicts.
        near_threshold: overlap coefficient of word shingles (shared / those of the shorter text) at or above which a
            text is a near duplicate
            (``None`` to check exact/normalised duplicates only).
        shingle_size: words per shingle.
        min_shingles: the near-duplicate test only compares texts that both have at least this many shingles; a
            shorter text ("what a film") is checked for exact/normalised duplicates only, since its one or two
            shingles would be "contained" in any longer text that happens to use the phrase.
        scope: extra fields that must also match for two examples to count as duplicates (e.g. the premise of
            an entailment pair, since the same hypothesis under another premise is a different example).
    """

    def __init__(
        self,
        field: str = "text",
        *,
        near_threshold: float | None = 0.8,
        shingle_size: int = 3,
        min_shingles: int = 5,
        scope: tuple[str, ...] = (),
    ):
        if near_threshold is not None and not 0 < near_threshold <= 1:
            raise ValueError(f"near_threshold must be in (0, 1] or None, got {near_threshold!r}")
        if shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {shingle_size!r}")
        if min_shingles < 1:
            raise ValueError(f"min_shingles must be >= 1, got {min_shingles!r}")
        self.field = field
        self.near_threshold = near_threshold
        self.shingle_size = shingle_size
        self.min_shingles = min_shingles
        self.scope = tuple(scope)
        self._exact: set[str] = set()
        self._texts: list[tuple[str, str]] = []  # (scope digest, normalised text), for save/near lookup
        self._signatures: list[set[int]] = []
        self._index: dict[tuple[str, int], list[int]] = {}

    def __len__(self) -> int:
        return len(self._exact)

    def _key(self, item: str | Mapping[str, Any]) -> tuple[str, str]:
        if isinstance(item, Mapping):
            text = item.get(self.field)
            if text is None:
                raise KeyError(f"Deduplicator: example has no field {self.field!r}: keys {sorted(item)}")
            scope = "|".join(normalise_text(str(item.get(name, ""))) for name in self.scope)
        else:
            text, scope = item, ""
        digest = hashlib.sha1(scope.encode("utf-8")).hexdigest()[:16] if scope else ""
        return digest, normalise_text(str(text))

    def check(self, item: str | Mapping[str, Any]) -> str | None:
        """``"duplicate"``, ``"near_duplicate"`` or ``None``, without remembering ``item``."""
        scope, norm = self._key(item)
        if f"{scope}\x00{norm}" in self._exact:
            return REASON_DUPLICATE
        if self.near_threshold is None or not norm:
            return None
        signature = _shingles(norm, self.shingle_size)
        if len(signature) < self.min_shingles:  # too short for the overlap test: exact/normalised only
            return None
        counts: Counter[int] = Counter()
        for shingle in signature:
            counts.update(self._index.get((scope, shingle), ()))
        for idx, shared in counts.most_common(20):
            other = self._signatures[idx]
            # overlap coefficient, not Jaccard: a text that copies an excerpt of a longer one (an LLM repeating the
            # first part of the gold review it was shown) shares most of ITS shingles, though few of the other's
            smaller = min(len(signature), len(other))
            if smaller and shared / smaller >= self.near_threshold:
                return REASON_NEAR_DUPLICATE
        return None

    def add(self, item: str | Mapping[str, Any]) -> None:
        """Remember ``item`` (even if it is a duplicate)."""
        self._remember(*self._key(item))

    def _remember(self, scope: str, norm: str) -> None:
        marker = f"{scope}\x00{norm}"
        if marker in self._exact:
            return
        self._exact.add(marker)
        self._texts.append((scope, norm))
        signature = _shingles(norm, self.shingle_size) if self.near_threshold is not None else set()
        if len(signature) >= self.min_shingles:  # short texts are never near-duplicate candidates
            idx = len(self._signatures)
            self._signatures.append(signature)
            for shingle in signature:
                self._index.setdefault((scope, shingle), []).append(idx)

    def check_and_add(self, item: str | Mapping[str, Any]) -> str | None:
        """:meth:`check`, and remember ``item`` when it is new. Returns the duplicate reason or ``None``."""
        reason = self.check(item)
        if reason is None:
            self.add(item)
        return reason

    def seed(self, items: Iterable[str | Mapping[str, Any]]) -> int:
        """Remember existing data (earlier rounds, gold examples). Returns how many distinct texts were added."""
        before = len(self)
        for item in items:
            self.add(item)
        return len(self) - before

    def filter(self, items: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], Counter[str]]:
        """Keep the first of each group of duplicates; returns ``(kept, dropped counts by reason)``."""
        kept, dropped = [], Counter()
        for item in items:
            reason = self.check_and_add(item)
            if reason is None:
                kept.append(item)
            else:
                dropped[reason] += 1
        return kept, dropped

    def save(self, path: str | Path) -> Path:
        """Write the remembered (normalised) texts as JSON, atomically."""
        state = {
            "field": self.field,
            "near_threshold": self.near_threshold,
            "shingle_size": self.shingle_size,
            "min_shingles": self.min_shingles,
            "scope": list(self.scope),
            "texts": self._texts,
        }
        return write_json_atomic(path, state, indent=None)

    @classmethod
    def load(cls, path: str | Path) -> Deduplicator:
        """A deduplicator restored from :meth:`save`."""
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        dedup = cls(
            state["field"],
            near_threshold=state["near_threshold"],
            shingle_size=state["shingle_size"],
            min_shingles=state.get("min_shingles", 5),
            scope=tuple(state["scope"]),
        )
        for scope, norm in state["texts"]:
            dedup._remember(scope, norm)
        return dedup
