"""Do extrapolated rows keep what made their errors hard? The seed model's accuracy on S3's and goldgen's new rows.

S3's premise is that rows written from the small model's *errors* teach it more than rows written from any gold
rows. That can only work if some of an error's difficulty survives the trip through the LLM. This reads the run
folders of ``benchmarks/quality.py`` (methods ``s3`` and ``goldgen`` from the same seed stage) and, per seed, scores
with that seed's seed-round model (``s3/round_0/model``, the model whose errors S3's round 1 extrapolated):

- ``errors``: the gold pool rows it got wrong, from which S3's round 1 drew the ones it extrapolated (0% when the
  model is the one that found them: a check that the right model was loaded);
- ``s3 round 1``: the rows S3 wrote from those errors (kept by the verifier);
- ``goldgen``: the rows goldgen wrote, the same way, from random pool rows (its rows beyond the seed's);
- ``goldgen_correct`` (when the folder has it): the rows written from pool rows the seed model got right;
- ``seed rows``: its own training rows (how well it fits what it was trained on).

Side by side: the accuracy on each, and the paired difference ``goldgen − s3 round 1`` over seeds (95% t interval,
exact sign-flip p). If S3's rows carried their errors' difficulty, the seed model would get them wrong more often
than goldgen's. Only the seed model is used: it is the one model both methods' rows were written against. Nothing
is trained; scoring takes a few seconds per seed on 2 cores.

    python benchmarks/error_transfer.py --runs runs/quality_volume --task imdb
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from quality import paired_interval, sign_flip_p


def accuracy(
    model, tokenizer, rows: list[dict[str, Any]], field: str, max_length: int, batch_size: int = 32
) -> float | None:
    """Share of ``rows`` whose label the model predicts (``None`` for no rows)."""
    import torch

    if not rows:
        return None
    right = 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            encoded = tokenizer(
                [r[field] for r in batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            predicted = model(**encoded).logits.argmax(-1).tolist()
            right += sum(int(p == r["label"]) for p, r in zip(predicted, batch))
    return right / len(rows)


def score_seed(seed_dir: Path, spec) -> dict[str, Any] | None:
    """The seed model's accuracy on each row set of one seed's run folder; ``None`` when a part is missing. The rows
    are read as the task's S3 json (a bad record is an error naming its file, line and field)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from s3_hf.config import CLASSIFICATION_MAX_LENGTH
    from s3_hf.s3_json import read_s3_json

    model_dir = seed_dir / "s3" / "round_0" / "model"
    paths = {
        "errors": seed_dir / "errors" / "round_0.jsonl",
        "seed": seed_dir / "data" / "seed.jsonl",
        "s3": seed_dir / "data" / "round_1.jsonl",
        "goldgen": seed_dir / "goldgen" / "goldgen_train.jsonl",
    }
    if not model_dir.is_dir() or not all(p.is_file() for p in paths.values()):
        return None
    correct = seed_dir / "goldgen_correct" / "goldgen_correct_train.jsonl"
    if correct.is_file():
        paths["goldgen_correct"] = correct
    field = spec.input_fields[0]
    rows = {name: read_s3_json(path, spec) for name, path in paths.items()}
    seed_texts = {r[field] for r in rows["seed"]}
    for name in ("goldgen", "goldgen_correct"):
        if name in rows:
            rows[name] = [r for r in rows[name] if r[field] not in seed_texts]
    run_config = seed_dir / "s3_run_config.json"
    recipe = json.loads(run_config.read_text(encoding="utf-8")) if run_config.is_file() else {}
    max_length = recipe.get("max_length") or CLASSIFICATION_MAX_LENGTH  # the run's own token budget
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out: dict[str, Any] = {"run": seed_dir.name}
    for name, subset in rows.items():
        out[name] = {"rows": len(subset), "accuracy": accuracy(model, tokenizer, subset, field, max_length)}
    return out


def render(results: list[dict[str, Any]]) -> str:
    names = [("errors", "errors it got wrong"), ("s3", "s3 round 1 rows"), ("goldgen", "goldgen rows"),
             ("goldgen_correct", "goldgen_correct rows"), ("seed", "its seed rows")]  # fmt: skip
    missing = {"accuracy": None, "rows": 0}
    names = [(n, title) for n, title in names if any(n in r for r in results)]
    results = [{n: r.get(n, missing) for n, _ in names} | {"run": r["run"]} for r in results]
    lines = [
        "The seed-round model's accuracy (%) on the rows each method wrote (rows in brackets)",
        "",
        "| seed | " + " | ".join(title for _, title in names) + " | goldgen − s3 |",
        "|---" * (len(names) + 2) + "|",
    ]
    gaps = []
    for r in results:
        cells = [
            f"{100 * r[n]['accuracy']:.1f} ({r[n]['rows']})" if r[n]["accuracy"] is not None else "-" for n, _ in names
        ]
        gap = None
        if r["s3"]["accuracy"] is not None and r["goldgen"]["accuracy"] is not None:
            gap = 100 * (r["goldgen"]["accuracy"] - r["s3"]["accuracy"])
            gaps.append(gap)
        lines.append(f"| {r['run']} | " + " | ".join(cells) + f" | {'-' if gap is None else f'{gap:+.1f}'} |")
    if results:
        means = []
        for n, _ in names:
            values = [100 * r[n]["accuracy"] for r in results if r[n]["accuracy"] is not None]
            means.append(f"{statistics.fmean(values):.1f}" if values else "-")
        summary = paired_interval(gaps) if gaps else "-"
        p = sign_flip_p(gaps) if gaps else None
        lines.append(
            "| **mean** | "
            + " | ".join(means)
            + f" | **{summary}**"
            + (f", p {p:.3f}" if p is not None else "")
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/quality_volume", help="the --out folder of benchmarks/quality.py")
    parser.add_argument("--task", default="imdb", help="a single-text classification task")
    parser.add_argument("--out", default=None, help="write the table here too (default: <runs>/error_transfer.md)")
    cli = parser.parse_args(argv)

    from s3_hf.tasks import get_task

    spec = get_task(cli.task)
    if spec.is_qa or len(spec.input_fields) != 1:
        raise SystemExit(f"--task {cli.task!r}: only single-text classification tasks are scored here")
    task_dir = Path(cli.runs) / cli.task
    seed_dirs = sorted(task_dir.glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 0)
    results = []
    for seed_dir in seed_dirs:
        scored = score_seed(seed_dir, spec)
        if scored is None:
            print(f"{seed_dir}: no seed model, errors, S3 round 1 or goldgen rows; skipped", file=sys.stderr)
            continue
        results.append(scored)
    table = render(results)
    print(table)
    out = Path(cli.out) if cli.out else task_dir.parent / "error_transfer.md"
    out.write_text(table + "\n", encoding="utf-8")
    (out.with_suffix(".json")).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
