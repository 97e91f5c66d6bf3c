"""Evaluation in dataset order against longest-first (``LengthSortedEvalTrainer``), on real IMDb reviews.

S3 scores its small model on gold reviews at every epoch (the error pool, for the best epoch and the errors) and at
the end of every round (validation and test): in the demo, most of a round's training stage. With dynamic padding a
batch is padded to its longest review, and in dataset order nearly every batch of 32 holds one at the token limit
(the pipeline's 128 for classification; most IMDb reviews are longer, so at 128 most batches are full either way).
``s3_hf.training.LengthSortedEvalTrainer`` (what ``build_trainer`` builds) reads the rows longest first and puts
every array back in dataset order. This times ``evaluate()`` (with the ``MisclassificationCallback``, as the
pipeline runs it) of the same model on the same reviews both ways, interleaved, and checks that both give the same
logits, metrics and errors.

    python benchmarks/eval_order.py --examples 400 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PrinterCallback, TrainingArguments

from s3_hf.assets import encoder_path
from s3_hf.config import CLASSIFICATION_MAX_LENGTH
from s3_hf.gold import load_gold
from s3_hf.training import build_trainer


def padded_tokens(lengths: Sequence[int], batch_size: int) -> int:
    """Tokens the model reads when each batch of ``lengths`` (in that order) is padded to its longest."""
    return sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=400, help="gold reviews evaluated (IMDb validation)")
    parser.add_argument(
        "--max-length",
        type=int,
        default=CLASSIFICATION_MAX_LENGTH,
        help=f"token budget (the pipeline's for classification: {CLASSIFICATION_MAX_LENGTH})",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="eval batch size (the pipeline's: 32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh classification head")
    cli = parser.parse_args(argv)
    torch.set_num_threads(cli.threads)

    raw = load_gold("imdb")["validation"].select(range(cli.examples))
    out = tempfile.mkdtemp(prefix="s3hf-eval-order-")
    trainers = {}
    for name, sort in (("dataset order", False), ("longest first", True)):
        args = TrainingArguments(
            f"{out}/{'sorted' if sort else 'plain'}",
            per_device_eval_batch_size=cli.batch_size,
            use_cpu=True,
            report_to=[],
            disable_tqdm=True,
            seed=cli.seed,
        )
        trainer = build_trainer(
            "imdb", encoder_path(), None, raw, args, max_length=cli.max_length, sort_eval_by_length=sort
        )
        trainer.remove_callback(PrinterCallback)
        trainers[name] = trainer

    lengths = [len(ids) for ids in next(iter(trainers.values())).eval_dataset["input_ids"]]
    tokens = {"dataset order": padded_tokens(lengths, cli.batch_size)}
    tokens["longest first"] = padded_tokens(sorted(lengths, reverse=True), cli.batch_size)

    results = {name: trainer.evaluate() for name, trainer in trainers.items()}  # warm-up, and the metrics compared
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(cli.repeats):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.evaluate()
            times[name].append(time.perf_counter() - start)
    logits = {name: trainer.predict(trainer.eval_dataset).predictions for name, trainer in trainers.items()}
    errors = {
        name: list(trainer.misclassification_callback.errors["eval_index"]) for name, trainer in trainers.items()
    }

    print(
        f"evaluate() with the MisclassificationCallback on {cli.examples} IMDb gold reviews, MiniLM, max_length "
        f"{cli.max_length}, batch {cli.batch_size}, {cli.threads} threads; {cli.repeats} interleaved runs each; "
        f"{sum(lengths)} real tokens (mean {np.mean(lengths):.0f}, {np.mean(np.array(lengths) == cli.max_length):.0%} "
        "at the limit)"
    )
    print("| order | median s | min s | reviews/s (median) | × dataset order (median) | × (min) | tokens read |")
    print("|---|---|---|---|---|---|---|")
    base, base_min = statistics.median(times["dataset order"]), min(times["dataset order"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.2f} | {min(values):.2f} | {cli.examples / median:.1f} | {median / base:.3f}× | "
            f"{min(values) / base_min:.3f}× | {tokens[name]:,} ({tokens[name] / sum(lengths):.2f}× the real) |"
        )
    a, b = logits["dataset order"], logits["longest first"]
    same_argmax = int((a.argmax(-1) == b.argmax(-1)).sum())
    print(
        f"same predicted label on {same_argmax} of {len(a)} reviews; largest logit difference "
        f"{float(np.abs(a - b).max()):.2e}; errors: {len(errors['dataset order'])} and "
        f"{len(errors['longest first'])}, the same rows: {errors['dataset order'] == errors['longest first']}; "
        f"accuracy {results['dataset order']['eval_accuracy']:.4f} and {results['longest first']['eval_accuracy']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
