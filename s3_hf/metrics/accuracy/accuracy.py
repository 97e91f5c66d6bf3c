"""Accuracy as an ``evaluate`` module that loads offline: ``evaluate.load(path_to_this_folder)``.

The computation is :func:`s3_hf.metrics.accuracy` (one place); this file only adapts it to ``evaluate``.
"""

import datasets
import evaluate

from s3_hf.metrics import accuracy

_DESCRIPTION = "Accuracy: the fraction of predicted label ids equal to the reference label ids."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): gold label ids.
Returns:
    accuracy (float): between 0 and 1.
Examples:
    >>> metric = evaluate.load("path/to/s3_hf/metrics/accuracy")
    >>> metric.compute(predictions=[0, 1], references=[1, 1])
    {'accuracy': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        return accuracy(predictions, references)
