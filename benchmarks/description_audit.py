"""Why description replies fail: every description reply cached under the given run folders, replayed through the
current validator (no LLM call), counted by reason and grouped by the prefilled lead (``PromptSet.describe_lead``).

``error_view="description"`` asks the LLM to describe each error before writing candidates from the description; a
reply that retells the review (``copied_summary``), is a title (``short_summary``) or does not parse is re-asked, with
the review in the prompt again. This shows how often, from the runs' own caches.

    python benchmarks/description_audit.py runs
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SUMMARY_PREFILL = '{"summary": "'
_SHOWN = re.compile(r"<data>\n(.*?)\n</data>", re.S)


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
    from s3_hf.extrapolation import _description_validator
    from s3_hf.output_parsing import extract_json

    by_lead: dict[str, Counter] = {}
    for record in records:
        request = record["request"]
        payload = request.get("payload") or {}
        prompt = payload.get("prompt") or str(payload.get("messages"))
        shown = _SHOWN.findall(prompt)
        lead = request["key"].get("describe_lead") or ""  # in the request's key when one was prefilled
        prefill = SUMMARY_PREFILL + lead
        counts = by_lead.setdefault(lead, Counter())
        if not shown:
            counts["no_shown_text"] += 1
            continue
        parsed, reason = extract_json((record.get("response") or {}).get("text"), prefill=prefill)
        if parsed is not None:
            _, reason = _description_validator(shown[-1], lead=lead)(parsed)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders (searched for LLM caches)")
    cli = parser.parse_args(argv)
    print(render(audit(description_replies(cli.paths))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
