"""The embedded local LLM: llama.cpp's server with the tiny SmolLM2 GGUF, through the same openai code path."""

from __future__ import annotations

import pytest

from s3_hf.llm_engine import GenerationRequest, LLMConfig, LLMEngine

pytest.importorskip("llama_cpp")
pytest.importorskip("uvicorn")


def need_smollm2() -> None:
    """Skip the test when the tiny SmolLM2 GGUF is not installed."""
    from s3_hf.assets import AssetError, gguf_path

    try:
        gguf_path("smollm2")
    except AssetError as err:
        pytest.skip(f"tiny GGUF not installed: {err}")


@pytest.mark.llm
@pytest.mark.slow
def test_local_smollm2_prefill_and_json_mode_end_to_end(tmp_path):
    need_smollm2()

    def validate(obj):
        text = obj.get("text")
        return (
            ({"text": text, "label": 0}, None) if isinstance(text, str) and len(text) >= 10 else (None, "empty_text")
        )

    prompt = 'Write a two-sentence negative movie review. Answer as JSON: {"text": "<the review>"}'
    requests = [
        GenerationRequest(
            messages=[{"role": "user", "content": prompt}], validate=validate, key={"i": 0}, prefill='{"text": "'
        ),
        GenerationRequest(
            messages=[{"role": "user", "content": prompt}],
            validate=validate,
            key={"i": 1},
            json_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        ),
    ]
    config = LLMConfig(
        local_model="smollm2",
        local_replicas=1,
        local_threads=1,
        local_n_ctx=512,
        max_tokens=64,
        temperature=0.7,
        seed=0,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    verify = GenerationRequest(  # the LLM verifier's kind of request: label-word logprobs at the answer
        messages=[
            {"role": "user", "content": 'Is "I hated it." positive or negative? Answer as JSON: {"label": ...}'}
        ],
        validate=lambda obj: ({"label": 0}, None),
        key={"i": 2},
        prefill='{"label": "',
        max_tokens=4,
        temperature=0.0,
        logprobs=5,
    )
    with LLMEngine(config) as engine:
        results = engine.generate(requests, stage="seed")
        server = engine._local_servers[False]  # text is written on servers that keep only the last token's logits
        assert server is not None and server.running and server.log_files[0].exists()
        command = server.command(0)
        assert list(engine._local_servers) == [False] and command[command.index("--logits_all") + 1] == "False"
        (verdict,) = engine.generate([verify], stage="verify")
        assert verdict.logprobs, "llama.cpp gave no logprobs: the request did not reach a server with every logit"
        assert engine._local_servers[True].running and server.running
    assert not server.running  # stopped on close
    assert engine.report.consistent and engine.report.requested == 3
    assert engine.report.api_calls >= 3 and engine.usage.total()["completion_tokens"] > 0
    assert all(r.text for r in results)  # the model answered every call
    accepted = [r for r in results if r.accepted]
    assert accepted, [(r.reasons, r.text) for r in results]
    assert all(len(r.example["text"]) >= 10 for r in accepted)
    assert len(engine.cache) == engine.report.api_calls


@pytest.mark.llm
@pytest.mark.parametrize(
    ("started_from", "signal_name"),
    [("main_thread", "SIGKILL"), ("worker_thread", "SIGTERM")],  # the engine starts its servers in asyncio.to_thread
)
def test_servers_do_not_outlive_a_killed_run(tmp_path, started_from, signal_name):
    """A run killed by SIGKILL or an unhandled SIGTERM (no atexit, no finally) leaves no llama.cpp server behind,
    whichever thread started the server; and a server started from a worker thread outlives that thread."""
    import os
    import signal
    import subprocess
    import sys
    import time

    need_smollm2()
    start = (
        "server.start()"
        if started_from == "main_thread"
        else "worker = threading.Thread(target=server.start); worker.start(); worker.join(); time.sleep(1)"
    )
    script = (
        "import sys, threading, time\n"
        "from s3_hf.local_llm import LocalLLMServer\n"
        f"server = LocalLLMServer('smollm2', replicas=1, log_dir={str(tmp_path)!r})\n"
        f"{start}\n"
        "print(server._procs[0][0].pid, server.running, flush=True)\n"
        "time.sleep(600)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid_text, running = run.stdout.readline().split()
        server_pid = int(pid_text)
        assert running == "True", "the server died with the thread that started it"
        os.kill(server_pid, 0)  # the server is up
        run.send_signal(getattr(signal, signal_name))
        run.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(server_pid, 0)
                # a reaped-by-init zombie still answers kill(0): read its state
                with open(f"/proc/{server_pid}/stat") as handle:
                    if handle.read().split(")")[-1].split()[0] == "Z":
                        break
            except (ProcessLookupError, FileNotFoundError):
                break
            time.sleep(0.2)
        else:
            os.kill(server_pid, signal.SIGKILL)
            pytest.fail(f"llama.cpp server {server_pid} outlived its killed parent")
    finally:
        if run.poll() is None:
            run.kill()
