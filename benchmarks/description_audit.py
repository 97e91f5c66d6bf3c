"""Why description replies fail: every description reply cached under the given run folders, replayed through the
current validator (no LLM call), counted by reason and grouped by the prefilled lead (``PromptSet.describe_lead``).

``error_view="description"`` asks the LLM to describe each error before writing candidates from the description; a
reply that retells the review (``copied_summary``), is a title (``short_summary``) or does not parse is re-asked, with
the review in the prompt again. This shows how often, from the runs' own caches. It also counts the rounds' rows that
talk about a review instead of being one (:data:`ABOUT_A_REVIEW`), per run folder.

    python benchmarks/description_audit.py runs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_SHOWN = re.compile(r"<data>\n(.*?)\n</data>", re.S)
# a row that talks about a review ("The reviewer found...", "A positive review of...") instead of being one: the
# description view's failure mode (the model hands its description back)
ABOUT_A_REVIEW = re.compile(r"\breviewer|\b(?:this|the) review\b|\breview of\b", re.IGNORECASE)


def count_about_a_review(texts) -> int:
    """How many of ``texts`` talk about a review (:data:`ABOUT_A_REVIEW`)."""
    return sum(bool(ABOUT_A_REVIEW.search(text)) for text in texts)


def description_replies(paths: list[Path]) -> list[dict[str, Any]]:
    """The distinct description records (by cache key) of every ``responses.jsonl`` under ``paths``."""
    from s3_hf.response_cache import CACHE_FILE, ResponseCache

    seen: dict[str, dict[str, Any]] = {}
    for path in paths:
        for file in sorted(path.rglob(CACHE_FILE)):
            for record in ResponseCache(file.parent).records():
                request = record.get("request") or {}
                if (request.get("key") or {}).get("stage") == "describe":
                    seen.setdefault(record["key"], record)
    return list(seen.values())


def audit(records: list[dict[str, Any]]) -> dict[str, Counter]:
    """lead -> Counter of validator outcomes (``ok`` or the rejection reason)."""
    from s3_hf.extrapolation import DESCRIPTION_PREFILL, description_validator
    from s3_hf.output_parsing import extract_json

    by_lead: dict[str, Counter] = {}
    for record in records:
        request = record["request"]
        payload = request.get("payload") or {}
        prompt = payload.get("prompt") or str(payload.get("messages"))
        shown = _SHOWN.findall(prompt)
        lead = request["key"].get("describe_lead") or ""  # in the request's key when one was prefilled
        prefill = DESCRIPTION_PREFILL + lead
        counts = by_lead.setdefault(lead, Counter())
        if not shown:
            counts["no_shown_text"] += 1
            continue
        parsed, reason = extract_json((record.get("response") or {}).get("text"), prefill=prefill)
        if parsed is not None:
            _, reason = description_validator(shown[-1], lead=lead)(parsed)
        counts[reason or "ok"] += 1
    return by_lead


def render(by_lead: dict[str, Counter]) -> str:
    reasons = sorted({r for counts in by_lead.values() for r in counts} - {"ok"})
    lines = [
        "| lead | replies | ok | " + " | ".join(reasons) + " |",
        "|---|---|---|" + "---|" * len(reasons),
    ]
    for lead, counts in sorted(by_lead.items()):
        total = sum(counts.values())
        cells = [f"{counts[r]} ({100 * counts[r] / total:.0f}%)" for r in ["ok", *reasons]]
        lines.append(f"| {lead or '(none)'} | {total} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_about_a_review(paths: list[Path]) -> list[tuple[str, int, int]]:
    """``(run folder, round rows, rows about a review)`` for every single-text run folder under ``paths`` with written
    rounds (``data/round_<k>.jsonl``; the seed is not counted: it is not written from descriptions)."""
    out = []
    for data in sorted({f.parent for path in paths for f in path.rglob("data/round_*.jsonl")}):
        rows = [
            json.loads(line)
            for file in sorted(data.glob("round_*.jsonl"))
            for line in file.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        texts = [row["text"] for row in rows if isinstance(row.get("text"), str)]
        if not texts:  # a pair or QA task's run: no review to read
            continue
        out.append((str(data.parent), len(texts), count_about_a_review(texts)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders (searched for LLM caches)")
    cli = parser.parse_args(argv)
    print(render(audit(description_replies(cli.paths))))
    rows = rows_about_a_review(cli.paths)
    if rows:
        print("\n| run | round rows | about a review |\n|---|---|---|")
        for run, total, about in rows:
            print(f"| {run} | {total} | {about} ({100 * about / max(total, 1):.0f}%) |")
        total, about = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"| all | {total} | {about} ({100 * about / max(total, 1):.0f}%) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
