"""Tasks as data: a :class:`TaskSpec` per task, kept in one registry.

A task spec says everything the rest of s3-hf needs to know about a task: its canonical fields, how they map to the
json keys of the S3 release, its ``datasets.Features``, how an example is fed to the small model, its metric, its
prompts and a version. Built-in tasks: ``imdb``, ``qnli``, ``rte`` and ``adqa``. Users register their own
classification tasks with :func:`register_task` (from a :class:`TaskSpec`) or :func:`load_task_yaml`.

Example:

```python
>>> from s3_hf.tasks import get_task
>>> rte = get_task("rte")
>>> rte.label_names
('entailment', 'not_entailment')
>>> rte.s3_keys["premise"]
'text1'
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import S3ConfigError
from .prompts import PromptSet, default_prompts

TaskKind = Literal["classification", "extractive_qa"]
_KINDS = ("classification", "extractive_qa")
_METRICS = ("accuracy", "squad")


@dataclass(frozen=True)
class TaskSpec:
    """Everything s3-hf knows about one task.

    Args:
        name: registry key, e.g. ``"rte"``.
        kind: ``"classification"`` or ``"extractive_qa"``.
        description: one sentence describing the task, used in prompts and dataset cards.
        input_fields: canonical text fields fed to the small model, in order (one field, or a pair).
        label_names: class names in label-id order (classification only).
        context_field: the field given to the LLM as context (``None`` when the LLM writes the whole example).
        generated_field: the field the LLM writes (``text``, ``hypothesis``, ``question``...).
        s3_keys: canonical field -> key of the S3 json record form (e.g. RTE ``premise -> text1``).
        s3_columns: canonical fields in the order of the S3 column-list form ``[[col0...], [col1...], ...]``.
        metric: ``"accuracy"`` (classification) or ``"squad"`` (exact match / F1).
        version: bump it whenever a change alters generated data; it keys the caches.
        max_length: token budget of the small model's input.
        min_chars: shortest accepted generated text.
        max_chars: longest accepted generated text.
        prompts: the prompt templates for seed synthesis and error extrapolation.
        hub_gold: where gold data lives on the Hub: ``{"path", "name", "columns": {hub_col: canonical}, ...}``.
    """

    name: str
    kind: TaskKind
    description: str
    input_fields: tuple[str, ...]
    label_names: tuple[str, ...] = ()
    context_field: str | None = None
    generated_field: str = "text"
    s3_keys: dict[str, str] = field(default_factory=dict)
    s3_columns: tuple[str, ...] = ()
    metric: str = "accuracy"
    version: str = "1.0.0"
    max_length: int = 256
    min_chars: int = 3
    max_chars: int = 4000
    prompts: PromptSet | None = None
    hub_gold: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "input_fields", tuple(self.input_fields))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        object.__setattr__(self, "s3_columns", tuple(self.s3_columns))
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise S3ConfigError(f"TaskSpec.name must be a non-empty identifier, got {self.name!r}")
        if self.kind not in _KINDS:
            raise S3ConfigError(f"TaskSpec.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.metric not in _METRICS:
            raise S3ConfigError(f"TaskSpec.metric must be one of {_METRICS}, got {self.metric!r}")
        if not 1 <= len(self.input_fields) <= 2:
            raise S3ConfigError(f"TaskSpec.input_fields must name one or two fields, got {self.input_fields!r}")
        if self.kind == "classification":
            if len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names):
                raise S3ConfigError(
                    f"TaskSpec.label_names must hold at least two distinct names, got {self.label_names!r}"
                )
            if self.metric != "accuracy":
                raise S3ConfigError(f"classification tasks use metric 'accuracy', got {self.metric!r}")
        else:
            if self.label_names:
                raise S3ConfigError(f"extractive_qa tasks have no label_names, got {self.label_names!r}")
            if self.input_fields != ("question", "context"):
                raise S3ConfigError(
                    f"extractive_qa input_fields must be ('question', 'context'), got {self.input_fields!r}"
                )
        if self.generated_field not in self.input_fields:
            raise S3ConfigError(
                f"TaskSpec.generated_field {self.generated_field!r} must be one of input_fields {self.input_fields!r}"
            )
        if self.context_field is not None and self.context_field not in self.input_fields:
            raise S3ConfigError(
                f"TaskSpec.context_field {self.context_field!r} must be one of input_fields {self.input_fields!r}"
            )
        if len(self.input_fields) == 2 and self.context_field is None:
            raise S3ConfigError(f"a two-field task needs a context_field, got None for {self.name!r}")
        if not self.s3_keys:
            object.__setattr__(self, "s3_keys", {f: f for f in self.record_fields})
        missing = [f for f in self.record_fields if f not in self.s3_keys]
        if missing:
            raise S3ConfigError(f"TaskSpec.s3_keys lacks a json key for {missing!r}: {self.s3_keys!r}")
        if not self.s3_columns:
            object.__setattr__(self, "s3_columns", self.record_fields)
        if self.min_chars < 0 or self.max_chars <= self.min_chars:
            raise S3ConfigError(f"need 0 <= min_chars < max_chars, got {self.min_chars!r} and {self.max_chars!r}")
        if self.max_length < 8:
            raise S3ConfigError(f"TaskSpec.max_length must be >= 8, got {self.max_length!r}")
        if self.prompts is None:
            object.__setattr__(self, "prompts", default_prompts(self.name))

    # ------------------------------------------------------------------ structure
    @property
    def is_qa(self) -> bool:
        return self.kind == "extractive_qa"

    @property
    def is_pair(self) -> bool:
        """A classification task over a given context and a written second text (RTE, QNLI)."""
        return not self.is_qa and self.context_field is not None

    @property
    def is_single_text(self) -> bool:
        """A classification task over one written text (IMDb): no context, no answer span."""
        return not self.is_qa and self.context_field is None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def record_fields(self) -> tuple[str, ...]:
        """Fields of one S3 json record, canonical names (QA: the S3 answer/start/end/id form)."""
        if self.is_qa:
            return ("context", "question", "answer", "start_idx", "end_idx", "id")
        return (*self.input_fields, "label")

    @property
    def columns(self) -> tuple[str, ...]:
        """Canonical dataset columns (what :attr:`features` describes)."""
        if self.is_qa:
            return ("id", "context", "question", "answers")
        return (*self.input_fields, "label")

    @property
    def features(self):
        """The ``datasets.Features`` of the task's canonical dataset."""
        import datasets

        if self.is_qa:
            return datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "context": datasets.Value("string"),
                    "question": datasets.Value("string"),
                    "answers": {
                        "text": datasets.List(datasets.Value("string")),
                        "answer_start": datasets.List(datasets.Value("int32")),
                    },
                }
            )
        feats = {f: datasets.Value("string") for f in self.input_fields}
        feats["label"] = datasets.ClassLabel(names=list(self.label_names))
        return datasets.Features(feats)

    # ------------------------------------------------------------------ labels
    def label_id(self, label: int | str) -> int:
        """Label id of ``label`` (an id or a name); raises ``ValueError`` naming the label set otherwise."""
        if isinstance(label, bool):
            raise ValueError(f"label {label!r} is not in {list(self.label_names)}")
        if isinstance(label, int):
            if 0 <= label < self.num_labels:
                return label
        elif isinstance(label, str):
            if label in self.label_names:
                return self.label_names.index(label)
            if label.strip().isdigit() and 0 <= int(label) < self.num_labels:
                return int(label)
        raise ValueError(f"label {label!r} is not in {list(self.label_names)} (or ids 0..{self.num_labels - 1})")

    # ------------------------------------------------------------------ validation
    def invalid_reason(self, example: dict[str, Any], *, check_lengths: bool = True) -> tuple[str, str] | None:
        """Check one canonical example; return ``(field, reason)`` for the first problem, or ``None``.

        Classification: every input field is a non-empty string (within ``min_chars``/``max_chars`` when
        ``check_lengths``, as for generated data), label in the label set. QA: context/question non-empty, at least
        one answer, each answer text is the span of the context at its ``answer_start``.
        """
        for name in self.columns:
            if name not in example or example[name] is None:
                return name, "missing"
        text_fields = ("context", "question") if self.is_qa else self.input_fields
        for name in text_fields:
            value = example[name]
            if not isinstance(value, str):
                return name, f"must be a string, got {type(value).__name__}"
            if not value.strip():
                return name, "is empty"
            if not check_lengths:
                continue
            limit = self.max_chars if name == self.generated_field else max(self.max_chars, 100_000)
            if name == self.generated_field and len(value.strip()) < self.min_chars:
                return name, f"is shorter than {self.min_chars} characters"
            if len(value) > limit:
                return name, f"is longer than {limit} characters ({len(value)})"
        if self.is_qa:
            answers = example["answers"]
            if not isinstance(answers, dict) or "text" not in answers or "answer_start" not in answers:
                return "answers", "must be {'text': [...], 'answer_start': [...]}"
            texts, starts = list(answers["text"]), list(answers["answer_start"])
            if not texts or len(texts) != len(starts):
                return (
                    "answers",
                    f"needs as many answer_start as text (and at least one), got {len(texts)}/{len(starts)}",
                )
            for text, start in zip(texts, starts):
                if not isinstance(text, str) or not text.strip():
                    return "answers", "an answer text is empty"
                if not isinstance(start, int) or isinstance(start, bool):
                    return "answers", f"answer_start must be an integer, got {start!r}"
                if example["context"][start : start + len(text)] != text:
                    return "answers", f"{text!r} is not the span of the context at answer_start={start}"
            return None
        try:
            self.label_id(example["label"])
        except ValueError as err:
            return "label", str(err)
        return None

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["prompts"] = self.prompts.to_dict() if self.prompts is not None else None
        return data

    def fingerprint(self) -> str:
        """sha256 of everything in the spec that changes generated data (fields, labels, prompts, version); not
        ``hub_gold``, which only says where gold data lives."""
        data = self.to_dict()
        data.pop("hub_gold", None)
        for name in ("describe", "extrapolate_described", "describe_lead"):  # they key their own requests
            (data.get("prompts") or {}).pop(name, None)
        payload = json.dumps(data, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    """Add ``spec`` to the registry; refuses to replace an existing task unless ``overwrite=True``."""
    if not isinstance(spec, TaskSpec):
        raise S3ConfigError(f"register_task expects a TaskSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not overwrite and _REGISTRY[spec.name] != spec:
        raise S3ConfigError(f"task {spec.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[spec.name] = spec
    return spec


def get_task(task: str | TaskSpec) -> TaskSpec:
    """The registered :class:`TaskSpec` named ``task`` (a spec is returned as is; a path to YAML is loaded)."""
    if isinstance(task, TaskSpec):
        return task
    if task in _REGISTRY:
        return _REGISTRY[task]
    if isinstance(task, str) and task.endswith((".yaml", ".yml")) and Path(task).is_file():
        return load_task_yaml(task)
    raise S3ConfigError(f"unknown task {task!r}; registered tasks: {sorted(_REGISTRY)}")


def list_tasks() -> list[str]:
    return sorted(_REGISTRY)


def load_task_yaml(path: str | Path, *, register: bool = True) -> TaskSpec:
    """Build a :class:`TaskSpec` from a YAML file of its fields and (by default) register it.

    Example file::

        name: sst2_like
        kind: classification
        description: Decide whether a short movie review is negative or positive.
        input_fields: [text]
        label_names: [negative, positive]
        generated_field: text
    """
    from .yaml_fields import read_yaml_fields

    path = Path(path)
    data = read_yaml_fields(path, TaskSpec)
    try:
        if isinstance(data.get("prompts"), dict):
            data["prompts"] = PromptSet(**data["prompts"])
        spec = TaskSpec(**data)
    except TypeError as err:
        raise S3ConfigError(f"{path}: {err}") from err
    except S3ConfigError as err:
        raise S3ConfigError(f"{path}: {err}") from err
    return register_task(spec, overwrite=True) if register else spec


IMDB = register_task(
    TaskSpec(
        name="imdb",
        kind="classification",
        description="sentiment classification of movie reviews (negative or positive)",
        input_fields=("text",),
        label_names=("negative", "positive"),
        generated_field="text",
        s3_keys={"text": "text", "label": "label"},
        s3_columns=("text", "label"),
        max_length=256,
        min_chars=20,
        max_chars=4000,
        hub_gold={"path": "stanfordnlp/imdb", "name": None, "columns": {"text": "text", "label": "label"}},
    )
)
QNLI = register_task(
    TaskSpec(
        name="qnli",
        kind="classification",
        description="question-answering natural language inference: does the sentence answer the question",
        input_fields=("question", "sentence"),
        label_names=("entailment", "not_entailment"),
        context_field="sentence",
        generated_field="question",
        s3_keys={"sentence": "text1", "question": "text2", "label": "label"},
        s3_columns=("sentence", "question", "label"),
        max_length=256,
        min_chars=8,
        max_chars=600,
        hub_gold={
            "path": "nyu-mll/glue",
            "name": "qnli",
            "columns": {"question": "question", "sentence": "sentence", "label": "label"},
        },
    )
)
RTE = register_task(
    TaskSpec(
        name="rte",
        kind="classification",
        description="recognizing textual entailment: does the premise entail the hypothesis",
        input_fields=("premise", "hypothesis"),
        label_names=("entailment", "not_entailment"),
        context_field="premise",
        generated_field="hypothesis",
        s3_keys={"premise": "text1", "hypothesis": "text2", "label": "label"},
        s3_columns=("premise", "hypothesis", "label"),
        max_length=256,
        min_chars=8,
        max_chars=600,
        hub_gold={
            "path": "nyu-mll/glue",
            "name": "rte",
            "columns": {"sentence1": "premise", "sentence2": "hypothesis", "label": "label"},
        },
    )
)
ADQA = register_task(
    TaskSpec(
        name="adqa",
        kind="extractive_qa",
        description="extractive question answering: the answer is a span of the context",
        input_fields=("question", "context"),
        context_field="context",
        generated_field="question",
        metric="squad",
        max_length=384,
        min_chars=8,
        max_chars=400,
        hub_gold={"path": "UCLNLP/adversarial_qa", "name": "adversarialQA", "columns": {}},
    )
)
