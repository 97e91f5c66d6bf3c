"""Error extrapolation: new training examples written from the small model's mistakes (the heart of S3).

For each misclassified gold example the LLM sees the example with its *gold* label (and, with a ``contrast_pool``, the
most similar correctly classified example of another label) and writes ``k`` candidate examples like it with that
label; verifiers (:mod:`s3_hf.verification`) keep the candidates whose label they confirm. Pair and QA tasks keep the
error's context (premise / sentence / paragraph) and write a new second text (hypothesis / question, plus an answer
span for QA); with ``new_context=True`` a pair task writes a new context too (for data to ship when the gold texts may
not be). A written text that copies the error's, even in part, is re-asked and at last rejected as ``copied_<field>``
(with ``new_context``: a premise or hypothesis that copies either text of the error); prompts with a ``copy_retry``
note show the model its copied reply and the note on the re-ask. With ``error_view="description"`` (single-text
classification tasks) the LLM first describes each error in a sentence or two, and the candidates are written from
that description alone: they cannot copy a text they never see, and their prompts are short (the outcome's
``described`` counts the description requests; the k candidates of an error whose description fails count as
``no_description``). The prompts are :mod:`s3_hf.prompts`'; pass ``prompts=`` to override them.

The errors can be the :class:`~s3_hf.callback.MisclassificationCallback` output (a ``datasets.Dataset``), a list of
canonical examples, or a file in the task's S3 json format (e.g. the callback's ``misclassified/step-N.jsonl``).

Example:

```python
>>> from s3_hf.verification import LLMLabelVerifier
>>> extrapolator = ErrorExtrapolator("rte", engine, examples_per_error=3, verifiers=[LLMLabelVerifier("rte", engine)])
>>> outcome = extrapolator.extrapolate(callback.errors, round_index=1)
>>> outcome.accepted, dict(outcome.rejected)
(61, {'duplicate': 1, 'invalid_hypothesis': 2, 'verifier_llm': 32})
```
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .dedup import Deduplicator, normalise_text, split_sentences
from .errors import S3ConfigError, S3DataError
from .output_parsing import delimit_data
from .prompts import (
    ERROR_VIEWS,
    GENERIC_DESCRIBE,
    GENERIC_EXTRAPOLATE_CONTEXT,
    GENERIC_EXTRAPOLATE_DESCRIBED,
    PromptSet,
)
from .s3_json import read_s3_json
from .synthesis import (
    COPY_OVERLAP,
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
    stage_usage,
)
from .tasks import TaskSpec, get_task
from .verification import VERIFY_MODES, apply_verifiers, example_digest, shown_example

ErrorsInput = Any  # datasets.Dataset | Iterable[dict] | str | Path

# a description outside these word counts is re-asked: it is meant to be a sentence or two, neither a title nor a
# retelling. A longer one is first cut to its leading sentences within the limit, so it costs no re-ask (measured on
# 656 description replies of the 36-error IMDb benchmark, seeds 2-8: 59 were too long, and each had such sentences).
MIN_DESCRIPTION_WORDS, MAX_DESCRIPTION_WORDS = 3, 60
# what a description reply is prefilled with, before PromptSet.describe_lead
DESCRIPTION_PREFILL = '{"summary": "'


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
    """Writes ``examples_per_error`` candidate examples for each error, with the error's gold label (and context),
    and keeps those its verifiers confirm.

    Args:
        task: task name or spec.
        engine: an entered :class:`~s3_hf.llm_engine.LLMEngine` (or anything with the same ``generate``).
        examples_per_error: ``k``, candidates asked per error (the paper's ``n``); the k requests of one error share
            their prompt (and, on a local server, its KV cache) and differ by sampling seed.
        keep_per_error: keep at most this many verified candidates per error (``None``: all).
        prompts: override the task's prompts (the ``extrapolate`` and ``contrast`` templates are used).
        max_errors: use at most this many errors (a label-balanced, seeded sample); ``None`` uses all.
        max_example_chars: longer gold texts are cut (at a sentence boundary) to about this many characters in the
            prompt: the prompt, not the reply, dominates extrapolation time on a CPU.
        contrast_pool: examples the small model handled correctly; for each error the most similar one of another
            label is shown next to it ("learning by contrast", prompt template ``contrast``). ``None``: no neighbour.
        verifiers: :mod:`s3_hf.verification` verifiers applied in order to every candidate (``verifier_<name>`` in
            ``rejected`` and ``outcome.verification`` count what each dropped).
        verify_mode: ``"all"`` (a candidate must pass every verifier) or ``"any"`` (a cascade: a candidate one
            verifier keeps is kept, and only what it doubts reaches the next); see
            :func:`~s3_hf.verification.apply_verifiers`.
        seed: seed of the ``max_errors`` sample.
        max_attempts: attempts per request.
        deduplicator: drops exact/near duplicates; seed it with earlier rounds (default: a fresh one).
        stage: the usage/report bucket of the generation requests (the baseline's name for ``goldgen`` and
            ``goldgen_correct``).
        new_context: pair classification tasks: write a new context (premise) as well, with the prompt template
            ``extrapolate_context`` (contrast is not used then).
        error_view: what a candidate's prompt shows of its error: ``"text"`` (the error itself, cut to
            ``max_example_chars``) or ``"description"`` (single-text classification: one extra request per error
            has the LLM describe it, templates ``describe`` and ``extrapolate_described``; the candidates see only
            that description; contrast is not used then). An error whose description fails gets no candidates
            (``rejected["no_description"]`` counts its k).
        per_error: former name of ``examples_per_error``.
    """

    def __init__(
        self,
        task: str | TaskSpec,
        engine: Any,
        *,
        examples_per_error: int = 1,
        keep_per_error: int | None = None,
        prompts: PromptSet | None = None,
        max_errors: int | None = None,
        max_example_chars: int = 600,
        contrast_pool: Sequence[dict[str, Any]] | None = None,
        verifiers: Sequence[Any] = (),
        verify_mode: str = "all",
        seed: int = 0,
        max_attempts: int = 3,
        deduplicator: Deduplicator | None | str = "default",
        stage: str = "extrapolate",
        new_context: bool = False,
        error_view: str = "text",
        per_error: int | None = None,
    ):
        self.spec = get_task(task)
        self.engine = engine
        if per_error is not None:
            examples_per_error = per_error
        if isinstance(examples_per_error, bool) or not isinstance(examples_per_error, int) or examples_per_error < 1:
            raise S3ConfigError(
                f"ErrorExtrapolator examples_per_error must be a positive integer, got {examples_per_error!r}"
            )
        if keep_per_error is not None and (not isinstance(keep_per_error, int) or keep_per_error < 1):
            raise S3ConfigError(f"ErrorExtrapolator keep_per_error must be None or >= 1, got {keep_per_error!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise S3ConfigError(f"ErrorExtrapolator max_attempts must be a positive integer, got {max_attempts!r}")
        if max_errors is not None and (not isinstance(max_errors, int) or max_errors < 0):
            raise S3ConfigError(f"ErrorExtrapolator max_errors must be None or >= 0, got {max_errors!r}")
        if max_example_chars < 50:
            raise S3ConfigError(f"ErrorExtrapolator max_example_chars must be >= 50, got {max_example_chars!r}")
        if new_context and not self.spec.is_pair:
            raise S3ConfigError(
                f"ErrorExtrapolator new_context is for pair classification tasks, not {self.spec.name!r} "
                f"({self.spec.kind}, context field {self.spec.context_field!r})"
            )
        if error_view not in ERROR_VIEWS:
            raise S3ConfigError(f"ErrorExtrapolator error_view must be one of {ERROR_VIEWS}, got {error_view!r}")
        if error_view == "description" and (not self.spec.is_single_text or new_context):
            raise S3ConfigError(
                f"ErrorExtrapolator error_view='description' is for single-text classification tasks, not "
                f"{self.spec.name!r} ({self.spec.kind}, context field {self.spec.context_field!r})"
            )
        if verify_mode not in VERIFY_MODES:
            raise S3ConfigError(f"ErrorExtrapolator verify_mode must be one of {VERIFY_MODES}, got {verify_mode!r}")
        self.verify_mode = verify_mode
        self.error_view = error_view
        self.new_context = new_context
        self.examples_per_error = examples_per_error
        self.keep_per_error = keep_per_error
        self.prompts = prompts or self.spec.prompts
        self.max_errors = max_errors
        self.max_example_chars = max_example_chars
        self.verifiers = list(verifiers)
        self.seed = seed
        self.max_attempts = max_attempts
        self.stage = stage
        self.deduplicator = make_deduplicator(self.spec) if deduplicator == "default" else deduplicator
        no_contrast = self.spec.is_qa or not self.prompts.contrast or new_context or error_view == "description"
        self.contrast_pool = [] if no_contrast else list(contrast_pool or [])
        self._pool_words = [self._words(example) for example in self.contrast_pool]

    @property
    def per_error(self) -> int:
        """Former name of :attr:`examples_per_error`."""
        return self.examples_per_error

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

    def _words(self, example: dict[str, Any]) -> frozenset[str]:
        return frozenset(normalise_text(" ".join(example[name] for name in self.spec.input_fields)).split())

    def neighbour(self, example: dict[str, Any]) -> dict[str, Any] | None:
        """The contrast-pool example of another label most similar to ``example`` (word-set Jaccard; the first of
        equals), or ``None`` without a pool."""
        if not self.contrast_pool:
            return None
        words = self._words(example)
        best, best_score = None, -1.0
        for candidate, other in zip(self.contrast_pool, self._pool_words):
            if candidate["label"] == example["label"]:
                continue
            score = len(words & other) / (len(words | other) or 1)
            if score > best_score:
                best, best_score = candidate, score
        return best

    def _shown(self, example: dict[str, Any]) -> str:
        return shown_example(self.spec, example, self.max_example_chars)

    def other_label(self, example: dict[str, Any]) -> str:
        """``{other_label}`` of an error's prompts: the label the small model gave it, which in a two-label task is
        the other one (errors reach the extrapolator as canonical examples, without the predicted label); ``""``
        for QA and for tasks of more labels."""
        names = self.spec.label_names
        if self.spec.is_qa or len(names) != 2:
            return ""
        return names[1 - self.spec.label_id(example["label"])]

    def description_requests(self, errors: Iterable[dict[str, Any]], *, round_index: int = 1) -> list[Any]:
        """One request per error (``error_view="description"``): the LLM describes the error, without quoting it."""
        spec = self.spec
        template = self.prompts.describe or GENERIC_DESCRIBE
        out = []
        for example in errors:
            label = spec.label_names[spec.label_id(example["label"])]
            user = format_prompt(
                template,
                spec,
                prompts=self.prompts,
                label=label,
                example=self._shown(example),
                other_label=self.other_label(example),
            )
            lead = format_prompt(self.prompts.describe_lead or "", spec, prompts=self.prompts, label=label)
            digest = example_digest(example)
            key = {
                "task": spec.fingerprint(),
                "prompts": self.prompts.version,
                "describe": template,
                "stage": "describe",
                "error": digest,
                "round": round_index,
            }
            if lead:  # unset, the keys of earlier runs' descriptions stay valid
                key["describe_lead"] = lead
            out.append(
                generation_request(
                    messages=messages_for(self.prompts, user),
                    validate=description_validator(str(example[spec.generated_field]), lead=lead),
                    key=key,
                    json_schema={
                        "type": "object",
                        "properties": {"summary": {"type": "string"}},
                        "required": ["summary"],
                        "additionalProperties": False,
                    },
                    prefill=DESCRIPTION_PREFILL + lead,
                    max_attempts=self.max_attempts,
                    meta={"error": digest},
                    affinity=digest,
                )
            )
        return out

    def describe(
        self, errors: Sequence[dict[str, Any]], *, round_index: int = 1
    ) -> tuple[SynthesisOutcome, dict[str, str]]:
        """Run :meth:`description_requests`: their outcome, and error digest -> description for the errors that got
        one (what :meth:`requests` takes as ``descriptions``)."""
        outcome, results = run_requests(
            self.engine,
            self.description_requests(errors, round_index=round_index),
            stage=self.stage,
            round_index=round_index,
            desc=f"{self.stage} descriptions round {round_index}",
            deduplicator=None,
        )
        return outcome, {r.request.meta["error"]: r.example["summary"] for r in results if r.example is not None}

    def requests(
        self,
        errors: Iterable[dict[str, Any]],
        *,
        round_index: int = 1,
        descriptions: Mapping[str, str] | None = None,
    ) -> list[Any]:
        """``examples_per_error`` requests per error (canonical examples). The round is part of each request's cache
        key: an error the small model still gets wrong in a later round is asked for new candidates, not handed the
        earlier round's again (which the deduplicator would drop as duplicates, at the cost of re-asks).

        ``descriptions``: error digest -> the LLM's description of it (``error_view="description"``, from
        :meth:`description_requests`): each prompt shows it instead of the error, and errors without one are
        skipped."""
        spec = self.spec
        out = []
        note, copied = self.prompts.copy_retry, spec.input_fields if self.new_context else (spec.generated_field,)
        notes = {f"copied_{name}": note.format(field=name) for name in copied} if note else {}
        for example in errors:
            digest = example_digest(example)
            if descriptions is not None and digest not in descriptions:
                continue
            label_id = None if spec.is_qa else spec.label_id(example["label"])
            label = "" if spec.is_qa else spec.label_names[label_id]
            context = example[spec.context_field] if spec.context_field else None
            neighbour = self.neighbour(example)
            values: dict[str, Any] = {
                "label": label,
                "example": self._shown(example),
                "other_label": self.other_label(example),
            }
            if descriptions is not None:
                values["example"] = delimit_data(descriptions[digest])
            if context is not None:
                values["context"] = delimit_data(context)
            if neighbour is not None:
                values["neighbour"] = self._shown(neighbour)
                values["other_label"] = spec.label_names[neighbour["label"]]
            if self.new_context:
                template = self.prompts.extrapolate_context or GENERIC_EXTRAPOLATE_CONTEXT
            elif descriptions is not None:
                template = self.prompts.extrapolate_described or GENERIC_EXTRAPOLATE_DESCRIBED
            else:
                template = self.prompts.contrast if neighbour is not None else self.prompts.extrapolate
            user = format_prompt(template, spec, prompts=self.prompts, **values)
            key = {
                "task": spec.fingerprint(),
                "prompts": self.prompts.version,
                "stage": "extrapolate",
                "error": digest,
                "neighbour": example_digest(neighbour) if neighbour is not None else None,
                "round": round_index,
            }
            if self.new_context:
                key["new_context"] = True
            if descriptions is not None:
                key["describe"] = template
                key["description"] = descriptions[digest]
            validate = example_validator(
                spec, label=label_id, context=context, shown=example, new_context=self.new_context
            )
            for sample in range(self.examples_per_error):
                out.append(
                    generation_request(
                        messages=messages_for(self.prompts, user),
                        validate=validate,
                        key={**key, "sample": sample},
                        json_schema=output_schema(spec, new_context=self.new_context),
                        prefill=output_prefill(spec, new_context=self.new_context),
                        span_fields=span_fields(spec),
                        max_attempts=self.max_attempts,
                        meta={"error": digest, "sample": sample},
                        affinity=digest,
                        retry_notes=notes,
                    )
                )
        return out

    def extrapolate(self, errors: ErrorsInput, *, round_index: int = 1) -> SynthesisOutcome:
        """New, verified examples from ``errors`` (see :func:`load_errors` for what is accepted)."""
        chosen = self.select(load_errors(errors, self.spec))
        described, descriptions = None, None
        if self.error_view == "description":
            described, descriptions = self.describe(chosen, round_index=round_index)
        outcome, results = run_requests(
            self.engine,
            self.requests(chosen, round_index=round_index, descriptions=descriptions),
            stage=self.stage,
            round_index=round_index,
            desc=f"{self.stage} round {round_index}",
            deduplicator=self.deduplicator,
        )
        if described is not None:  # the description calls are this stage's calls too
            outcome.described = described.requested
            outcome.api_calls += described.api_calls
            outcome.retries.update({f"description_{k}": v for k, v in described.retries.items()})
            if described.rejected:  # the k candidates of an error without a description were never asked
                unasked = sum(described.rejected.values()) * self.examples_per_error
                outcome.requested += unasked
                outcome.rejected["no_description"] += unasked
            outcome.usage = stage_usage(self.engine, stage=self.stage, round_index=round_index)
        accepted = [r for r in results if r.example is not None]
        keep, outcome.verification = apply_verifiers(
            [r.example for r in accepted], self.verifiers, round_index=round_index, mode=self.verify_mode
        )
        for name, stats in outcome.verification.items():
            if stats["dropped"]:
                outcome.rejected[f"verifier_{name}"] += stats["dropped"]
        kept_per_error: Counter = Counter()
        outcome.examples = []
        for result, flag in zip(accepted, keep):
            if not flag:
                continue
            error = result.request.meta["error"]
            if self.keep_per_error is not None and kept_per_error[error] >= self.keep_per_error:
                outcome.rejected["over_keep_per_error"] += 1
                continue
            kept_per_error[error] += 1
            outcome.examples.append(result.example)
        return outcome


def description_validator(shown_text: str, *, lead: str = ""):
    """Validator of a description request: a ``summary`` of :data:`MIN_DESCRIPTION_WORDS` to
    :data:`MAX_DESCRIPTION_WORDS` words (a longer one is cut to its leading sentences within the limit) that does not
    copy the error's text (reasons ``missing_summary``, ``short_summary``, ``long_summary`` when not even its first
    sentence fits, ``copied_summary``). The words of ``lead`` (the prefilled start, :attr:`PromptSet.describe_lead`)
    do not count towards the minimum when the summary starts with them: the model has to write that many of its own
    (an endpoint that does not take the prefill, ``prefill_mode="inline"``, answers without the lead)."""
    lead = " ".join(lead.split())
    copy_check = Deduplicator(near_threshold=COPY_OVERLAP)
    copy_check.add(shown_text)

    def validate(obj: dict) -> tuple[dict | None, str | None]:
        summary = obj.get("summary") if isinstance(obj, dict) else None
        if not isinstance(summary, str) or not " ".join(summary.split()):
            return None, "missing_summary"
        words = summary.split()
        summary = " ".join(words)
        minimum = MIN_DESCRIPTION_WORDS + (len(lead.split()) if lead and summary.startswith(lead) else 0)
        if len(words) < minimum:
            return None, "short_summary"
        if len(words) > MAX_DESCRIPTION_WORDS:
            summary = _leading_sentences(summary, MAX_DESCRIPTION_WORDS)
            if len(summary.split()) < minimum:
                return None, "long_summary"
        if copy_check.check(summary) is not None:
            return None, "copied_summary"
        return {"summary": summary}, None

    return validate


def _leading_sentences(text: str, max_words: int) -> str:
    """The longest run of ``text``'s leading sentences that is at most ``max_words`` words ("" when its first sentence
    alone is longer)."""
    kept: list[str] = []
    words = 0
    for _, sentence in split_sentences(text):
        words += len(sentence.split())
        if words > max_words:
            break
        kept.append(sentence.strip())
    return " ".join(kept)
