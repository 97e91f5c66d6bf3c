"""The embedded llama.cpp server with every prompt token's logits kept (llama-cpp-python's default) and without.

llama-cpp-python gives ``logprobs`` only from a server started with ``logits_all``, which also runs the output layer
on every prompt token and copies those logits out. ``LLMEngine`` therefore writes text on servers without it and
sends the verifier's logprob requests to servers of their own (``LLMConfig.local_logprob_servers``). This measures
what that buys, side by side: two single-thread servers, one with and one without, run at the same time on the same
real requests of a round (descriptions of real IMDb reviews and candidates written from descriptions, rendered
exactly as the engine sends them), each server taking them in the same order. Running both at once on the 2 cores
puts any drift of the machine's speed on both sides; ``--repeats`` sends the whole list again.

For each: seconds per call (mean over calls), calls whose text is identical in both, and the ratio.

    python benchmarks/local_logits.py --errors 12 --repeats 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import time
from pathlib import Path


def build_prompts(n_errors: int, seed: int) -> list[dict]:
    """Completion payloads of a round's text calls: ``n_errors`` description requests (the review shown) and two
    candidate requests per error written from a stand-in description (the review's first sentence)."""
    from extrapolation_cost import stand_in_errors

    from s3_hf.dedup import split_sentences
    from s3_hf.extrapolation import ErrorExtrapolator
    from s3_hf.llm_wire import render_chatml
    from s3_hf.tasks import get_task
    from s3_hf.verification import example_digest

    spec = get_task("imdb")
    errors, _ = stand_in_errors(n_errors, seed)
    extrapolator = ErrorExtrapolator(spec, engine=None, examples_per_error=2, error_view="description", seed=seed)
    requests = extrapolator.description_requests(errors)
    descriptions = {example_digest(e): split_sentences(e["text"])[0][1][:300] for e in errors}
    requests += extrapolator.requests(errors, descriptions=descriptions)
    payloads = []
    for i, request in enumerate(requests):
        prompt = render_chatml(request.messages, request.prefill or "")
        payloads.append({"prompt": prompt, "max_tokens": 200, "temperature": 0.9, "seed": seed * 1000 + i})
    return payloads


def run_server(url: str, payloads: list[dict], repeats: int) -> list[tuple[float, str, int, int]]:
    """``(seconds, text, prompt tokens, completion tokens)`` per call, the list sent ``repeats`` times in order."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=600)
    out = []
    for _ in range(repeats):
        for payload in payloads:
            started = time.perf_counter()
            reply = client.completions.create(model="local", stop=["<|im_end|>"], **payload)
            usage = reply.usage
            out.append(
                (time.perf_counter() - started, reply.choices[0].text, usage.prompt_tokens, usage.completion_tokens)
            )
    client.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--errors", type=int, default=12, help="real IMDb reviews: 1 description + 2 candidates each")
    parser.add_argument("--repeats", type=int, default=2, help="times the whole list is sent to each server")
    parser.add_argument("--local-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/local_logits")
    cli = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from s3_hf.local_llm import LocalLLMServer

    payloads = build_prompts(cli.errors, cli.seed)
    servers = {
        logits_all: LocalLLMServer(cli.local_model, n_threads=1, replicas=1, logits_all=logits_all)
        for logits_all in (True, False)
    }
    try:
        for server in servers.values():
            server.start()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = {k: pool.submit(run_server, s.base_urls[0], payloads, cli.repeats) for k, s in servers.items()}
            calls = {k: f.result() for k, f in futures.items()}
    finally:
        for server in servers.values():
            server.close()
    same = sum(a[1] == b[1] for a, b in zip(calls[True], calls[False]))
    rows = []
    for logits_all, name in (
        (True, "every prompt token's logits (llama-cpp-python's default)"),
        (False, "last token's only"),
    ):
        seconds = [c[0] for c in calls[logits_all]]
        rows.append(
            {
                "server": name,
                "calls": len(seconds),
                "seconds_per_call": statistics.fmean(seconds),
                "total_seconds": sum(seconds),
                "prompt_tokens_per_call": statistics.fmean(c[2] for c in calls[logits_all]),
                "completion_tokens_per_call": statistics.fmean(c[3] for c in calls[logits_all]),
            }
        )
    lines = [
        f"{len(payloads)} text calls of a round ({cli.errors} descriptions + {2 * cli.errors} candidates), "
        f"x{cli.repeats}, two single-thread servers at once",
        "",
        "| server keeps | calls | s per call | total s | prompt tok / call | compl. tok / call |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['calls']} | {r['seconds_per_call']:.2f} | {r['total_seconds']:.1f} | "
            f"{r['prompt_tokens_per_call']:.0f} | {r['completion_tokens_per_call']:.0f} |"
        )
    ratio = rows[1]["total_seconds"] / rows[0]["total_seconds"]
    lines += [
        "",
        f"last token's only / every token's: **{ratio:.2f}x** the seconds; same text on {same} of {len(calls[True])} calls",
    ]
    table = "\n".join(lines)
    print(table)
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "local_logits.md").write_text(table + "\n", encoding="utf-8")
    (out / "local_logits.json").write_text(json.dumps({"rows": rows, "same_text": same}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
