"""SQuAD v1.1 exact match / F1 as an ``evaluate`` module that loads offline: ``evaluate.load(path_to_this_folder)``.

Same inputs as the Hub's ``squad`` metric; the computation is :func:`s3_hf.metrics.squad_em_f1` (one place).
"""

import datasets
import evaluate

from s3_hf.metrics import squad_em_f1

_DESCRIPTION = "SQuAD v1.1 exact match and F1 (official answer normalization), in percent."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": [str], "answer_start": [int]}}.
Returns:
    exact_match (float), f1 (float): between 0 and 100.
Examples:
    >>> metric = evaluate.load("path/to/s3_hf/metrics/squad")
    >>> metric.compute(predictions=[{"id": "1", "prediction_text": "1976"}],
    ...                references=[{"id": "1", "answers": {"text": ["1976"], "answer_start": [97]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        return squad_em_f1(predictions, references)
