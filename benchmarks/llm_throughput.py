"""LLM engine throughput: achieved requests/s against a server's limit, next to a plain sequential loop.

Part 1 (always; about 20 s): the loopback OpenAI-compatible server of ``s3_hf.testing`` (in its own process)
answers every call after a fixed latency, with

- a concurrency cap (``C`` calls at once, the rest queue): the limit is ``C / latency`` requests/s;
- a rate cap (``R`` requests/s, 429 + ``retry-after`` above it): the limit is ``R``; the engine runs once with the
  budget configured (``rpm``) and once without it (it must discover the limit from the 429s).

Each is reported as achieved requests/s, the fraction of the limit (target >= 0.95) and the ratio to a plain
sequential loop with the ``openai`` client. Peers (distilabel's ``OpenAILLM``, driven by ``asyncio.gather`` with
the same concurrency) run the same requests when importable: ``pip install --target DIR --no-deps distilabel`` plus
its few pure-Python dependencies and ``PYTHONPATH=DIR`` keeps it out of the project's environment (bespokelabs-curator
was not tried: it pulls litellm and many more dependencies).

Part 2 (``--local``; about a minute): the embedded llama.cpp server with a local GGUF: completion tokens/s of one
stream vs the engine's aggregate over one server and over two single-thread replicas.

Run: ``python benchmarks/llm_throughput.py [--local] [--local-model smollm2] [--out results.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request

import openai

from s3_hf.llm_engine import GenerationRequest, LLMConfig, LLMEngine


class ServerProcess:
    """The loopback server in its own process (as a real server would be: it does not share our GIL)."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from s3_hf.testing.openai_server import main; sys.exit(main())",
                *args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("ready "):
            self.proc.kill()
            raise RuntimeError(f"loopback server did not start: {line!r}")
        self.url = line.split(" ", 1)[1]

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/{path}", timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict:
        return self._get("_stats")

    def reset_stats(self) -> None:
        self._get("_reset")

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _requests(n: int, tag: str) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=[{"role": "user", "content": f"{tag} item {i}"}],
            validate=lambda obj: (obj, None),
            key={"bench": tag, "item": i},
        )
        for i in range(n)
    ]


def _engine_rate(url: str, n: int, tag: str, **config) -> tuple[float, LLMEngine]:
    engine = LLMEngine(LLMConfig(base_url=url, model="bench", progress=False, json_mode="off", **config))
    start = time.perf_counter()
    results = engine.generate(_requests(n, tag), stage="bench")
    elapsed = time.perf_counter() - start
    assert all(r.accepted for r in results), engine.report.format()
    return n / elapsed, engine


def _sequential_rate(url: str, n: int) -> float:
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=10)
    start = time.perf_counter()
    for i in range(n):
        client.chat.completions.create(model="bench", messages=[{"role": "user", "content": f"seq item {i}"}])
    elapsed = time.perf_counter() - start
    client.close()
    return n / elapsed


def _distilabel_rate(url: str, n: int, concurrency: int) -> float | str:
    """distilabel's OpenAILLM doing the same calls with the same concurrency, or why it could not run."""
    try:
        from distilabel.models import OpenAILLM  # type: ignore[import-not-found]
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return f"skipped ({type(err).__name__}: not installed or incompatible)"
    try:
        llm = OpenAILLM(model="bench", base_url=url, api_key="EMPTY", max_retries=10)
        llm.load()

        async def run():
            semaphore = asyncio.Semaphore(concurrency)

            async def one(i):
                async with semaphore:
                    return await llm.agenerate(input=[{"role": "user", "content": f"distilabel item {i}"}])

            return await asyncio.gather(*(one(i) for i in range(n)))

        start = time.perf_counter()
        asyncio.run(run())
        return n / (time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001
        return f"failed ({type(err).__name__}: {str(err)[:120]})"


def loopback(args) -> dict:
    rows = []
    latency, cap = args.latency, args.concurrency_cap
    with ServerProcess("--latency", str(latency), "--max-concurrency", str(cap)) as server:
        limit = cap / latency
        seq = _sequential_rate(server.url, args.sequential_n)
        rate, _ = _engine_rate(server.url, args.n, "conc", max_concurrency=cap)
        detail = f"{cap} at once x {latency * 1000:.0f} ms"
        rows.append(("concurrency cap", detail, limit, f"s3-hf LLMEngine, {cap} in flight", rate, seq))
        # a request already queued at the server when a slot frees hides the client's per-request overhead
        rate, _ = _engine_rate(server.url, args.n, "conc2", max_concurrency=2 * cap)
        rows.append(("concurrency cap", "", limit, f"s3-hf LLMEngine, {2 * cap} in flight", rate, seq))
        rows.append(("concurrency cap", "", limit, "sequential openai loop", seq, seq))
        peer = _distilabel_rate(server.url, args.n, cap)
        rows.append(("concurrency cap", "", limit, "distilabel OpenAILLM", peer, seq))
    rps = args.rate_cap
    with ServerProcess(
        "--latency", str(latency), "--rps", str(rps), "--rps-burst", "5", "--over-capacity", "reject"
    ) as server:
        n_rate = int(rps * args.rate_seconds)
        configured, _ = _engine_rate(server.url, n_rate, "rpm", max_concurrency=64, rpm=int(rps * 60))
        rejected_configured = server.stats()["counts"].get("rejected_rate", 0)
        server.reset_stats()
        adaptive, engine = _engine_rate(server.url, n_rate, "adaptive", max_concurrency=64, max_retries=50)
        rejected_adaptive = server.stats()["counts"].get("rejected_rate", 0)
        seq_rate = _sequential_rate(server.url, args.sequential_n)
        server.reset_stats()
        peer = _distilabel_rate(server.url, n_rate, 64)
        rejected_peer = server.stats()["counts"].get("rejected_rate", 0)
        rows.append(("rate cap", f"{rps:g} req/s, 429 above", rps, "s3-hf LLMEngine, rpm set", configured, seq_rate))
        rows.append(("rate cap", "", rps, "s3-hf LLMEngine, limit unknown", adaptive, seq_rate))
        rows.append(("rate cap", "", rps, "sequential openai loop", seq_rate, seq_rate))
        rows.append(("rate cap", "", rps, "distilabel OpenAILLM, limit unknown", peer, seq_rate))
    print(f"\n== loopback OpenAI server (latency {latency * 1000:.0f} ms; {args.n} requests per run) ==")
    print(f"{'server limit':<17}{'':<24}{'limit/s':>9}  {'client':<37}{'req/s':>9}{'of limit':>10}{'vs seq':>8}")
    out = []
    for kind, detail, lim, client, achieved, base in rows:
        if isinstance(achieved, str):
            print(f"{kind:<17}{detail:<24}{lim:>9.1f}  {client:<37}{achieved}")
            out.append({"limit": kind, "client": client, "result": achieved})
            continue
        print(
            f"{kind:<17}{detail:<24}{lim:>9.1f}  {client:<37}{achieved:>9.1f}{achieved / lim:>10.3f}"
            f"{achieved / base:>7.1f}x"
        )
        out.append(
            {"limit": kind, "limit_rps": lim, "client": client, "rps": achieved, "fraction_of_limit": achieved / lim}
        )
    print(
        f"429s answered: s3-hf rpm set {rejected_configured}, s3-hf limit unknown {rejected_adaptive}, "
        f"distilabel {rejected_peer} (of {n_rate} requests each)"
    )
    return {
        "loopback": out,
        "rejected_429": {"rpm_set": rejected_configured, "adaptive": rejected_adaptive, "distilabel": rejected_peer},
    }


def local(args) -> dict:
    from s3_hf.local_llm import LocalLLMServer, llama_cpp_available

    if not llama_cpp_available():
        print("\n== local llama.cpp: skipped (llama-cpp-python[server] not installed) ==")
        return {"local": "skipped"}
    prompts = [
        f"Write a short movie review (three sentences) about film number {i}. "
        'Answer as JSON: {"text": "<the review>"}'
        for i in range(args.local_n)
    ]

    def requests(tag):
        return [
            GenerationRequest(
                messages=[{"role": "system", "content": "You write movie reviews."}, {"role": "user", "content": p}],
                validate=lambda obj: (obj, None),
                key={"bench": tag, "i": i},
                prefill='{"text": "',
                max_attempts=1,
            )
            for i, p in enumerate(prompts)
        ]

    cores = os.cpu_count() or 1
    setups = [(f"1 server x {cores} threads, 1 stream", 1, cores, 1)]
    if cores >= 2:
        setups.append(("1 server x 1 thread, 1 stream", 1, 1, 1))
    setups.append((f"1 server x {cores} threads, engine", 1, cores, 4))
    if cores >= 2:
        setups.append((f"{cores} servers x 1 thread, engine", cores, 1, 4))
    best: dict[str, dict] = {}
    for repeat in range(args.local_repeats):  # interleaved repeats, best kept: the CPU is shared
        for name, replicas, threads, concurrency in setups:
            with LocalLLMServer(args.local_model, replicas=replicas, n_threads=threads, n_ctx=1024) as server:
                config = LLMConfig(
                    base_url=",".join(server.base_urls),
                    model="local",
                    max_tokens=args.local_max_tokens,
                    temperature=0.8,
                    seed=repeat,
                    max_concurrency=concurrency,
                    progress=False,
                    prefill_mode="completions",
                    json_mode="off",
                )
                engine = LLMEngine(config)
                engine.generate(requests("warm")[:replicas], stage="warm")  # load weights, fill the prompt cache
                before = engine.usage.total()["completion_tokens"]
                start = time.perf_counter()
                engine.generate(requests(f"{name}/{repeat}"), stage="bench")
                elapsed = time.perf_counter() - start
                tokens = engine.usage.total()["completion_tokens"] - before
            row = {"setup": name, "tokens": tokens, "seconds": elapsed, "tok_s": tokens / elapsed}
            if name not in best or row["tok_s"] > best[name]["tok_s"]:
                best[name] = row
    rows = [best[name] for name, *_ in setups]
    base = rows[0]["tok_s"]
    print(
        f"\n== local llama.cpp ({args.local_model}, {args.local_n} requests x <= {args.local_max_tokens} tokens, "
        f"best of {args.local_repeats}; load average {os.getloadavg()[0]:.1f} on {cores} cores) =="
    )
    for row in rows:
        print(
            f"{row['setup']:<34}{row['tokens']:>6} tok {row['seconds']:>7.1f} s {row['tok_s']:>8.1f} tok/s"
            f" {row['tok_s'] / base:>6.2f}x"
        )
    return {"local": rows, "local_model": args.local_model}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=600, help="requests per engine run (concurrency cap)")
    parser.add_argument("--latency", type=float, default=0.1, help="server latency per call, seconds")
    parser.add_argument("--concurrency-cap", type=int, default=16)
    parser.add_argument("--rate-cap", type=float, default=50.0, help="server requests/s limit")
    parser.add_argument("--rate-seconds", type=float, default=8.0, help="length of a rate-cap run at the limit")
    parser.add_argument("--sequential-n", type=int, default=30)
    parser.add_argument("--local", action="store_true", help="also measure the local llama.cpp server")
    parser.add_argument("--local-model", default="smollm2")
    parser.add_argument("--local-n", type=int, default=8)
    parser.add_argument("--local-max-tokens", type=int, default=64)
    parser.add_argument("--local-repeats", type=int, default=2)
    parser.add_argument("--skip-loopback", action="store_true")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args(argv)
    results: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    if not args.skip_loopback:
        results.update(loopback(args))
    if args.local:
        results.update(local(args))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
