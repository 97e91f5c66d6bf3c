"""The LLM verifier's calls on the embedded server: llama-cpp-python's own logprobs against s3_hf.llama_server's.

llama-cpp-python 0.3.36 computes ``logprobs`` by log-softmaxing every context position over the whole vocabulary and
sorting each generated position's whole vocabulary in Python; ``s3_hf.llama_server`` (what ``LocalLLMServer`` runs
since this benchmark) computes the generated positions only and takes the top alternatives with numpy. This sends
the same verification requests, rendered exactly as ``LLMEngine`` sends them to a local server (the task's verify
prompt, ``{"label": "`` prefilled, temperature 0, 5 alternatives), to two single-thread servers with every logit kept
(the engine's logprob servers), one of each kind, at the same time, so drift of the machine's speed falls on both.
Candidates: the first sentences of real IMDb training reviews (a candidate's length), each asked once with its gold
label and once with the other (as a label-flipped candidate reaches the verifier).

For each server: seconds per call; then the calls with the same text and the same alternatives and values, the
candidates the verifier's label probabilities would decide the same way, and the ratio of seconds.

    python benchmarks/local_logprobs.py --candidates 40 --repeats 2
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


def build_requests(n_candidates: int, seed: int) -> list[dict]:
    """``n_candidates`` completion payloads of LLM verifier calls on IMDb candidates (half of them label-flipped)."""
    from extrapolation_cost import stand_in_errors

    from s3_hf.dedup import split_sentences
    from s3_hf.llm_wire import render_chatml
    from s3_hf.tasks import get_task
    from s3_hf.verification import LLMLabelVerifier

    spec = get_task("imdb")
    reviews, _ = stand_in_errors((n_candidates + 1) // 2, seed)
    candidates = []
    for review in reviews:
        text = " ".join(sentence for _, sentence in split_sentences(review["text"])[:3])[:400]
        candidates += [{"text": text, "label": review["label"]}, {"text": text, "label": 1 - review["label"]}]
    verifier = LLMLabelVerifier(spec, engine=None)
    payloads = []
    candidates = candidates[:n_candidates]
    for request, candidate in zip(verifier.requests(candidates), candidates):
        payloads.append(
            {
                "prompt": render_chatml(request.messages, request.prefill or ""),
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "logprobs": request.logprobs,
                "label": spec.label_names[candidate["label"]],
            }
        )
    return payloads


def run_server(url: str, payloads: list[dict], repeats: int) -> list[dict]:
    """Per call: seconds, text, top alternatives per generated token, tokens; the list sent ``repeats`` times."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=600)
    out = []
    for _ in range(repeats):
        for payload in payloads:
            body = {k: v for k, v in payload.items() if k != "label"}
            started = time.perf_counter()
            reply = client.completions.create(model="local", stop=["<|im_end|>"], **body)
            choice = reply.choices[0]
            out.append(
                {
                    "seconds": time.perf_counter() - started,
                    "text": choice.text,
                    "top": choice.logprobs.top_logprobs if choice.logprobs else None,
                    "prompt_tokens": reply.usage.prompt_tokens,
                    "completion_tokens": reply.usage.completion_tokens,
                }
            )
    client.close()
    return out


def same_alternatives(a: list | None, b: list | None) -> bool:
    if a is None or b is None or len(a) != len(b):
        return a == b
    return all(x.keys() == y.keys() and all(abs(x[t] - y[t]) <= 1e-6 for t in x) for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=40, help="verification requests (half label-flipped)")
    parser.add_argument("--repeats", type=int, default=2, help="times the whole list is sent to each server")
    parser.add_argument("--local-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/local_logprobs")
    cli = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from s3_hf.local_llm import LocalLLMServer
    from s3_hf.tasks import get_task
    from s3_hf.verification import label_probabilities

    label_names = get_task("imdb").label_names
    payloads = build_requests(cli.candidates, cli.seed)
    kinds = {"llama-cpp-python's own": False, "s3_hf.llama_server (numpy)": True}
    servers = {
        name: LocalLLMServer(cli.local_model, n_threads=1, replicas=1, logits_all=True, fast_logprobs=fast)
        for name, fast in kinds.items()
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
    own, fast = calls.values()
    asked = [p["label"] for p in payloads] * cli.repeats
    same_text = sum(a["text"] == b["text"] for a, b in zip(own, fast))
    same_top = sum(same_alternatives(a["top"], b["top"]) for a, b in zip(own, fast))

    def keeps(call: dict, label: str) -> bool | None:
        probabilities = label_probabilities(call["top"], label_names)
        return None if probabilities is None else probabilities[label] >= 0.5

    same_verdict = sum(keeps(a, y) == keeps(b, y) for a, b, y in zip(own, fast, asked))
    rows = []
    for name, server_calls in calls.items():
        seconds = [c["seconds"] for c in server_calls]
        rows.append(
            {
                "server": name,
                "calls": len(seconds),
                "seconds_per_call": statistics.fmean(seconds),
                "total_seconds": sum(seconds),
                "prompt_tokens_per_call": statistics.fmean(c["prompt_tokens"] for c in server_calls),
                "completion_tokens_per_call": statistics.fmean(c["completion_tokens"] for c in server_calls),
            }
        )
    n = len(own)
    lines = [
        f"{len(payloads)} LLM verifier calls on IMDb candidates (half label-flipped), x{cli.repeats}, "
        "two single-thread servers with every logit kept, at once",
        "",
        "| logprobs by | calls | s per call | total s | prompt tok / call | compl. tok / call |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['calls']} | {r['seconds_per_call']:.2f} | {r['total_seconds']:.1f} | "
            f"{r['prompt_tokens_per_call']:.0f} | {r['completion_tokens_per_call']:.1f} |"
        )
    ratio = rows[1]["total_seconds"] / rows[0]["total_seconds"]
    lines += [
        "",
        f"numpy / own: **{ratio:.2f}x** the seconds; same text on {same_text} of {n} calls, same alternatives and "
        f"values on {same_top} of {n}, same verdict (p(asked) >= 0.5) on {same_verdict} of {n}",
    ]
    table = "\n".join(lines)
    print(table)
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "local_logprobs.md").write_text(table + "\n", encoding="utf-8")
    summary = {"rows": rows, "same_text": same_text, "same_alternatives": same_top, "same_verdict": same_verdict}
    (out / "local_logprobs.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0 if same_top == n else 1


if __name__ == "__main__":
    sys.exit(main())
