"""Seed synthesis: the LLM writes the first labelled dataset of S3.

Following the paper (Wang et al., EMNLP 2023 Findings):

- single-text tasks with a ``rationale`` prompt (IMDb) first ask the LLM for *rationales* per label (reasons a review
  could be positive/negative), once; each example is then written from ``k`` rationales sampled for its label;
- pair tasks (QNLI, RTE) write the second text (question / hypothesis) for a given context and label;
- extractive QA (AdQA) writes a question and an answer that is an exact span of the given context.

Contexts come from an unlabelled pool (:func:`s3_hf.gold.context_pool`: SQuAD sentences/paragraphs offline, or the
user's own file). Every LLM call goes through :class:`s3_hf.llm_engine.LLMEngine`, whose cache makes a re-run free;
each reply is validated against the :class:`~s3_hf.tasks.TaskSpec` and exact/near duplicates are dropped.

Example:

```python
>>> from s3_hf.llm_engine import LLMConfig, LLMEngine
>>> with LLMEngine(LLMConfig(local_model="qwen2.5-coder-0.5b")) as engine:
...     synth = SeedSynthesizer("imdb", engine)
...     outcome = synth.generate(64)
>>> outcome.examples[0]
{'text': 'A sweeping, heartfelt film ...', 'label': 1}
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic
from .dedup import Deduplicator
from .errors import S3ConfigError
from .output_parsing import delimit_data
from .prompts import RATIONALE_ASPECTS, PromptSet
from .s3_json import qa_id
from .tasks import TaskSpec, get_task

logger = logging.getLogger(__name__)

REASON_ANSWER_NOT_IN_CONTEXT = "answer_not_in_context"
REASON_ANSWER_TOO_LONG = "answer_too_long"
# a generated QA answer of more words is rejected: the small model's post-processing predicts spans of at most
# ``max_answer_length`` = 30 tokens, and SQuAD / AdversarialQA answers are a few words
MAX_ANSWER_WORDS = 20


# ---------------------------------------------------------------------- shared by seed synthesis and extrapolation
@dataclass
class SynthesisOutcome:
    """What one generation stage produced.

    Attributes:
        examples: accepted canonical examples, in request order.
        requested: number of requests sent (each asks for one example).
        rejected: reason -> count for requests that gave no example (after the engine's retries), duplicates, and
            candidates a verifier dropped (``verifier_<name>``).
        usage: token usage of the stage as reported by the engine (prompt/completion tokens, cost).
        api_calls: API calls made for these requests (cache replays not counted); one call with ``n`` that answers
            the k candidates of an error (``LLMConfig.shared_prompt_calls``) counts once.
        retries: reason -> count of the attempts that were asked again (why ``api_calls`` can exceed ``requested``).
        verification: verifier name -> ``{"checked", "kept", "dropped"}`` (extrapolation with verifiers).
        described: error-description requests (``ErrorExtrapolator(error_view="description")``); they write no
            example themselves, so they are not in ``requested``, but their calls are in ``api_calls``.
    """

    examples: list[dict[str, Any]] = field(default_factory=list)
    requested: int = 0
    rejected: Counter = field(default_factory=Counter)
    usage: dict[str, Any] = field(default_factory=dict)
    api_calls: int = 0
    retries: Counter = field(default_factory=Counter)
    verification: dict[str, dict[str, int]] = field(default_factory=dict)
    described: int = 0

    @property
    def accepted(self) -> int:
        return len(self.examples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "usage": self.usage,
            "api_calls": self.api_calls,
            "retries": dict(sorted(self.retries.items())),
            "verification": self.verification,
            **({"described": self.described} if self.described else {}),
        }


def format_prompt(template: str, spec: TaskSpec, *, prompts: PromptSet | None = None, **values: Any) -> str:
    """Fill a prompt template; every placeholder of :mod:`s3_hf.prompts` is available (unused ones are ignored).
    ``{label_hint}`` comes from ``prompts`` (default: the task's)."""
    label = values.get("label", "")
    filled = {
        "description": spec.description,
        "label": label,
        "label_hint": (prompts or spec.prompts).hint(label),
        "field": spec.generated_field,
        "labels": ", ".join(spec.label_names),
        "n": "",
        "rationales": "",
        "context": "",
        "example": "",
        "neighbour": "",
        "other_label": "",
        "aspect": "",
        "context_field": spec.context_field or "",
    }
    filled.update(values)
    try:
        return template.format(**filled)
    except (KeyError, IndexError, ValueError) as err:
        raise S3ConfigError(f"prompt template {template[:60]!r}... cannot be filled: {err!r}") from err


def messages_for(prompts: PromptSet, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": prompts.system}, {"role": "user", "content": user}]


def output_schema(spec: TaskSpec, *, new_context: bool = False) -> dict[str, Any]:
    """JSON schema of the object the LLM answers with (the generated field; QA adds the answer span; with
    ``new_context`` the context field comes first)."""
    props = {spec.context_field: {"type": "string"}} if new_context else {}
    props[spec.generated_field] = {"type": "string"}
    if spec.is_qa:
        props["answer"] = {"type": "string"}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def output_prefill(spec: TaskSpec, *, new_context: bool = False) -> str:
    """Assistant-turn prefill that starts the JSON answer (stops small local models from refusing or chatting)."""
    return '{"' + (spec.context_field if new_context else spec.generated_field) + '": "'


def span_fields(spec: TaskSpec) -> tuple[str, ...]:
    """Fields of the LLM's object copied from the context (QA: the answer span); see ``GenerationRequest``."""
    return ("answer",) if spec.is_qa else ()


def _clean(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return " ".join(text.replace("\u00a0", " ").split()).strip().strip('"').strip()


def find_span(context: str, answer: str) -> int | None:
    """Start offset of ``answer`` in ``context`` (exact, then case-insensitive), or ``None``."""
    start = context.find(answer)
    if start < 0:
        start = context.lower().find(answer.lower())
    return start if start >= 0 else None


# share of a written text's word 3-shingles found in a shown gold text at which it counts as (partly) copied
COPY_OVERLAP = 0.5


def example_validator(
    spec: TaskSpec,
    *,
    label: int | None = None,
    context: str | None = None,
    shown: Mapping[str, Any] | None = None,
    new_context: bool = False,
) -> Callable[[dict], tuple[dict | None, str | None]]:
    """A validator for :class:`~s3_hf.generation.GenerationRequest`: parsed LLM object -> ``(example, reason)``.

    The example gets the given ``label`` (classification) and ``context`` (pair/QA tasks); the generated text comes
    from the object. It must pass :meth:`TaskSpec.invalid_reason` (lengths included); a QA answer must be a span of
    the context of at most :data:`MAX_ANSWER_WORDS` words.

    ``shown``: the gold example shown in the prompt (error extrapolation). The written text may not copy its text
    of the same field, even in part (a word-shingle overlap of :data:`COPY_OVERLAP` or more; reason
    ``copied_<field>``), so that the new data neither repeats the gold data nor carries it where it may not go.

    ``new_context``: the object carries a new context too (pair classification tasks); with ``shown``, neither
    written text may copy any text of the shown example.
    """
    if new_context and not spec.is_pair:
        raise S3ConfigError(f"a new context is for pair classification tasks, not {spec.name!r}")
    copy_check = None
    if shown is not None:
        copy_check = Deduplicator(field=spec.generated_field, near_threshold=COPY_OVERLAP)
        for name in spec.input_fields if new_context else (spec.generated_field,):
            copy_check.add(str(shown[name]))

    def validate(obj: dict) -> tuple[dict | None, str | None]:
        ctx = context
        if not isinstance(obj, dict):
            return None, "not_a_json_object"
        if new_context:
            ctx = _clean(obj.get(spec.context_field))
            if not ctx:
                return None, f"missing_{spec.context_field}"
            if copy_check is not None and copy_check.check(ctx) is not None:
                return None, f"copied_{spec.context_field}"
        text = _clean(obj.get(spec.generated_field))
        if not text:
            return None, f"missing_{spec.generated_field}"
        if copy_check is not None and copy_check.check(text) is not None:
            return None, f"copied_{spec.generated_field}"
        if spec.is_qa:
            answer = _clean(obj.get("answer"))
            if not answer:
                return None, "missing_answer"
            answer = answer.rstrip(".")
            if len(answer.split()) > MAX_ANSWER_WORDS:
                return None, REASON_ANSWER_TOO_LONG
            start = find_span(ctx or "", answer) if answer else None
            if start is None:
                return None, REASON_ANSWER_NOT_IN_CONTEXT
            span = ctx[start : start + len(answer)]
            example = {
                "id": qa_id(ctx, text),
                "context": ctx,
                "question": text,
                "answers": {"text": [span], "answer_start": [start]},
            }
        else:
            example = {spec.generated_field: text, "label": label}
            if spec.context_field is not None:
                example[spec.context_field] = ctx
            example = {name: example[name] for name in spec.columns}
        problem = spec.invalid_reason(example)
        if problem is not None:
            return None, f"invalid_{problem[0]}"
        return example, None

    return validate


def make_deduplicator(spec: TaskSpec) -> Deduplicator:
    """The duplicate filter of a task: its generated field, scoped by the context for pair/QA tasks."""
    scope = (spec.context_field,) if spec.context_field and spec.context_field != spec.generated_field else ()
    return Deduplicator(field=spec.generated_field, scope=scope)


def run_requests(
    engine: Any,
    requests: Sequence[Any],
    *,
    stage: str,
    round_index: int,
    desc: str,
    deduplicator: Deduplicator | None,
) -> tuple[SynthesisOutcome, list[Any]]:
    """Send ``requests`` through the engine; collect accepted examples, rejection reasons, retries and usage.
    Returns the outcome and the engine's results (one per request, in order)."""
    outcome = SynthesisOutcome(requested=len(requests))
    if not requests:
        return outcome, []
    # the engine drops (and retries) exact/near duplicates of anything the deduplicator has seen
    results = engine.generate(list(requests), stage=stage, round_index=round_index, desc=desc, dedup=deduplicator)
    for result in results:
        if result.example is None:
            outcome.rejected[(result.reason or "rejected").split(":")[0]] += 1
        else:
            outcome.examples.append(result.example)
        outcome.api_calls += (getattr(result, "usage", None) or {}).get("api_calls", 0)
        reasons = list(getattr(result, "reasons", None) or [])
        asked_again = reasons if result.example is not None else reasons[:-1]  # the last reason of a drop is final
        outcome.retries.update(r.split(":")[0] for r in asked_again)
    outcome.usage = stage_usage(engine, stage=stage, round_index=round_index)
    return outcome, results


def stage_usage(engine: Any, *, stage: str, round_index: int) -> dict[str, Any]:
    """Token usage of one stage/round from the engine's usage tracker (``{}`` when it has none)."""
    usage = getattr(engine, "usage", None)
    total = getattr(usage, "total", None)
    if not callable(total):
        return {}
    try:
        return dict(total(stage=stage, round_index=round_index))
    except TypeError:
        return {}


def generation_request(**kwargs: Any) -> Any:
    """A :class:`~s3_hf.generation.GenerationRequest` (imported lazily)."""
    from .generation import GenerationRequest

    return GenerationRequest(**kwargs)


# ---------------------------------------------------------------------- seed synthesis
class SeedSynthesizer:
    """Writes the seed dataset of a task with an LLM engine.

    Args:
        task: task name or :class:`~s3_hf.tasks.TaskSpec`.
        engine: an :class:`~s3_hf.llm_engine.LLMEngine` (entered), or anything with the same ``generate``.
        prompts: override the task's :class:`~s3_hf.prompts.PromptSet`.
        contexts: the unlabelled context pool (pair and QA tasks); required for them.
        rationales_per_label: how many rationales to collect per label (tasks with a rationale prompt).
        rationales_per_request: how many rationales one request asks for.
        rationales_per_example: ``k``, how many sampled rationales each example is written from.
        seed: seed of the rationale sampling (example ``i`` always gets the same sample, so requests are stable
            and a longer run reuses the cached replies of a shorter one).
        max_attempts: attempts per request (the engine retries invalid replies).
        deduplicator: drops exact/near duplicates (default: a fresh one per synthesizer; ``None`` keeps all).
        stage: the usage/report bucket of the example requests (``"zerogen"`` for the ZeroGen baseline).
    """

    def __init__(
        self,
        task: str | TaskSpec,
        engine: Any,
        *,
        prompts: PromptSet | None = None,
        contexts: Sequence[str] | None = None,
        rationales_per_label: int = 12,
        rationales_per_request: int = 6,
        rationales_per_example: int = 2,
        seed: int = 0,
        max_attempts: int = 3,
        deduplicator: Deduplicator | None | str = "default",
        stage: str = "seed",
    ):
        self.spec = get_task(task)
        self.engine = engine
        self.prompts = prompts or self.spec.prompts
        self.stage = stage
        self.contexts = list(contexts or [])
        if self.spec.context_field is not None and not self.contexts:
            raise S3ConfigError(
                f"task {self.spec.name!r} writes text for given contexts: pass contexts= (e.g. "
                f"s3_hf.gold.context_pool({self.spec.name!r})), got none"
            )
        for name, value in (
            ("rationales_per_label", rationales_per_label),
            ("rationales_per_request", rationales_per_request),
            ("rationales_per_example", rationales_per_example),
            ("max_attempts", max_attempts),
        ):
            if not isinstance(value, int) or value < 1:
                raise S3ConfigError(f"SeedSynthesizer {name} must be a positive integer, got {value!r}")
        self.rationales_per_label = rationales_per_label
        self.rationales_per_request = rationales_per_request
        self.rationales_per_example = rationales_per_example
        self.seed = seed
        self.max_attempts = max_attempts
        self.deduplicator = make_deduplicator(self.spec) if deduplicator == "default" else deduplicator
        self._rationales: dict[str, list[str]] | None = None

    @property
    def uses_rationales(self) -> bool:
        return bool(self.prompts.rationale) and self.spec.is_single_text

    # ------------------------------------------------------------------ rationales
    def rationale_requests(self, labels: Sequence[str] | None = None, batch: int = 0) -> list[Any]:
        """The rationale requests of ``labels`` (default: all), each about another aspect; ``batch`` 1 is the
        top-up after the first batch (0), with aspects and cache keys of its own."""
        per_request = self.rationales_per_request
        count = math.ceil(self.rationales_per_label / per_request)
        requests = []
        for label in labels or self.spec.label_names:
            for j in range(batch * count, (batch + 1) * count):
                aspect = RATIONALE_ASPECTS[j % len(RATIONALE_ASPECTS)]
                user = format_prompt(
                    self.prompts.rationale, self.spec, prompts=self.prompts, label=label, n=per_request, aspect=aspect
                )
                requests.append(
                    generation_request(
                        messages=messages_for(self.prompts, user),
                        validate=_validate_rationales,
                        key={
                            "task": self.spec.fingerprint(),
                            "prompts": self.prompts.version,
                            "stage": "rationales",
                            "label": label,
                            "index": j,
                        },
                        json_schema={
                            "type": "object",
                            "properties": {"rationales": {"type": "array", "items": {"type": "string"}}},
                            "required": ["rationales"],
                        },
                        prefill='{"rationales": ["',
                        max_attempts=self.max_attempts,
                        meta={"label": label, "aspect": aspect},
                    )
                )
        return requests

    def rationales(self, *, path: str | Path | None = None, round_index: int = 0) -> dict[str, list[str]]:
        """Rationales per label name, asked once: read from ``path`` when it exists, else generated (and written
        there). A label left with fewer than half of ``rationales_per_label`` distinct rationales is asked once more
        (other aspects); one the LLM gave no usable rationale for falls back to the aspect names."""
        if self._rationales is not None:
            return self._rationales
        if path is not None and Path(path).is_file():
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if isinstance(data, dict) and set(data) == set(self.spec.label_names):
                self._rationales = {label: list(data[label]) for label in self.spec.label_names}
                return self._rationales
        found: dict[str, list[str]] = {label: [] for label in self.spec.label_names}

        def collect(requests: list[Any]) -> None:
            for result in self.engine.generate(
                requests, stage="rationales", round_index=round_index, desc="rationales"
            ):
                if result.example is None:
                    continue
                label = result.request.meta["label"]
                for text in result.example["rationales"]:
                    if text.lower() not in {t.lower() for t in found[label]}:
                        found[label].append(text)

        collect(self.rationale_requests())
        # a label with few distinct rationales gives few distinct pairs to write from, and its examples repeat each
        # other (seen: 3 positive rationales, 28 duplicate re-asks and 8 rows lost in a 48-row seed): ask once more
        short = [label for label, texts in found.items() if len(texts) < max(1, self.rationales_per_label // 2)]
        if short:
            logger.info("few rationales for %s (%s); asking again", short, {k: len(found[k]) for k in short})
            collect(self.rationale_requests(short, batch=1))
        for label, texts in found.items():
            if not texts:
                logger.warning("the LLM gave no usable rationale for label %r; using the aspect names", label)
                texts.extend(RATIONALE_ASPECTS)
            del texts[self.rationales_per_label :]
        self._rationales = found
        if path is not None:
            write_json_atomic(Path(path), found)
        return found

    # ------------------------------------------------------------------ examples
    def plan(self, index: int) -> dict[str, Any]:
        """What request ``index`` asks for: its label id and, per task, its context or sampled rationales."""
        spec = self.spec
        plan: dict[str, Any] = {}
        if spec.is_qa:
            plan["context"] = self.contexts[index % len(self.contexts)]
            return plan
        labels = spec.num_labels
        plan["label"] = index % labels
        if spec.context_field is not None:
            plan["context"] = self.contexts[(index // labels) % len(self.contexts)]
        elif self.uses_rationales:
            pool = (self._rationales or {}).get(spec.label_names[plan["label"]], [])
            rng = random.Random(f"{self.seed}:{index}")
            plan["rationales"] = rng.sample(pool, min(self.rationales_per_example, len(pool)))
        return plan

    def requests(self, n: int, *, start: int = 0) -> list[Any]:
        """The requests for seed examples ``start .. start + n - 1`` (labels balanced, contexts cycled)."""
        if self.uses_rationales and self._rationales is None:
            raise RuntimeError("call rationales() before requests() for a task with a rationale prompt")
        spec = self.spec
        out = []
        for index in range(start, start + n):
            plan = self.plan(index)
            label = spec.label_names[plan["label"]] if "label" in plan else ""
            context = plan.get("context")
            rationales = "\n".join(f"- {r}" for r in plan.get("rationales", []))
            user = format_prompt(
                self.prompts.seed,
                spec,
                prompts=self.prompts,
                label=label,
                rationales=rationales,
                context=(delimit_data(context) + "\n") if context is not None else "",
            )
            key = {
                "task": spec.fingerprint(),
                "prompts": self.prompts.version,
                "stage": "seed",  # the same for ``stage="zerogen"``: the prompts' version tells them apart
                "index": index,
                "label": label,
                "context": hashlib.sha1(context.encode()).hexdigest() if context else None,
                "rationales": plan.get("rationales"),
            }
            out.append(
                generation_request(
                    messages=messages_for(self.prompts, user),
                    validate=example_validator(spec, label=plan.get("label"), context=context),
                    key=key,
                    json_schema=output_schema(spec),
                    prefill=output_prefill(spec),
                    span_fields=span_fields(spec),
                    max_attempts=self.max_attempts,
                    meta={"index": index},
                )
            )
        return out

    def generate(
        self, n: int, *, start: int = 0, round_index: int = 0, rationales_path: str | Path | None = None
    ) -> SynthesisOutcome:
        """Write ``n`` seed examples (fewer are returned when replies are rejected or duplicated).

        Args:
            n: number of requests (one example each).
            start: index of the first request; example ``i`` always gets the same prompt, so generating 96 after
                64 pays only for the 32 new ones.
            round_index: the round recorded in the engine's usage (0 for the seed).
            rationales_path: where the rationales are cached (see :meth:`rationales`).
        """
        if not isinstance(n, int) or n < 0:
            raise S3ConfigError(f"number of seed examples must be a non-negative integer, got {n!r}")
        if self.uses_rationales:
            self.rationales(path=rationales_path, round_index=round_index)
        outcome, _ = run_requests(
            self.engine,
            self.requests(n, start=start),
            stage=self.stage,
            round_index=round_index,
            desc=f"{self.stage} {self.spec.name}",
            deduplicator=self.deduplicator,
        )
        return outcome


def _validate_rationales(obj: dict) -> tuple[dict | None, str | None]:
    items = obj.get("rationales") if isinstance(obj, dict) else None
    if isinstance(items, str):
        items = [line.strip(" -*•\t") for line in items.splitlines()]
    if not isinstance(items, list):
        return None, "missing_rationales"
    texts = []
    for item in items:
        text = _clean(item if isinstance(item, str) else (item.get("reason") if isinstance(item, dict) else None))
        if text and 3 <= len(text) <= 200 and _is_content(text):
            texts.append(text)
    if not texts:
        return None, "empty_rationales"
    return {"rationales": texts}, None


def _is_content(text: str) -> bool:
    """False for template placeholders a small model copies from the prompt (``...``, ``<reason>``)."""
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 3 and not (text.startswith("<") and text.endswith(">"))
