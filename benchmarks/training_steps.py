"""Is the small model trained long enough on a small seed? The pipeline's recipe at several epoch counts.

At the shipped defaults S3's seed round trains MiniLM on 48 rows for 6 epochs at batch 16: 18 optimizer steps. On
some seeds that model never leaves chance (seed 1 of the 5-seed IMDb protocol: 54.7% on test, its best epoch the
first), and then its "errors" are half the pool, picked by noise. This retrains, with the pipeline's own recipe
(``S3Pipeline.train_and_evaluate``: epoch selection on the error pool, the same gold validation and test rows), on the
rows a ``benchmarks/quality.py`` run trained one of its stages on (default: the seed round's, ``data/seed.jsonl``),
at each ``--epochs``, and prints the test accuracy side by side: per seed, mean ± std, and the paired difference to
the first ``--epochs`` value (95% t interval, exact sign-flip p). The run's own recipe (gold sizes, pool, batch
size, learning rate, seed) is read from its ``s3_run_config.json``. Each (seed, epochs) result is saved as it
finishes; a rerun resumes.

    python benchmarks/training_steps.py --runs runs/q_ver_llm --seeds 1 2 3 4 5 --epochs 6 24
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

RECIPE = ("task", "gold", "validation_size", "test_size", "error_pool", "error_pool_size", "small_model",
          "batch_size", "learning_rate", "max_length", "load_best_model_at_end", "seed")  # fmt: skip


def run_seed(seed_dir: Path, epochs: list[float], cli) -> dict[float, dict[str, Any]] | None:
    """Train on the seed folder's rows at each epoch count (resuming from ``<out>/<seed>/epochs_<E>.json``)."""
    from s3_hf.atomic import write_json_atomic
    from s3_hf.pipeline import S3Config, S3Pipeline
    from s3_hf.s3_json import read_s3_json

    rows_path, config_path = seed_dir / cli.rows, seed_dir / "s3_run_config.json"
    if not rows_path.is_file() or not config_path.is_file():
        print(f"{seed_dir}: no {cli.rows} or s3_run_config.json; skipped", file=sys.stderr)
        return None
    recipe = json.loads(config_path.read_text(encoding="utf-8"))
    out_dir = Path(cli.out) / seed_dir.name
    out: dict[float, dict[str, Any]] = {}
    rows = None
    for count in epochs:
        path = out_dir / f"epochs_{count:g}.json"
        if path.is_file():
            out[count] = json.loads(path.read_text(encoding="utf-8"))
            continue
        config = S3Config(
            **{k: recipe[k] for k in RECIPE if k in recipe}, epochs=count, output_dir=str(out_dir), publish=False
        )
        pipeline = S3Pipeline(config)
        if rows is None:
            rows = read_s3_json(rows_path, pipeline.spec)
        print(f"[training_steps] {seed_dir.name}: {len(rows)} rows, {count:g} epochs ...", file=sys.stderr, flush=True)
        started = time.time()
        result = pipeline.train_and_evaluate(rows, f"epochs_{count:g}")
        result["seconds"] = round(time.time() - started, 1)
        result["rows"] = len(rows)
        write_json_atomic(path, result)  # a run stopped mid-write leaves no half file to resume from
        out[count] = result
    return out


def render(by_seed: dict[str, dict[float, dict[str, Any]]], epochs: list[float], rows_name: str) -> str:
    lines = [
        f"The small model on each run's {rows_name}, the pipeline's recipe, test accuracy (%), {', '.join(by_seed)}",
        "",
        f"| epochs | test (mean ± std) | per seed (best epoch) | − {epochs[0]:g} epochs [95% CI] | sign-flip p | "
        "s per run |",
        "|---|---|---|---|---|---|",
    ]
    rows = setting_rows(
        by_seed,
        epochs,
        show=lambda count: f"{count:g}",
        per_seed=lambda seed, count, test: f"{test:.1f} ({by_seed[seed][count].get('best_epoch', '-')})",
    )
    return "\n".join(lines + rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/q_ver_llm", help="the --out folder of benchmarks/quality.py")
    parser.add_argument("--task", default="imdb")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--rows", default="data/seed.jsonl", help="the rows to train on, inside each seed folder")
    parser.add_argument("--epochs", type=float, nargs="+", default=[6.0, 24.0], help="the first is the reference")
    parser.add_argument("--out", default="runs/training_steps")
    cli = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    by_seed: dict[str, dict[float, dict[str, Any]]] = {}
    for seed in cli.seeds:
        seed_dir = Path(cli.runs) / cli.task / f"seed{seed}"
        results = run_seed(seed_dir, cli.epochs, cli)
        if results is not None:
            by_seed[seed_dir.name] = results
    if not by_seed:
        raise SystemExit(f"no seed folder of {cli.runs}/{cli.task} had {cli.rows} and s3_run_config.json")
    table = render(by_seed, cli.epochs, cli.rows)
    print(table)
    Path(cli.out).mkdir(parents=True, exist_ok=True)
    (Path(cli.out) / "training_steps.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
