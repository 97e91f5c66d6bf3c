"""How often is a verified label right? The verifiers' precision on candidates whose true label is known.

Real gold rows of the task's error pool (label-balanced, sampled with ``--seed``) are each offered twice to the
verifiers: once with their gold label and once with the other label, which is what an extrapolated example with a
label-flip looks like to a verifier. Printed side by side, per verifier and for no verification:

- ``precision``: of the candidates kept, the share whose label is the gold one (no verification: 50% by design);
- ``recall``: of the candidates with the gold label, the share kept;
- ``flips caught``: of the candidates with the wrong label, the share dropped.

Verifiers: ``llm`` (the generator, :class:`s3_hf.verification.LLMLabelVerifier`, with logprobs where the endpoint gives
them), ``llm batch-calibrated`` (the same answers, replayed from the cache, with ``calibration="batch"``) and, with
``--student DIR``, a saved small model (e.g. an S3 run's ``s3/final_model``). The gold rows are real reviews /
SQuAD-derived pairs / RTE pairs, longer and subtler than most generated candidates, so this is a conservative figure.

    python benchmarks/verifier_precision.py --task imdb --rows 100
    python benchmarks/verifier_precision.py --task qnli --rows 100 --student runs/quality/qnli/seed1/s3/final_model
    python benchmarks/verifier_precision.py --task rte --rows 100 --gold ../shared/data/gold/rte_train.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="imdb", help="a two-label classification task, e.g. imdb, qnli, rte")
    parser.add_argument(
        "--gold", default="offline", help="gold source of load_gold: 'offline' (imdb, qnli) or a local file/folder"
    )
    parser.add_argument("--rows", type=int, default=100, help="gold rows (each offered with both labels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--student", default=None, help="a saved small model folder to verify with as well")
    parser.add_argument("--local-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="local")
    parser.add_argument("--out", default="runs/verifier_precision")
    cli = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from s3_hf.gold import load_gold
    from s3_hf.llm_engine import LLMConfig, LLMEngine
    from s3_hf.tasks import get_task
    from s3_hf.verification import LLMLabelVerifier, StudentLabelVerifier

    spec = get_task(cli.task)
    if spec.is_qa or spec.num_labels != 2:
        raise SystemExit("this benchmark flips binary labels: use a two-label classification task")
    gold = load_gold(spec, cli.gold)
    # the train split (the error pool's source); a single local file loads as one split, which is then the pool
    split = "train" if "train" in gold else next(iter(gold)) if len(gold) == 1 else None
    if split is None:
        raise SystemExit(f"--gold {cli.gold}: no train split to draw the rows from (splits: {sorted(gold)})")
    pool = gold[split].shuffle(seed=cli.seed)
    rows: list[dict] = []
    per_label = cli.rows // 2
    counts = dict.fromkeys(range(spec.num_labels), 0)
    for row in pool:
        if counts[row["label"]] < per_label:
            counts[row["label"]] += 1
            rows.append(row)
        if len(rows) == 2 * per_label:
            break
    true = [dict(r) for r in rows]
    flipped = [{**r, "label": 1 - r["label"]} for r in rows]
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    config = LLMConfig(
        base_url=cli.base_url,
        model=cli.model,
        local_model=cli.local_model,
        cache_dir=str(out / f"llm_cache_{cli.task}"),
        seed=cli.seed,
        max_concurrency=4,
    )
    student = None
    if cli.student:  # load it first: a wrong path fails before the LLM pass, not after it
        student = StudentLabelVerifier(spec, cli.student, threshold=cli.threshold)
        student.load()
    with LLMEngine(config) as engine:
        verifiers = [
            ("llm", LLMLabelVerifier(spec, engine, threshold=cli.threshold)),
            # the same answers (replayed from the cache), batch-calibrated over the rows of one call
            ("llm batch-calibrated", LLMLabelVerifier(spec, engine, threshold=cli.threshold, calibration="batch")),
        ]
        if student is not None:
            verifiers.append(("student", student))
        for name, verifier in verifiers:
            started = time.time()
            kept_true = sum(v.keep for v in verifier.verdicts(true))
            kept_flipped = sum(v.keep for v in verifier.verdicts(flipped))
            results[name] = {
                "kept_true": kept_true,
                "kept_flipped": kept_flipped,
                "seconds": round(time.time() - started, 1),
            }
        usage = engine.usage.summary()
    n = len(rows)
    lines = [
        f"Verifier precision on {n} real {cli.task} gold rows, each offered with its gold and its flipped label",
        "",
        "| verifier | precision | recall | flips caught | kept (gold / flipped) | seconds |",
        "|---|---|---|---|---|---|",
        f"| none | {50.0:.1f}% | 100.0% | 0.0% | {n} / {n} | 0 |",
    ]
    for name, r in results.items():
        kept = r["kept_true"] + r["kept_flipped"]
        precision = 100 * r["kept_true"] / kept if kept else float("nan")
        lines.append(
            f"| {name} | {precision:.1f}% | {100 * r['kept_true'] / n:.1f}% | "
            f"{100 * (n - r['kept_flipped']) / n:.1f}% | {r['kept_true']} / {r['kept_flipped']} | {r['seconds']} |"
        )
    table = "\n".join(lines)
    print(table)
    (out / f"{cli.task}.md").write_text(table + "\n", encoding="utf-8")
    (out / f"{cli.task}.json").write_text(json.dumps({"rows": n, "results": results, "usage": usage}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
