"""A Trainer's evaluation predictions as plain arrays, whatever the ``TrainingArguments`` produced them.

The lowest layer under :mod:`s3_hf.qa`, :mod:`s3_hf.metrics` and :mod:`s3_hf.callback` (it imports no other
``s3_hf`` module): undo ``eval_do_concat_batches=False`` (per-batch lists), take the logits out of a tuple of model
outputs, accept label ids from ``preprocess_logits_for_metrics``. :mod:`s3_hf.metrics` re-exports these functions.

Example:

```python
>>> import numpy as np
>>> from s3_hf.predictions import flatten_batches, predicted_labels
>>> flatten_batches([np.zeros((2, 3)), np.ones((1, 5))]).shape   # two batches of different lengths
(3, 5)
>>> predicted_labels(np.array([[0.1, 0.9], [2.0, -1.0]]))
array([1, 0])

```
"""

from __future__ import annotations

from typing import Any

import numpy as np


def flatten_batches(value: Any) -> Any:
    """Undo ``eval_do_concat_batches=False``: a list of per-batch arrays (or tuples) -> arrays over all examples.

    Arrays of different sequence lengths are right-padded with ``-100`` (as the Trainer does when it concatenates).
    A value that is already an array (or a tuple of arrays) is returned as is.
    """
    if not isinstance(value, list):
        return value
    if not value:
        return np.zeros((0,))
    if isinstance(value[0], (tuple, list)):
        return tuple(flatten_batches([batch[i] for batch in value]) for i in range(len(value[0])))
    arrays = [np.asarray(v) for v in value]
    if arrays[0].ndim >= 2 and len({a.shape[1:] for a in arrays}) > 1:
        width = max(a.shape[1] for a in arrays)
        arrays = [
            np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=-100)
            for a in arrays
        ]
    return np.concatenate(arrays, axis=0)


def classification_logits(predictions: Any) -> np.ndarray:
    """The ``[n, num_labels]`` logits (or ``[n]`` label ids) from a Trainer's predictions.

    Handles a tuple of model outputs (logits come first) and per-batch lists (``eval_do_concat_batches=False``).
    """
    predictions = flatten_batches(predictions)
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    return np.asarray(predictions)


def predicted_labels(predictions: Any) -> np.ndarray:
    """Predicted label ids: argmax of logits, or the ids themselves when ``preprocess_logits_for_metrics`` gave ids."""
    logits = classification_logits(predictions)
    return logits.reshape(-1).astype(np.int64) if logits.ndim == 1 else logits.argmax(axis=-1)
