"""The S3 loop: seed -> train the small model -> evaluate on gold validation -> extrapolate its errors -> repeat.

```
s3-hf run --task imdb --rounds 2                               # embedded defaults: local LLM, MiniLM, IMDb gold
s3-hf run --config run.yaml --push-to-hub you/imdb-s3          # same fields in YAML; flags override the file
s3-hf run --task imdb --method s3 zerogen goldgen               # S3 and baselines, side by side
```

Three disjoint sets of gold rows are used: the **error pool** (``--error-pool``, e.g. the training split as in the
paper) that the small model's errors are collected from, the **validation** rows that score each round, and the
**test** rows of the final score (pool rows sharing content with the other two are dropped).

Round ``k`` (``0`` = seed) has three stages, each a checkpoint recorded in ``<output_dir>/state.json`` (written
atomically): ``data`` (round 0: rationales + seed synthesis; round k: ``k`` candidates per error of round k-1,
each verified), ``train`` (train the small model from its base checkpoint on the kept rounds' data so far, evaluate
it on the error pool with the :class:`~s3_hf.callback.MisclassificationCallback`, then score it on the gold
validation and test sets; with ``--round-gate validation`` a round that does not beat the best kept round on validation
is set aside: later rounds neither train on its rows nor extrapolate its errors) and ``publish`` (config
``round_k``/``seed`` + ``all`` pushed as one commit tagged ``round-k``, with the dataset card's per-round table and
accuracy plot). A killed run started again resumes at the stage it stopped: finished stages are skipped, and the
LLM engine's response cache replays every completed call of an interrupted stage.

Multi-process (``accelerate launch`` / ``torchrun``): training and evaluation run on every process; LLM generation,
file writes and pushes on the main process only, the others wait for the stage to be recorded and read its files.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import report
from .atomic import write_json_atomic
from .config import BASELINES, METHODS, S3Config, config_from_args, parse_methods, public_base_url
from .errors import S3ConfigError, S3Error
from .usage import USAGE_SUMS, UsageRecord, merge_usage

logger = logging.getLogger(__name__)
STATE_FILE = "state.json"
STATE_FORMAT = 1
GOLD_SUBSET_SEED = 0
# the usage buckets of the goldgen baselines' calls (S3's rounds are 0..rounds), their stage being the method's name
GOLDGEN_ROUNDS = {"goldgen": -1, "goldgen_correct": -2}

__all__ = [
    "METHODS",
    "S3Config",
    "S3Pipeline",
    "config_from_args",
    "main",
    "merge_usage",
    "parse_methods",
    "public_base_url",
]


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
        self._usage_record: UsageRecord | None = None
        self._gold = None
        self._splits = None
        self._pool = None
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
                **{name: {} for name in BASELINES},
            }

    def _save_state(self) -> None:
        if self.process.is_main_process:
            write_json_atomic(self.state_path, self.state)
            if self._usage_record is not None:  # the calls paid so far, in case this process is killed
                self._usage_record.save(self._own_engine.usage)

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
            # llm_usage.json kept current during the run (a killed run's paid calls stay counted), ended at close()
            self._usage_record = UsageRecord(self.out / "llm_usage.json")
            self._usage_record.watch(self._own_engine.usage)
        return self._engine

    def gold(self):
        """``(validation, test)`` gold datasets: ``validation_size`` / ``test_size`` rows drawn with a fixed seed
        (the same subset for every run; a split sorted by label, like the Hub's IMDb test, still gives both labels)."""
        if self._gold is None:
            from .gold import load_gold

            def subset(split, size: int):
                return split if size >= len(split) else split.shuffle(seed=GOLD_SUBSET_SEED).select(range(size))

            splits = self._splits = load_gold(self.spec, self.config.gold)
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

    def error_pool(self):
        """The gold rows the small model's errors are collected from (``--error-pool``): ``error_pool_size`` rows of
        a split of the gold source, the validation rows themselves, or a local file; rows whose input text is also
        in the validation or test rows are dropped (``state["error_pool"]`` counts them)."""
        if self._pool is None:
            from .dedup import content_digest
            from .gold import load_gold

            c = self.config
            validation, test = self.gold()
            if c.error_pool == "validation":
                pool = validation
            else:
                path = Path(c.error_pool).expanduser()
                if path.exists():
                    splits = load_gold(self.spec, str(path))
                    pool = splits["train"] if "train" in splits else next(iter(splits.values()))
                elif c.error_pool in self._splits:
                    pool = self._splits[c.error_pool]
                else:
                    raise S3ConfigError(
                        f"S3Config.error_pool {c.error_pool!r} is neither a split of gold source {c.gold!r} "
                        f"({sorted(self._splits)}), 'validation', nor a local file"
                    )
                if c.error_pool_size is not None and c.error_pool_size < len(pool):
                    pool = pool.shuffle(seed=GOLD_SUBSET_SEED).select(range(c.error_pool_size))
                fields = self.spec.input_fields
                held_out = {content_digest(row, fields) for row in validation}
                if test is not None:
                    held_out |= {content_digest(row, fields) for row in test}
                keep = [i for i, row in enumerate(pool) if content_digest(row, fields) not in held_out]
                dropped = len(pool) - len(keep)
                if dropped:
                    logger.warning("error pool: %d row(s) shared with the validation/test rows dropped", dropped)
                    pool = pool.select(keep)
                self.state.setdefault("error_pool", {})["dropped_overlap"] = dropped
            if not len(pool):
                raise S3ConfigError(f"S3Config.error_pool {c.error_pool!r}: no rows left")
            self.state.setdefault("error_pool", {}).update(source=c.error_pool, size=len(pool))
            self._pool = pool
        return self._pool

    def contexts(self) -> list[str]:
        if self._contexts is None:
            from .gold import context_pool

            self._contexts = context_pool(self.spec, self.config.context_pool) if self.spec.context_field else []
        return self._contexts

    def _synthesizer(self, deduplicator):
        from .synthesis import SeedSynthesizer

        c = self.config
        if c.seed_prompt == "zerogen":  # request i is the zerogen baseline's request i (replayed from the cache)
            from .prompts import zerogen_prompts

            prompts = zerogen_prompts(self.spec.prompts)
        else:
            prompts = None  # the task's own
        return SeedSynthesizer(
            self.spec,
            self.engine,
            prompts=prompts,
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
    def _student_dir(self, k: int) -> Path:
        """Where round ``k``'s small model is saved (for the ``student`` verifier and ``select_hard``)."""
        return self.out / "s3" / f"round_{k}" / "model"

    @property
    def _needs_student(self) -> bool:
        return "student" in self.config.verifiers or self.config.select_hard

    def kept(self, k: int) -> bool:
        """Whether round ``k`` counts (see ``S3Config.round_gate``): its rows train the later rounds and make up the
        ``all`` config. The seed round always counts."""
        return self.state.get("s3", {}).get("rounds", {}).get(str(k), {}).get("round_kept", True)

    def _kept_round(self, k: int) -> int:
        """The last kept round up to ``k``: its model is the current one, whose errors the next round extrapolates."""
        return max(j for j in range(k + 1) if self.kept(j))

    def _training_rows(self, k: int) -> list[dict[str, Any]]:
        """Round ``k``'s training data: the rows of the kept rounds before it, then its own."""
        rows: list[dict[str, Any]] = []
        for j in range(k):
            if self.kept(j):
                rows += self._read(self.data_path(j))
        return rows + self._read(self.data_path(k))

    def _verifiers(self, student_round: int) -> list[Any]:
        """The configured verifiers, in order, then the ``select_hard`` selection; the student is the small model
        of round ``student_round`` (trained on the seed and the rounds before the one being written)."""
        from .verification import LLMLabelVerifier, StudentLabelVerifier

        c = self.config
        out: list[Any] = []
        for position, name in enumerate(c.verifiers):
            if name == "llm":
                # in a cascade, what reaches a later verifier is what the earlier ones doubted: not a sample of the
                # round's candidates, so a mean over it is no estimate of the verifier's bias
                calibration = "none" if c.verify_mode == "any" and position > 0 else c.verify_calibration
                out.append(
                    LLMLabelVerifier(
                        self.spec,
                        self.engine,
                        threshold=c.verify_threshold,
                        max_example_chars=c.max_example_chars,
                        calibration=calibration,
                    )
                )
            else:
                out.append(
                    StudentLabelVerifier(
                        self.spec,
                        self._student_dir(student_round),
                        threshold=c.verify_threshold,
                        max_length=c.max_length,
                    )
                )
        if c.select_hard:
            agree = next((v for v in out if v.name == "student"), None)
            if agree is not None:  # one student model in memory, shared by the verifier and the selection
                agree.load()
                hard = StudentLabelVerifier(
                    self.spec, agree.model, agree.tokenizer, mode="hard", max_length=c.max_length
                )
            else:
                hard = StudentLabelVerifier(
                    self.spec, self._student_dir(student_round), mode="hard", max_length=c.max_length
                )
            out.append(hard)
        return out

    def _extrapolator(
        self, k: int, dedup, *, contrast_pool, stage: str = "extrapolate", hard: bool = True, student_round=None
    ):
        """The round-``k`` extrapolator; its student verifiers are round ``student_round``'s model (default
        ``k - 1``)."""
        from .extrapolation import ErrorExtrapolator

        c = self.config
        verifiers = self._verifiers(k - 1 if student_round is None else student_round)
        if not hard:
            verifiers = [v for v in verifiers if v.name != "hard"]
        return ErrorExtrapolator(
            self.spec,
            self.engine,
            examples_per_error=c.examples_per_error,
            keep_per_error=c.keep_per_error,
            max_errors=c.max_errors_per_round,
            max_example_chars=c.max_example_chars,
            contrast_pool=contrast_pool,  # callers pass None without --contrast
            verifiers=verifiers,
            verify_mode=c.verify_mode,
            seed=c.seed + k,
            max_attempts=c.max_attempts,
            deduplicator=dedup,
            stage=stage,
            new_context=c.extrapolate_context,
            error_view=c.error_view,
        )

    def _correct_pool_rows(self, k: int, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Error-pool rows the round-``k`` model classified correctly (the pool minus its recorded errors), in the
        order of ``rows`` (pool rows; default: the whole pool)."""
        from .dedup import content_digest

        fields = self.spec.input_fields
        wrong = {content_digest(e, fields) for e in self._read(self.errors_path(k))}
        rows = self.error_pool().to_list() if rows is None else rows
        return [row for row in rows if content_digest(row, fields) not in wrong]

    def _stage_data(self, k: int) -> None:
        """Round 0: rationales + seed synthesis. Round k: extrapolate round k-1's errors. Main process only."""
        from .s3_json import write_s3_json
        from .synthesis import make_deduplicator

        c = self.config
        dedup = make_deduplicator(self.spec)
        previous = 0  # the current training set: the kept rounds' rows
        for j in range(k):  # nothing new may repeat earlier rounds, kept or set aside
            rows = self._read(self.data_path(j))
            previous += len(rows) if self.kept(j) else 0
            dedup.seed(rows)
        started = time.time()
        if k == 0:
            outcome = self._synthesizer(dedup).generate(
                c.seed_size, round_index=0, rationales_path=self.out / "rationales.json"
            )
            stages = ("rationales", "seed")
            used = {"errors": None}
        else:
            from .extrapolation import load_errors

            source = self._kept_round(k - 1)  # the current model: the last kept round's
            errors = load_errors(self.errors_path(source), self.spec)
            dedup.seed(errors)  # no copy of a gold example either
            contrast = self._correct_pool_rows(source) if c.contrast and not self.spec.is_qa else None
            extrapolator = self._extrapolator(k, dedup, contrast_pool=contrast, student_round=source)
            outcome = extrapolator.extrapolate(errors, round_index=k)
            stages = ("extrapolate", "verify")
            used = {"errors_used": min(len(errors), c.max_errors_per_round or len(errors)), "errors_from": source}
        write_s3_json(self.data_path(k), outcome.examples, self.spec)
        info = {
            **outcome.to_dict(),
            **used,
            "new_rows": outcome.accepted,
            "mixing_ratio": round(outcome.accepted / previous, 3) if previous else None,
            "seconds_data": round(time.time() - started, 1),
        }
        info["usage"] = self._round_usage(stages, k)
        info["label_counts"] = self._label_counts(outcome.examples)
        self.state["s3"]["rounds"].setdefault(str(k), {}).update(info)

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
        return self._train_and_evaluate(examples, self.out / name)

    def _train_and_evaluate(
        self, examples: list[dict[str, Any]], run_dir: Path, errors_path: Path | None = None, *, save_to=None
    ) -> dict:
        """Train the small model from its base checkpoint on ``examples``; with ``errors_path``, collect its errors
        on the error pool (written there); score it on gold validation and test. ``save_to``: save the model there.
        Runs on every process."""
        import torch
        from transformers import TrainingArguments

        from .training import build_trainer

        c = self.config
        validation, test = self.gold()
        if not examples:
            raise S3Error(f"no training data for {run_dir.name}: every LLM reply was rejected (see state.json)")
        primary = report.primary_metric(self.spec)
        # the error pool is the Trainer's eval set; with load_best_model_at_end it also picks the epoch, for every
        # method alike (validation and test stay out of training decisions)
        select = c.load_best_model_at_end
        selection = selection_arguments(c, primary)
        args = TrainingArguments(
            output_dir=str(run_dir / "trainer"),
            num_train_epochs=c.epochs,
            per_device_train_batch_size=c.batch_size,
            per_device_eval_batch_size=max(c.batch_size, 32),
            learning_rate=c.learning_rate,
            warmup_steps=0.1,  # a ratio of the training steps
            weight_decay=0.01,
            **selection,
            logging_strategy="no",
            report_to=[],
            seed=c.seed,
            data_seed=c.seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=False,
        )
        started = time.time()
        errors_from = self.error_pool() if errors_path is not None or select else validation
        trainer = build_trainer(
            self.spec,
            c.small_model or self._default_small_model(),
            self._dataset(examples),
            errors_from,
            args,
            max_length=c.max_length,
        )
        trainer.train()
        train_seconds = time.time() - started
        result: dict[str, Any] = {"train_rows": len(examples), "seconds_train": round(train_seconds, 1)}
        if select:
            result["best_epoch"] = _best_epoch(trainer.state)
            result["pool_by_epoch"] = _scores_by_epoch(trainer.state, f"eval_{primary}")
            self.process.wait_for_everyone()  # every process has loaded the best checkpoint
            if self.process.is_main_process:
                _remove_checkpoints(Path(args.output_dir))
        if errors_path is not None:
            callback = trainer.misclassification_callback
            errors = callback.best_errors if select else None
            if errors is not None:  # the chosen epoch's evaluation already scored the pool with this model
                pool_score = trainer.state.best_metric
            else:
                pool_score = trainer.evaluate().get(f"eval_{primary}")
                errors = callback.errors
            if errors is None:
                raise S3Error(f"{run_dir.name}: the MisclassificationCallback collected no errors from the evaluation")
            result.update(pool_size=len(errors_from), pool=pool_score, errors=len(errors))
            if self.process.is_main_process:
                from .s3_json import write_s3_json

                extra = ("predicted_label", "probabilities") if not self.spec.is_qa else ("predicted_answer", "f1")
                write_s3_json(errors_path, errors.to_list(), self.spec, extra_fields=extra)
        # the callback is bound to the error pool: scores of other sets come from plain predictions
        trainer.remove_callback(trainer.misclassification_callback)
        scores = self._score(trainer, validation, "validation")
        result.update(
            validation_size=len(validation),
            validation=scores.get(f"validation_{primary}"),
            validation_metrics=scores,
        )
        if test is not None and len(test):
            scores = self._score(trainer, test, "test")
            result.update(test=scores.get(f"test_{primary}"), test_size=len(test), test_metrics=scores)
        result["seconds_eval"] = round(time.time() - started - train_seconds, 1)
        if save_to is not None and self.process.is_main_process:
            trainer.save_model(str(save_to))
        return result

    def _score(self, trainer, dataset, prefix: str) -> dict[str, float]:
        """``{<prefix>_<metric>: value}`` of ``trainer``'s model on a gold ``dataset``."""
        from .metrics import compute_metrics_for
        from .training import tokenize_dataset

        features = tokenize_dataset(
            self.spec, dataset, trainer.processing_class, split=prefix, max_length=self.config.max_length
        )
        trainer.compute_metrics = (
            compute_metrics_for(self.spec, eval_examples=dataset, eval_features=features)
            if self.spec.is_qa
            else compute_metrics_for(self.spec)
        )
        metrics = trainer.predict(features, metric_key_prefix=prefix).metrics
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "runtime" not in k}

    @staticmethod
    def _default_small_model() -> str:
        from .assets import encoder_path

        return str(encoder_path())

    def _stage_train(self, k: int) -> None:
        """Train round ``k``'s model on the kept rounds' rows and its own; with ``round_gate``, decide whether the
        round is kept: its validation score must beat the best kept round's (``validation``; a tie is no gain, as for
        the Trainer's best checkpoint) or reach it (``validation_or_tie``)."""
        c = self.config
        gated = c.round_gate != "none"
        final_model = self.out / "s3" / "final_model"
        save_to = None
        if k == c.rounds:
            save_to = final_model
        elif self._needs_student or gated:  # a set-aside last round hands the final model back to a kept one
            save_to = self._student_dir(k)
        result = self._train_and_evaluate(
            self._training_rows(k), self.out / "s3" / f"round_{k}", self.errors_path(k), save_to=save_to
        )
        if gated and k > 0:
            rounds = self.state["s3"]["rounds"]
            best = max(rounds[str(j)]["validation"] for j in range(k) if self.kept(j))
            result["round_kept"] = round_gate_keeps(c.round_gate, result["validation"], best)
            result["gate_best_validation"] = best
            if not result["round_kept"]:
                logger.info(
                    "round %d set aside: validation %.3f does not beat %.3f of the best kept round",
                    k,
                    result["validation"],
                    best,
                )
                if k == c.rounds and self.process.is_main_process:  # the final model is the kept round's
                    shutil.rmtree(final_model, ignore_errors=True)
                    shutil.copytree(self._student_dir(self._kept_round(k - 1)), final_model)
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
            if self.kept(j):  # a set-aside round keeps its own config but stays out of 'all'
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

    # ------------------------------------------------------------------ baselines
    def _baseline_size(self) -> int:
        if self.config.baseline_size:
            return self.config.baseline_size
        rounds = self.state.get("s3", {}).get("rounds", {})
        total = sum(info.get("new_rows", 0) for info in rounds.values() if info.get("round_kept", True))
        if not total:
            raise S3ConfigError(
                "the baselines need --baseline-size, or an S3 run in the same --output-dir to match its size"
            )
        return total

    def baseline_path(self, name: str) -> Path:
        return self.out / name / f"{name}_train.jsonl"

    def _synthesize_rows(self, synth, target: int, *, start: int = 0) -> tuple[list[dict[str, Any]], dict]:
        """``target`` seed-style rows from ``synth`` (up to 4 passes over fresh request indices from ``start``)."""
        examples: list[dict[str, Any]] = []
        info: dict[str, Any] = {"target_rows": target, "requested": 0, "rejected": {}, "api_calls": 0, "retries": {}}
        passes = 0
        while len(examples) < target and passes < 4:
            need = target - len(examples)
            outcome = synth.generate(need, start=start, round_index=0, rationales_path=self.out / "rationales.json")
            examples += outcome.examples
            _accumulate(info, outcome)
            start += need
            passes += 1
        return examples[:target], info

    def _stage_baseline_data(self, name: str) -> None:
        """Write the training rows of baseline ``name`` (see ``S3Config.method``). Main process only."""
        from .s3_json import write_s3_json
        from .synthesis import make_deduplicator

        target = self._baseline_size()
        started = time.time()
        # usage buckets of the baseline's own calls: S3's seed stage is shared by seed_same_size (its first
        # seed_size requests replay from the cache), so count the difference over this stage only
        stages, bucket = {"zerogen": (("zerogen",), 0), "seed_same_size": (("seed",), 0)}.get(
            name, ((name, "verify"), GOLDGEN_ROUNDS.get(name))
        )
        before = self._round_usage(stages, bucket)
        if name == "zerogen":
            from .prompts import zerogen_prompts
            from .synthesis import SeedSynthesizer

            synth = SeedSynthesizer(
                self.spec,
                self.engine,
                prompts=zerogen_prompts(self.spec.prompts),
                contexts=self.contexts() or None,
                seed=self.config.seed,
                max_attempts=self.config.max_attempts,
                deduplicator=make_deduplicator(self.spec),
                stage="zerogen",
            )
            examples, info = self._synthesize_rows(synth, target)
        elif name == "seed_same_size":
            # example i gets the same prompt as S3's seed example i
            examples, info = self._synthesize_rows(self._synthesizer(make_deduplicator(self.spec)), target)
        else:
            examples, info = self._goldgen_rows(target, name)
        write_s3_json(self.baseline_path(name), examples, self.spec)
        info["accepted"] = info["new_rows"] = len(examples)
        info["seconds_data"] = round(time.time() - started, 1)
        after = self._round_usage(stages, bucket)
        info["usage"] = {
            key: (after[key] - before.get(key, 0)) if key in USAGE_SUMS else value for key, value in after.items()
        }
        self.state[name] = info

    def _goldgen_rows(self, target: int, name: str = "goldgen") -> tuple[list[dict[str, Any]], dict]:
        """S3's seed plus extrapolations of random error-pool rows (not only errors), with S3's prompts and
        verifiers (no ``select_hard``), up to ``target`` rows: what the error signal adds over any gold row. With
        ``name="goldgen_correct"`` only the pool rows the seed model classified correctly are drawn, labels
        alternating: S3 against it measures what choosing errors adds over rows the model already gets right."""
        from .synthesis import make_deduplicator

        seed = self._read(self.data_path(0))
        need = max(0, target - len(seed))
        rounds = self.state.get("s3", {}).get("rounds", {})
        draw = sum(info.get("errors_used") or 0 for key, info in rounds.items() if key != "0")
        draw = draw or (self.config.max_errors_per_round or 32) * max(1, self.config.rounds)
        pool = self.error_pool().shuffle(seed=self.config.seed).to_list()
        if name == "goldgen_correct":
            pool = self._correct_pool_rows(0, pool)
            if not self.spec.is_qa:  # labels alternate, as in S3's error picks: the seed model's correct rows lean
                # to the label it over-predicts (a seed model that says "positive" to most reviews gets them right)
                by_label = [[r for r in pool if r["label"] == label] for label in range(len(self.spec.label_names))]
                pool = [row for group in itertools.zip_longest(*by_label) for row in group if row is not None]
        dedup = make_deduplicator(self.spec)
        dedup.seed(seed)
        examples: list[dict[str, Any]] = []
        info: dict[str, Any] = {"target_rows": target, "requested": 0, "rejected": {}, "api_calls": 0, "retries": {}}
        offset = 0
        while len(examples) < need and offset < len(pool):
            rows = pool[offset : offset + draw]
            offset += draw
            dedup.seed(rows)
            contrast = (
                [r for r in pool if r not in rows][:1000] if self.config.contrast and not self.spec.is_qa else None
            )
            extrapolator = self._extrapolator(1, dedup, contrast_pool=contrast, stage=name, hard=False)
            extrapolator.max_errors = None
            outcome = extrapolator.extrapolate(rows, round_index=GOLDGEN_ROUNDS[name])
            examples += outcome.examples
            _accumulate(info, outcome)
        info["pool_rows_used"] = min(offset, len(pool))
        return seed + examples[:need], info

    def _stage_baseline_train(self, name: str) -> None:
        examples = self._read(self.baseline_path(name))
        result = self._train_and_evaluate(examples, self.out / name)
        if self.process.is_main_process:
            self.state[name].update(result)

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
            for name in BASELINES:
                if name not in c.method or stopped:
                    continue
                stopped = self._run_stage(f"{name}.data", self._stage_baseline_data, name, main_only=True)
                if not stopped:
                    stopped = self._run_stage(f"{name}.train", self._stage_baseline_train, name, main_only=False)
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
            self.out / "results.json",
            {"rounds": self.rows_table(), **{name: self.state.get(name) for name in BASELINES}},
        )

    def close(self) -> None:
        if self._own_engine is not None:
            try:
                if self.process.is_main_process and self._usage_record is not None:
                    self._usage_record.save(self._own_engine.usage, ended=True)
            except Exception:  # the usage file is a convenience; never hide the real error
                logger.warning("could not save the LLM usage", exc_info=True)
            self._own_engine.close()
            self._own_engine = None
            self._engine = None
            self._usage_record = None


def _accumulate(info: dict[str, Any], outcome: Any) -> None:
    """Add a :class:`~s3_hf.synthesis.SynthesisOutcome`'s counts (requests, API calls, rejections and retries by
    reason, verifier counts) to a baseline's ``info`` record."""
    info["requested"] += outcome.requested
    info["api_calls"] += outcome.api_calls
    if outcome.described:
        info["described"] = info.get("described", 0) + outcome.described
    for key, counts in (("rejected", outcome.rejected), ("retries", outcome.retries)):
        for reason, count in counts.items():
            info[key][reason] = info[key].get(reason, 0) + count
    for verifier, stats in outcome.verification.items():
        total = info.setdefault("verification", {}).setdefault(verifier, {"checked": 0, "kept": 0, "dropped": 0})
        for name, value in stats.items():
            total[name] = total.get(name, 0) + value


def round_gate_keeps(rule: str, validation: float, best: float) -> bool:
    """Whether the round gate ``rule`` (``S3Config.round_gate``) keeps a round scoring ``validation`` when the best
    kept round scored ``best``: ``"validation"`` needs a gain (a tie is none, as for the Trainer's best checkpoint),
    ``"validation_or_tie"`` also keeps a tie, ``"none"`` keeps every round."""
    if rule == "none":
        return True
    return validation > best or (rule == "validation_or_tie" and validation == best)


def selection_arguments(config: S3Config, metric: str) -> dict[str, Any]:
    """The ``TrainingArguments`` of model selection: with ``load_best_model_at_end``, score the error pool after every
    epoch from ``select_from_epoch`` on (transformers scores an epoch once ``eval_delay <= state.epoch``; capped at
    ``epochs`` so a short run still picks a model) and keep the best epoch's model on ``metric``."""
    if not config.load_best_model_at_end:
        return dict(eval_strategy="no", save_strategy="no")
    return dict(
        eval_strategy="epoch",
        eval_delay=float(min(config.select_from_epoch, config.epochs)),
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        save_total_limit=1,
        save_only_model=True,
    )


def _best_epoch(state: Any) -> float | None:
    """The epoch of the checkpoint ``load_best_model_at_end`` chose (``None`` when none was tracked)."""
    step = getattr(state, "best_global_step", None)
    if step is None:
        return None
    epochs = [entry["epoch"] for entry in state.log_history if entry.get("step") == step and "epoch" in entry]
    return round(float(epochs[0]), 2) if epochs else None


def _scores_by_epoch(state: Any, key: str) -> list[list[float]]:
    """``[[epoch, score], ...]`` of every evaluation in ``state.log_history`` that logged ``key`` (the error pool's
    score after each epoch: what ``load_best_model_at_end`` chose among, kept so a run shows it)."""
    return [
        [round(float(entry["epoch"]), 2), round(float(entry[key]), 6)]
        for entry in state.log_history
        if key in entry and "epoch" in entry
    ]


def _remove_checkpoints(trainer_dir: Path) -> None:
    """Delete the epoch checkpoints of model selection (the chosen model is in memory, and saved where asked)."""
    import shutil

    for checkpoint in trainer_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


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
