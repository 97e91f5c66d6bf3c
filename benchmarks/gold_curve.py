"""How many real rows does the small model need before any generator can show a difference? A learning curve.

S3's runs at this machine's scale train on 50 to 170 rows. On IMDb that is enough for MiniLM to learn the task; on
QNLI and RTE every method stayed at chance, real rows included (README). This trains the small model with the
pipeline's own recipe (trainer, epochs, epoch selection on the error pool, gold validation and test rows drawn as
``s3-hf run`` draws them, at ``--validation-size`` / ``--test-size``) on N rows of the task's REAL training split,
for each N and seed, and prints side by side per N: test accuracy (mean ± std over seeds), and the paired difference
to the smallest N with its 95% t interval. The rows of a smaller N are the first rows of a larger one (nested, so a difference is one of size only), and none is in
the error pool, the validation or the test rows. Each (seed, N) result is saved as it finishes; a rerun resumes.

    python benchmarks/gold_curve.py --task qnli --sizes 80 400 1600 --seeds 1 2 3 --out runs/gold_curve
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from quality import setting_rows


def training_rows(pipeline, size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` rows of the gold training split, shuffled with ``seed``, none of them in the error pool, validation
    or test rows (by content)."""
    from s3_hf.dedup import content_digest
    from s3_hf.gold import load_gold

    fields = pipeline.spec.input_fields
    validation, test = pipeline.gold()
    held_out = {
        content_digest(row, fields) for part in (pipeline.error_pool(), validation, test or []) for row in part
    }
    train = load_gold(pipeline.spec, pipeline.config.gold)["train"].shuffle(seed=seed)
    rows = []
    for row in train:
        if content_digest(row, fields) not in held_out:
            rows.append(row)
            if len(rows) == size:
                break
    if len(rows) < size:
        raise SystemExit(f"{pipeline.spec.name}: only {len(rows)} training rows outside the pool and gold sets")
    return rows


def run_seed(task: str, seed: int, sizes: list[int], cli) -> dict[int, dict[str, Any]]:
    """Train on each size for one seed (resuming from ``<out>/<task>/seed<k>/gold_<N>.json``)."""
    from s3_hf.pipeline import S3Config, S3Pipeline

    run_dir = Path(cli.out) / task / f"seed{seed}"
    config = S3Config(
        task=task,
        output_dir=str(run_dir),
        seed=seed,
        validation_size=cli.validation_size,
        test_size=cli.test_size,
        error_pool_size=cli.error_pool_size,
        publish=False,
        **({"epochs": cli.epochs} if cli.epochs is not None else {}),
    )
    pipeline = S3Pipeline(config)
    rows = None
    out: dict[int, dict[str, Any]] = {}
    for size in sizes:
        path = run_dir / f"gold_{size}.json"
        if path.is_file():
            out[size] = json.loads(path.read_text(encoding="utf-8"))
            continue
        if rows is None:
            rows = training_rows(pipeline, max(sizes), seed)
        print(f"[gold_curve] {task} seed {seed}: {size} rows ...", file=sys.stderr, flush=True)
        started = time.time()
        result = pipeline.train_and_evaluate(rows[:size], f"gold_{size}")
        result["seconds"] = round(time.time() - started, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        out[size] = result
    return out


def render(task: str, by_seed: dict[int, dict[int, dict[str, Any]]], sizes: list[int]) -> str:
    """The table: per size, test accuracy over seeds and the paired difference to the smallest size."""
    seeds = sorted(by_seed)
    lines = [
        f"{task}: the small model on N real training rows, test accuracy (%), seeds {', '.join(map(str, seeds))}",
        "",
        f"| rows | test (mean ± std) | per seed | − {sizes[0]} rows [95% CI] | sign-flip p | s per run |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + setting_rows({s: by_seed[s] for s in seeds}, sizes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="qnli", choices=["imdb", "qnli"], help="a task with an offline train split")
    parser.add_argument("--sizes", type=int, nargs="+", default=[80, 400, 1600])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--validation-size", type=int, default=200)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--error-pool-size", type=int, default=400, help="the epoch-selection rows, as in s3-hf run")
    parser.add_argument("--epochs", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--out", default="runs/gold_curve")
    cli = parser.parse_args(argv)
    sizes = sorted(set(cli.sizes))
    if sizes[0] < 1:
        parser.error(f"--sizes must be positive, got {cli.sizes}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    by_seed = {seed: run_seed(cli.task, seed, sizes, cli) for seed in cli.seeds}
    table = render(cli.task, by_seed, sizes)
    print(table)
    out = Path(cli.out)
    (out / f"gold_curve_{cli.task}.md").write_text(table + "\n", encoding="utf-8")
    (out / f"gold_curve_{cli.task}.json").write_text(json.dumps(by_seed, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
