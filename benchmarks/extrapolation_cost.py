"""Where error extrapolation's time goes, and which prompt kit pays: seconds, calls and tokens per accepted row.

One LLM engine (the embedded llama.cpp server by default; no response cache, so every call is real) runs, side by
side on the same real gold "errors" (label-balanced IMDb pool rows):

- ``seed``: seed synthesis of as many requests (the reference: short prompts);
- every ``--variants`` entry: ``v3``, the earlier extrapolation prompt (example first, 1,000 characters of it, one
  candidate per error, no request affinity) — the "before" of issue 14; or the current kit with a setting changed:
  ``default`` (the shipped prompts, k candidates,
  the shipped character budget, the contrastive neighbour), ``nocontrast`` (what runs ship with), ``copy_note``
  (``nocontrast``, but a copy is shown back to the model with :data:`~s3_hf.prompts.COPY_RETRY` instead of re-asked
  by the same prompt), ``short`` (``nocontrast`` with 300 characters of the error shown, not 600), ``describe``
  (``error_view="description"``: one request per error has the LLM describe it, and the k candidates are written
  from that description without seeing the error; the description requests count among requests and calls),
  and ``describe_nolead`` / ``describe_reviewer`` / ``describe_labelled``: ``describe`` with the description's
  first words prefilled (:data:`DESCRIBE_LEADS`, ``PromptSet.describe_lead``); ``describe_firstperson`` (the
  shipped lead, candidates asked for the review itself in the first person, never a text about a review) and
  ``describe_firstperson_movie`` (that, and descriptions asked about the movie, not about the reviewer):
  :data:`FIRST_PERSON_PROMPTS`.

For each: requests, API calls (and why they exceed requests), accepted rows after de-duplication, rows kept by the LLM
verifier, prompt / completion tokens per request, LLM tokens per kept row (the verifier's included; the seed row's
without its rationale calls) and per accepted row without the verifier's (what ``--verifiers none`` pays), and
generation (the descriptions' share shown) + verification seconds per kept row, with the ratio to seed seconds per
accepted row. ``--k 2 3 4`` runs every variant at each k on the same errors. Each variant's accepted rows are
written to ``<out>/<variant>.jsonl`` (``<variant>_k<k>.jsonl`` with several k), with the verifier's ``kept``.

``--logprob-servers both`` runs all of it twice, on two engines one after the other: ``off`` (one set of embedded
servers keeps every prompt token's logits and answers everything, as before) and ``on`` (requests with logprobs, i.e.
the verifier's, get servers of their own, so the servers that write text keep only the last token's logits).
``--shared-prompt-calls both`` likewise: ``off`` (one call per candidate) and ``on`` (the k candidates of one error in
one call with ``n``, ``LLMConfig.shared_prompt_calls``, the default). Each engine's servers are started, and the
verifier's warmed by one call, before anything is timed.

    python benchmarks/extrapolation_cost.py --errors 12 --k 2 --variants v3 default nocontrast
    python benchmarks/extrapolation_cost.py --errors 10 --k 2 --variants describe --logprob-servers both
    python benchmarks/extrapolation_cost.py --errors 40 --k 2 --variants describe_nolead describe_reviewer \
        describe_labelled
    python benchmarks/extrapolation_cost.py --errors 40 --k 2 --seed 1 --variants describe_labelled \
        describe_firstperson describe_firstperson_movie
    python benchmarks/extrapolation_cost.py --errors 24 --k 2 3 4 --seed 2 --variants describe_labelled \
        --out runs/k_cost   # the shipped kit at 2, 3 and 4 candidates per description
    python benchmarks/extrapolation_cost.py --errors 24 --k 2 --seed 3 --variants describe_labelled \
        --shared-prompt-calls both --out runs/shared_cost   # one call per error's candidates, against one each
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from description_audit import count_about_a_review

V3_EXTRAPOLATE = (
    "Here is a {label} movie review that a sentiment classifier got wrong:\n{example}\n"
    "Write a new {label} movie review of at most four sentences, similar to it in topic and style but not a copy. "
    'Answer as JSON: {{"text": "<the review>"}}'
)

# ``describe`` with the description's first words prefilled (PromptSet.describe_lead): none, or a lead that makes the
# model describe the review rather than retell it
DESCRIBE_LEADS = {
    "describe_nolead": None,
    "describe_reviewer": "The reviewer",
    "describe_labelled": "A {label} review of",
}

# ``describe_labelled`` with prompts that ask for the review itself, not a text about it (a third of the rows written
# from descriptions said "the reviewer ..." or "this review ...": description_audit.py)
FIRST_PERSON_DESCRIBED = (
    "A {label} movie review that a sentiment classifier got wrong was described like this:\n{example}\n"
    "Now write such a review yourself: two to four sentences by a viewer of such a movie, in the first person, "
    "clearly {label} ({label_hint}). Write the review, not a text about it: never mention a review or a reviewer. "
    'Answer as JSON: {{"text": "<the review>"}}'
)
MOVIE_DESCRIBE = (
    "Here is a {label} movie review that a sentiment classifier got wrong:\n{example}\n"
    "In one or two sentences, say what kind of movie it is, what is good or bad about the movie, and the tone. "
    'Do not quote it. Answer as JSON: {{"summary": "<the description>"}}'
)
FIRST_PERSON_PROMPTS = {
    "describe_firstperson": {"extrapolate_described": FIRST_PERSON_DESCRIBED},
    "describe_firstperson_movie": {"extrapolate_described": FIRST_PERSON_DESCRIBED, "describe": MOVIE_DESCRIBE},
}


def stand_in_errors(n_errors: int, seed: int, pool_size: int = 400) -> tuple[list[dict], list[dict]]:
    """``(errors, pool)``: ``n_errors`` real IMDb training reviews standing in for a round's errors, label-balanced and
    alternating (negative, positive, ...), from the first ``pool_size`` of the offline training split shuffled by
    ``seed``; ``pool`` is the rest of those rows, shuffled (the contrastive neighbours)."""
    from s3_hf.gold import load_gold
    from s3_hf.tasks import get_task

    rows = load_gold(get_task("imdb"), "offline")["train"].shuffle(seed=seed).select(range(pool_size)).to_list()
    by_label = {label: [r for r in rows if r["label"] == label] for label in (0, 1)}
    errors = [by_label[i % 2][i // 2] for i in range(n_errors)]
    pool = [r for r in rows if r not in errors]
    random.Random(seed).shuffle(pool)
    return errors, pool


def run_variant(
    name: str,
    engine,
    spec,
    errors,
    pool,
    *,
    k: int,
    chars: int,
    prompts,
    contrast: bool,
    verify: bool,
    view="text",
    affinity: bool = True,
    rows_out: Path | None = None,
):
    from s3_hf.extrapolation import ErrorExtrapolator
    from s3_hf.synthesis import make_deduplicator
    from s3_hf.usage import llm_tokens
    from s3_hf.verification import VERIFY_STAGE, LLMLabelVerifier

    dedup = make_deduplicator(spec)
    dedup.seed(errors)
    extrapolator = ErrorExtrapolator(
        spec,
        engine,
        examples_per_error=k,
        prompts=prompts,
        max_example_chars=chars,
        contrast_pool=pool if contrast else None,
        deduplicator=dedup,
        stage=name,
        error_view=view,
    )
    started = time.time()
    described, descriptions = None, None
    if view == "description":
        described, descriptions = extrapolator.describe(errors, round_index=0)
    description = time.time() - started
    requests = extrapolator.requests(errors, descriptions=descriptions)
    if not affinity:  # ``v3``: the k requests of an error may go to different servers
        for request in requests:
            request.affinity = None
    results = engine.generate(requests, stage=name, desc=name, dedup=dedup)
    generation = time.time() - started
    accepted = [r.example for r in results if r.example is not None]
    kept, verification, flags = len(accepted), 0.0, [True] * len(accepted)
    tokens_before_verification = llm_tokens(engine.usage.total(stage=VERIFY_STAGE))
    if verify and accepted:
        started = time.time()
        flags = [v.keep for v in LLMLabelVerifier(spec, engine).verdicts(accepted)]
        kept = sum(flags)
        verification = time.time() - started
    if rows_out is not None:  # the rows themselves, to read or profile (``kept``: the verifier's verdict)
        rows_out.parent.mkdir(parents=True, exist_ok=True)
        with rows_out.open("w", encoding="utf-8") as handle:
            for example, flag in zip(accepted, flags):
                handle.write(json.dumps({**example, "kept": flag}, ensure_ascii=False) + "\n")
    calls = sum(r.usage["api_calls"] for r in results)
    retries: dict[str, int] = {}
    for r in results:
        for reason in r.reasons if r.example is not None else r.reasons[:-1]:
            retries[reason] = retries.get(reason, 0) + 1
    if described is not None:
        calls += described.api_calls
        retries.update({f"description_{k}": v for k, v in described.retries.items()})
    usage = engine.usage.total(stage=name)
    return {
        "variant": name,
        "about_a_review": count_about_a_review(example["text"] for example in accepted),
        "requests": (described.requested if described else 0) + len(requests),
        "api_calls": calls,
        "retries": retries,
        "accepted": len(accepted),
        "kept": kept,
        "prompt_tokens": usage.get("prompt_tokens", 0) / max(1, calls),
        "completion_tokens": usage.get("completion_tokens", 0) / max(1, calls),
        # generation (descriptions included) and verification
        "tokens": llm_tokens(usage) + llm_tokens(engine.usage.total(stage=VERIFY_STAGE)) - tokens_before_verification,
        "tokens_generation": llm_tokens(usage),
        "seconds_description": description,
        "seconds_generation": generation,
        "seconds_verification": verification,
    }


def measure(cli, config, spec, errors, pool, group: str = "") -> list[dict[str, Any]]:
    """Seed synthesis, then every variant, on one engine built from ``config``. ``group`` (e.g. ``"logprob servers
    on"`` when ``--logprob-servers both``, else ``""``) names the rows (``logprob servers on: <variant>``) and the row
    files (``<out>/logprob_servers_on_<variant>.jsonl``; ``<out>/<variant>.jsonl`` without a group)."""
    label = f"{group}: " if group else ""
    file_prefix = group.replace(" ", "_").replace(",", "") + "_" if group else ""
    from s3_hf.config import S3Config
    from s3_hf.llm_engine import LLMEngine
    from s3_hf.prompts import COPY_RETRY
    from s3_hf.synthesis import SeedSynthesizer, make_deduplicator
    from s3_hf.usage import llm_tokens
    from s3_hf.verification import LLMLabelVerifier

    defaults = S3Config()
    v3 = dataclasses.replace(spec.prompts, extrapolate=V3_EXTRAPOLATE, contrast=None, version="3-benchmark")
    noted = dataclasses.replace(spec.prompts, copy_retry=COPY_RETRY)
    settings = {
        "v3": dict(k=1, chars=1000, prompts=v3, contrast=False, affinity=False),
        "default": dict(chars=defaults.max_example_chars, contrast=True, prompts=None),
        "nocontrast": dict(chars=defaults.max_example_chars, contrast=False, prompts=None),
        "copy_note": dict(chars=defaults.max_example_chars, contrast=False, prompts=noted),
        "short": dict(chars=300, contrast=False, prompts=None),
        "describe": dict(chars=defaults.max_example_chars, contrast=False, prompts=None, view="description"),
    }
    for name, lead in DESCRIBE_LEADS.items():
        leaded = dataclasses.replace(spec.prompts, describe_lead=lead, version=f"{spec.prompts.version}-{name}")
        settings[name] = {**settings["describe"], "prompts": leaded}
    for name, fields in FIRST_PERSON_PROMPTS.items():
        changed = dataclasses.replace(spec.prompts, **fields, version=f"{spec.prompts.version}-{name}")
        settings[name] = {**settings["describe"], "prompts": changed}
    results: list[dict[str, Any]] = []
    with LLMEngine(config) as engine:
        LLMLabelVerifier(spec, engine).verdicts(errors[:1])  # starts the servers (the verifier's too) untimed
        synth = SeedSynthesizer(spec, engine, seed=cli.seed, deduplicator=make_deduplicator(spec))
        synth.rationales(path=Path(cli.out) / f"{file_prefix}rationales.json")
        started = time.time()
        outcome = synth.generate(cli.errors * cli.k[0])
        seed_seconds = time.time() - started
        usage = engine.usage.total(stage="seed")
        seed_tokens = llm_tokens(usage)  # not the rationale calls'
        results.append(
            {
                "variant": f"{label}seed",
                "about_a_review": count_about_a_review(e["text"] for e in outcome.examples),
                "requests": outcome.requested,
                "api_calls": outcome.api_calls,
                "retries": dict(outcome.retries),
                "accepted": outcome.accepted,
                "kept": outcome.accepted,
                "prompt_tokens": usage.get("prompt_tokens", 0) / max(1, outcome.api_calls),
                "completion_tokens": usage.get("completion_tokens", 0) / max(1, outcome.api_calls),
                "tokens": seed_tokens,
                "tokens_generation": seed_tokens,
                "seconds_description": 0.0,
                "seconds_generation": seed_seconds,
                "seconds_verification": 0.0,
            }
        )
        done = set()
        for k in cli.k:  # with several k, each variant at each k (rows and files named by k)
            for name in cli.variants:
                options = {"k": k, **settings[name]}  # ``v3`` has its own k (1)
                if (name, options["k"]) in done:
                    continue
                done.add((name, options["k"]))
                suffix = f" k={options['k']}" if len(cli.k) > 1 else ""
                stage = f"{name}_k{options['k']}" if suffix else name
                rows_out = Path(cli.out) / f"{file_prefix}{stage}.jsonl"
                row = run_variant(stage, engine, spec, errors, pool, verify=True, rows_out=rows_out, **options)
                results.append({**row, "variant": f"{label}{name}{suffix}"})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--errors", type=int, default=12, help="gold rows extrapolated (label-balanced)")
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=[2],
        help="candidates per error of the current kit; several values: every variant at each (seed rows: errors × "
        "the first)",
    )
    parser.add_argument(
        "--variants", nargs="*", default=["v3", "default", "nocontrast", "copy_note", "short"], help="see above"
    )
    parser.add_argument(
        "--logprob-servers",
        choices=["on", "off", "both"],
        default="on",
        help="embedded LLM: give the verifier's logprob requests servers of their own (LLMConfig.local_logprob_servers)",
    )
    parser.add_argument(
        "--shared-prompt-calls",
        choices=["on", "off", "both"],
        default="on",
        help="ask the k candidates of one error in one call with n (LLMConfig.shared_prompt_calls)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="local")
    parser.add_argument("--out", default="runs/extrapolation_cost")
    cli = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from s3_hf.config import S3Config
    from s3_hf.llm_engine import LLMConfig
    from s3_hf.tasks import get_task

    spec = get_task("imdb")
    defaults = S3Config()
    errors, pool = stand_in_errors(cli.errors, cli.seed)
    modes = {"on": [True], "off": [False], "both": [False, True]}
    settings = [(split, shared) for split in modes[cli.logprob_servers] for shared in modes[cli.shared_prompt_calls]]
    groups = []
    for split, shared in settings:
        names = []
        if cli.logprob_servers == "both":
            names.append(f"logprob servers {'on' if split else 'off'}")
        if cli.shared_prompt_calls == "both":
            names.append(f"shared prompt calls {'on' if shared else 'off'}")
        config = LLMConfig(
            base_url=cli.base_url,
            model=cli.model,
            local_model=cli.local_model,
            temperature=defaults.temperature,
            max_tokens=defaults.max_tokens,
            seed=cli.seed,
            max_concurrency=defaults.max_concurrency,
            local_replicas=defaults.local_replicas,
            local_logprob_servers=split,
            shared_prompt_calls=shared,
        )
        groups.append(measure(cli, config, spec, errors, pool, ", ".join(names)))
    lines = [
        f"Extrapolation cost on {cli.errors} real IMDb rows (k={', '.join(map(str, cli.k))} for the current kit), "
        "one engine per group, "
        "no cache",
        "",
        "| variant | requests | API calls (retries by reason) | accepted | kept by LLM verifier | prompt tok / call | "
        "compl. tok / call | tokens per kept row | tokens per accepted row, writing only | "
        "s generation (of which descriptions) | s verification | s per accepted row | s per kept row (incl. verify) | "
        "× seed s per row | accepted rows about a review |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for results in groups:
        seed_per_row = results[0]["seconds_generation"] / max(1, results[0]["accepted"])
        for r in results:
            per_accepted = r["seconds_generation"] / max(1, r["accepted"])
            per_kept = (r["seconds_generation"] + r["seconds_verification"]) / max(1, r["kept"])
            retries = ", ".join(f"{k} {v}" for k, v in sorted(r["retries"].items())) or "none"
            lines.append(
                f"| {r['variant']} | {r['requests']} | {r['api_calls']} ({retries}) | {r['accepted']} | {r['kept']} | "
                f"{r['prompt_tokens']:.0f} | {r['completion_tokens']:.0f} | {r['tokens'] / max(1, r['kept']):.0f} | "
                f"{r['tokens_generation'] / max(1, r['accepted']):.0f} | "
                f"{r['seconds_generation']:.1f} ({r['seconds_description']:.1f}) | "
                f"{r['seconds_verification']:.1f} | {per_accepted:.1f} | {per_kept:.1f} | {per_kept / seed_per_row:.2f} | "
                f"{r['about_a_review']} |"
            )
    if len(groups) == 2:
        changed = "logprob servers" if cli.logprob_servers == "both" else "shared prompt calls"
        lines += ["", f"| variant | s generation + verification, {changed} on / off |", "|---|---|"]
        for off, on in zip(*groups):
            total_off = off["seconds_generation"] + off["seconds_verification"]
            total_on = on["seconds_generation"] + on["seconds_verification"]
            name = on["variant"].split(": ", 1)[1]
            lines.append(f"| {name} | {total_on:.1f} / {total_off:.1f} = {total_on / max(total_off, 1e-9):.2f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "extrapolation_cost.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
