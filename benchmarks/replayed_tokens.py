"""LLM tokens of an S3 run that started from a copy of another run's LLM cache, as a fresh run would pay them.

A run that replays replies from a copied cache records only the calls it made itself (``llm_usage.json``: replayed
replies are ``cached_requests`` and cost nothing in that run). To compare its token cost with ZeroGen's, this adds the
replayed replies back at the usage recorded with them in the cache:

- seed stage and rationales: every entry of those stages in the folder's cache (the run replays them all);
- each round whose every cache entry this run asked for (``requests + cached_requests`` in ``llm_usage.json`` equals
  the round's entries: e.g. round 1 of a run with more candidates per error than the run it copied, which asks the
  same descriptions and candidates and more): the sum of its entries;
- any other round: the run's own calls, plus its replayed calls at the mean usage of that round's entries (an
  estimate, named so in the output; the copied run's entries for errors this run did not see are not counted).

A run resumed after a stop replays its own earlier calls, and ``llm_usage.json`` sums its sessions: a round it
replayed counts those calls twice here (paid, and again at the round's mean under ``estimated calls``). Use it on runs
of one session (one entry under ``sessions`` in ``llm_usage.json``). A folder without ``llm_usage.json`` (a run
killed before the pipeline kept that file current while running) is taken as its own cache's only user: every entry
of S3's stages counts.

Rows: the final training set (the last kept round's ``train_rows`` in ``state.json``), and every row the run accepted
(every round's ``new_rows``: a round the gate set aside was paid for and accepted, but is not trained on). ``--zerogen-per-row``
prints the ratios to ZeroGen's tokens per row (ZeroGen's training rows are its accepted rows).

    python benchmarks/replayed_tokens.py runs/q_k3_none/imdb/seed1 runs/q_k3_none/imdb/seed2 --zerogen-per-row 135
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# stages that are not S3's error rounds: the seed's (counted whole from the cache) and the baselines' (not S3's)
NOT_ROUNDS = ("rationales", "seed", "zerogen", "goldgen", "seed_same_size")


def run_tokens(folder: Path) -> dict:
    """``{"tokens", "estimated_calls", "rows", "accepted"}`` of one run folder (see the module docstring)."""
    from s3_hf.response_cache import ResponseCache
    from s3_hf.usage import llm_tokens

    def entry_tokens(entry: dict) -> int:
        return llm_tokens(entry["response"].get("usage") or {})

    entries = [
        r
        for r in ResponseCache(folder / "llm_cache").records()
        if "stage" in (r.get("request") or {}) and "response" in r
    ]
    total = sum(entry_tokens(e) for e in entries if e["request"]["stage"] in ("rationales", "seed"))
    estimated = 0
    usage_file = folder / "llm_usage.json"
    if not usage_file.is_file():  # no record of which calls were this run's: the whole cache is its own
        total += sum(entry_tokens(e) for e in entries if e["request"]["stage"] not in NOT_ROUNDS)
    usage = json.loads(usage_file.read_text(encoding="utf-8"))["rows"] if usage_file.is_file() else []
    for row in usage:
        if row["stage"] in NOT_ROUNDS:
            continue
        mine = [
            e for e in entries if e["request"]["stage"] == row["stage"] and e["request"]["round"] == row["round_index"]
        ]
        if row["requests"] + row["cached_requests"] == len(mine):
            total += sum(entry_tokens(e) for e in mine)
        else:
            total += llm_tokens(row)
            total += row["cached_requests"] * (statistics.mean(entry_tokens(e) for e in mine) if mine else 0)
            estimated += row["cached_requests"]
    rounds = json.loads((folder / "state.json").read_text(encoding="utf-8"))["s3"]["rounds"]
    rows = max(r.get("train_rows", 0) for r in rounds.values() if r.get("round_kept", True) is not False)
    accepted = sum(r.get("new_rows", 0) for r in rounds.values())
    return {"tokens": total, "estimated_calls": estimated, "rows": rows, "accepted": accepted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="S3 run folders (quality.py: <out>/<task>/seed<N>)")
    parser.add_argument("--zerogen-per-row", type=float, default=None, help="ZeroGen's tokens per training row")
    cli = parser.parse_args(argv)
    print(
        "| run | LLM tokens, replayed counted | estimated calls | training rows | per training row | × ZeroGen "
        "| rows accepted | per accepted row | × ZeroGen |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    per_row, per_accepted = [], []

    def ratio(value: float) -> str:
        return f"{value / cli.zerogen_per_row:.2f}" if cli.zerogen_per_row else "-"

    for folder in cli.folders:
        r = run_tokens(folder)
        per_row.append(r["tokens"] / r["rows"])
        per_accepted.append(r["tokens"] / r["accepted"])
        print(
            f"| {folder} | {r['tokens']:.0f} | {r['estimated_calls']} | {r['rows']} | {per_row[-1]:.1f} | "
            f"{ratio(per_row[-1])} | {r['accepted']} | {per_accepted[-1]:.1f} | {ratio(per_accepted[-1])} |"
        )
    row, accepted = statistics.mean(per_row), statistics.mean(per_accepted)
    print(f"| mean | | | | {row:.1f} | {ratio(row)} | | {accepted:.1f} | {ratio(accepted)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
