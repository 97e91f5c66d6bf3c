"""Your own Trainer script, plus S3: collect the errors on gold validation data and extrapolate them with an LLM.

This is an ordinary ``transformers`` fine-tuning script (your model, your tokenization, your ``compute_metrics``) with
two additions: a :class:`~s3_hf.callback.MisclassificationCallback` attached to the Trainer
(``MisclassificationCallback(...).attach(trainer)``), and, after evaluation, an
:class:`~s3_hf.extrapolation.ErrorExtrapolator` that writes new training examples from the errors (on the main
process only; the other processes wait for its file). With your own Trainer class, put
:class:`~s3_hf.callback.MisclassificationTrainerMixin` first in its bases and pass the callback in ``callbacks=[...]``
instead.

```
python examples/trainer_with_s3_callback.py --output-dir out                          # local LLM, offline data
python examples/trainer_with_s3_callback.py --base-url https://api.openai.com/v1 --model gpt-4o-mini
accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
    examples/trainer_with_s3_callback.py --output-dir out                             # 2 processes (CPU: add --cpu-ddp)
```

The new examples land in ``<output-dir>/extrapolated.jsonl`` (S3 json, loadable with ``s3_hf.s3_json.read_s3_json`` or
``s3-hf export``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from s3_hf.assets import encoder_path
from s3_hf.callback import MisclassificationCallback
from s3_hf.extrapolation import ErrorExtrapolator
from s3_hf.gold import load_gold
from s3_hf.llm_engine import LLMConfig, LLMEngine
from s3_hf.s3_json import read_s3_json, write_s3_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="s3_callback_example")
    parser.add_argument("--small-model", default=None, help="checkpoint (default: the packaged MiniLM)")
    parser.add_argument("--train-file", default=None, help="S3 json training data (default: 200 gold IMDb reviews)")
    parser.add_argument("--validation-size", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-errors", type=int, default=16, help="errors to extrapolate")
    parser.add_argument("--per-error", type=int, default=1)
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible URL (default: embedded llama.cpp)")
    parser.add_argument("--model", default="local", help="LLM model name")
    parser.add_argument("--local-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--cpu-ddp", action="store_true", help="several CPU processes (torchrun/accelerate)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    state = PartialState(cpu=args.cpu_ddp or not torch.cuda.is_available())
    out = Path(args.output_dir)
    checkpoint = args.small_model or str(encoder_path())

    # ---- an ordinary Trainer set-up -------------------------------------------------------------------------
    gold = load_gold("imdb")
    train = read_s3_json(args.train_file, "imdb") if args.train_file else gold["train"].select(range(200)).to_list()
    raw_eval = gold["validation"].select(range(args.validation_size))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=128)

    from datasets import Dataset

    train_features = Dataset.from_list(train).map(tokenize, batched=True, remove_columns=["text"])
    eval_features = raw_eval.map(tokenize, batched=True, remove_columns=["text"])

    def compute_metrics(eval_pred):  # the user's own metric keeps working
        predictions = np.argmax(eval_pred.predictions, axis=-1)
        return {"accuracy": float((predictions == eval_pred.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(out / "trainer"),
            num_train_epochs=args.epochs,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=32,
            learning_rate=1e-4,
            save_strategy="no",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
        ),
        train_dataset=train_features,
        eval_dataset=eval_features,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    callback = MisclassificationCallback(task="imdb", eval_dataset=raw_eval).attach(trainer)  # <- S3 addition 1
    trainer.train()
    metrics = trainer.evaluate()
    errors = callback.errors  # every process holds the same, complete set

    # ---- S3 addition 2: extrapolate the errors (LLM calls and the file write on the main process only) -------
    target = out / "extrapolated.jsonl"
    with state.main_process_first():
        if state.is_main_process:
            config = LLMConfig(
                base_url=args.base_url,
                model=args.model,
                local_model=args.local_model,
                cache_dir=str(out / "llm_cache"),
                seed=0,
            )
            with LLMEngine(config) as engine:
                outcome = ErrorExtrapolator("imdb", engine, per_error=args.per_error, max_errors=args.max_errors)
                outcome = outcome.extrapolate(errors, round_index=1)
            write_s3_json(target, outcome.examples, "imdb")
            summary = {
                "eval_accuracy": metrics["eval_accuracy"],
                "errors": len(errors),
                "extrapolation": outcome.to_dict(),
                "written": str(target),
            }
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            print(json.dumps(summary, indent=2))
    state.wait_for_everyone()
    new_examples = read_s3_json(target, "imdb")  # every process can now train on train + new_examples
    if state.is_main_process:
        print(f"{len(new_examples)} new examples from {len(errors)} errors -> {target}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
