"""Evaluate the tiny models with a MisclassificationCallback and dump what every process collected.

Run in-process (``run(...)``) for the 1-process result, and under
``torchrun --nproc_per_node 2 tests/scripts/misclassification_run.py MODELS DATA OUT`` for the 2-process one.
With a fifth argument ``unbound``, each process instead evaluates with a callback never attached to its plain
Trainer and records the error it gets (every process must raise, none may hang).
Each process writes ``OUT/rank-<r>.json``: per eval_do_concat_batches mode and task, the eval indexes, predicted
labels/answers and probabilities it holds in memory, and the files its callback wrote. Each of the four evaluations
binds its callback another way (:data:`BINDINGS`), so every binding path also runs under 2 processes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import datasets
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

from s3_hf.callback import MisclassificationCallback, MisclassificationTrainer, MisclassificationTrainerMixin
from s3_hf.metrics import compute_metrics_for
from s3_hf.training import load_small_model, tokenize_dataset

QA_MAX_LENGTH, QA_STRIDE, QA_N_BEST = 48, 16, 64

# how the callback of each evaluation is bound to its Trainer
BINDINGS = {
    ("rte", True): "callbacks+attach",  # Trainer(callbacks=[cb]), then cb.attach(trainer)
    ("adqa", True): "mixin-callbacks",  # MisclassificationTrainer(callbacks=[cb])
    ("rte", False): "add_callback+attach",  # trainer.add_callback(cb), then cb.attach(trainer)
    ("adqa", False): "subclass-add_callback",  # a user's Trainer subclass with the mixin, then add_callback(cb)
}


class CustomTrainer(MisclassificationTrainerMixin, Trainer):
    """A user's own Trainer subclass: the mixin attaches its MisclassificationCallbacks."""

    def evaluate(self, *args, **kwargs):
        self.custom_evaluations = getattr(self, "custom_evaluations", 0) + 1
        return super().evaluate(*args, **kwargs)


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
    binding = BINDINGS[(task, concat)]
    trainer_class = {"mixin": MisclassificationTrainer, "subclass": CustomTrainer}.get(binding.split("-")[0], Trainer)
    trainer = trainer_class(
        model=model,
        args=args,
        eval_dataset=features,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics,
        callbacks=[callback] if "callbacks" in binding else None,
    )
    if "add_callback" in binding:
        trainer.add_callback(callback)
    if binding.endswith("+attach"):
        assert callback.attach(trainer) is callback
    result = trainer.evaluate()
    errors = callback.errors
    report = callback.reports[-1]
    out = {
        "metrics": {k: v for k, v in result.items() if not k.endswith(("runtime", "per_second"))},
        "eval_index": list(errors["eval_index"]),
        "path": str(report.path) if report.path is not None else None,
        "binding": binding,
        "bound": callback.trainer is trainer,
        "registered": sum(cb is callback for cb in trainer.callback_handler.callbacks),
        "custom_evaluations": getattr(trainer, "custom_evaluations", None),
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


def run_unbound(models: Path, data: Path, out: Path) -> dict:
    """Evaluate with ``Trainer(callbacks=[callback])`` and no ``attach``: the error each process raises."""
    torch.set_num_threads(1)
    raw = datasets.load_from_disk(str(data / "rte"))
    tokenizer = AutoTokenizer.from_pretrained(models / "cls")
    callback = MisclassificationCallback("rte", raw)
    trainer = Trainer(
        model=load_small_model("rte", models / "cls"),
        args=TrainingArguments(str(out / "unbound"), per_device_eval_batch_size=4, use_cpu=True, report_to=[]),
        eval_dataset=tokenize_dataset("rte", raw, tokenizer, split="eval"),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics_for("rte"),
        callbacks=[callback],
    )
    try:
        trainer.evaluate()
    except Exception as err:  # the test checks the type by name
        return {"error": type(err).__name__, "message": str(err), "reports": len(callback.reports)}
    return {"error": None, "reports": len(callback.reports)}


if __name__ == "__main__":
    models, data, out = (Path(p) for p in sys.argv[1:4])
    rank = int(os.environ.get("RANK", "0"))
    results = run_unbound(models, data, out) if sys.argv[4:] == ["unbound"] else run(models, data, out)
    results["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    (out / f"rank-{rank}.json").write_text(json.dumps(results))
