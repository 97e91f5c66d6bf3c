"""Do extrapolation prompts that name what misled the small model keep more of its errors' difficulty?

``error_transfer.py`` found that the rows S3 writes from errors are only a little harder for the model that made the
errors than rows written from random pool reviews (86.5% against 91.8% right): the 0.5B generator, asked for a review
that is *clearly* of the error's label from a description of its content, writes an easy one. This screens prompt
variants for that, before any quality run: per seed of a ``benchmarks/quality.py`` run folder (IMDb), it takes the
seed-round model (``s3/round_0/model``) and the pool reviews it got wrong (``errors/round_0.jsonl``), extrapolates the
same ``--errors`` of them (label-balanced, seeded) with each variant as S3's round 1 does (description view,
``--k`` candidates each, the LLM verifier, batch-calibrated), and scores:

- the seed model's accuracy on each variant's kept rows (lower: more of the errors' difficulty kept);
- the verifier's keep rate (a variant that only writes mislabelled rows would look hard and be dropped here);
- the share of kept rows that talk about a review (the description view's failure mode).

Then, paired over seeds, ``variant − shipped`` accuracy (95% t interval, exact sign-flip p). Only a quality run can
say whether harder rows teach the model more; this says whether a variant makes harder rows at all.

Variants:

- ``shipped``: the task's prompts as they are;
- ``misleading``: the description also says what in the review could make a reader take it for ``{other_label}``
  (the label the model gave it), and the candidate keeps that while the writer's opinion stays ``{label}``.

One engine, its LLM cache in ``<out>/llm_cache`` (a rerun replays what it already paid for).

    python benchmarks/difficulty_prompts.py --runs runs/q_ver_llm --seeds 1 2 3 --errors 24
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from description_audit import count_about_a_review
from error_transfer import accuracy
from quality import paired_interval, sign_flip_p

MISLEADING = {
    "describe": (
        "Here is a {label} movie review that a sentiment classifier got wrong: it took it for {other_label}.\n"
        "{example}\nIn one or two sentences, say what kind of movie it is about, what the reviewer liked or disliked, "
        "and what in the review could make a reader take it for a {other_label} one. Do not quote it. "
        'Answer as JSON: {{"summary": "<the description>"}}'
    ),
    "extrapolate_described": (
        "A {label} movie review that a sentiment classifier took for {other_label} was described like this:\n"
        "{example}\nWrite a new {label} movie review like it, of two to four sentences, in the first person, as a "
        "viewer of such a movie. Keep what could make a reader take it for {other_label}, but make the writer's "
        "overall opinion {label} ({label_hint}). "
        'Answer as JSON: {{"text": "<the review>"}}'
    ),
}
VARIANTS = ("shipped", "misleading")


def variant_prompts(spec, name: str):
    if name == "shipped":
        return spec.prompts
    if name == "misleading":
        return dataclasses.replace(spec.prompts, **MISLEADING, version=f"{spec.prompts.version}-misleading")
    raise SystemExit(f"unknown variant {name!r}; choose from {VARIANTS}")


def chosen_errors(path: Path, spec, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` of the errors in ``path`` (S3 json lines), label-balanced, in a seeded order."""
    from s3_hf.s3_json import read_s3_json

    rows = read_s3_json(path, spec)
    rng = random.Random(seed)
    by_label = {label: [r for r in rows if r["label"] == label] for label in range(len(spec.label_names))}
    for group in by_label.values():
        rng.shuffle(group)
    out: list[dict[str, Any]] = []
    while len(out) < n and any(by_label.values()):
        for group in by_label.values():
            if group and len(out) < n:
                out.append(group.pop())
    return out


def run_seed(engine, spec, seed_dir: Path, cli, out: Path) -> dict[str, Any] | None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from s3_hf.config import CLASSIFICATION_MAX_LENGTH, S3Config
    from s3_hf.extrapolation import ErrorExtrapolator
    from s3_hf.synthesis import make_deduplicator
    from s3_hf.verification import LLMLabelVerifier

    model_dir = seed_dir / "s3" / "round_0" / "model"
    errors_path = seed_dir / "errors" / "round_0.jsonl"
    if not model_dir.is_dir() or not errors_path.is_file():
        print(f"{seed_dir}: no seed model or round-0 errors; skipped", file=sys.stderr)
        return None
    defaults = S3Config()
    seed = int(seed_dir.name[4:]) if seed_dir.name[4:].isdigit() else 0
    errors = chosen_errors(errors_path, spec, cli.errors, seed)
    run_config = seed_dir / "s3_run_config.json"
    recipe = json.loads(run_config.read_text(encoding="utf-8")) if run_config.is_file() else {}
    max_length = recipe.get("max_length") or CLASSIFICATION_MAX_LENGTH
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    field = spec.input_fields[0]
    result: dict[str, Any] = {
        "run": seed_dir.name,
        "errors": len(errors),
        "errors_accuracy": accuracy(model, tokenizer, errors, field, max_length),
    }
    for name in cli.variants:
        dedup = make_deduplicator(spec)
        dedup.seed(errors)
        verifier = LLMLabelVerifier(
            spec,
            engine,
            threshold=defaults.verify_threshold,
            max_example_chars=defaults.max_example_chars,
            calibration=defaults.verify_calibration,
        )
        extrapolator = ErrorExtrapolator(
            spec,
            engine,
            examples_per_error=cli.k,
            max_example_chars=defaults.max_example_chars,
            verifiers=[verifier],
            seed=seed,
            max_attempts=defaults.max_attempts,
            deduplicator=dedup,
            stage=f"extrapolate_{name}",
            error_view="description",
            prompts=variant_prompts(spec, name),
        )
        started = time.time()
        outcome = extrapolator.extrapolate(errors, round_index=1)
        seconds = time.time() - started
        kept = outcome.examples
        checked = sum(stats.get("checked", 0) for stats in outcome.verification.values())
        with (out / f"{seed_dir.name}_{name}.jsonl").open("w", encoding="utf-8") as handle:
            for example in kept:
                handle.write(json.dumps(example, ensure_ascii=False) + "\n")
        result[name] = {
            "kept": len(kept),
            "checked": checked,
            "accuracy": accuracy(model, tokenizer, kept, field, max_length),
            "about_a_review": count_about_a_review(e[field] for e in kept),
            "seconds": seconds,
        }
    return result


def render(results: list[dict[str, Any]], variants: list[str]) -> str:
    lines = [
        "The seed model's accuracy (%) on the rows each variant wrote from the same errors (kept / verified; rows "
        "about a review)",
        "",
        "| seed | errors (its accuracy) | "
        + " | ".join(variants)
        + " | "
        + " | ".join(f"{v} − {variants[0]}" for v in variants[1:])
        + " |",
        "|---" * (2 + 2 * len(variants) - 1) + "|",
    ]
    gaps: dict[str, list[float]] = {v: [] for v in variants[1:]}
    for r in results:
        cells = []
        for v in variants:
            s = r[v]
            acc = "-" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}"
            cells.append(f"{acc} ({s['kept']} / {s['checked']}; {s['about_a_review']})")
        diffs = []
        for v in variants[1:]:
            if r[v]["accuracy"] is None or r[variants[0]]["accuracy"] is None:
                diffs.append("-")
                continue
            gap = 100 * (r[v]["accuracy"] - r[variants[0]]["accuracy"])
            gaps[v].append(gap)
            diffs.append(f"{gap:+.1f}")
        errors_acc = "-" if r["errors_accuracy"] is None else f"{100 * r['errors_accuracy']:.0f}%"
        lines.append(f"| {r['run']} | {r['errors']} ({errors_acc}) | " + " | ".join(cells + diffs) + " |")
    if results:
        means = []
        for v in variants:
            values = [100 * r[v]["accuracy"] for r in results if r[v]["accuracy"] is not None]
            kept = sum(r[v]["kept"] for r in results)
            checked = sum(r[v]["checked"] for r in results)
            about = sum(r[v]["about_a_review"] for r in results)
            mean = f"{statistics.fmean(values):.1f}" if values else "-"
            means.append(f"{mean} ({kept} / {checked}; {about})")
        summaries = []
        for v in variants[1:]:
            p = sign_flip_p(gaps[v]) if gaps[v] else None
            summaries.append(
                f"**{paired_interval(gaps[v]) if gaps[v] else '-'}**" + (f", p {p:.3f}" if p is not None else "")
            )
        lines.append("| **all** | | " + " | ".join(means + summaries) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/q_ver_llm", help="the --out folder of benchmarks/quality.py")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="its seed folders to use")
    parser.add_argument("--errors", type=int, default=24, help="errors per seed (label-balanced)")
    parser.add_argument("--k", type=int, default=2, help="candidates per error")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), help=f"the first is the reference: {VARIANTS}"
    )
    parser.add_argument("--local-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="local")
    parser.add_argument("--out", default="runs/difficulty_prompts")
    cli = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from s3_hf.config import S3Config
    from s3_hf.llm_engine import LLMConfig, LLMEngine
    from s3_hf.tasks import get_task

    spec = get_task("imdb")
    for name in cli.variants:
        variant_prompts(spec, name)
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    defaults = S3Config()
    config = LLMConfig(
        base_url=cli.base_url,
        model=cli.model,
        local_model=cli.local_model,
        temperature=defaults.temperature,
        max_tokens=defaults.max_tokens,
        seed=0,
        max_concurrency=defaults.max_concurrency,
        local_replicas=defaults.local_replicas,
        cache_dir=str(out / "llm_cache"),
    )
    results = []
    with LLMEngine(config) as engine:
        for seed in cli.seeds:
            scored = run_seed(engine, spec, Path(cli.runs) / "imdb" / f"seed{seed}", cli, out)
            if scored is not None:
                results.append(scored)
                (out / "difficulty_prompts.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    table = render(results, cli.variants)
    print(table)
    (out / "difficulty_prompts.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
