"""``MisclassificationCallback``: after every evaluation, the gold examples the small model got wrong.

A :class:`~transformers.TrainerCallback` for any Trainer script, the heart of S3's feedback loop. Build the Trainer as
usual, then attach the callback to it:

```python
from s3_hf.callback import MisclassificationCallback

trainer = Trainer(model=model, args=args, train_dataset=train_tok, eval_dataset=eval_tok, compute_metrics=my_metrics)
callback = MisclassificationCallback(task="rte", eval_dataset=raw_eval).attach(trainer)  # raw_eval: canonical rows
trainer.train()
callback.errors            # datasets.Dataset of the latest evaluation's errors
callback.history           # one Dataset per evaluation
callback.best_errors       # with load_best_model_at_end: the errors of the chosen checkpoint
```

How it works (no second forward pass). In transformers 5, callbacks never see predictions, and with
``compute_metrics=None`` the Trainer does not even gather logits. The callback therefore wraps
``trainer.compute_metrics`` (an identity when the user has none): evaluation already hands that function every
prediction, gathered across processes in dataset order with the distributed sampler's padding duplicates dropped.
The wrapper calls the user's function unchanged, computes the errors from the same arrays, and adds summary metrics
(``misclassified``, ``error_rate``, ``error_rate_<label>``, ``misclassified_<label>``; QA: ``squad_exact_match``,
``squad_f1``) to the returned dict, so they land in the Trainer's log with the ``eval_`` prefix. ``on_evaluate`` then
publishes the errors (every process holds them in memory) and the main process writes
``<output_dir>/misclassified/step-<N>.jsonl`` atomically, in the task's S3 json record form plus extra keys
(``predicted_label``, ``probabilities``, ``eval_index``, ``step``, ``epoch``; QA: ``predicted_answer``,
``exact_match``, ``f1``...). ``predict()`` calls are ignored.

Binding. Wrapping ``compute_metrics`` needs the Trainer itself, and transformers hands callbacks only the model,
processing class, optimizer, scheduler and dataloaders, never the Trainer. So the binding is explicit:

- :meth:`MisclassificationCallback.attach` (the documented path): binds, wraps ``compute_metrics`` once, adds the
  callback to the Trainer unless it is already there (``Trainer(callbacks=[callback])`` or ``add_callback(callback)``
  before ``attach`` are fine), and returns the callback. Calling it again is a no-op.
- :class:`MisclassificationTrainerMixin` (before the Trainer class in the bases; :class:`MisclassificationTrainer`
  is ``Trainer`` with it): attaches every ``MisclassificationCallback`` given in ``callbacks=[...]`` or added later
  with ``add_callback(instance)``.
- ``add_callback(MisclassificationCallback)`` (the class): transformers instantiates it without arguments, and the
  callback cannot guess its task and gold set, so this raises :class:`~s3_hf.errors.S3ConfigError`; add an instance.

A callback that is still unbound when training starts or an evaluation ends raises
:class:`~s3_hf.errors.S3ConfigError` (it could never see predictions), and so does an evaluation whose predictions the
callback never saw (an eval set without labels, ``prediction_loss_only=True``...). Skipping the predictions of another
eval set (another size) is a logged warning, not an error.

Row alignment: row ``i`` of the Trainer's (tokenized) eval set must be row ``i`` of ``eval_dataset`` (for QA: every
feature's ``example_id`` is an ``id`` of ``eval_dataset``). For classification the callback checks the Trainer's
``label_ids`` against the raw gold labels and raises :class:`~s3_hf.errors.S3DataError` naming the first row that
differs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from transformers import Trainer, TrainerCallback

from .errors import S3ConfigError, S3DataError
from .metrics import best_em_f1, softmax
from .predictions import classification_logits, flatten_batches, predicted_labels
from .qa import postprocess_predictions, qa_logits
from .s3_json import write_s3_json
from .tasks import TaskSpec, get_task

logger = logging.getLogger(__name__)

CLASSIFICATION_EXTRA = ("predicted_label", "probabilities", "eval_index", "step", "epoch")
QA_EXTRA = ("predicted_answer", "predicted_start", "exact_match", "f1", "eval_index", "step", "epoch")


@dataclass
class ErrorReport:
    """The errors of one evaluation.

    Attributes:
        step: ``state.global_step`` at the evaluation.
        epoch: ``state.epoch`` at the evaluation (``None`` before training).
        errors: the misclassified gold examples (canonical columns + the extra columns).
        metrics: the summary metrics added to the Trainer's metrics (without the ``eval_`` prefix).
        num_examples: size of the evaluated gold set.
        path: the jsonl file written (main process only; ``None`` elsewhere or when writing is off).
    """

    step: int
    epoch: float | None
    errors: datasets.Dataset
    metrics: dict[str, float]
    num_examples: int
    path: Path | None = None


@dataclass
class _Pending:
    rows: dict[str, list]
    features: datasets.Features
    metrics: dict[str, float]
    num_examples: int
    step: int
    epoch: float | None


class ComputeMetricsWrapper:
    """Base of the stand-ins for ``trainer.compute_metrics`` that call the function they wrap (``user_fn``).

    :meth:`MisclassificationCallback.attach` looks through every such wrapper for its own, so a wrapper put around
    the callback's (e.g. :class:`~s3_hf.training.LengthSortedEvalTrainer`'s, which puts the predictions back in
    dataset order) does not make it wrap a second time."""

    user_fn: Any


class _CapturingComputeMetrics(ComputeMetricsWrapper):
    """Stands in for ``trainer.compute_metrics``: runs the user's function, then records the errors."""

    def __init__(self, callback: MisclassificationCallback, user_fn):
        self.callback = callback
        self.user_fn = user_fn

    def __call__(self, eval_pred, **kwargs) -> dict[str, Any]:
        metrics = dict(self.user_fn(eval_pred, **kwargs) or {}) if self.user_fn is not None else {}
        if not self.callback._is_registered():  # removed with trainer.remove_callback: stay out of the way
            return metrics
        for key, value in self.callback._capture(eval_pred).items():
            if key in metrics:
                logger.warning("MisclassificationCallback: compute_metrics already returns %r; kept the user's", key)
                continue
            metrics[key] = value
        return metrics


class MisclassificationCallback(TrainerCallback):
    """Collect the gold examples the model gets wrong at every evaluation, with no extra forward pass.

    Bind it to its Trainer with :meth:`attach`, or build the Trainer from a class with
    :class:`MisclassificationTrainerMixin` (see the module docstring).

    Args:
        task: a task name or :class:`~s3_hf.tasks.TaskSpec` (``"imdb"``, ``"rte"``, ``"qnli"``, ``"adqa"``...);
            required (``None`` raises :class:`~s3_hf.errors.S3ConfigError`, which is what
            ``trainer.add_callback(MisclassificationCallback)`` gets).
        eval_dataset: the raw (canonical) gold eval set, row-aligned with the Trainer's eval set. ``None``: use the
            Trainer's eval set itself (it must still hold the canonical columns; not for QA).
        eval_features: QA only: the tokenized eval features with ``example_id`` and ``offset_mapping``, in the
            Trainer's order (see :func:`s3_hf.qa.prepare_eval_features`). ``None``: the Trainer's eval set.
        output_dir: folder of the ``step-<N>.jsonl`` files; default ``<args.output_dir>/misclassified``.
        write_files: write a file per evaluation (main process only).
        f1_threshold: QA: also count as an error a prediction with exact match 1 but F1 below this (0..1).
            (Exact match 0 is always an error.)
        n_best_size: QA post-processing: top starts/ends combined per feature.
        max_answer_length: QA post-processing: longest answer in tokens.

    Attributes:
        reports: one :class:`ErrorReport` per evaluation.
        errors: the latest evaluation's errors (``datasets.Dataset``) or ``None``.
        history: the errors of every evaluation, oldest first.
        best_errors: with ``load_best_model_at_end``: the errors of the checkpoint the Trainer chose.
    """

    def __init__(
        self,
        task: str | TaskSpec | None = None,
        eval_dataset: datasets.Dataset | None = None,
        *,
        eval_features: datasets.Dataset | None = None,
        output_dir: str | Path | None = None,
        write_files: bool = True,
        f1_threshold: float | None = None,
        n_best_size: int = 20,
        max_answer_length: int = 30,
    ):
        if task is None:
            raise S3ConfigError(
                "MisclassificationCallback needs task= (a task name or TaskSpec), got None. "
                "trainer.add_callback(MisclassificationCallback) creates one without arguments: add an instance "
                "instead, MisclassificationCallback(task, eval_dataset).attach(trainer)"
            )
        self.task = get_task(task)
        if eval_dataset is not None and not isinstance(eval_dataset, datasets.Dataset):
            raise S3ConfigError(f"eval_dataset must be a datasets.Dataset, got {type(eval_dataset).__name__}")
        if f1_threshold is not None and not 0.0 <= f1_threshold <= 1.0:
            raise S3ConfigError(f"f1_threshold must be within [0, 1], got {f1_threshold!r}")
        if n_best_size < 1 or max_answer_length < 1:
            raise S3ConfigError(
                f"n_best_size and max_answer_length must be >= 1, got {n_best_size}, {max_answer_length}"
            )
        if eval_features is not None and not self.task.is_qa:
            raise S3ConfigError(f"eval_features is for QA tasks; {self.task.name!r} is {self.task.kind}")
        self.eval_dataset = eval_dataset
        self.eval_features = eval_features
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.write_files = write_files
        self.f1_threshold = f1_threshold
        self.n_best_size = n_best_size
        self.max_answer_length = max_answer_length
        self.reports: list[ErrorReport] = []
        self._trainer: Trainer | None = None
        self._pending: _Pending | None = None
        self._saw_predictions = False  # the wrapper ran since the last evaluation / prediction
        self._gold_cache: tuple[int, np.ndarray] | None = None
        self._features_cache: tuple[tuple[int, int], dict[str, list]] | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ public results
    @property
    def errors(self) -> datasets.Dataset | None:
        return self.reports[-1].errors if self.reports else None

    @property
    def history(self) -> list[datasets.Dataset]:
        return [report.errors for report in self.reports]

    @property
    def best_errors(self) -> datasets.Dataset | None:
        """Errors of the evaluation at ``state.best_global_step`` (the checkpoint ``load_best_model_at_end`` loads).

        ``None`` when the Trainer tracked no best checkpoint. ``trainer.evaluate()`` after ``train()`` recomputes
        the same errors on the loaded model (and adds a report).
        """
        best_step = getattr(self._trainer.state, "best_global_step", None) if self._trainer is not None else None
        if best_step is None:
            return None
        for report in self.reports:
            if report.step == best_step:
                return report.errors
        return None

    # ------------------------------------------------------------------ binding
    @property
    def trainer(self) -> Trainer | None:
        """The Trainer this callback is bound to (``None`` before :meth:`attach`)."""
        return self._trainer

    def attach(self, trainer: Trainer) -> MisclassificationCallback:
        """Bind to ``trainer``: wrap its ``compute_metrics`` and add the callback to it unless it is already there.

        Idempotent: attaching again to the same Trainer changes nothing (``compute_metrics`` is wrapped once).

        Args:
            trainer: a :class:`~transformers.Trainer` (or subclass), with ``batch_eval_metrics=False``.

        Returns:
            the callback itself, so that ``callback = MisclassificationCallback(...).attach(trainer)`` works.

        Raises:
            S3ConfigError: ``trainer`` is not a Trainer, uses ``batch_eval_metrics=True``, or the callback is already
                bound to another Trainer (one callback collects the errors of one Trainer).
        """
        if not isinstance(trainer, Trainer):
            raise S3ConfigError(
                f"MisclassificationCallback.attach needs a transformers.Trainer, got {type(trainer).__name__}"
            )
        if self._trainer is not None and self._trainer is not trainer:
            raise S3ConfigError(
                f"this MisclassificationCallback({self.task.name!r}) is already bound to another Trainer "
                f"({type(self._trainer).__name__} at {id(self._trainer):#x}); make one callback per Trainer"
            )
        if trainer.args.batch_eval_metrics:
            raise S3ConfigError(
                "MisclassificationCallback needs every prediction at once; got batch_eval_metrics=True. "
                "Set TrainingArguments(batch_eval_metrics=False)."
            )
        self._trainer = trainer
        self._install()
        if not self._is_registered():
            trainer.add_callback(self)
        return self

    def _install(self) -> None:
        """(Re)wrap ``compute_metrics``: also after the user replaced it."""
        current = self._trainer.compute_metrics
        wrapper = current
        while isinstance(wrapper, ComputeMetricsWrapper):
            if getattr(wrapper, "callback", None) is self:
                return
            wrapper = wrapper.user_fn
        self._trainer.compute_metrics = _CapturingComputeMetrics(self, current)

    def _is_registered(self) -> bool:
        return self._trainer is not None and any(cb is self for cb in self._trainer.callback_handler.callbacks)

    def _require_bound(self, event: str) -> None:
        if self._trainer is None:
            raise S3ConfigError(
                f"MisclassificationCallback({self.task.name!r}) reached {event} without a Trainer: transformers "
                "gives callbacks no reference to their Trainer, so bind it with callback.attach(trainer) after "
                "building the Trainer, or build it from MisclassificationTrainer (or a Trainer class with "
                "MisclassificationTrainerMixin)"
            )
        self._install()

    def on_train_begin(self, args, state, control, **kwargs):
        self._require_bound("on_train_begin")

    def on_prediction_step(self, args, state, control, **kwargs):
        if self._trainer is not None:
            self._install()  # compute_metrics replaced since attach: wrap the new one before evaluation calls it

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        self._pending = None  # predict() on a test set: not an evaluation of the gold set
        self._saw_predictions = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._require_bound("on_evaluate")
        pending, self._pending = self._pending, None
        saw, self._saw_predictions = self._saw_predictions, False
        if pending is None:
            if saw:  # predictions of another eval set: _capture logged why it skipped them
                return
            raise S3ConfigError(
                f"MisclassificationCallback({self.task.name!r}) saw no predictions in this evaluation (step "
                f"{state.global_step}): the Trainer calls compute_metrics only with predictions and labels. Check "
                f"that the eval set has the label columns (label_names={self._trainer.label_names!r}), that "
                f"prediction_loss_only is False (got {args.prediction_loss_only!r}), and that compute_metrics "
                f"was not set to None after attach (got {type(self._trainer.compute_metrics).__name__})"
            )
        errors = datasets.Dataset.from_dict(pending.rows, features=pending.features)
        report = ErrorReport(pending.step, pending.epoch, errors, pending.metrics, pending.num_examples)
        if self.write_files and state.is_world_process_zero:
            report.path = self._write(args, report)
        self.reports.append(report)

    # ------------------------------------------------------------------ capture
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _raw(self) -> datasets.Dataset:
        raw = self.eval_dataset
        if raw is None and self._trainer is not None and not self.task.is_qa:
            raw = self._trainer.eval_dataset
        if not isinstance(raw, datasets.Dataset):
            raise S3ConfigError(
                f"MisclassificationCallback({self.task.name!r}) needs eval_dataset= (the raw gold eval set); "
                f"got {type(raw).__name__}"
            )
        missing = [c for c in self.task.columns if c not in raw.column_names]
        if missing:
            raise S3DataError(
                f"the raw eval set lacks the {self.task.name} column(s) {missing}; it has {raw.column_names}",
                file="<eval_dataset>",
                field=missing[0],
            )
        return raw

    def _gold_labels(self, raw: datasets.Dataset) -> np.ndarray:
        key = id(raw)
        if self._gold_cache is None or self._gold_cache[0] != key:
            labels = []
            for row, label in enumerate(raw["label"]):
                try:
                    labels.append(self.task.label_id(label))
                except ValueError as err:
                    raise S3DataError(str(err), file="<eval_dataset>", row=row + 1, field="label") from None
            self._gold_cache = (key, np.asarray(labels, dtype=np.int64))
        return self._gold_cache[1]

    def _capture(self, eval_pred) -> dict[str, float]:
        """Compute the errors of this evaluation from the Trainer's predictions; return the summary metrics."""
        self._pending = None
        if self._trainer is None:
            return {}
        self._saw_predictions = True
        raw = self._raw()
        state = self._trainer.state
        if self.task.is_qa:
            built = self._capture_qa(eval_pred, raw)
        else:
            built = self._capture_classification(eval_pred, raw)
        if built is None:
            return {}
        indices, extra, extra_features, metrics = built
        rows = raw.select(indices).to_dict() if len(indices) else {c: [] for c in raw.column_names}
        rows.update(extra)
        rows["eval_index"] = [int(i) for i in indices]
        rows["step"] = [int(state.global_step)] * len(indices)
        rows["epoch"] = [None if state.epoch is None else float(state.epoch)] * len(indices)
        features = datasets.Features(
            {
                **raw.features,
                **extra_features,
                "eval_index": datasets.Value("int64"),
                "step": datasets.Value("int64"),
                "epoch": datasets.Value("float64"),
            }
        )
        self._pending = _Pending(rows, features, metrics, len(raw), int(state.global_step), state.epoch)
        return metrics

    def _capture_classification(self, eval_pred, raw: datasets.Dataset):
        logits = classification_logits(eval_pred.predictions)
        if len(logits) != len(raw):
            self._warn_once(
                "size",
                f"MisclassificationCallback: {len(logits)} predictions for a raw eval set of {len(raw)} rows; "
                "skipped (is this the gold eval set?)",
            )
            return None
        gold = self._gold_labels(raw)
        label_ids = flatten_batches(eval_pred.label_ids)
        if isinstance(label_ids, tuple):
            label_ids = label_ids[0]
        if label_ids is not None:
            label_ids = np.asarray(label_ids).reshape(-1)
            differs = np.nonzero((label_ids != -100) & (label_ids != gold))[0]
            if len(differs):
                row = int(differs[0])
                raise S3DataError(
                    f"the Trainer's eval set has label {int(label_ids[row])} where the raw eval set has {int(gold[row])}:"
                    " the tokenized eval set must be row-aligned with eval_dataset (same order, no filtering)",
                    file="<eval_dataset>",
                    row=row + 1,
                    field="label",
                )
        predicted = predicted_labels(logits)
        wrong = np.nonzero(predicted != gold)[0]
        extra = {
            "predicted_label": [int(p) for p in predicted[wrong]],
            # label ids from preprocess_logits_for_metrics carry no probabilities
            "probabilities": (
                [None] * len(wrong) if logits.ndim == 1 else softmax(logits[wrong]).astype(np.float32).tolist()
            ),
        }
        extra_features = {
            "predicted_label": datasets.ClassLabel(names=list(self.task.label_names)),
            "probabilities": datasets.List(datasets.Value("float32")),
        }
        n = len(raw)
        metrics: dict[str, float] = {"misclassified": float(len(wrong)), "error_rate": len(wrong) / n if n else 0.0}
        for label, name in enumerate(self.task.label_names):
            of_label = gold == label
            wrong_of_label = int(np.count_nonzero(of_label & (predicted != gold)))
            metrics[f"misclassified_{name}"] = float(wrong_of_label)
            metrics[f"error_rate_{name}"] = wrong_of_label / int(of_label.sum()) if of_label.any() else 0.0
        return wrong, extra, extra_features, metrics

    def _features(self) -> dict[str, list]:
        features = self.eval_features
        if features is None and self._trainer is not None:
            features = self._trainer.eval_dataset
        if not isinstance(features, datasets.Dataset) or not {"example_id", "offset_mapping"} <= set(
            features.column_names
        ):
            raise S3ConfigError(
                "MisclassificationCallback for QA needs the eval features with 'example_id' and 'offset_mapping' "
                "(pass eval_features=, or give the Trainer the features from s3_hf.qa.prepare_eval_features)"
            )
        key = (id(features), len(features))
        if self._features_cache is None or self._features_cache[0] != key:  # read the offsets once, not per eval
            view = {"example_id": list(features["example_id"]), "offset_mapping": list(features["offset_mapping"])}
            self._features_cache = (key, view)
        return self._features_cache[1]

    def _capture_qa(self, eval_pred, raw: datasets.Dataset):
        features = self._features()
        start_logits, end_logits = qa_logits(eval_pred.predictions)
        if len(start_logits) != len(features["example_id"]):
            self._warn_once(
                "size",
                f"MisclassificationCallback: {len(start_logits)} QA predictions for {len(features['example_id'])} "
                "eval features; skipped (is this the gold eval set?)",
            )
            return None
        answers = postprocess_predictions(
            raw,
            features,
            start_logits,
            end_logits,
            n_best_size=self.n_best_size,
            max_answer_length=self.max_answer_length,
        )
        wrong, texts, starts, ems, f1s = [], [], [], [], []
        all_em, all_f1 = [], []
        for index, (qid, gold) in enumerate(zip(raw["id"], raw["answers"])):
            predicted = answers[str(qid)]
            em, f1 = best_em_f1(predicted["text"], gold["text"])
            all_em.append(em)
            all_f1.append(f1)
            if em == 0.0 or (self.f1_threshold is not None and f1 < self.f1_threshold):
                wrong.append(index)
                texts.append(predicted["text"])
                starts.append(predicted["answer_start"])
                ems.append(em)
                f1s.append(f1)
        n = len(raw)
        extra = {"predicted_answer": texts, "predicted_start": starts, "exact_match": ems, "f1": f1s}
        extra_features = {
            "predicted_answer": datasets.Value("string"),
            "predicted_start": datasets.Value("int64"),
            "exact_match": datasets.Value("float64"),
            "f1": datasets.Value("float64"),
        }
        metrics = {
            "misclassified": float(len(wrong)),
            "error_rate": len(wrong) / n if n else 0.0,
            "squad_exact_match": 100 * float(np.mean(all_em)) if n else 0.0,
            "squad_f1": 100 * float(np.mean(all_f1)) if n else 0.0,
        }
        return np.asarray(wrong, dtype=np.int64), extra, extra_features, metrics

    # ------------------------------------------------------------------ output
    def _write(self, args, report: ErrorReport) -> Path:
        folder = self.output_dir if self.output_dir is not None else Path(args.output_dir) / "misclassified"
        repeats = sum(1 for r in self.reports if r.step == report.step)
        name = f"step-{report.step}.jsonl" if repeats == 0 else f"step-{report.step}-{repeats + 1}.jsonl"
        extra = QA_EXTRA if self.task.is_qa else CLASSIFICATION_EXTRA
        path = folder / name
        write_s3_json(path, iter(report.errors), self.task, extra_fields=extra)
        return path


class MisclassificationTrainerMixin:
    """Trainer mixin that attaches every :class:`MisclassificationCallback` it is given, for custom Trainer classes.

    Put it before the Trainer class in the bases. Each ``MisclassificationCallback`` instance passed in
    ``callbacks=[...]`` is attached at the end of ``__init__``, and one added later with ``add_callback(instance)``
    right away (:meth:`MisclassificationCallback.attach`; attaching twice is a no-op).

    Example:

    ```python
    >>> class MyTrainer(MisclassificationTrainerMixin, Seq2SeqTrainer):   # or your own Trainer subclass
    ...     pass
    >>> callback = MisclassificationCallback("rte", raw_eval)
    >>> trainer = MyTrainer(model=model, args=args, eval_dataset=eval_tok, callbacks=[callback])
    >>> callback.trainer is trainer
    True
    ```
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        if Trainer in mro and mro.index(Trainer) < mro.index(MisclassificationTrainerMixin):
            raise S3ConfigError(
                f"{cls.__name__}: MisclassificationTrainerMixin must come before the Trainer class in the bases "
                f"(got {[base.__name__ for base in cls.__bases__]}), or its __init__ and add_callback never run"
            )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._attach_misclassification_callbacks()

    def add_callback(self, callback) -> None:
        super().add_callback(callback)
        self._attach_misclassification_callbacks()

    def _attach_misclassification_callbacks(self) -> None:
        for callback in list(self.callback_handler.callbacks):
            if isinstance(callback, MisclassificationCallback):
                callback.attach(self)


class MisclassificationTrainer(MisclassificationTrainerMixin, Trainer):
    """:class:`~transformers.Trainer` that attaches its :class:`MisclassificationCallback` s on its own.

    Same arguments as ``Trainer``; see :class:`MisclassificationTrainerMixin`.
    """
