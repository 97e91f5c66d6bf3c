"""Reports of an S3 run: the per-round table, the methods side by side, the dataset card and the accuracy plot.

Pure functions over the run state that :class:`~s3_hf.pipeline.S3Pipeline` records in ``state.json``:
``state["s3"]["rounds"][str(k)]`` (sizes, LLM accounting, usage, scores) and ``state["zerogen"]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import BASELINES
from .tasks import TaskSpec

if TYPE_CHECKING:  # pragma: no cover
    from .config import S3Config


def primary_metric(spec: TaskSpec) -> str:
    """The score reported for ``spec``: ``accuracy``, or SQuAD ``f1`` for QA."""
    return "f1" if spec.is_qa else "accuracy"


def format_cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def rejected_cell(rejected: dict[str, int]) -> str:
    """``"3 (duplicate 2, invalid_text 1)"``: dropped LLM replies, by reason."""
    total = sum(rejected.values())
    if not total:
        return "0"
    reasons = ", ".join(f"{name} {count}" for name, count in sorted(rejected.items(), key=lambda kv: -kv[1]))
    return f"{total} ({reasons})"


def round_rows(state: dict[str, Any], spec: TaskSpec, upto: int | None = None) -> list[dict[str, Any]]:
    """One row per finished round (up to ``upto``): sizes, LLM accounting, tokens, cost and scores. A round the
    ``round_gate`` set aside is marked so; its ``total rows`` are what its model trained on, and the next round's
    count leaves its rows out."""
    rounds = state.get("s3", {}).get("rounds", {})
    metric = primary_metric(spec)
    table, kept_rows = [], 0
    for k in sorted(int(i) for i in rounds):
        if upto is not None and k > upto:
            continue
        info = rounds[str(k)]
        total = kept_rows + info.get("new_rows", 0)  # this round's training rows: the kept rounds' and its own
        kept = info.get("round_kept", True)
        if kept:
            kept_rows = total
        usage = info.get("usage") or {}
        table.append(
            {
                "round": ("seed" if k == 0 else k) if kept else f"{k} (set aside)",
                "errors used": info.get("errors_used"),
                "requested": (
                    f"{info.get('requested')} + {info['described']} descriptions"
                    if info.get("described")
                    else info.get("requested")
                ),
                "api calls": info.get("api_calls"),
                "re-asked": rejected_cell(info.get("retries") or {}),
                "accepted": info.get("accepted"),
                "rejected": rejected_cell(info.get("rejected") or {}),
                "new rows": info.get("new_rows"),
                "mixing": info.get("mixing_ratio"),
                "total rows": total,
                "prompt tok": usage.get("prompt_tokens"),
                "compl. tok": usage.get("completion_tokens"),
                "cost $": usage.get("cost_usd") if usage.get("priced", True) else "n/a",
                "s / new row": seconds_per_row(info),
                "pool": info.get("pool_size"),
                "pool errors": info.get("errors"),
                f"val {metric}": info.get("validation"),
                f"test {metric}": info.get("test"),
            }
        )
    return table


def seconds_per_row(info: dict[str, Any]) -> float | None:
    """Wall seconds of a round's data stage (its LLM calls: rationales and seed rows, or descriptions, candidates
    and verdicts; and the checks of their replies) per row it added; ``None`` without new rows. A stage replayed from the cache on resume counts the
    replay's seconds."""
    seconds, rows = info.get("seconds_data"), info.get("new_rows")
    return round(seconds / rows, 2) if seconds is not None and rows else None


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """``rows`` (dicts with the same keys) as a markdown table."""
    if not rows:
        return "(no finished round)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row[h], 4 if h == "cost $" else 3) for h in header) + " |")
    return "\n".join(lines)


def verification_cell(verification: dict[str, dict[str, int]] | None) -> str:
    """``"llm 41/64, student 30/41"``: candidates kept / checked per verifier."""
    if not verification:
        return "-"
    return ", ".join(f"{name} {v['kept']}/{v['checked']}" for name, v in verification.items())


def methods_table(state: dict[str, Any], spec: TaskSpec) -> str:
    """S3 (seed only, all rounds) and the baselines side by side: training rows, verifier counts, tokens per
    accepted row and gold scores."""
    metric = primary_metric(spec)
    lines = [
        f"| method | train rows | kept / checked by verifier | LLM tok per new row | val {metric} | test {metric} |",
        "|---|---|---|---|---|---|",
    ]

    def line(name: str, info: dict[str, Any], synthesized: list[dict[str, Any]]) -> str:
        tokens = sum((st.get("usage") or {}).get("prompt_tokens", 0) for st in synthesized)
        tokens += sum((st.get("usage") or {}).get("completion_tokens", 0) for st in synthesized)
        rows = sum(st.get("new_rows", 0) for st in synthesized if st.get("round_kept", True))  # rows kept
        merged: dict[str, dict[str, int]] = {}
        for st in synthesized:
            for verifier, stats in (st.get("verification") or {}).items():
                total = merged.setdefault(verifier, {"checked": 0, "kept": 0, "dropped": 0})
                for key, value in stats.items():
                    total[key] = total.get(key, 0) + value
        per_row = round(tokens / rows) if rows and tokens else None
        cells = (info.get("train_rows"), verification_cell(merged), per_row, info.get("validation"), info.get("test"))
        return f"| {name} | " + " | ".join(format_cell(c) for c in cells) + " |"

    rounds = state.get("s3", {}).get("rounds", {})
    if rounds:
        ordered = [rounds[str(k)] for k in sorted(int(i) for i in rounds)]
        lines.append(line("s3 seed only", ordered[0], ordered[:1]))
        # the final model is the last kept round's; the tokens of set-aside rounds count against the kept rows
        final = [info for info in ordered if info.get("round_kept", True)][-1]
        lines.append(line("s3 (all rounds)", final, ordered))
    for name in BASELINES:
        info = state.get(name) or {}
        if info.get("train_rows"):
            lines.append(line(name, info, [info]))
    return "\n".join(lines)


def round_card(
    spec: TaskSpec, config: S3Config, sizes: dict[str, int], rows: list[dict[str, Any]], *, upto: int
) -> str:
    """The dataset card published with round ``upto``: configs, the per-round table, the plot and the run."""
    from .card import render_card

    c = config
    llm = c.model if c.base_url else f"{c.local_model} (embedded llama.cpp)"
    run = (
        f"LLM: `{llm}`; small model: `{c.small_model or 'all-MiniLM-L6-v2 (packaged)'}`; gold: `{c.gold}` "
        f"({c.validation_size} validation / {c.test_size} test examples); seed size {c.seed_size}, "
        f"errors from `{c.error_pool}` ({c.error_pool_size} rows), {c.examples_per_error} candidate(s) per error "
        f"verified by {(' or ' if c.verify_mode == 'any' else ', ').join(c.verifiers) or 'none'}"
        f"{', hard ones only' if c.select_hard else ''}, at most "
        f"{c.max_errors_per_round} errors per round, round gate `{c.round_gate}`. "
        "The full run configuration is in `s3_run_config.json`."
    )
    sections = {
        "S3 rounds": markdown_table(rows)
        + "\n\n`errors used`: error-pool errors of the previous round extrapolated in that round; `api calls`: "
        "completions bought (retries included; `re-asked`: why, by reason); `rejected`: candidates dropped "
        "(invalid, refused, duplicate, or by a verifier: `verifier_<name>`); `mixing`: new rows / rows before the round; `s / new row`: wall seconds of the round's data "
        "stage (the LLM calls: rationales and seed rows, or descriptions, candidates and verdicts; and the checks) "
        "per new row; `pool errors`: errors of this "
        "round's model on the error pool; scores: the small model trained on the kept rounds' data up to that round, "
        "on the gold validation and test sets. A round marked `set aside` did not beat the best kept round on the "
        "validation set (`round_gate`; with `validation_or_tie`, scored below it): its rows are in its own config "
        "but not in `all`, and later rounds neither "
        "train on them nor extrapolate its model's errors.\n\n![accuracy per round](accuracy.png)",
        "Run": run,
    }
    return render_card(
        spec, sizes, sections=sections, extra_metadata={"s3_run": {"rounds_published": upto, "method": "s3"}}
    )


def accuracy_plot(rows: list[dict[str, Any]], spec: TaskSpec, path: str | Path) -> None:
    """A PNG of the small model's validation and test score per round (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    metric = primary_metric(spec)
    xs = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for key, style in ((f"val {metric}", "o-"), (f"test {metric}", "s--")):
        ys = [row[key] for row in rows]
        if any(y is not None for y in ys):
            ax.plot(xs, [float("nan") if y is None else y for y in ys], style, label=key)
    ax.set_xticks(xs, [str(row["round"]) for row in rows])
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_title(f"S3 {spec.name}: small model per round")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
