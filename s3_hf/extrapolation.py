"""Error extrapolation: new training examples written from the small model's mistakes (the heart of S3).

For each misclassified gold example the LLM sees the example with its *gold* label and writes ``n`` new, different
examples like it with that label. Pair and QA tasks keep the error's context (premise / sentence / paragraph) and
write a new second text (hypothesis / question, plus an answer span for QA). The paper's prompts are the default
(:mod:`s3_hf.prompts`); pass ``prompts=`` to override them.

The errors can be the :class:`~s3_hf.callback.MisclassificationCallback` output (a ``datasets.Dataset``), a list of
canonical examples, or a file in the task's S3 json format (e.g. the callback's ``misclassified/step-N.jsonl``).

Example:

```python
>>> extrapolator = ErrorExtrapolator("rte", engine, per_error=2)
>>> outcome = extrapolator.extrapolate(callback.errors, round_index=1)
>>> outcome.accepted, dict(outcome.rejected)
(37, {'duplicate': 1, 'invalid_hypothesis': 2})
```
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .dedup import Deduplicator
from .errors import S3ConfigError, S3DataError
from .output_parsing import delimit_data
from .prompts import PromptSet
from .s3_json import read_s3_json
from .synthesis import (
    SynthesisOutcome,
    example_validator,
    format_prompt,
    generation_request,
    make_deduplicator,
    messages_for,
    output_prefill,
    output_schema,
    run_requests,
    span_fields,
)
from .tasks import TaskSpec, get_task

ErrorsInput = Any  # datasets.Dataset | Iterable[dict] | str | Path


def load_errors(errors: ErrorsInput, task: str | TaskSpec) -> list[dict[str, Any]]:
    """Canonical examples from a ``datasets.Dataset``, an iterable of dicts, or an S3 json / jsonl file.

    Extra columns (predicted label, probabilities...) are dropped; each row is checked against the task.
    """
    spec = get_task(task)
    if isinstance(errors, (str, Path)):
        return read_s3_json(errors, spec)
    rows = errors.to_list() if hasattr(errors, "to_list") else list(errors)
    out = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise S3DataError(f"an error must be a mapping, got {type(row).__name__}", file="<errors>", row=index + 1)
        missing = [c for c in spec.columns if c not in row]
        if missing:
            raise S3DataError(f"lacks {missing}; has {sorted(row)}", file="<errors>", row=index + 1, field=missing[0])
        example = {name: row[name] for name in spec.columns}
        if not spec.is_qa:
            try:
                example["label"] = spec.label_id(example["label"])
            except ValueError as err:
                raise S3DataError(str(err), file="<errors>", row=index + 1, field="label") from None
        else:
            answers = example["answers"]
            example["answers"] = {
                "text": list(answers["text"]),
                "answer_start": [int(s) for s in answers["answer_start"]],
            }
        problem = spec.invalid_reason(example, check_lengths=False)
        if problem is not None:
            raise S3DataError(problem[1], file="<errors>", row=index + 1, field=problem[0])
        out.append(example)
    return out


class ErrorExtrapolator:
    """Writes ``per_error`` new examples for each error, with the error's gold label (and context).

    Args:
        task: task name or spec.
        engine: an entered :class:`~s3_hf.llm_engine.LLMEngine` (or anything with the same ``generate``).
        per_error: new examples asked per error (``n`` in the paper).
        prompts: override the task's prompts (the ``extrapolate`` template is used).
        max_errors: use at most this many errors (a label-balanced, seeded sample); ``None`` uses all.
        max_example_chars: longer gold texts are cut to this many characters in the prompt.
        seed: seed of the ``max_errors`` sample.
        max_attempts: attempts per request.
        deduplicator: drops exact/near duplicates; seed it with earlier rounds (default: a fresh one).
    """

    def __init__(
        self,
        task: str | TaskSpec,
        engine: Any,
        *,
        per_error: int = 1,
        prompts: PromptSet | None = None,
        max_errors: int | None = None,
        max_example_chars: int = 1000,
        seed: int = 0,
        max_attempts: int = 3,
        deduplicator: Deduplicator | None | str = "default",
    ):
        self.spec = get_task(task)
        self.engine = engine
        if not isinstance(per_error, int) or per_error < 1:
            raise S3ConfigError(f"ErrorExtrapolator per_error must be a positive integer, got {per_error!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise S3ConfigError(f"ErrorExtrapolator max_attempts must be a positive integer, got {max_attempts!r}")
        if max_errors is not None and (not isinstance(max_errors, int) or max_errors < 0):
            raise S3ConfigError(f"ErrorExtrapolator max_errors must be None or >= 0, got {max_errors!r}")
        if max_example_chars < 50:
            raise S3ConfigError(f"ErrorExtrapolator max_example_chars must be >= 50, got {max_example_chars!r}")
        self.per_error = per_error
        self.prompts = prompts or self.spec.prompts
        self.max_errors = max_errors
        self.max_example_chars = max_example_chars
        self.seed = seed
        self.max_attempts = max_attempts
        self.deduplicator = make_deduplicator(self.spec) if deduplicator == "default" else deduplicator

    def select(self, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The errors used: all, or ``max_errors`` of them drawn round-robin over labels (seeded)."""
        if self.max_errors is None or len(errors) <= self.max_errors:
            return errors
        rng = random.Random(self.seed)
        if self.spec.is_qa:
            return [errors[i] for i in sorted(rng.sample(range(len(errors)), self.max_errors))]
        by_label: dict[int, list[int]] = {}
        for index, example in enumerate(errors):
            by_label.setdefault(example["label"], []).append(index)
        for indices in by_label.values():
            rng.shuffle(indices)
        chosen: list[int] = []
        while len(chosen) < self.max_errors:
            for label in sorted(by_label):
                if by_label[label] and len(chosen) < self.max_errors:
                    chosen.append(by_label[label].pop())
        return [errors[i] for i in sorted(chosen)]

    def _shown(self, example: dict[str, Any]) -> str:
        def cut(text: str) -> str:
            return text if len(text) <= self.max_example_chars else text[: self.max_example_chars] + " ..."

        spec = self.spec
        if spec.is_qa:
            return delimit_data(
                {
                    "paragraph": cut(example["context"]),
                    "question": example["question"],
                    "answer": example["answers"]["text"][0],
                }
            )
        if len(spec.input_fields) == 1:
            return delimit_data(cut(example[spec.input_fields[0]]))
        return delimit_data({name: cut(example[name]) for name in spec.input_fields})

    def requests(self, errors: Iterable[dict[str, Any]]) -> list[Any]:
        """``per_error`` requests per error (canonical examples)."""
        spec = self.spec
        out = []
        for example in errors:
            label_id = None if spec.is_qa else spec.label_id(example["label"])
            label = "" if spec.is_qa else spec.label_names[label_id]
            context = example[spec.context_field] if spec.context_field else None
            user = format_prompt(
                self.prompts.extrapolate,
                spec,
                label=label,
                example=self._shown(example),
                context=delimit_data(context) if context is not None else "",
            )
            digest = hashlib.sha256(json.dumps(example, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
            for sample in range(self.per_error):
                out.append(
                    generation_request(
                        messages=messages_for(self.prompts, user),
                        validate=example_validator(spec, label=label_id, context=context),
                        key={
                            "task": spec.fingerprint(),
                            "prompts": self.prompts.version,
                            "stage": "extrapolate",
                            "error": digest,
                            "sample": sample,
                        },
                        json_schema=output_schema(spec),
                        prefill=output_prefill(spec),
                        span_fields=span_fields(spec),
                        max_attempts=self.max_attempts,
                        meta={"error": digest, "sample": sample},
                    )
                )
        return out

    def extrapolate(self, errors: ErrorsInput, *, round_index: int = 1) -> SynthesisOutcome:
        """New examples from ``errors`` (see :func:`load_errors` for what is accepted)."""
        chosen = self.select(load_errors(errors, self.spec))
        return run_requests(
            self.engine,
            self.requests(chosen),
            stage="extrapolate",
            round_index=round_index,
            desc=f"extrapolate round {round_index}",
            deduplicator=self.deduplicator,
        )
