"""Evaluate the tiny models with a MisclassificationCallback and dump what every process collected.

Run in-process (``run(...)``) for the 1-process result, and under
``torchrun --nproc_per_node 2 tests/scripts/misclassification_run.py MODELS DATA OUT`` for the 2-process one.
Each process writes ``OUT/rank-<r>.json``: per eval_do_concat_batches mode and task, the eval indexes, predicted
labels/answers and probabilities it holds in memory, and the files its callback wrote.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import datasets
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

from s3_hf.callback import MisclassificationCallback
from s3_hf.metrics import compute_metrics_for
from s3_hf.training import load_small_model, tokenize_dataset

QA_MAX_LENGTH, QA_STRIDE, QA_N_BEST = 48, 16, 64


def evaluate_once(task: str, model_dir: Path, raw: datasets.Dataset, out_dir: Path, concat: bool) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_small_model(task, model_dir)
    if task == "adqa":
        features = tokenize_dataset(task, raw, tokenizer, split="eval", max_length=QA_MAX_LENGTH, doc_stride=QA_STRIDE)
        metrics = compute_metrics_for(task, eval_examples=raw, eval_features=features, n_best_size=QA_N_BEST)
        callback = MisclassificationCallback(task, raw, n_best_size=QA_N_BEST)
    else:
        features = tokenize_dataset(task, raw, tokenizer, split="eval")
        metrics = compute_metrics_for(task)
        callback = MisclassificationCallback(task, raw)
    args = TrainingArguments(
        str(out_dir / f"{task}-concat{int(concat)}"),
        per_device_eval_batch_size=4,
        eval_do_concat_batches=concat,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        eval_dataset=features,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics,
        callbacks=[callback],
    )
    result = trainer.evaluate()
    errors = callback.errors
    report = callback.reports[-1]
    out = {
        "metrics": {k: v for k, v in result.items() if not k.endswith(("runtime", "per_second"))},
        "eval_index": list(errors["eval_index"]),
        "path": str(report.path) if report.path is not None else None,
    }
    if task == "adqa":
        out["predicted_answer"] = list(errors["predicted_answer"])
    else:
        out["predicted_label"] = list(errors["predicted_label"])
        out["probabilities"] = list(errors["probabilities"])
    return out


def run(models: Path, data: Path, out: Path) -> dict:
    torch.set_num_threads(1)
    results = {}
    for concat in (True, False):
        for task, model_name in (("rte", "cls"), ("adqa", "qa")):
            raw = datasets.load_from_disk(str(data / task))
            results[f"{task}-concat{int(concat)}"] = evaluate_once(task, models / model_name, raw, out, concat)
    return results


if __name__ == "__main__":
    models, data, out = (Path(p) for p in sys.argv[1:4])
    rank = int(os.environ.get("RANK", "0"))
    results = run(models, data, out)
    results["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    (out / f"rank-{rank}.json").write_text(json.dumps(results))
