"""The small-model recipe: tokenize a canonical dataset, pad dynamically, build a ready ``Trainer``.

The S3 authors padded every example to 512 tokens; here examples are tokenized without padding
(``truncation=True, max_length=task.max_length``) and :class:`~transformers.DataCollatorWithPadding` pads each batch
to its own longest example; ``group_by_length=True`` additionally batches examples of similar length
(``TrainingArguments(train_sampling_strategy="group_by_length")`` in transformers 5). ``benchmarks/padding.py``
measures the difference. Evaluation reads the rows longest first and hands every result back in dataset order
(:class:`LengthSortedEvalTrainer`, ``benchmarks/eval_order.py``). Extractive QA uses the strided features of
:mod:`s3_hf.qa`.

Example:

```python
>>> from transformers import TrainingArguments
>>> from s3_hf.training import build_trainer
>>> trainer = build_trainer("rte", "path/to/minilm", train_ds, eval_ds,
...                         TrainingArguments("out", num_train_epochs=3, eval_strategy="epoch"))
>>> trainer.train()
>>> trainer.misclassification_callback.errors   # gold examples the model got wrong at the last evaluation
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction

from .callback import ComputeMetricsWrapper, MisclassificationCallback, MisclassificationTrainer
from .errors import S3ConfigError, S3DataError
from .metrics import compute_metrics_for
from .qa import prepare_eval_features, prepare_train_features
from .tasks import TaskSpec, get_task

DEFAULT_DOC_STRIDE = 128


def default_doc_stride(max_length: int) -> int:
    """QA window overlap for a ``max_length`` token budget: ``min(128, max_length // 4)``, always below it."""
    return min(DEFAULT_DOC_STRIDE, max_length // 4)


def _check_columns(spec: TaskSpec, dataset: datasets.Dataset, what: str) -> None:
    missing = [c for c in spec.columns if c not in dataset.column_names]
    if missing:
        raise S3DataError(
            f"the {what} set lacks the {spec.name} column(s) {missing}; it has {dataset.column_names}",
            file=f"<{what}_dataset>",
            field=missing[0],
        )


def tokenize_dataset(
    task: str | TaskSpec,
    dataset: datasets.Dataset,
    tokenizer,
    *,
    split: str = "train",
    max_length: int | None = None,
    doc_stride: int | None = None,
) -> datasets.Dataset:
    """Tokenize a canonical dataset for the small model, without padding.

    Classification: ``tokenizer(*input fields, truncation=True, max_length=task.max_length)``; keeps ``label``, one
    row per example (row ``i`` stays example ``i``). QA: strided features, :func:`s3_hf.qa.prepare_train_features`
    (``split="train"``) or :func:`s3_hf.qa.prepare_eval_features` (any other split: keeps ``example_id`` and
    ``offset_mapping`` for post-processing).

    Args:
        task: the task name or spec.
        dataset: canonical examples (``task.columns``).
        tokenizer: a fast tokenizer (QA needs offsets).
        split: ``"train"`` or an evaluation split name.
        max_length: token budget; default ``task.max_length``.
        doc_stride: QA: overlap between the windows of one long context; default
            :func:`default_doc_stride` of ``max_length``.
    """
    spec = get_task(task)
    _check_columns(spec, dataset, split)
    max_length = max_length or spec.max_length
    if spec.is_qa:
        doc_stride = default_doc_stride(max_length) if doc_stride is None else doc_stride
        if not getattr(tokenizer, "is_fast", False):
            raise S3ConfigError(f"QA needs a fast tokenizer (offset mappings); got {type(tokenizer).__name__}")
        function = prepare_train_features if split == "train" else prepare_eval_features
        return dataset.map(
            function,
            batched=True,
            remove_columns=dataset.column_names,
            fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "doc_stride": doc_stride},
            desc=f"Tokenizing {spec.name} {split}",
        )
    fields = spec.input_fields

    def encode(batch: dict[str, list]) -> dict[str, Any]:
        return tokenizer(*[batch[f] for f in fields], truncation=True, max_length=max_length)

    return dataset.map(
        encode,
        batched=True,
        remove_columns=[c for c in dataset.column_names if c != "label"],
        desc=f"Tokenizing {spec.name} {split}",
    )


def load_small_model(task: str | TaskSpec, model_name_or_path: str | Path) -> PreTrainedModel:
    """The small model for ``task`` with a fresh head: sequence classification (with label names) or QA."""
    spec = get_task(task)
    if spec.is_qa:
        return AutoModelForQuestionAnswering.from_pretrained(model_name_or_path)
    return AutoModelForSequenceClassification.from_pretrained(
        model_name_or_path,
        num_labels=spec.num_labels,
        id2label=dict(enumerate(spec.label_names)),
        label2id={name: i for i, name in enumerate(spec.label_names)},
    )


def _take(value: Any, index: np.ndarray) -> Any:
    """``value`` (an array, or a tuple/list/dict of them, as the Trainer gathers) with its rows in ``index`` order;
    anything without ``len(index)`` rows (a scalar, ``None``) as it is."""
    if isinstance(value, (tuple, list)):
        return type(value)(_take(item, index) for item in value)
    if isinstance(value, dict):
        return {key: _take(item, index) for key, item in value.items()}
    if isinstance(value, np.ndarray) and value.ndim and len(value) == len(index):
        return value[index]
    return value


class _DatasetOrderComputeMetrics(ComputeMetricsWrapper):
    """Calls ``user_fn`` with an evaluation's arrays put back in dataset order (``index``: row ``i`` of the dataset
    is position ``index[i]`` of the arrays)."""

    def __init__(self, user_fn: Callable, index: np.ndarray):
        self.user_fn = user_fn
        self.index = index

    def __call__(self, eval_pred: EvalPrediction, **kwargs) -> dict[str, Any]:
        ordered = EvalPrediction(
            predictions=_take(eval_pred.predictions, self.index),
            label_ids=_take(eval_pred.label_ids, self.index),
            inputs=_take(eval_pred.inputs, self.index),
            losses=_take(eval_pred.losses, self.index),
        )
        return self.user_fn(ordered, **kwargs)


class _LengthOrderSampler(torch.utils.data.Sampler):
    """The rows of a tokenized dataset, longest first (ties in row order)."""

    def __init__(self, dataset: datasets.Dataset, column: str):
        lengths = np.fromiter((len(ids) for ids in dataset[column]), dtype=np.int64, count=len(dataset))
        self.order = np.argsort(-lengths, kind="stable")

    def __iter__(self):
        return iter(self.order.tolist())

    def __len__(self) -> int:
        return len(self.order)


class LengthSortedEvalTrainer(MisclassificationTrainer):
    """:class:`~s3_hf.callback.MisclassificationTrainer` that evaluates and predicts longest examples first.

    With dynamic padding a batch is padded to its longest example; in dataset order nearly every batch of 32 real
    IMDb reviews holds one at the 256-token limit, so a fifth of the tokens the model reads at evaluation are padding.
    Read in order of length, the batches pad to their own length (``benchmarks/eval_order.py`` measures both). Every
    array is put back in dataset order before anything sees it: ``compute_metrics`` (and so the
    :class:`~s3_hf.callback.MisclassificationCallback`), and what ``evaluate()`` and ``predict()`` return. Training
    batches are unchanged. Applies to a single process with a tokenized ``datasets.Dataset``; otherwise (several
    processes, ``batch_eval_metrics=True``, ``train_sampling_strategy="group_by_length"``) evaluation runs as
    ``Trainer`` runs it.
    """

    def _get_eval_sampler(self, eval_dataset):
        column = self.processing_class.model_input_names[0] if self.processing_class is not None else "input_ids"
        if (
            self.args.world_size > 1
            or self.args.batch_eval_metrics
            or self.args.train_sampling_strategy == "group_by_length"
            or not isinstance(eval_dataset, datasets.Dataset)
            or column not in eval_dataset.column_names
        ):
            return super()._get_eval_sampler(eval_dataset)
        return _LengthOrderSampler(eval_dataset, column)

    def evaluation_loop(self, dataloader, *args, **kwargs) -> EvalLoopOutput:
        sampler = _length_order_sampler(dataloader)
        if sampler is None:
            return super().evaluation_loop(dataloader, *args, **kwargs)
        index = np.empty_like(sampler.order)
        index[sampler.order] = np.arange(len(sampler.order))  # dataset row i was read at position index[i]
        user_fn = self.compute_metrics
        if user_fn is not None:
            self.compute_metrics = _DatasetOrderComputeMetrics(user_fn, index)
        try:
            output = super().evaluation_loop(dataloader, *args, **kwargs)
        finally:
            self.compute_metrics = user_fn
        return EvalLoopOutput(
            predictions=_take(output.predictions, index),
            label_ids=_take(output.label_ids, index),
            metrics=output.metrics,
            num_samples=output.num_samples,
        )


def _length_order_sampler(dataloader) -> _LengthOrderSampler | None:
    """The :class:`_LengthOrderSampler` a (possibly accelerate-prepared) dataloader reads from, if any."""
    for holder in (dataloader, getattr(dataloader, "batch_sampler", None)):
        sampler = getattr(holder, "sampler", None)
        if isinstance(sampler, _LengthOrderSampler):
            return sampler
        sampler = getattr(sampler, "sampler", None)
        if isinstance(sampler, _LengthOrderSampler):
            return sampler
    return None


def build_trainer(
    task: str | TaskSpec,
    model_name_or_path: str | Path | PreTrainedModel,
    train_dataset: datasets.Dataset | None,
    eval_dataset: datasets.Dataset | None,
    args: TrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
    compute_metrics: Callable | None = None,
    *,
    tokenizer=None,
    collect_errors: bool = True,
    group_by_length: bool = False,
    sort_eval_by_length: bool = True,
    max_length: int | None = None,
    doc_stride: int | None = None,
    f1_threshold: float | None = None,
) -> Trainer:
    """A ready :class:`~transformers.Trainer` for ``task`` on canonical datasets, with dynamic padding.

    The Trainer is a :class:`LengthSortedEvalTrainer` (a :class:`~s3_hf.callback.MisclassificationTrainer`): every
    :class:`~s3_hf.callback.MisclassificationCallback` in ``callbacks`` (or added later with ``add_callback``) is
    attached to it, like the one ``collect_errors`` adds.

    Args:
        task: the task name or spec.
        model_name_or_path: a model folder/id (a fresh task head is added, drawn with ``args.seed``), or a model
            instance.
        train_dataset / eval_dataset: canonical (untokenized) datasets; tokenized here.
        args: the training arguments (``group_by_length=True`` switches its sampling strategy, on a copy).
        callbacks: extra callbacks (``MisclassificationCallback`` s among them are attached).
        compute_metrics: default: accuracy, or SQuAD EM/F1 for QA (:func:`s3_hf.metrics.compute_metrics_for`).
        tokenizer: default: the tokenizer saved with ``model_name_or_path``.
        collect_errors: attach a :class:`~s3_hf.callback.MisclassificationCallback` on the raw ``eval_dataset``;
            it is also available as ``trainer.misclassification_callback``.
        group_by_length: batch training examples of similar length.
        sort_eval_by_length: evaluate and predict longest examples first, results in dataset order
            (:class:`LengthSortedEvalTrainer`); ``False``: a plain :class:`~s3_hf.callback.MisclassificationTrainer`.
        max_length: token budget; default ``task.max_length``.
        doc_stride: QA window overlap; default :func:`default_doc_stride` of ``max_length``.
        f1_threshold: QA: see :class:`~s3_hf.callback.MisclassificationCallback`.
    """
    spec = get_task(task)
    if not isinstance(args, TrainingArguments):
        raise S3ConfigError(f"args must be a transformers.TrainingArguments, got {type(args).__name__}")
    if isinstance(model_name_or_path, PreTrainedModel):
        model = model_name_or_path
        if tokenizer is None:
            raise S3ConfigError("build_trainer needs tokenizer= when given a model instance")
    else:
        # the new task head is drawn from the global RNG: seed it, or the same data and seed give another model
        # whenever anything before (sampling, an LLM call, a cache replay) consumed random numbers
        set_seed(args.seed)
        model = load_small_model(spec, model_name_or_path)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_name_or_path)
    if group_by_length and args.train_sampling_strategy != "group_by_length":
        args = dataclasses.replace(args, train_sampling_strategy="group_by_length")
    train_features = (
        tokenize_dataset(spec, train_dataset, tokenizer, split="train", max_length=max_length, doc_stride=doc_stride)
        if train_dataset is not None
        else None
    )
    eval_features = (
        tokenize_dataset(spec, eval_dataset, tokenizer, split="eval", max_length=max_length, doc_stride=doc_stride)
        if eval_dataset is not None
        else None
    )
    if compute_metrics is None and eval_dataset is not None:
        compute_metrics = (
            compute_metrics_for(spec, eval_examples=eval_dataset, eval_features=eval_features)
            if spec.is_qa
            else compute_metrics_for(spec)
        )
    callbacks = list(callbacks or [])
    error_callback = None
    if collect_errors and eval_dataset is not None:
        error_callback = MisclassificationCallback(spec, eval_dataset, f1_threshold=f1_threshold)
        callbacks.append(error_callback)
    trainer_class = LengthSortedEvalTrainer if sort_eval_by_length else MisclassificationTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_features,
        eval_dataset=eval_features,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    trainer.misclassification_callback = error_callback  # attached by MisclassificationTrainer.__init__
    return trainer
