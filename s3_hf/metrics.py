"""Metrics of the small model, computed offline: accuracy and SQuAD exact match / F1.

``evaluate.load("accuracy")`` and ``evaluate.load("squad")`` need the Hub, so the maths lives here (the official
SQuAD v1.1 normalization: lower case, no punctuation, no articles, single spaces). The same metrics ship as
``evaluate`` modules under ``s3_hf/metrics/{accuracy,squad}/`` for code that wants ``evaluate.load``; they call the
functions below (:func:`evaluate_metric_path` gives the folder). The Trainer-output helpers (``flatten_batches``,
``classification_logits``, ``predicted_labels``) live in :mod:`s3_hf.predictions` and are re-exported here.

Example:

```python
>>> from s3_hf.metrics import accuracy, squad_em_f1
>>> accuracy([1, 0, 1], [1, 1, 1])
{'accuracy': 0.6666666666666666}
>>> squad_em_f1(["the Eiffel tower"], [["Eiffel Tower", "tower"]])
{'exact_match': 100.0, 'f1': 100.0}
```
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import S3ConfigError
from .predictions import classification_logits, flatten_batches, predicted_labels  # noqa: F401 (re-exported)
from .qa import postprocess_predictions, qa_logits
from .tasks import TaskSpec, get_task

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


# ---------------------------------------------------------------------- classification
def accuracy(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Fraction of ``predictions`` equal to ``labels`` (label ids); ``{"accuracy": float}``."""
    preds, golds = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if preds.shape != golds.shape:
        raise ValueError(f"accuracy needs as many predictions as labels, got {preds.shape[0]} and {golds.shape[0]}")
    if preds.size == 0:
        return {"accuracy": 0.0}
    return {"accuracy": float((preds == golds).mean())}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------- SQuAD
def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 answer normalization."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 (0..1) of the normalized strings, as in the official SQuAD script."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_em_f1(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """``(exact_match, f1)`` of one prediction against its gold answers (max over golds), each in 0..1."""
    golds = [g for g in golds if isinstance(g, str)]
    if not golds:
        raise ValueError("a SQuAD reference needs at least one gold answer")
    return max(exact_match(prediction, g) for g in golds), max(token_f1(prediction, g) for g in golds)


def _answer_texts(reference: Any) -> list[str]:
    if isinstance(reference, str):
        return [reference]
    if isinstance(reference, dict):
        answers = reference.get("answers", reference)
        texts = answers.get("text", []) if isinstance(answers, dict) else answers
        return [texts] if isinstance(texts, str) else list(texts)
    return list(reference)


def squad_em_f1(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 in percent, like ``evaluate``'s ``squad`` metric.

    Args:
        predictions: predicted answer strings, or ``{"id", "prediction_text"}`` dicts (the ``evaluate`` form).
        references: per prediction, its gold answers: a list of strings, or ``{"id", "answers": {"text": [...]}}``.
            With dicts on both sides they are matched by ``id``, otherwise by position.

    Returns:
        ``{"exact_match": float, "f1": float}`` (0..100).
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"squad_em_f1 needs one reference per prediction, got {len(predictions)} and {len(references)}"
        )
    if predictions and all(isinstance(p, dict) for p in predictions) and all(isinstance(r, dict) for r in references):
        by_id = {str(r["id"]): r for r in references}
        missing = [p["id"] for p in predictions if str(p["id"]) not in by_id]
        if missing:
            raise ValueError(f"predictions with no reference: ids {missing[:5]}")
        pairs = [(p["prediction_text"], _answer_texts(by_id[str(p["id"])])) for p in predictions]
    else:
        pairs = [
            (p["prediction_text"] if isinstance(p, dict) else p, _answer_texts(r))
            for p, r in zip(predictions, references)
        ]
    if not pairs:
        return {"exact_match": 0.0, "f1": 0.0}
    scores = np.array([best_em_f1(pred, golds) for pred, golds in pairs], dtype=np.float64)
    return {"exact_match": float(100 * scores[:, 0].mean()), "f1": float(100 * scores[:, 1].mean())}


# ---------------------------------------------------------------------- Trainer compute_metrics
def compute_metrics_for(
    task: str | TaskSpec,
    *,
    eval_examples: Any = None,
    eval_features: Any = None,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` function for the Trainer, for ``task``.

    Classification: ``{"accuracy"}``. Extractive QA: ``{"exact_match", "f1"}`` (percent) after start/end
    post-processing, which needs the raw ``eval_examples`` and the tokenized ``eval_features`` (with ``example_id``
    and ``offset_mapping``, see :func:`s3_hf.qa.prepare_eval_features`).
    """
    spec = get_task(task)
    if not spec.is_qa:

        def compute_accuracy(eval_pred) -> dict[str, float]:
            return accuracy(predicted_labels(eval_pred.predictions), flatten_batches(eval_pred.label_ids))

        return compute_accuracy
    if eval_examples is None or eval_features is None:
        raise S3ConfigError(
            f"compute_metrics_for({spec.name!r}) needs eval_examples and eval_features for QA post-processing, "
            f"got {type(eval_examples).__name__} and {type(eval_features).__name__}"
        )

    def compute_squad(eval_pred) -> dict[str, float]:
        start_logits, end_logits = qa_logits(eval_pred.predictions)
        answers = postprocess_predictions(
            eval_examples,
            eval_features,
            start_logits,
            end_logits,
            n_best_size=n_best_size,
            max_answer_length=max_answer_length,
        )
        return squad_em_f1([answers[str(qid)]["text"] for qid in eval_examples["id"]], list(eval_examples["answers"]))

    return compute_squad


def evaluate_metric_path(name: str) -> Path:
    """Folder of the ``evaluate`` module shipped for metric ``name`` (``"accuracy"`` or ``"squad"``).

    ``evaluate.load(str(evaluate_metric_path("squad")))`` loads it without the Hub.
    """
    path = Path(__file__).resolve().parent / "metrics" / name
    if not (path / f"{name}.py").is_file():
        raise S3ConfigError(f"no shipped evaluate module {name!r}; available: ['accuracy', 'squad']")
    return path
