"""The configuration of an S3 run: :class:`S3Config`, whose fields are both CLI flags and YAML keys.

```
s3-hf run --task imdb --rounds 2 --seed-size 80
s3-hf run --config run.yaml --push-to-hub you/imdb-s3     # flags override the file
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import S3ConfigError
from .llm_config import _help
from .prompts import ERROR_VIEWS
from .tasks import TaskSpec, get_task
from .yaml_fields import read_yaml_fields

METHODS = ("s3", "zerogen", "seed_same_size", "goldgen", "goldgen_correct")
BASELINES = METHODS[1:]
ROUND_GATES = ("validation", "validation_or_tie", "none")
SEED_PROMPTS = ("task", "zerogen")
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
            "methods to run, in order: 's3' (seed + error extrapolation rounds) and the baselines, each with as many "
            "training rows as S3 ends with: 'zerogen' (ZeroGen's own plain label-conditioned prompt, no rationales), "
            "'seed_same_size' (S3's rationale seed synthesis only), 'goldgen' (S3's seed + extrapolations of random "
            "error-pool rows, not only errors, with the same prompts and verifiers), 'goldgen_correct' (the same from "
            "only the pool rows the seed model classifies correctly, labels alternating: S3 against it measures what "
            "choosing errors adds)"
        ),
    )
    rounds: int = field(default=2, metadata=_help("error-extrapolation rounds after the seed round"))
    round_gate: str = field(
        default="validation",
        metadata=_help(
            "'validation': a round is kept only when its model beats the best kept round's score on the gold "
            "validation rows, strictly, as the Trainer keeps a later checkpoint as best only when it scores higher "
            "(a tie keeps the smaller training set); a round set aside keeps its rows in its published config and its "
            "results in the table, but they leave training and the 'all' config, and the next round extrapolates the "
            "kept model's errors; 'validation_or_tie': also keep a round that ties (the rule until 2026-12-06); "
            "'none': keep every round (e.g. a smoke test whose small model stays at chance, so every round ties)"
        ),
    )
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
        default=1000,
        metadata=_help(
            "gold validation examples scoring each round for the round gate (model selection; not the errors). A "
            "1-point difference is 2 rows of 200 and 10 of 1,000: the gate needs the larger set to tell rounds apart"
        ),
    )
    error_pool: str = field(
        default="train",
        metadata=_help(
            "gold rows the small model's errors are collected from: a split of --gold ('train', as in the paper), "
            "'validation' (the scoring rows themselves) or a local file; never the test split (rows it shares with "
            "the validation or test rows are dropped, by content)"
        ),
    )
    error_pool_size: int | None = field(
        default=400, metadata=_help("error-pool rows used (a fixed-seed sample; None: the whole split)")
    )
    test_size: int = field(default=500, metadata=_help("gold test examples for the final score (0: skip the test)"))
    context_pool: str = field(
        default="offline", metadata=_help("pair/QA tasks: unlabelled contexts, 'offline' (SQuAD) or a text/jsonl file")
    )
    # ------------------------------------------------------------------ synthesis
    seed_size: int = field(default=48, metadata=_help("seed examples requested (labels balanced)"))
    seed_prompt: str = field(
        default="task",
        metadata=_help(
            "the seed round's prompt: 'task' (S3's seed prompt of the task: rationales first where it has them, as "
            "in the paper) or 'zerogen' (ZeroGen's plain label-conditioned prompt; the zerogen baseline then shares "
            "the seed's requests, so S3 and ZeroGen differ only in what they add after it)"
        ),
    )
    rationales_per_label: int = field(default=12, metadata=_help("rationales collected per label (IMDb-style tasks)"))
    rationales_per_request: int = field(default=6, metadata=_help("rationales one request asks for"))
    rationales_per_example: int = field(
        default=2, metadata=_help("k: sampled rationales each seed example is written from")
    )
    examples_per_error: int = field(
        default=2, metadata=_help("k: candidate examples written per error (each must pass the verifiers)")
    )
    keep_per_error: int | None = field(
        default=None, metadata=_help("keep at most this many verified candidates per error (None: all)")
    )
    max_errors_per_round: int | None = field(
        default=12, metadata=_help("extrapolate at most this many errors per round (label-balanced sample; None: all)")
    )
    verifiers: list[str] = field(
        default_factory=lambda: ["auto"],
        metadata=_help(
            "label verifiers of every candidate, in order: 'llm' (the generator labels it zero-shot: logprobs "
            "where the endpoint gives them, else a schema-constrained answer) and/or 'student' (the small model "
            "trained on the seed and earlier rounds); 'none' for no verification; 'auto': 'student llm' as a cascade "
            "(verify_mode 'any') for single-text classification, 'llm' for pair and QA tasks, whose small model is "
            "at chance at these sizes"
        ),
    )
    verify_mode: str = field(
        default="auto",
        metadata=_help(
            "'all': a candidate must pass every verifier; 'any': the verifiers are a cascade, a candidate one keeps is "
            "kept and only what it doubts reaches the next (e.g. --verifiers student llm --verify-mode any: the LLM "
            "labels only the candidates the small model disagrees with; an 'llm' verifier after the first then "
            "decides uncalibrated, since what reaches it is not a sample of the round's candidates); 'auto': 'any' "
            "for the cascade that verifiers 'auto' picks, else 'all'"
        ),
    )
    verify_threshold: float = field(
        default=0.5, metadata=_help("p(asked label) a verifier needs to keep a candidate (QA: answer token F1)")
    )
    verify_calibration: str = field(
        default="batch",
        metadata=_help(
            "'batch': the 'llm' verifier's label probabilities are divided by their mean over the round's candidates "
            "before the threshold (Batch Calibration; measured: benchmarks/verifier_precision.py); 'none': as given"
        ),
    )
    select_hard: bool = field(
        default=False, metadata=_help("keep only candidates the current small model still gets wrong")
    )
    contrast: bool = field(
        default=False,
        metadata=_help(
            "show each error next to the most similar correctly classified pool example of another label (off by "
            "default: with the 0.5B local model it cost more and kept fewer candidates, benchmarks/extrapolation_cost.py)"
        ),
    )
    extrapolate_context: bool = field(
        default=False,
        metadata=_help(
            "pair tasks: error extrapolation writes a new context (e.g. the RTE premise) as well as the second text, "
            "instead of keeping the error's; for data to ship when the gold texts may not be shipped"
        ),
    )
    max_example_chars: int = field(
        default=600, metadata=_help("gold texts shown in extrapolation prompts are cut to about this many characters")
    )
    error_view: str = field(
        default="auto",
        metadata=_help(
            "what an extrapolation prompt shows of its error: 'text' (the error itself, as in the paper), "
            "'description' (single-text tasks: the LLM first describes each error in a sentence or two, one extra "
            "request per error, and the candidates are written from the description, so they cannot copy the gold "
            "text) or 'auto' (description where it applies, else text)"
        ),
    )
    baseline_size: int | None = field(
        default=None,
        metadata=_help("training rows of each baseline (default: the size of the S3 run's final data in output_dir)"),
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
        default="qwen2.5-coder-0.5b",
        metadata=_help(
            "embedded LLM: 'qwen2.5-coder-0.5b', 'smollm2', 'qwen2.5-coder-1.5b' (make install-1.5b) or a .gguf path"
        ),
    )
    # Some defaults deliberately differ from LLMConfig's generic ones: they are the S3 recipe's (the paper's
    # sampling temperature 0.9; one example reply fits in 200 tokens; two single-thread embedded servers on the
    # 2-core reference machine). temperature and max_tokens are part of data_fingerprint(), so changing them
    # invalidates resumable runs. The fields are repeated here flat because every S3Config field is a CLI flag.
    temperature: float = field(default=0.9, metadata=_help("LLM sampling temperature"))
    max_tokens: int = field(default=200, metadata=_help("LLM completion token limit per call"))
    max_concurrency: int = field(default=8, metadata=_help("LLM requests in flight at once"))
    rpm: int | None = field(default=None, metadata=_help("LLM requests-per-minute budget"))
    tpm: int | None = field(default=None, metadata=_help("LLM tokens-per-minute budget"))
    json_mode: str = field(default="auto", metadata=_help("structured output: auto, schema, json_object or off"))
    local_replicas: int = field(
        default=2, metadata=_help("embedded llama.cpp servers to start (each single-threaded on a 2-core machine)")
    )
    local_prefix_reuse: bool = field(
        default=False,
        metadata=_help(
            "embedded llama.cpp servers reuse their previous prompt's KV cache: calls about 0.9x the seconds, but a reply "
            "then depends on the request answered before it (default: every prompt evaluated whole, reproducible)"
        ),
    )
    shared_prompt_calls: bool = field(
        default=True,
        metadata=_help(
            "the k candidates of one error are asked in one call with OpenAI's n (the prompt paid and, on the "
            "embedded server, evaluated once); False: one call per candidate, as before 2026-12-07"
        ),
    )
    llm_cache_dir: str | None = field(
        default=None, metadata=_help("LLM response cache folder (default: <output_dir>/llm_cache)")
    )
    # ------------------------------------------------------------------ the small model
    small_model: str | None = field(
        default=None, metadata=_help("small model: any AutoModel checkpoint (default: the packaged all-MiniLM-L6-v2)")
    )
    epochs: float = field(default=6.0, metadata=_help("training epochs per round (small seed sets need several)"))
    load_best_model_at_end: bool = field(
        default=True,
        metadata=_help(
            "score the error pool after every epoch and keep the best epoch's model (transformers' "
            "load_best_model_at_end, on the task's primary metric); every method trains with the same recipe "
            "(on by default: the demo's final test accuracy was higher with it on 3 of 3 seeds)"
        ),
    )
    select_from_epoch: int = field(
        default=2,
        metadata=_help(
            "with load_best_model_at_end, the first epoch whose model is scored on the error pool and may be kept "
            "(transformers' eval_delay; capped at epochs). 2 (the default since 2026-12-07) skips the pool "
            "evaluation after epoch 1: over 73 six-epoch IMDb trainings, scoring from epoch 2 would have kept the same "
            "epoch in 70 (README); 1 scores every epoch, as before"
        ),
    )
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
        self.verifiers = [v for v in parse_methods(self.verifiers) if v != "none"]
        if not self.method or any(m not in METHODS for m in self.method) or len(set(self.method)) != len(self.method):
            raise S3ConfigError(f"S3Config.method must be distinct values of {METHODS}, got {self.method!r}")
        self.spec  # noqa: B018 - raises S3ConfigError for an unknown task
        if self.verifiers == ["auto"]:  # the cascade where the small model can judge a label (measured: README)
            cascade = self.spec.is_single_text
            self.verifiers = ["student", "llm"] if cascade else ["llm"]
            if self.verify_mode == "auto":
                self.verify_mode = "any" if cascade else "all"
        elif self.verify_mode == "auto":
            self.verify_mode = "all"
        positive = (
            "seed_size",
            "rationales_per_label",
            "rationales_per_request",
            "rationales_per_example",
            "examples_per_error",
            "max_attempts",
            "max_tokens",
            "max_concurrency",
            "batch_size",
            "local_replicas",
            "validation_size",
            "select_from_epoch",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise S3ConfigError(f"S3Config.{name} must be a positive integer, got {value!r}")
        for name in ("rounds", "test_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise S3ConfigError(f"S3Config.{name} must be an integer >= 0, got {value!r}")
        for name in ("max_errors_per_round", "keep_per_error", "error_pool_size", "baseline_size", "rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise S3ConfigError(f"S3Config.{name} must be a positive integer or None, got {value!r}")
        from .verification import CALIBRATIONS, VERIFIERS, VERIFY_MODES

        if any(v not in VERIFIERS for v in self.verifiers) or len(set(self.verifiers)) != len(self.verifiers):
            raise S3ConfigError(
                f"S3Config.verifiers must be distinct values of {VERIFIERS} (or 'none', or 'auto' alone), got "
                f"{self.verifiers!r}"
            )
        if self.verify_mode not in VERIFY_MODES:
            raise S3ConfigError(f"S3Config.verify_mode must be one of {VERIFY_MODES}, got {self.verify_mode!r}")
        if self.verify_mode == "any" and len(self.verifiers) < 2:
            raise S3ConfigError(
                f"S3Config.verify_mode 'any' is a cascade of verifiers and needs at least two, got verifiers "
                f"{self.verifiers!r}"
            )
        if self.spec.is_qa and ("student" in self.verifiers or self.select_hard):
            raise S3ConfigError(
                f"S3Config.verifiers 'student' and select_hard are for classification tasks, not {self.task!r}"
            )
        if self.extrapolate_context and not self.spec.is_pair:
            raise S3ConfigError(
                f"S3Config.extrapolate_context is for pair classification tasks (a premise-like context field); "
                f"task {self.task!r} has context field {self.spec.context_field!r} and kind {self.spec.kind!r}"
            )
        if self.round_gate not in ROUND_GATES:
            raise S3ConfigError(f"S3Config.round_gate must be one of {ROUND_GATES}, got {self.round_gate!r}")
        if self.verify_calibration not in CALIBRATIONS:
            raise S3ConfigError(
                f"S3Config.verify_calibration must be one of {CALIBRATIONS}, got {self.verify_calibration!r}"
            )
        if not 0 < self.verify_threshold < 1:
            raise S3ConfigError(f"S3Config.verify_threshold must be in (0, 1), got {self.verify_threshold!r}")
        if not self.error_pool or self.error_pool.strip().lower() == "test":
            raise S3ConfigError(
                f"S3Config.error_pool must not be the test split (errors drawn from it would tune the data to the "
                f"test score), got {self.error_pool!r}"
            )
        if (
            isinstance(self.max_example_chars, bool)
            or not isinstance(self.max_example_chars, int)
            or (self.max_example_chars < 50)
        ):
            raise S3ConfigError(f"S3Config.max_example_chars must be an integer >= 50, got {self.max_example_chars!r}")
        if self.seed_prompt not in SEED_PROMPTS:
            raise S3ConfigError(f"S3Config.seed_prompt must be one of {SEED_PROMPTS}, got {self.seed_prompt!r}")
        if self.error_view not in (*ERROR_VIEWS, "auto"):
            raise S3ConfigError(
                f"S3Config.error_view must be one of {(*ERROR_VIEWS, 'auto')}, got {self.error_view!r}"
            )
        if self.error_view == "auto":
            self.error_view = "description" if self.spec.is_single_text and not self.extrapolate_context else "text"
        if self.error_view == "description" and not self.spec.is_single_text:
            raise S3ConfigError(
                f"S3Config.error_view='description' is for single-text classification tasks, not {self.task!r}"
            )
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
        for name in BASELINES:
            if name in self.method:
                names += [f"{name}.data", f"{name}.train"]
        return names

    def llm_config(self):
        from .llm_config import LLMConfig

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
            local_prefix_reuse=self.local_prefix_reuse,
            shared_prompt_calls=self.shared_prompt_calls,
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
        """sha256 of the fields that change the data or the scores (not rounds/method/stop_after/publishing); local
        ``gold`` / ``context_pool`` / ``error_pool`` data count by content, so a path spelled another way is the same
        run and edited data is not."""
        ignore = {
            "rounds",
            "method",
            "stop_after",
            "baseline_size",
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
            "local_prefix_reuse",
            "base_url",
            "api_key_env",
        }
        payload = {k: v for k, v in self.to_dict().items() if k not in ignore}
        if payload.get("error_view") == "text":  # the only view before the field: earlier runs' hashes stay valid
            del payload["error_view"]
        if payload.get("shared_prompt_calls") is False:  # one call per candidate, as before the field
            del payload["shared_prompt_calls"]
        if payload.get("seed_prompt") == "task":  # the only seed prompt before the field
            del payload["seed_prompt"]
        if payload.get("verify_mode") == "all":  # the only mode before the field
            del payload["verify_mode"]
        if payload.get("select_from_epoch") == 1:  # every epoch scored, as before the field
            del payload["select_from_epoch"]
        payload["task_fingerprint"] = self.spec.fingerprint()
        for name in ("gold", "context_pool", "error_pool"):
            payload[name] = local_data_digest(payload[name]) or payload[name]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def local_data_digest(value: str) -> str | None:
    """``"sha256:<hex>"`` of a local file, or of a folder's files (relative names and contents, in name order);
    ``None`` when ``value`` names no local path (``"offline"``, a Hub id)."""
    from .assets import sha256_file

    path = Path(value).expanduser()
    if path.is_file():
        return "sha256:" + sha256_file(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return "sha256:" + digest.hexdigest()


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
        for name in ("method", "verifiers"):
            if name in data:
                data[name] = parse_methods(data[name])
        parser.set_defaults(**data)
    (config,) = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)[:1]
    return config
