"""What the round gate's rule changes, replayed from finished runs (no LLM call, no training).

A run's ``state.json`` records every round's validation and test score. The gate keeps a round when its validation
score beats the best kept round's (``--round-gate validation``, since 6557d7c) or reaches it (``validation_or_tie``,
the rule before). This replays both rules over the recorded scores. Where the two rules first disagree at the last
round, both final models are known: that round's, or the kept round's before it. Where they disagree at an earlier
round, the later rounds would have trained on other rows and extrapolated another model's errors, which only a new
run measures: the run is marked not replayable. A ``quality.json`` of ``benchmarks/quality.py`` is replayed per seed,
and S3 − each baseline is paired over seeds under each rule.

    python benchmarks/gate_replay.py runs/demo_lead_s42 runs/demo_v1k_s47 runs/q_defaults/quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import paired_interval, s3_round_path, sign_flip_p  # noqa: E402

RULES = ("validation", "validation_or_tie")
GAIN_BINS = ((float("-inf"), 0.0), (0.0, 1.0), (1.0, 2.0), (2.0, float("inf")))  # validation gain, points


def replay_final(rounds: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """Replay ``rule`` over ``rounds`` (in order, round 0 the seed; each with ``validation``, ``test`` and the run's
    own ``kept`` decision). Returns ``{"test": final model's test or None, "replayable": bool, "decisions": [...]}``:
    not replayable when ``rule`` decides a round before the last otherwise than the run did."""
    from s3_hf.pipeline import round_gate_keeps

    decisions = [True]
    best = rounds[0]["validation"]
    for k, entry in enumerate(rounds[1:], start=1):
        keep = round_gate_keeps(rule, entry["validation"], best)
        decisions.append(keep)
        if keep != entry.get("kept", True) and k < len(rounds) - 1:
            return {"test": None, "replayable": False, "decisions": decisions}
        if keep:
            best = max(best, entry["validation"])
    last_kept = max(k for k, keep in enumerate(decisions) if keep)
    return {"test": rounds[last_kept]["test"], "replayable": True, "decisions": decisions}


def _cells(rounds: list[dict[str, Any]]) -> str:
    """Test (validation) per round in %, set-aside rounds in brackets."""
    cells = (f"{100 * r['test']:.1f} ({100 * r['validation']:.1f})" for r in rounds)
    return " → ".join(cell if r.get("kept", True) else f"[{cell}]" for r, cell in zip(rounds, cells))


def _final(replayed: dict[str, Any]) -> str:
    return f"{100 * replayed['test']:.1f}" if replayed["replayable"] else "not replayable"


def run_rows(folders: list[Path]) -> list[str]:
    """One table row per run folder's ``state.json``."""
    lines = [
        "| run | task | test (validation) per round, set-aside rounds in [brackets] | final: `validation` | "
        "final: `validation_or_tie` |",
        "|---|---|---|---|---|",
    ]
    for folder in folders:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        rounds = s3_round_path(state["s3"]["rounds"])
        finals = [_final(replay_final(rounds, rule)) for rule in RULES]
        lines.append(f"| {folder} | {state.get('task')} | {_cells(rounds)} | {' | '.join(finals)} |")
    return lines


def round_gains(rounds: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(validation gain, test change)`` in points of every round after the seed, each against the best kept
    round before it (the model the round would replace)."""
    out = []
    best = rounds[0]
    for entry in rounds[1:]:
        out.append((100 * (entry["validation"] - best["validation"]), 100 * (entry["test"] - best["test"])))
        if entry.get("kept", True):
            best = entry
    return out


def gain_rows(gains: list[tuple[float, float]]) -> list[str]:
    """Rounds binned by validation gain: how many, their mean test change, and how many fell on test."""
    lines = [
        f"\n{len(gains)} rounds after the seed: test change against the best kept round before it, by validation gain\n",
        "| validation gain (points) | rounds | test change, mean | fell on test |",
        "|---|---|---|---|",
    ]
    for low, high in GAIN_BINS:
        changes = [t for v, t in gains if low < round(v, 6) <= high]
        mean = f"{sum(changes) / len(changes):+.2f}" if changes else "-"
        label = "≤ 0 (set aside)" if high == 0 else f"> {low:g}" if high == float("inf") else f"{low:g} to {high:g}"
        lines.append(f"| {label} | {len(changes)} | {mean} | {sum(t < 0 for t in changes)} |")
    return lines


def quality_rows(path: Path) -> list[str]:
    """Per seed of a ``quality.json``: S3's final test under each rule; then S3 − each baseline, paired over seeds."""
    results = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"\n{path}\n", "| task | seed | S3 test (validation) per round | `validation` | `validation_or_tie` |"]
    lines.append("|---|---|---|---|---|")
    finals: dict[str, list[tuple[dict[str, Any], float | None]]] = {rule: [] for rule in RULES}
    for result in results:
        rounds = result["s3"]["rounds"]
        replayed = {rule: replay_final(rounds, rule) for rule in RULES}
        for rule in RULES:
            finals[rule].append((result, replayed[rule]["test"]))
        cells = " | ".join(_final(replayed[rule]) for rule in RULES)
        lines.append(f"| {result['task']} | {result['seed']} | {_cells(rounds)} | {cells} |")
    baselines = sorted({name for r in results for name in r if name not in ("task", "seed", "s3", "usage")})
    lines += ["", "| rule | method | S3 − method (mean, 95% CI) | sign-flip p | per seed |", "|---|---|---|---|---|"]
    for rule in RULES:
        for name in baselines:
            pairs = [(r, t) for r, t in finals[rule] if t is not None and (r.get(name) or {}).get("test") is not None]
            if len(pairs) < len(results):
                lines.append(f"| `{rule}` | {name} | not replayable on every seed | | |")
                continue
            gains = [round((t - r[name]["test"]) * 100, 2) for r, t in pairs]
            p = sign_flip_p(gains)
            per_seed = ", ".join(f"{g:+.2f}" for g in gains)
            lines.append(
                f"| `{rule}` | {name} | {paired_interval(gains)} | {'-' if p is None else f'{p:.3f}'} | {per_seed} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders (with state.json) or quality.json files")
    cli = parser.parse_args(argv)
    folders = [p for p in cli.paths if p.is_dir()]
    missing = [p for p in folders if not (p / "state.json").is_file()]
    if missing:
        parser.error(f"no state.json in {', '.join(map(str, missing))}")
    lines = run_rows(folders) if folders else []
    gains = []
    for folder in folders:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        gains += round_gains(s3_round_path(state["s3"]["rounds"]))
    for path in cli.paths:
        if path.is_file():
            lines += quality_rows(path)
            gains += [g for r in json.loads(path.read_text(encoding="utf-8")) for g in round_gains(r["s3"]["rounds"])]
    print("\n".join(lines + gain_rows(gains)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
