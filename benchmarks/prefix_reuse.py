"""Prompt-prefix reuse on the embedded llama.cpp server: seconds per call and reproducible replies, side by side.

llama-cpp-python keeps the KV cache of a server's previous prompt and evaluates only the part of the next prompt that
differs. That skips the template tokens two requests share, but the reused prefix and the new part are computed in
other batches than a whole prompt would be, so a sampled reply depends on which request the server answered before.
``s3_hf.llama_server`` evaluates every prompt whole unless started with ``--prefix_reuse True``.

This replays a run's own LLM calls (``<run>/llm_cache/responses.jsonl``, in the order they were made; the verifier's
logprob calls left out) through two single-thread servers of the run's local model, one reusing prefixes (as
llama-cpp-python ships) and one evaluating prompts whole, at the same time, so drift of the machine's speed falls on
both. Each server answers the calls in the run's order, then again in reverse order (every call then follows another
request than the first time). For each: seconds per call (first pass), the ratio to the whole-prompt server, prompt
tokens per call, and the calls whose two replies are identical.

    python benchmarks/prefix_reuse.py runs/demo_s42 --calls 60   # a folder `s3-hf run` (or `make demo`) wrote
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import time
from pathlib import Path

from s3_hf.local_llm import LocalLLMServer


def load_calls(run_dir: Path, limit: int | None) -> list[dict]:
    """The completion payloads of a run's LLM cache, in file order, without the logprob (verifier) calls; a
    shared-prompt call (its replies cached with ``choice`` / ``choices``) once, with its ``n``."""
    path = run_dir / "llm_cache" / "responses.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no LLM cache there (run `s3-hf run --output-dir {run_dir}` first)")
    calls = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            try:
                request = json.loads(line)["request"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise SystemExit(f"{path}, line {line_number}: not a cache record with a 'request' ({err})") from None
            payload = request.get("payload") or {}
            if request.get("endpoint") != "completions" or payload.get("logprobs") is not None:
                continue
            if request.get("choice"):  # a further reply of a shared-prompt call: asked with its first
                continue
            shared = {"n": request["choices"]} if request.get("choices") else {}
            calls.append({**{k: v for k, v in payload.items() if k != "logprobs"}, **shared})
    return calls[:limit] if limit else calls


def local_model(run_dir: Path) -> str:
    """The run's local model (``s3_run_config.json``'s ``local_model``)."""
    path = run_dir / "s3_run_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: cannot read the run's config ({err})") from None
    return config.get("local_model") or "qwen2.5-coder-0.5b"


def answer(url: str, calls: list[dict]) -> list[tuple[str, float, int]]:
    """(reply text, seconds, prompt tokens) per call, one call at a time, in order."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    out = []
    for payload in calls:
        started = time.perf_counter()
        reply = client.completions.create(model="local", **payload)
        out.append((reply.choices[0].text, time.perf_counter() - started, reply.usage.prompt_tokens))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a folder `s3-hf run` wrote (its llm_cache is replayed)")
    parser.add_argument("--calls", type=int, default=60, help="the run's first N calls (0: all)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    calls = load_calls(args.run_dir, args.calls)
    if not calls:
        raise SystemExit(f"{args.run_dir}: no completion calls in its LLM cache")
    model = local_model(args.run_dir)
    arms = {"prefix reuse (llama-cpp-python)": True, "whole prompts (s3_hf default)": False}
    servers = {
        name: LocalLLMServer(model, replicas=1, n_threads=1, logits_all=False, prefix_reuse=reuse).start()
        for name, reuse in arms.items()
    }
    try:
        passes = []
        for order in (calls, calls[::-1]):
            with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
                futures = {name: pool.submit(answer, s.base_urls[0], order) for name, s in servers.items()}
                passes.append({name: future.result() for name, future in futures.items()})
    finally:
        for server in servers.values():
            server.close()
    n = len(calls)
    whole = "whole prompts (s3_hf default)"
    whole_s = statistics.mean(s for _, s, _ in passes[0][whole])
    print(f"{n} calls of {args.run_dir} ({model}), one single-thread server each, side by side\n")
    print("| server | s per call | × whole prompts | prompt tokens per call | same reply in reverse order |")
    print("|---|---|---|---|---|")
    figures = {}
    for name in arms:
        first, second = passes[0][name], passes[1][name][::-1]
        seconds = statistics.mean(s for _, s, _ in first)
        same = sum(a[0] == b[0] for a, b in zip(first, second))
        tokens = statistics.mean(t for _, _, t in first)
        figures[name] = {"s_per_call": seconds, "ratio": seconds / whole_s, "same": same, "calls": n}
        print(f"| {name} | {seconds:.3f} | {seconds / whole_s:.2f}× | {tokens:.0f} | {same} of {n} |")
    both = sum(a[0] == b[0] for a, b in zip(passes[0][whole], passes[0]["prefix reuse (llama-cpp-python)"]))
    print(f"\nfirst pass, the two servers' replies identical: {both} of {n}")
    if args.out:
        args.out.write_text(json.dumps({"calls": n, "model": model, "servers": figures}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
