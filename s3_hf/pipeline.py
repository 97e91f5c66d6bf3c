"""The S3 loop: seed -> train the small model -> evaluate on gold validation -> extrapolate its errors -> repeat.

```
s3-hf run --task imdb --rounds 2                               # embedded defaults: local LLM, MiniLM, IMDb gold
s3-hf run --config run.yaml --push-to-hub you/imdb-s3          # same fields in YAML; flags override the file
s3-hf run --task imdb --method s3 zerogen                       # S3 and the ZeroGen baseline, side by side
```

Round ``k`` (``0`` = seed) has three stages, each a checkpoint recorded in ``<output_dir>/state.json`` (written
atomically): ``data`` (round 0: rationales + seed synthesis; round k: error extrapolation of round k-1's errors),
``train`` (train the small model from its base checkpoint on all data so far, evaluate on the gold validation set
with the :class:`~s3_hf.callback.MisclassificationCallback`, then on the gold test set) and ``publish`` (config
``round_k``/``seed`` + ``all`` pushed as one commit tagged ``round-k``, with the dataset card's per-round table and
accuracy plot). A killed run started again resumes at the stage it stopped: finished stages are skipped, and the
LLM engine's response cache replays every completed call of an interrupted stage.

Multi-process (``accelerate launch`` / ``torchrun``): training and evaluation run on every process; LLM generation,
file writes and pushes on the main process only, the others wait for the stage to be recorded and read its files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import report
from .atomic import write_json_atomic
from .errors import S3ConfigError, S3Error
from .llm_engine import _help
from .tasks import TaskSpec, get_task
from .yaml_fields import read_yaml_fields

logger = logging.getLogger(__name__)

METHODS = ("s3", "zerogen")
STATE_FILE = "state.json"
STATE_FORMAT = 1
GOLD_SUBSET_SEED = 0
CLASSIFICATION_MAX_LENGTH = 128


def parse_methods(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"s3 zerogen"``, ``"s3,zerogen"`` or ``["s3 zerogen"]`` -> ``["s3", "zerogen"]`` (CLI, YAML and Python alike)."""
    items = [value] if isinstance(value, str) else list(value)
    return [m for item in items for m in str(item).replace(",", " ").split()]


def public_base_url(url: str | None) -> str | None:
    """``url`` without userinfo (``user:pass@``), query string or fragment: safe to publish."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class S3Config:
    """Everything an S3 run needs. Every field is a CLI flag (``--seed-size 80``) and a YAML key (``seed_size: 80``)."""

    # ------------------------------------------------------------------ what to run
    task: str = field(default="imdb", metadata=_help("task name (imdb, qnli, rte, adqa) or a task YAML file"))
    method: list[str] = field(
        default_factory=lambda: ["s3"],
        metadata=_help(
            "methods to run, in order: 's3' (seed + error extrapolation rounds) and/or 'zerogen' (seed-only data of "
            "the same total size: the baseline)"
        ),
    )
    rounds: int = field(default=2, metadata=_help("error-extrapolation rounds after the seed round"))
    output_dir: str | None = field(
        default=None,
        metadata=_help("run folder: state.json, data/, errors/, the LLM cache, the report (default: runs/<task>)"),
    )
    stop_after: str | None = field(
        default=None,
        metadata=_help("stop after this stage, e.g. 'round_0.data' or 'round_1.train'; run again to resume"),
    )
    # ------------------------------------------------------------------ gold data
    gold: str = field(
        default="offline",
        metadata=_help("gold validation/test data: 'offline' (packaged), a local file/folder, or a Hub dataset id"),
    )
    validation_size: int = field(
        default=200, metadata=_help("gold validation examples the small model's errors come from")
    )
    test_size: int = field(default=500, metadata=_help("gold test examples for the final score (0: skip the test)"))
    context_pool: str = field(
        default="offline", metadata=_help("pair/QA tasks: unlabelled contexts, 'offline' (SQuAD) or a text/jsonl file")
    )
    # ------------------------------------------------------------------ synthesis
    seed_size: int = field(default=64, metadata=_help("seed examples requested (labels balanced)"))
    rationales_per_label: int = field(default=12, metadata=_help("rationales collected per label (IMDb-style tasks)"))
    rationales_per_request: int = field(default=6, metadata=_help("rationales one request asks for"))
    rationales_per_example: int = field(
        default=2, metadata=_help("k: sampled rationales each seed example is written from")
    )
    per_error: int = field(default=1, metadata=_help("n: new examples written per misclassified validation example"))
    max_errors_per_round: int | None = field(
        default=32, metadata=_help("extrapolate at most this many errors per round (label-balanced sample; None: all)")
    )
    zerogen_size: int | None = field(
        default=None,
        metadata=_help("zerogen data size (default: the size of the S3 run's final data in this output_dir)"),
    )
    max_attempts: int = field(default=3, metadata=_help("LLM attempts per example (invalid replies are retried)"))
    # ------------------------------------------------------------------ the LLM
    base_url: str | None = field(
        default=None, metadata=_help("OpenAI-compatible base URL; None starts the embedded local llama.cpp server")
    )
    model: str = field(default="local", metadata=_help("LLM model name sent to the server (e.g. gpt-4o-mini)"))
    api_key_env: str = field(
        default="OPENAI_API_KEY", metadata=_help("NAME of the environment variable holding the API key")
    )
    local_model: str = field(
        default="qwen2.5-coder-0.5b", metadata=_help("embedded LLM: 'qwen2.5-coder-0.5b', 'smollm2' or a .gguf path")
    )
    # The next three defaults deliberately differ from LLMConfig's generic ones: they are the S3 recipe's (the
    # paper's sampling temperature 0.9; one example reply fits in 200 tokens; one embedded server on a small
    # machine, where LLMConfig's 0 means "auto"). They are part of data_fingerprint(), so changing them invalidates
    # resumable runs. The fields are repeated here flat because every S3Config field is a CLI flag.
    temperature: float = field(default=0.9, metadata=_help("LLM sampling temperature"))
    max_tokens: int = field(default=200, metadata=_help("LLM completion token limit per call"))
    max_concurrency: int = field(default=8, metadata=_help("LLM requests in flight at once"))
    rpm: int | None = field(default=None, metadata=_help("LLM requests-per-minute budget"))
    tpm: int | None = field(default=None, metadata=_help("LLM tokens-per-minute budget"))
    json_mode: str = field(default="auto", metadata=_help("structured output: auto, schema, json_object or off"))
    local_replicas: int = field(default=1, metadata=_help("embedded llama.cpp servers to start"))
    llm_cache_dir: str | None = field(
        default=None, metadata=_help("LLM response cache folder (default: <output_dir>/llm_cache)")
    )
    # ------------------------------------------------------------------ the small model
    small_model: str | None = field(
        default=None, metadata=_help("small model: any AutoModel checkpoint (default: the packaged all-MiniLM-L6-v2)")
    )
    epochs: float = field(default=6.0, metadata=_help("training epochs per round (small seed sets need several)"))
    batch_size: int = field(default=16, metadata=_help("per-device train and eval batch size"))
    learning_rate: float = field(default=1e-4, metadata=_help("small-model learning rate"))
    max_length: int | None = field(
        default=None,
        metadata=_help(
            f"small-model token budget per example (default: {CLASSIFICATION_MAX_LENGTH} for classification, the "
            "task's max_length for QA, e.g. 384 for adqa; QA windows overlap by min(128, max_length // 4) tokens)"
        ),
    )
    seed: int = field(default=42, metadata=_help("seed of training, sampling and LLM calls"))
    # ------------------------------------------------------------------ publishing
    push_to_hub: str | None = field(
        default=None, metadata=_help("Hub dataset repo 'org/name' to push each round to (default: a local folder)")
    )
    hub_private: bool = field(default=False, metadata=_help("create the Hub repo private"))
    dataset_dir: str | None = field(
        default=None, metadata=_help("local versioned dataset folder (default: <output_dir>/dataset)")
    )
    publish: bool = field(default=True, metadata=_help("publish each round (Hub repo or local folder)"))

    def __post_init__(self):
        self.method = parse_methods(self.method)
        if not self.method or any(m not in METHODS for m in self.method) or len(set(self.method)) != len(self.method):
            raise S3ConfigError(f"S3Config.method must be distinct values of {METHODS}, got {self.method!r}")
        self.spec  # noqa: B018 - raises S3ConfigError for an unknown task
        positive = (
            "seed_size",
            "rationales_per_label",
            "rationales_per_request",
            "rationales_per_example",
            "per_error",
            "max_attempts",
            "max_tokens",
            "max_concurrency",
            "batch_size",
            "local_replicas",
            "validation_size",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise S3ConfigError(f"S3Config.{name} must be a positive integer, got {value!r}")
        for name in ("rounds", "test_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise S3ConfigError(f"S3Config.{name} must be an integer >= 0, got {value!r}")
        for name in ("max_errors_per_round", "zerogen_size", "rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise S3ConfigError(f"S3Config.{name} must be a positive integer or None, got {value!r}")
        if not self.epochs > 0:
            raise S3ConfigError(f"S3Config.epochs must be > 0, got {self.epochs!r}")
        if not self.learning_rate > 0:
            raise S3ConfigError(f"S3Config.learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.temperature <= 2:
            raise S3ConfigError(f"S3Config.temperature must be in [0, 2], got {self.temperature!r}")
        if self.max_length is None:
            self.max_length = self.spec.max_length if self.spec.is_qa else CLASSIFICATION_MAX_LENGTH
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 16:
            raise S3ConfigError(f"S3Config.max_length must be an integer >= 16, got {self.max_length!r}")
        if self.spec.is_qa:  # fail before any LLM call, not at round_0.train
            from .qa import check_lengths
            from .training import default_doc_stride

            check_lengths(self.max_length, default_doc_stride(self.max_length))
        if self.output_dir is None:
            self.output_dir = os.path.join("runs", self.spec.name)
        if not self.output_dir:
            raise S3ConfigError(f"S3Config.output_dir must be a folder path, got {self.output_dir!r}")
        if self.push_to_hub is not None and (self.push_to_hub.count("/") != 1 or " " in self.push_to_hub):
            raise S3ConfigError(f"S3Config.push_to_hub must be 'org/name', got {self.push_to_hub!r}")
        if self.stop_after is not None and self.stop_after not in self.stage_names():
            raise S3ConfigError(f"S3Config.stop_after must be one of {self.stage_names()}, got {self.stop_after!r}")
        self.llm_config()  # validates the LLM fields (errors name the bad value)

    # ------------------------------------------------------------------ derived
    @property
    def spec(self) -> TaskSpec:
        return get_task(self.task)

    def stage_names(self) -> list[str]:
        names = []
        if "s3" in self.method:
            for k in range(self.rounds + 1):
                names += [f"round_{k}.data", f"round_{k}.train", f"round_{k}.publish"]
        if "zerogen" in self.method:
            names += ["zerogen.data", "zerogen.train"]
        return names

    def llm_config(self):
        from .llm_engine import LLMConfig

        return LLMConfig(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            local_model=self.local_model,
            max_concurrency=self.max_concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self.seed,
            json_mode=self.json_mode,
            local_replicas=self.local_replicas,
            cache_dir=self.llm_cache_dir or os.path.join(self.output_dir, "llm_cache"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The run config as plain JSON-able data (holds no secret: only the NAME of the key's variable)."""
        return dataclasses.asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` fit to publish or write to disk: ``base_url`` without userinfo or query string."""
        data = self.to_dict()
        data["base_url"] = public_base_url(self.base_url)
        return data

    def data_fingerprint(self) -> str:
        """sha256 of the fields that change the data or the scores (not rounds/method/stop_after/publishing)."""
        ignore = {
            "rounds",
            "method",
            "stop_after",
            "zerogen_size",
            "push_to_hub",
            "hub_private",
            "dataset_dir",
            "publish",
            "output_dir",
            "llm_cache_dir",
            "max_concurrency",
            "rpm",
            "tpm",
            "local_replicas",
            "base_url",
            "api_key_env",
        }
        payload = {k: v for k, v in self.to_dict().items() if k not in ignore}
        payload["task_fingerprint"] = self.spec.fingerprint()
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------- config from CLI flags and YAML
def config_from_args(argv: list[str] | None = None) -> S3Config:
    """An :class:`S3Config` from CLI flags, with ``--config FILE.yaml`` supplying defaults the flags override."""
    import argparse

    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(S3Config, prog="s3-hf run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML file of S3Config fields (flags override it)")
    if known.config:
        data = read_yaml_fields(known.config, S3Config)
        if "method" in data:
            data["method"] = parse_methods(data["method"])
        parser.set_defaults(**data)
    (config,) = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)[:1]
    return config


# ---------------------------------------------------------------------- LLM usage across resumed runs
_USAGE_SUMS = ("requests", "cached_requests", "prompt_tokens", "completion_tokens", "cost_usd")


def _usage_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {key: sum(r.get(key, 0) for r in rows) for key in _USAGE_SUMS}
    totals["priced"] = all(r.get("priced", True) for r in rows)
    return totals


def merge_usage(previous: dict[str, Any] | None, session: dict[str, Any]) -> dict[str, Any]:
    """``llm_usage.json`` after one more process (``session``: :meth:`UsageTracker.summary`): the sessions so far
    plus this one under ``sessions``, and ``rows``/``by_stage``/``by_round``/``total`` summed over all of them, so a
    resumed run keeps the tokens of the runs before it."""
    sessions = list((previous or {}).get("sessions") or ([previous] if previous and previous.get("rows") else []))
    sessions.append({**session, "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    merged: dict[tuple, dict[str, Any]] = {}
    for one in sessions:
        for row in one.get("rows", []):
            key = (row["stage"], row["round_index"], row["model"])
            into = merged.setdefault(key, {"stage": key[0], "round_index": key[1], "model": key[2], "priced": True})
            for name in _USAGE_SUMS:
                into[name] = into.get(name, 0) + row.get(name, 0)
            into["priced"] = into["priced"] and row.get("priced", True)
    rows = [merged[key] for key in sorted(merged)]
    return {
        "rows": rows,
        "by_stage": {
            s: _usage_totals([r for r in rows if r["stage"] == s]) for s in sorted({r["stage"] for r in rows})
        },
        "by_round": {
            str(k): _usage_totals([r for r in rows if r["round_index"] == k])
            for k in sorted({r["round_index"] for r in rows})
        },
        "total": _usage_totals(rows),
        "sessions": sessions,
    }


# ---------------------------------------------------------------------- the pipeline
def process_state():
    """accelerate's ``PartialState``; on a machine without CUDA it must be asked for CPU explicitly, or a
    ``torchrun``/``accelerate launch`` of 2 CPU processes is seen as 2 independent single processes."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


class S3Pipeline:
    """Runs S3 (and the ZeroGen baseline) for one :class:`S3Config`, resumably.

    Args:
        config: the run configuration.
        engine: an entered :class:`~s3_hf.llm_engine.LLMEngine` to use instead of starting one from the config
            (the caller keeps ownership).

    Example:

    ```python
    >>> results = S3Pipeline(S3Config(task="imdb", rounds=2, output_dir="runs/imdb")).run()
    >>> print(results["table"])
    ```
    """

    def __init__(self, config: S3Config, *, engine: Any = None):
        self.config = config
        self.spec = config.spec
        self.out = Path(config.output_dir)
        self.process = process_state()
        self._engine = engine
        self._own_engine = None
        self._gold = None
        self._contexts: list[str] | None = None
        self.state: dict[str, Any] = {}

    # ------------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def _load_state(self) -> None:
        fingerprint = self.config.data_fingerprint()
        if self.state_path.is_file():
            try:
                state = json.loads(self.state_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise S3Error(
                    f"{self.state_path}: line {err.lineno}: invalid JSON ({err.msg}); delete it to restart"
                ) from None
            if state.get("fingerprint") != fingerprint:
                raise S3ConfigError(
                    f"{self.out} holds a run with another configuration (task, sizes, models or prompts differ); "
                    "use a new --output-dir, or delete the folder to start over"
                )
            self.state = state
        else:
            self.state = {
                "format": STATE_FORMAT,
                "task": self.spec.name,
                "fingerprint": fingerprint,
                "done": [],
                "s3": {"rounds": {}},
                "zerogen": {},
            }

    def _save_state(self) -> None:
        if self.process.is_main_process:
            write_json_atomic(self.state_path, self.state)

    def done(self, stage: str) -> bool:
        return stage in self.state.get("done", [])

    def _finish(self, stage: str) -> None:
        if self.process.is_main_process:
            self.state["done"].append(stage)
            self._save_state()
        self._sync(stage)

    def _sync(self, stage: str) -> None:
        """Every process waits until the main process has recorded ``stage``, then re-reads the state."""
        if self.process.num_processes <= 1:
            return
        if not self.process.is_main_process:
            while True:  # poll the file (no collective-op timeout during long LLM stages)
                try:
                    state = json.loads(self.state_path.read_text(encoding="utf-8"))
                    if stage in state.get("done", []):
                        self.state = state
                        break
                except (OSError, json.JSONDecodeError):
                    pass
                time.sleep(0.5)
        self.process.wait_for_everyone()

    def _stop(self, stage: str) -> bool:
        return self.config.stop_after == stage

    # ------------------------------------------------------------------ resources (lazy)
    @property
    def engine(self):
        if not self.process.is_main_process:
            raise RuntimeError("LLM generation runs on the main process only")
        if self._engine is None:
            from .llm_engine import LLMEngine

            self._own_engine = LLMEngine(self.config.llm_config()).__enter__()
            self._engine = self._own_engine
        return self._engine

    def gold(self):
        """``(validation, test)`` gold datasets: ``validation_size`` / ``test_size`` rows drawn with a fixed seed
        (the same subset for every run; a split sorted by label, like the Hub's IMDb test, still gives both labels)."""
        if self._gold is None:
            from .gold import load_gold

            def subset(split, size: int):
                return split if size >= len(split) else split.shuffle(seed=GOLD_SUBSET_SEED).select(range(size))

            splits = load_gold(self.spec, self.config.gold)
            if "validation" not in splits:
                raise S3ConfigError(f"gold source {self.config.gold!r} has no validation split: {sorted(splits)}")
            validation = subset(splits["validation"], self.config.validation_size)
            if not len(splits["validation"]):
                raise S3ConfigError(f"gold source {self.config.gold!r}: the validation split has no labelled rows")
            test = None
            if self.config.test_size and len(splits.get("test") or []):
                test = subset(splits["test"], self.config.test_size)
            elif self.config.test_size and "test" in splits:
                # e.g. GLUE's test splits: every label is -1 (hidden), so none is left: no score on 0 rows
                logger.warning(
                    "gold source %r: the test split has no labelled rows; skipping the test score", self.config.gold
                )
            elif self.config.test_size:
                logger.warning("gold source %r has no test split; skipping the test score", self.config.gold)
            self._gold = (validation, test)
        return self._gold

    def contexts(self) -> list[str]:
        if self._contexts is None:
            from .gold import context_pool

            self._contexts = context_pool(self.spec, self.config.context_pool) if self.spec.context_field else []
        return self._contexts

    def _synthesizer(self, deduplicator):
        from .synthesis import SeedSynthesizer

        c = self.config
        return SeedSynthesizer(
            self.spec,
            self.engine,
            contexts=self.contexts() or None,
            rationales_per_label=c.rationales_per_label,
            rationales_per_request=c.rationales_per_request,
            rationales_per_example=c.rationales_per_example,
            seed=c.seed,
            max_attempts=c.max_attempts,
            deduplicator=deduplicator,
        )

    # ------------------------------------------------------------------ data files
    def data_path(self, k: int) -> Path:
        return self.out / "data" / ("seed.jsonl" if k == 0 else f"round_{k}.jsonl")

    def errors_path(self, k: int) -> Path:
        return self.out / "errors" / f"round_{k}.jsonl"

    def _read(self, path: Path) -> list[dict[str, Any]]:
        from .s3_json import read_s3_json

        return read_s3_json(path, self.spec) if path.stat().st_size else []

    def _dataset(self, examples: list[dict[str, Any]]):
        import datasets

        if not examples:
            return datasets.Dataset.from_dict({c: [] for c in self.spec.columns}, features=self.spec.features)
        return datasets.Dataset.from_list(examples, features=self.spec.features)

    def _round_usage(self, stages: tuple[str, ...], k: int) -> dict[str, Any]:
        usage = getattr(self.engine, "usage", None)
        if usage is None or not callable(getattr(usage, "total", None)):
            return {}
        totals = [usage.total(stage=s, round_index=k) for s in stages]
        keys = ("requests", "cached_requests", "prompt_tokens", "completion_tokens", "cost_usd")
        summed: dict[str, Any] = {key: sum(t.get(key, 0) for t in totals) for key in keys}
        summed["priced"] = all(t.get("priced", True) for t in totals)
        return summed

    # ------------------------------------------------------------------ stages
    def _stage_data(self, k: int) -> None:
        """Round 0: rationales + seed synthesis. Round k: extrapolate round k-1's errors. Main process only."""
        from .s3_json import write_s3_json
        from .synthesis import make_deduplicator

        c = self.config
        dedup = make_deduplicator(self.spec)
        for j in range(k):  # nothing new may repeat earlier rounds
            dedup.seed(self._read(self.data_path(j)))
        started = time.time()
        if k == 0:
            outcome = self._synthesizer(dedup).generate(
                c.seed_size, round_index=0, rationales_path=self.out / "rationales.json"
            )
            stages = ("rationales", "seed")
            used = {"errors": None}
        else:
            from .extrapolation import ErrorExtrapolator, load_errors

            errors = load_errors(self.errors_path(k - 1), self.spec)
            dedup.seed(errors)  # no copy of a gold example either
            extrapolator = ErrorExtrapolator(
                self.spec,
                self.engine,
                per_error=c.per_error,
                max_errors=c.max_errors_per_round,
                seed=c.seed + k,
                max_attempts=c.max_attempts,
                deduplicator=dedup,
            )
            outcome = extrapolator.extrapolate(errors, round_index=k)
            stages = ("extrapolate",)
            used = {"errors": len(errors), "errors_used": min(len(errors), c.max_errors_per_round or len(errors))}
        write_s3_json(self.data_path(k), outcome.examples, self.spec)
        info = {
            **outcome.to_dict(),
            **used,
            "new_rows": outcome.accepted,
            "seconds_data": round(time.time() - started, 1),
        }
        info["usage"] = self._round_usage(stages, k)
        info["label_counts"] = self._label_counts(outcome.examples)
        self.state["s3"]["rounds"][str(k)] = info

    def _label_counts(self, examples: list[dict[str, Any]]) -> dict[str, int] | None:
        if self.spec.is_qa:
            return None
        counts = {name: 0 for name in self.spec.label_names}
        for example in examples:
            counts[self.spec.label_names[example["label"]]] += 1
        return counts

    def train_and_evaluate(self, examples: list[dict[str, Any]], name: str) -> dict[str, Any]:
        """Train the small model on any canonical ``examples`` (e.g. real training data, or another method's data)
        with this run's recipe, and score it on the same gold validation and test sets; the run folder is
        ``<output_dir>/<name>``. Used by the benchmarks for the ``gold`` baseline."""
        run_dir = self.out / name
        return self._train_and_evaluate(examples, run_dir, run_dir / "errors.jsonl")

    def _train_and_evaluate(self, examples: list[dict[str, Any]], run_dir: Path, errors_path: Path) -> dict:
        """Train the small model from its base checkpoint on ``examples``; evaluate on gold validation (its errors go
        to ``errors_path``) and test. Runs on every process."""
        import torch
        from transformers import TrainingArguments

        from .metrics import compute_metrics_for
        from .training import build_trainer, tokenize_dataset

        c = self.config
        validation, test = self.gold()
        if not examples:
            raise S3Error(f"no training data for {run_dir.name}: every LLM reply was rejected (see state.json)")
        args = TrainingArguments(
            output_dir=str(run_dir / "trainer"),
            num_train_epochs=c.epochs,
            per_device_train_batch_size=c.batch_size,
            per_device_eval_batch_size=max(c.batch_size, 32),
            learning_rate=c.learning_rate,
            warmup_steps=0.1,  # a ratio of the training steps
            weight_decay=0.01,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            seed=c.seed,
            data_seed=c.seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=False,
        )
        started = time.time()
        trainer = build_trainer(
            self.spec,
            c.small_model or self._default_small_model(),
            self._dataset(examples),
            validation,
            args,
            max_length=c.max_length,
        )
        trainer.train()
        train_seconds = time.time() - started
        metrics = trainer.evaluate()
        primary = report.primary_metric(self.spec)
        result: dict[str, Any] = {
            "train_rows": len(examples),
            "validation_size": len(validation),
            "validation": metrics.get(f"eval_{primary}"),
            "validation_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "seconds_train": round(train_seconds, 1),
        }
        callback = trainer.misclassification_callback
        errors = callback.errors
        if errors is None:
            raise S3Error(f"{run_dir.name}: the MisclassificationCallback collected no errors from the evaluation")
        result["errors"] = len(errors)
        if self.process.is_main_process:
            from .s3_json import write_s3_json

            extra = ("predicted_label", "probabilities") if not self.spec.is_qa else ("predicted_answer", "f1")
            write_s3_json(errors_path, errors.to_list(), self.spec, extra_fields=extra)
        if test is not None and len(test):
            trainer.remove_callback(callback)  # the test set is not the gold validation set it is bound to
            test_features = tokenize_dataset(
                self.spec, test, trainer.processing_class, split="test", max_length=c.max_length
            )
            trainer.compute_metrics = (
                compute_metrics_for(self.spec, eval_examples=test, eval_features=test_features)
                if self.spec.is_qa
                else compute_metrics_for(self.spec)
            )
            predictions = trainer.predict(test_features, metric_key_prefix="test")
            result["test"] = predictions.metrics.get(f"test_{primary}")
            result["test_size"] = len(test)
            result["test_metrics"] = {
                k: v for k, v in predictions.metrics.items() if isinstance(v, (int, float)) and "runtime" not in k
            }
        result["seconds_eval"] = round(time.time() - started - train_seconds, 1)
        self._last_trainer = trainer
        return result

    @staticmethod
    def _default_small_model() -> str:
        from .assets import encoder_path

        return str(encoder_path())

    def _stage_train(self, k: int) -> None:
        examples: list[dict[str, Any]] = []
        for j in range(k + 1):
            examples += self._read(self.data_path(j))
        result = self._train_and_evaluate(examples, self.out / "s3" / f"round_{k}", self.errors_path(k))
        if k == self.config.rounds and self.process.is_main_process:
            self._last_trainer.save_model(str(self.out / "s3" / "final_model"))
        if self.process.is_main_process:
            self.state["s3"]["rounds"].setdefault(str(k), {}).update(result)

    # ------------------------------------------------------------------ publishing
    @property
    def dataset_dir(self) -> Path:
        return Path(self.config.dataset_dir) if self.config.dataset_dir else self.out / "dataset"

    def _stage_publish(self, k: int) -> None:
        """Write the round's Hub-layout folder (configs, card, plot, run config) and push it as one tagged commit."""
        from .export import write_config_parquet

        staging = self.out / "publish" / f"round_{k}"
        staging.mkdir(parents=True, exist_ok=True)
        all_rows: list[dict[str, Any]] = []
        sizes = {}
        for j in range(k + 1):
            rows = self._read(self.data_path(j))
            all_rows += rows
            sizes["seed" if j == 0 else f"round_{j}"] = len(rows)
        config = "seed" if k == 0 else f"round_{k}"
        write_config_parquet(staging, config, self._dataset(self._read(self.data_path(k))))
        write_config_parquet(staging, "all", self._dataset(all_rows))
        sizes["all"] = len(all_rows)
        report.accuracy_plot(self.rows_table(k), self.spec, staging / "accuracy.png")
        write_json_atomic(staging / "s3_run_config.json", self.config.public_dict())
        card = report.round_card(self.spec, self.config, sizes, self.rows_table(k), upto=k)
        (staging / "README.md").write_text(card, encoding="utf-8")
        published = self._push(staging, k, config)
        self.state["s3"]["rounds"][str(k)]["published"] = published

    @property
    def publish_target(self) -> str:
        """``hf://datasets/<org>/<name>`` with ``push_to_hub``, else the local versioned folder."""
        return f"hf://datasets/{self.config.push_to_hub}" if self.config.push_to_hub else str(self.dataset_dir)

    def _push(self, folder: Path, k: int, config: str) -> dict[str, Any]:
        from .hub import publish_round

        result = publish_round(
            self.publish_target,
            self.spec,
            config,
            folder,
            private=self.config.hub_private if self.config.push_to_hub else None,
            commit_message=f"S3 {self.spec.name}: round {k} ({config})",
        )
        return {"target": result.target, "tag": result.tag, "commit": result.commit, "pushed": result.pushed}

    def rows_table(self, upto: int | None = None) -> list[dict[str, Any]]:
        """One row per finished round (see :func:`s3_hf.report.round_rows`)."""
        return report.round_rows(self.state, self.spec, upto)

    def format_table(self, upto: int | None = None) -> str:
        """The per-round table as markdown."""
        return report.markdown_table(self.rows_table(upto))

    def methods_table(self) -> str:
        """S3 and the baselines side by side: training rows and gold scores."""
        return report.methods_table(self.state, self.spec)

    # ------------------------------------------------------------------ zerogen
    def _zerogen_size(self) -> int:
        if self.config.zerogen_size:
            return self.config.zerogen_size
        rounds = self.state.get("s3", {}).get("rounds", {})
        total = sum(info.get("new_rows", 0) for info in rounds.values())
        if not total:
            raise S3ConfigError(
                "--method zerogen needs --zerogen-size, or an S3 run in the same --output-dir to match its size"
            )
        return total

    def _stage_zerogen_data(self) -> None:
        from .s3_json import write_s3_json
        from .synthesis import make_deduplicator

        target = self._zerogen_size()
        synth = self._synthesizer(make_deduplicator(self.spec))
        examples: list[dict[str, Any]] = []
        info: dict[str, Any] = {"target_rows": target, "requested": 0, "rejected": {}}
        # zerogen shares the "seed" stage of round 0 with S3 (same prompts, cache replays): count only its own calls
        usage_before = self._round_usage(("seed",), 0)
        start, passes = 0, 0
        # example i gets the same prompt as S3's seed example i: the first seed_size replies come from the cache
        while len(examples) < target and passes < 4:
            need = target - len(examples)
            outcome = synth.generate(need, start=start, round_index=0, rationales_path=self.out / "rationales.json")
            examples += outcome.examples
            info["requested"] += outcome.requested
            for reason, count in outcome.rejected.items():
                info["rejected"][reason] = info["rejected"].get(reason, 0) + count
            start += need
            passes += 1
        write_s3_json(self.out / "zerogen" / "zerogen_train.jsonl", examples, self.spec)
        info["accepted"] = info["new_rows"] = len(examples)
        usage_after = self._round_usage(("seed",), 0)
        info["usage"] = {
            key: (usage_after[key] - usage_before.get(key, 0)) if key in _USAGE_SUMS else value
            for key, value in usage_after.items()
        }
        self.state["zerogen"] = info

    def _stage_zerogen_train(self) -> None:
        examples = self._read(self.out / "zerogen" / "zerogen_train.jsonl")
        result = self._train_and_evaluate(examples, self.out / "zerogen", self.out / "zerogen" / "errors.jsonl")
        if self.process.is_main_process:
            self.state["zerogen"].update(result)

    # ------------------------------------------------------------------ driver
    def _run_stage(self, stage: str, function, *args, main_only: bool) -> bool:
        """Run ``stage`` unless done; return True when the run must stop after it."""
        if self.done(stage):
            logger.info("stage %s already done: skipped", stage)
            return self._stop(stage)
        logger.info("stage %s", stage)
        if not main_only or self.process.is_main_process:
            function(*args)
        self._finish(stage)
        return self._stop(stage)

    def run(self) -> dict[str, Any]:
        """Run every unfinished stage (or up to ``stop_after``); returns the results and prints nothing."""
        c = self.config
        if self.process.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        self.process.wait_for_everyone()
        self._load_state()
        if self.process.is_main_process:
            write_json_atomic(self.out / "s3_run_config.json", c.public_dict())
            self._save_state()
        self.process.wait_for_everyone()
        stopped = False
        try:
            if "s3" in c.method:
                for k in range(c.rounds + 1):
                    if self._run_stage(f"round_{k}.data", self._stage_data, k, main_only=True):
                        stopped = True
                        break
                    if self._run_stage(f"round_{k}.train", self._stage_train, k, main_only=False):
                        stopped = True
                        break
                    if c.publish and self._run_stage(f"round_{k}.publish", self._stage_publish, k, main_only=True):
                        stopped = True
                        break
            if "zerogen" in c.method and not stopped:
                stopped = self._run_stage("zerogen.data", self._stage_zerogen_data, main_only=True)
                if not stopped:
                    stopped = self._run_stage("zerogen.train", self._stage_zerogen_train, main_only=False)
        finally:
            self.close()
        results = {
            "state": self.state,
            "table": self.format_table(),
            "methods": self.methods_table(),
            "stopped_after": c.stop_after if stopped else None,
            "publish_target": self.publish_target,
        }
        if self.process.is_main_process:
            self._write_report(results)
        return results

    def _write_report(self, results: dict[str, Any]) -> None:
        report = (
            f"# S3 run: {self.spec.name}\n\n## Rounds\n\n{results['table']}\n\n## Methods\n\n{results['methods']}\n"
        )
        (self.out / "report.md").write_text(report, encoding="utf-8")
        write_json_atomic(
            self.out / "results.json", {"rounds": self.rows_table(), "zerogen": self.state.get("zerogen")}
        )

    def _save_usage(self, session: dict[str, Any]) -> None:
        """Add this process's LLM usage to ``llm_usage.json`` (see :func:`merge_usage`)."""
        path = self.out / "llm_usage.json"
        previous = None
        if path.is_file():
            try:
                previous = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                logger.warning("%s: unreadable; starting the usage record again", path)
        write_json_atomic(path, merge_usage(previous, session))

    def close(self) -> None:
        if self._own_engine is not None:
            try:
                if self.process.is_main_process:
                    self._save_usage(self._own_engine.usage.summary())
            except Exception:  # the usage file is a convenience; never hide the real error
                logger.warning("could not save the LLM usage", exc_info=True)
            self._own_engine.close()
            self._own_engine = None
            self._engine = None


def main(argv: list[str] | None = None) -> int:
    """``s3-hf run [--config FILE.yaml] [--FIELD VALUE ...]``: run S3 and print the per-round table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(argv)
        results = S3Pipeline(config).run()
    except S3Error as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if process_state().is_main_process:
        print(f"\nS3 {config.task}: per-round results ({config.output_dir})\n")
        print(results["table"])
        print(f"\n{results['methods']}\n")
        if results["stopped_after"]:
            print(f"stopped after {results['stopped_after']}; run the same command again to resume")
        if "s3" in config.method and config.publish:
            target = results["publish_target"]
            print(f"dataset: {target}  (configs seed, round_<k>, all; tags round-<k>)")
            if not target.startswith("hf://"):
                print(f'  from s3_hf.hub import load_round; load_round("{target}", "all", revision="round-1")')
            else:
                print(f'  load_dataset("{config.push_to_hub}", "all", revision="round-1")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
