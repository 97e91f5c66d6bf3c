"""LLMEngine end to end with the real ``openai`` client against the loopback OpenAI server (faults included)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from s3_hf.errors import S3ConfigError
from s3_hf.llm_engine import GenerationRequest, LLMConfig, LLMEngine, render_chatml
from s3_hf.response_cache import CACHE_FILE, ResponseCache
from s3_hf.testing import FakeOpenAIServer, FaultPlan
from s3_hf.testing.openai_server import last_user_text

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-DO-NOT-STORE-0123456789"


def validate(obj):
    if obj.get("label") != "positive":
        return None, "wrong_label: got " + repr(obj.get("label"))
    text = obj.get("text")
    if not isinstance(text, str) or len(text) < 5:
        return None, "empty_text"
    return {"text": text, "label": 1}, None


def make_requests(n: int, **kwargs) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": f"item {i}"}],
            validate=validate,
            key={"task": "imdb", "prompt_version": "1", "item": i},
            meta={"item": i},
            **kwargs,
        )
        for i in range(n)
    ]


def config(server: FakeOpenAIServer, tmp_path: Path | None = None, **overrides) -> LLMConfig:
    values = dict(
        base_url=server.url,
        model="gpt-4o-mini",
        api_key_env="S3_TEST_LLM_KEY",
        timeout_s=1.0,
        backoff_s=0.02,
        progress=False,
        cache_dir=str(tmp_path / "cache") if tmp_path else None,
    )
    values.update(overrides)
    return LLMConfig(**values)


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv("S3_TEST_LLM_KEY", SECRET)


def test_config_validation_names_the_bad_value():
    with pytest.raises(S3ConfigError, match="max_concurrency.*0"):
        LLMConfig(max_concurrency=0)
    with pytest.raises(S3ConfigError, match="json_mode.*'yaml'"):
        LLMConfig(json_mode="yaml")
    with pytest.raises(S3ConfigError, match="variable"):
        LLMConfig(api_key_env="sk-abc123")
    with pytest.raises(S3ConfigError, match="base_url"):
        LLMConfig(base_url="localhost:8000")
    with pytest.raises(S3ConfigError, match="local_model"):
        LLMConfig(local_model="llama-70b")
    from s3_hf.assets import GGUF_MODELS

    for name in GGUF_MODELS:  # every offline GGUF asset, the optional 1.5B included, is a valid name
        assert LLMConfig(local_model=name).local_model == name


def test_generate_in_order_with_schema_seed_usage_and_no_key_stored(tmp_path):
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    with FakeOpenAIServer(latency_s=0.01) as server, LLMEngine(config(server, tmp_path, seed=7)) as engine:
        results = engine.generate(make_requests(12, json_schema=schema), stage="seed", round_index=0)
        assert [r.request.meta["item"] for r in results] == list(range(12))
        assert all(r.accepted and r.attempts == 1 and r.reason is None for r in results)
        bodies = [entry["body"] for entry in server.log]
        assert all(b["response_format"]["type"] == "json_schema" for b in bodies)
        assert all(b["response_format"]["json_schema"]["schema"] == schema for b in bodies)
        assert len({b["seed"] for b in bodies}) == 12  # a distinct, reproducible seed per request
        assert engine.report.as_dict()["requested"] == 12 and engine.report.accepted == 12
        total = engine.usage.total(stage="seed", round_index=0)
        assert total["requests"] == 12 and total["prompt_tokens"] > 0 and total["cost_usd"] > 0
        assert "gpt-4o-mini" in engine.summary()
        saved = json.loads(Path(engine.save_summary(tmp_path / "out" / "llm_usage.json")).read_text())
        assert saved["report"]["accepted"] == 12 and saved["usage"]["by_stage"]["seed"]["requests"] == 12
    assert SECRET not in (tmp_path / "cache" / CACHE_FILE).read_text()


def test_every_fault_kind_run_completes_counts_add_up_and_cache_is_clean(tmp_path):
    rates = {
        "429": 0.06,
        "500": 0.05,
        "503": 0.05,
        "timeout": 0.03,
        "drop": 0.05,
        "garbled": 0.03,
        "truncated_json": 0.06,
        "wrong_label": 0.08,
        "refusal": 0.06,
    }
    n = 80
    with FakeOpenAIServer(latency_s=0.005, faults=FaultPlan(rates, seed=3), hang_s=1.5, retry_after_s=0.05) as server:
        cfg = config(server, tmp_path, timeout_s=1.0, max_concurrency=8)
        with LLMEngine(cfg) as engine:
            results = engine.generate(make_requests(n), stage="seed")
        report = engine.report
        stats = server.stats()
        counts = stats["counts"]
        assert report.requested == n == len(results)
        assert report.consistent and report.accepted == sum(r.accepted for r in results)
        assert sum(report.rejected.values()) == sum(not r.accepted for r in results)
        assert set(report.rejected) <= {"wrong_label", "refusal", "truncated", "api_error_timeout"}
        # every injected fault was seen and handled
        for fault in rates:
            assert counts.get(fault, 0) > 0, fault
        assert report.transport_errors["429"] == counts["429"]
        assert report.transport_errors["connection"] == counts["drop"]
        # on a loaded machine a slow answer may time out too: it is retried like an injected stall
        slow = report.transport_errors["timeout"] - counts["timeout"]
        assert slow >= 0
        assert report.transport_errors["500"] == counts["500"] and report.transport_errors["503"] == counts["503"]
        assert report.transport_errors["bad_response"] == counts["garbled"]
        semantic = {"wrong_label": counts["wrong_label"], "refusal": counts["refusal"]}
        if not slow:
            assert report.attempt_rejections["wrong_label"] == semantic["wrong_label"]
            assert report.attempt_rejections["refusal"] == semantic["refusal"]
            assert report.attempt_rejections["truncated"] == counts["truncated_json"]
        # the cache holds exactly the 200 responses received (complete, hash-verified), never an error
        answered = sum(counts.get(k, 0) for k in ("ok", "truncated_json", "wrong_label", "refusal")) - slow
        assert report.api_calls == answered
        lines = (tmp_path / "cache" / CACHE_FILE).read_text().splitlines()
        assert len(lines) == answered == len(ResponseCache(tmp_path / "cache"))
        for result in results:
            assert result.attempts == len(result.reasons) + result.accepted
        # a second engine on the same cache replays everything: no new call, same outcome
        calls = stats["calls"]
        with LLMEngine(cfg) as again:
            replay = again.generate(make_requests(n), stage="seed")
        assert server.stats()["calls"] == calls
        assert [r.example for r in replay] == [r.example for r in results]
        assert again.report.cache_hits == answered and again.report.api_calls == 0
        assert again.usage.total()["cached_requests"] == answered


def test_invalid_outputs_retried_then_dropped_with_reason():
    def responder(body):
        item = last_user_text(body)
        label = "negative" if item == "item 0" else "positive"
        return json.dumps({"text": f"A review for {item}.", "label": label})

    with FakeOpenAIServer(responder=responder) as server, LLMEngine(config(server)) as engine:
        results = engine.generate(make_requests(3, max_attempts=3), stage="seed")
    assert results[0].example is None and results[0].reason == "wrong_label"
    assert results[0].attempts == 3 and results[0].reasons == ["wrong_label"] * 3
    assert results[1].accepted and results[2].accepted
    assert engine.report.rejected == {"wrong_label": 1} and server.stats()["calls"] == 5


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_a_reply_rejected_for_a_reason_with_a_note_is_shown_back_with_the_note(tmp_path, mode):
    """``retry_notes``: after a ``wrong_label`` reply the next attempt sees that reply and the note (validation
    feedback); the cache keys the feedback attempt by it, so a rerun replays it; other reasons re-ask plainly."""
    note = "Use the label positive."

    def responder(body):
        text = json.dumps(body.get("messages") or body.get("prompt"))
        label = "positive" if note in text else "negative"
        return json.dumps({"text": f"A review for {last_user_text(body)[:6]}.", "label": label})

    requests = make_requests(2, max_attempts=2)
    requests[0].retry_notes = {"wrong_label": note}
    prefill = '{"text": "' if mode == "completions" else None
    for request in requests:
        request.prefill = prefill
    with FakeOpenAIServer(responder=responder) as server:
        cfg = config(server, tmp_path, prefill_mode="inline" if mode == "chat" else mode)
        with LLMEngine(cfg) as engine:
            results = engine.generate(requests, stage="seed")
        assert results[0].accepted and results[0].reasons == ["wrong_label"]
        assert results[1].reason == "wrong_label" and results[1].attempts == 2  # no note: asked the same again
        feedback = [c["body"] for c in server.log if note in json.dumps(c["body"])]
        assert len(feedback) == 1
        if mode == "chat":
            shown = feedback[0]["messages"][-2:]
            assert shown[0]["role"] == "assistant" and json.loads(shown[0]["content"])["label"] == "negative"
            assert shown[1] == {"role": "user", "content": note}
        else:  # the rejected reply is shown whole (prefill included), then the note, then a new prefilled turn
            assert '<|im_start|>assistant\n{"text": "A review' in feedback[0]["prompt"]
            assert feedback[0]["prompt"].endswith(f'{note}<|im_end|>\n<|im_start|>assistant\n{{"text": "')
        calls = server.stats()["calls"]
        with LLMEngine(cfg) as engine:
            again = engine.generate(requests, stage="seed")
        assert server.stats()["calls"] == calls and [r.example for r in again] == [r.example for r in results]


def test_span_fields_unwrap_a_copied_delimiter_pair_and_other_leaks_still_reject():
    """A QA answer copied from the delimited paragraph often comes back as ``<data>1833</data>``: that is the span,
    not a leak, when the request names ``answer`` a span field; a tag elsewhere (or without span_fields) rejects."""
    replies = {
        "item 0": {"text": "When was it founded?", "answer": "<data>11 June 1833</data>"},
        "item 1": {"text": "When was it founded?", "answer": "<data>11 June 1833</data> and later"},
        "item 2": {"text": "<data> copied paragraph", "answer": "1833"},
    }

    def responder(body):
        return json.dumps(replies[last_user_text(body)])

    def keep(obj):
        return {"text": obj["text"], "answer": obj["answer"]}, None

    def requests(**kwargs):
        return [
            GenerationRequest(
                messages=[{"role": "user", "content": f"item {i}"}],
                validate=keep,
                key={"item": i},
                max_attempts=1,
                **kwargs,
            )
            for i in range(3)
        ]

    with FakeOpenAIServer(responder=responder) as server, LLMEngine(config(server)) as engine:
        spans = engine.generate(requests(span_fields=("answer",)), stage="seed")
        plain = engine.generate(requests(), stage="seed")
    assert spans[0].example == {"text": "When was it founded?", "answer": "11 June 1833"}
    assert [r.reason for r in spans[1:]] == ["delimiter_leak", "delimiter_leak"]
    assert [r.reason for r in plain] == ["delimiter_leak"] * 3


def test_shared_cooldown_after_429_instead_of_a_retry_storm():
    n = 30
    # the server accepts 25 requests/s and answers 429 + retry-after above that
    with FakeOpenAIServer(rps=25, over_capacity="reject", latency_s=0.005) as server:
        with LLMEngine(config(server, max_concurrency=16, max_retries=20)) as engine:
            start = time.monotonic()
            results = engine.generate(make_requests(n), stage="seed")
            elapsed = time.monotonic() - start
        rejected = server.stats()["counts"].get("rejected_rate", 0)
        assert all(r.accepted for r in results)
        assert engine.limiter.cooldowns >= 1
        # 16 workers each retrying after its own retry-after would draw ~15 429s per 40 ms window (hundreds here)
        assert rejected <= 2 * n
        assert (n - 1) / 25 * 0.8 < elapsed < 5  # the cap was respected, and approached
        server.reset_stats()
        # with the budget configured client-side, the server never has to refuse. 20/s spaces requests 50 ms apart
        # against the server's 40 ms, so a request sent up to 10 ms late (a loaded 2-core machine) still passes
        with LLMEngine(config(server, max_concurrency=16, rpm=20 * 60)) as engine:
            engine.generate(make_requests(n), stage="seed")
        assert server.stats()["counts"].get("rejected_rate", 0) <= 1


def test_json_mode_falls_back_when_the_server_rejects_response_format():
    with FakeOpenAIServer(reject_response_format=True) as server, LLMEngine(config(server)) as engine:
        results = engine.generate(make_requests(6), stage="seed")
    assert all(r.accepted and r.attempts == 1 for r in results)
    outcomes = [entry["outcome"] for entry in server.log]
    assert outcomes.count("rejected_format") >= 1 and outcomes.count("ok") == 6
    assert engine._json_mode == "off"


@pytest.mark.parametrize("mode", ["completions", "continue", "inline"])
def test_prefill_modes(mode):
    prefill = '{"text": "'
    with FakeOpenAIServer() as server, LLMEngine(config(server, prefill_mode=mode)) as engine:
        results = engine.generate(make_requests(2, prefill=prefill), stage="seed")
        body = server.log[0]["body"]
    assert all(r.accepted for r in results)
    if mode == "completions":
        assert body["prompt"] == render_chatml(
            [{"role": "system", "content": "sys"}, {"role": "user", "content": "item 0"}], prefill
        ) or body["prompt"].endswith('item 1<|im_end|>\n<|im_start|>assistant\n{"text": "')
        assert body["stop"] == ["<|im_end|>"]
        assert not results[0].text.startswith("{")  # the reply continued the prefill
    elif mode == "continue":
        assert body["messages"][-1] == {"role": "assistant", "content": prefill}
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    else:
        assert body["messages"][-1]["role"] == "user"


def test_changed_prompt_invalidates_only_what_it_changes(tmp_path):
    with FakeOpenAIServer() as server:
        cfg = config(server, tmp_path)
        with LLMEngine(cfg) as engine:
            engine.generate(make_requests(5), stage="seed")
        assert server.stats()["calls"] == 5
        changed = make_requests(5)
        changed[2].messages[-1]["content"] = "item 2, reworded"
        with LLMEngine(cfg) as engine:
            results = engine.generate(changed, stage="seed")
        assert server.stats()["calls"] == 6 and engine.report.cache_hits == 4
        assert all(r.accepted for r in results)


def test_dedup_drops_and_retries_duplicates():
    from s3_hf.dedup import Deduplicator

    def same_text(body):
        return json.dumps({"text": "Always the very same review text.", "label": "positive"})

    with FakeOpenAIServer(responder=same_text) as server, LLMEngine(config(server, max_concurrency=1)) as engine:
        results = engine.generate(make_requests(3, max_attempts=2), stage="seed", dedup=Deduplicator("text"))
    assert [r.accepted for r in results] == [True, False, False]
    assert results[1].reason == "duplicate" and results[1].attempts == 2
    assert engine.report.rejected == {"duplicate": 2} and server.stats()["calls"] == 5


def test_generate_works_inside_a_running_event_loop():
    import asyncio

    async def inside():
        with FakeOpenAIServer() as server, LLMEngine(config(server)) as engine:
            return engine.generate(make_requests(2), stage="seed")

    assert all(r.accepted for r in asyncio.run(inside()))


_CHILD = textwrap.dedent(
    """
    import sys
    from s3_hf.llm_engine import GenerationRequest, LLMConfig, LLMEngine

    url, cache_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    requests = [
        GenerationRequest(
            messages=[{"role": "user", "content": f"item {i}"}],
            validate=lambda obj: (obj, None),
            key={"item": i},
        )
        for i in range(n)
    ]
    config = LLMConfig(base_url=url, model="m", cache_dir=cache_dir, max_concurrency=4, progress=False)
    with LLMEngine(config) as engine:
        results = engine.generate(requests, stage="seed")
    print("done", sum(r.accepted for r in results))
    """
)


def _items(texts) -> set[str]:
    return {t for t in texts if t.startswith("item ")}


@pytest.mark.slow
def test_kill_9_mid_run_then_restart_repeats_no_completed_call(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    cache_dir = tmp_path / "cache"
    n = 60
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with FakeOpenAIServer(latency_s=0.1) as server:
        child = subprocess.Popen([sys.executable, str(script), server.url, str(cache_dir), str(n)], env=env)
        deadline = time.monotonic() + 60
        while server.stats()["ok"] < 15 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        served_before = server.stats()["ok"]
        assert 15 <= served_before < n

        cache = ResponseCache(cache_dir)
        done = _items(last_user_text(r["request"]["payload"]) for r in cache.records())
        assert 11 <= len(done) <= served_before  # in-flight answers may be lost, completed ones are not
        assert len(cache) == len(done)
        server.reset_stats()

        restarted = subprocess.run(
            [sys.executable, str(script), server.url, str(cache_dir), str(n)], env=env, capture_output=True, text=True
        )
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout.strip() == f"done {n}"
        called_again = _items(entry["user"] for entry in server.log)
        assert not (called_again & done)  # no completed call repeated
        assert len(called_again) == server.stats()["calls"] == n - len(done)
    final = ResponseCache(cache_dir)
    assert len(final) == n and final.skipped_lines == 0
    assert len((cache_dir / CACHE_FILE).read_text().splitlines()) == n


def test_local_server_reports_a_missing_model_or_runtime_clearly(tmp_path):
    from s3_hf.local_llm import LocalLLMError, LocalLLMServer

    server = LocalLLMServer(str(tmp_path / "missing.gguf"), replicas=2, n_threads=1, log_dir=tmp_path)
    with pytest.raises(LocalLLMError, match="missing.gguf|llama-cpp-python"):
        server.start()
    assert server.base_urls == [] and not server.running
    with pytest.raises(S3ConfigError, match="replicas.*0"):
        LocalLLMServer("smollm2", replicas=0)


@pytest.mark.parametrize(
    "value",
    ["sk-proj-AbC123_xyz-DEF456ghi789", "hf_AbCdEf0123456789xyz", "Bearer abc.def", "a1b2c3d4e5f6a7b8c9d0e1f2"],
)
def test_config_errors_never_echo_a_value_that_could_be_a_key(value):
    with pytest.raises(S3ConfigError) as caught:
        LLMConfig(api_key_env=value)
    assert value not in str(caught.value) and value.split()[-1] not in str(caught.value)
    assert "NAME of an environment variable" in str(caught.value)
    with pytest.raises(S3ConfigError) as caught:  # a key pasted into another field is not echoed either
        LLMConfig(base_url=value)
    assert value not in str(caught.value) and "base_url" in str(caught.value)
    assert LLMConfig(api_key_env="MY_PROVIDER_API_KEY_2").api_key_env == "MY_PROVIDER_API_KEY_2"


def test_prices_from_the_cli_as_json():
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(LLMConfig).parse_args_into_dataclasses(
        ["--prices", '{"my-model": [0.2, 0.8]}', "--base_url", "http://127.0.0.1:1/v1"]
    )
    assert cfg.prices == {"my-model": (0.2, 0.8)}
    (default,) = HfArgumentParser(LLMConfig).parse_args_into_dataclasses([])
    assert default.prices["gpt-4o-mini"] == (0.15, 0.60)
    assert LLMConfig(prices='{"m": [1, 2]}').prices == {"m": (1, 2)}
    with pytest.raises(S3ConfigError, match="prices"):
        LLMConfig(prices="{not json")
    with pytest.raises(S3ConfigError, match="prices.*'m'"):
        LLMConfig(prices={"m": (1.0,)})


def test_resumed_run_replays_duplicate_decisions_in_another_completion_order_without_new_calls(tmp_path):
    from s3_hf.dedup import Deduplicator

    served: dict[str, int] = {}

    def responder(body):  # items 0 and 1 first say the same thing; item 1's retry says something new
        item = last_user_text(body)
        served[item] = served.get(item, 0) + 1
        if item in ("item 0", "item 1") and served[item] == 1:
            text = "The very same review, word for word, from both of them."
        else:
            text = f"A fresh review written for {item}, call {served[item]}, with its own words."
        return json.dumps({"text": text, "label": "positive"})

    def accepted(results):
        return {r.request.meta["item"]: r.example["text"] for r in results if r.accepted}

    with FakeOpenAIServer(responder=responder) as server:
        cfg = config(server, tmp_path, max_concurrency=1)
        with LLMEngine(cfg) as engine:  # run A: item 0 finishes first, item 1's copy is retried
            first = engine.generate(make_requests(3, max_attempts=3), stage="seed", dedup=Deduplicator("text"))
        assert server.stats()["calls"] == 4 and first[1].reasons == ["duplicate"] and first[1].attempts == 2
        server.reset_stats()
        with LLMEngine(cfg) as engine:  # replay in reverse order: item 1's cached copy now finishes first
            replay = engine.generate(
                list(reversed(make_requests(3, max_attempts=3))), stage="seed", dedup=Deduplicator("text")
            )
        assert server.stats()["calls"] == 0 and engine.report.api_calls == 0
    assert accepted(replay) == accepted(first) and len(accepted(first)) == 3
    assert engine.report.attempt_rejections == {"duplicate": 1} and engine.report.cache_hits == 4


def test_save_summary_writes_json_atomically(tmp_path):
    with FakeOpenAIServer() as server, LLMEngine(config(server)) as engine:
        engine.generate(make_requests(2), stage="seed")
        path = engine.save_summary(tmp_path / "out" / "summary.json")
    assert json.loads(Path(path).read_text())["report"]["requested"] == 2
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["summary.json"]


DYING_SERVER = """
import http.server, json, os, signal, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # the readiness probe: /v1/models
        body = json.dumps({"object": "list", "data": [{"id": "local", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # the first completion kills the server, as llama.cpp's AMX kernels did on a Xeon VM
        print("about to run an instruction this CPU does not have", flush=True)
        os.kill(os.getpid(), signal.SIGILL)

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_local_server_that_dies_mid_run_fails_the_run_with_its_signal_and_log(tmp_path, monkeypatch):
    """A local server killed mid-run (here by SIGILL) is an error naming the signal, what to do and the server's log,
    raised on the first failed call; not every request rejected as ``api_error_connection`` after its retries."""
    from s3_hf import local_llm

    script = tmp_path / "dying_server.py"
    script.write_text(DYING_SERVER)
    monkeypatch.setattr(local_llm, "llama_cpp_available", lambda: True)
    monkeypatch.setattr(
        local_llm.LocalLLMServer, "command", lambda self, port: [sys.executable, str(script), str(port)]
    )
    monkeypatch.setenv("S3_HF_CACHE", str(tmp_path / "home"))
    config = LLMConfig(
        local_replicas=1, max_retries=6, backoff_s=2.0, cache_dir=str(tmp_path / "cache"), progress=False
    )
    started = time.monotonic()
    with LLMEngine(config) as engine, pytest.raises(local_llm.LocalLLMError) as raised:
        engine.generate(make_requests(3), stage="seed")
    message = str(raised.value)
    assert "was killed by SIGILL" in message and "illegal instruction" in message and "make rebuild-llama" in message
    assert "about to run an instruction this CPU does not have" in message  # the server's log tail
    assert time.monotonic() - started < 10, "retried a dead server with backoff (6 retries from 2 s)"


class _RecordingLocalServer:
    """Stands in for :class:`~s3_hf.local_llm.LocalLLMServer`: a loopback server per instance, recording how it was
    asked to run. Without ``logits_all`` it answers logprobs with ``null``, as llama-cpp-python cannot give them."""

    started: list[_RecordingLocalServer] = []

    def __init__(self, model, *, logits_all=True, replicas=1, **kwargs):
        self.logits_all, self.replicas, self.kwargs = logits_all, replicas, kwargs
        self.server = FakeOpenAIServer(logprobs=logits_all)
        self.closed = False

    def start(self):
        self.server.__enter__()
        _RecordingLocalServer.started.append(self)
        return self

    @property
    def base_urls(self):
        return [self.server.url]

    def check_alive(self):
        pass

    def close(self):
        self.closed = True
        self.server.__exit__(None, None, None)


@pytest.mark.parametrize("split", [True, False])
def test_the_embedded_llm_answers_logprob_requests_from_servers_of_their_own(monkeypatch, split):
    """llama-cpp-python gives logprobs only from a server that keeps every prompt token's logits, which makes every
    prompt cost more. So the engine writes text on servers without them and sends requests that ask for logprobs (the
    verifier's) to servers of their own, started on the first such request; ``local_logprob_servers=False`` keeps
    one set of servers with every token's logits for everything."""
    from s3_hf import local_llm

    monkeypatch.setattr(local_llm, "LocalLLMServer", _RecordingLocalServer)
    _RecordingLocalServer.started = []
    config = LLMConfig(local_replicas=2, local_logprob_servers=split, backoff_s=0.02, progress=False)
    with LLMEngine(config) as engine:
        written = engine.generate(make_requests(3), stage="seed")
        assert [s.logits_all for s in _RecordingLocalServer.started] == [not split]  # the verifier's: not yet
        verified = engine.generate(make_requests(2, logprobs=5), stage="verify")
        again = engine.generate(make_requests(2), stage="extrapolate")
    servers = _RecordingLocalServer.started
    assert all(r.accepted for r in written + verified + again)
    assert all(r.logprobs for r in verified), "a logprob request went to a server without every token's logits"
    if split:
        assert [s.logits_all for s in servers] == [False, True]
        assert [s.server.stats()["ok"] for s in servers] == [5, 2]  # text on one set, verdicts on the other
        assert all('"logprobs"' not in json.dumps(entry["body"]) for entry in servers[0].server.log)
    else:
        assert [s.logits_all for s in servers] == [True] and servers[0].server.stats()["ok"] == 7
    assert all(s.replicas == 2 and s.closed for s in servers)  # the same replicas each, all stopped on close


@pytest.mark.parametrize("reuse", [False, True])
def test_the_embedded_servers_evaluate_prompts_whole_unless_prefix_reuse_is_asked(monkeypatch, reuse):
    """Every embedded server (text and logprob ones) gets ``local_prefix_reuse``; off by default, so a reply depends
    on its request alone (s3_hf.llama_server); S3Config passes its own field through."""
    from s3_hf import local_llm
    from s3_hf.config import S3Config

    monkeypatch.setattr(local_llm, "LocalLLMServer", _RecordingLocalServer)
    _RecordingLocalServer.started = []
    assert LLMConfig().local_prefix_reuse is False and S3Config().llm_config().local_prefix_reuse is False
    config = LLMConfig(local_replicas=1, local_prefix_reuse=reuse, backoff_s=0.02, progress=False)
    assert S3Config(local_prefix_reuse=reuse).llm_config().local_prefix_reuse is reuse
    with LLMEngine(config) as engine:
        engine.generate(make_requests(1), stage="seed")
        engine.generate(make_requests(1, logprobs=5), stage="verify")
    assert [s.kwargs["prefix_reuse"] for s in _RecordingLocalServer.started] == [reuse, reuse]


def test_a_batch_answered_from_the_cache_starts_no_embedded_server(monkeypatch, tmp_path):
    """A resumed run replays its verdicts and texts from the cache: the embedded servers start on the first API
    call, not for a batch that needs none."""
    from s3_hf import local_llm

    monkeypatch.setattr(local_llm, "LocalLLMServer", _RecordingLocalServer)
    _RecordingLocalServer.started = []
    values = dict(local_replicas=2, backoff_s=0.02, progress=False, cache_dir=str(tmp_path / "cache"))
    with LLMEngine(LLMConfig(**values)) as engine:
        first = engine.generate(make_requests(2), stage="seed")
        first += engine.generate(make_requests(2, logprobs=5), stage="verify")
    assert [s.logits_all for s in _RecordingLocalServer.started] == [False, True]

    _RecordingLocalServer.started = []
    with LLMEngine(LLMConfig(**values)) as engine:
        replayed = engine.generate(make_requests(2), stage="seed")
        replayed += engine.generate(make_requests(2, logprobs=5), stage="verify")
        assert _RecordingLocalServer.started == [], "a fully cached batch started a server"
        assert engine.report.cache_hits == 4 and engine.report.api_calls == 0
        fresh = engine.generate(make_requests(3, logprobs=5), stage="verify")  # item 2 is new: servers now
    assert [r.example for r in replayed] == [r.example for r in first]
    assert [r.logprobs for r in replayed[2:]] == [r.logprobs for r in first[2:]]
    assert all(r.accepted for r in fresh)
    assert [s.logits_all for s in _RecordingLocalServer.started] == [True]


def test_an_embedded_server_that_fails_to_start_is_tried_once_and_its_error_raised(monkeypatch):
    """The servers start on the first API call of a batch; when that fails, the run stops with the error, and the
    batch's other requests do not start servers of their own."""
    from s3_hf import local_llm

    tries = []

    class _FailingServer(_RecordingLocalServer):
        def start(self):
            tries.append(self)
            raise local_llm.LocalLLMError("llama.cpp server exited with code 1")

    monkeypatch.setattr(local_llm, "LocalLLMServer", _FailingServer)
    with LLMEngine(LLMConfig(local_replicas=2, backoff_s=0.02, progress=False)) as engine:
        with pytest.raises(local_llm.LocalLLMError, match="exited with code 1"):
            engine.generate(make_requests(5), stage="seed")
    assert len(tries) == 1

    # awaited in a loop that goes on (a notebook, a server): the batch's other requests are still pending after the
    # error, and each gets the same error instead of starting a server of its own
    async def in_a_running_loop():
        with LLMEngine(LLMConfig(local_replicas=2, backoff_s=0.02, progress=False)) as engine:
            with pytest.raises(local_llm.LocalLLMError):
                await engine.agenerate(make_requests(5), stage="seed")
            await asyncio.sleep(0.2)  # the leftover requests run now

    tries.clear()
    asyncio.run(in_a_running_loop())
    assert len(tries) == 1


def candidate_requests(errors: int, k: int, **kwargs) -> list[GenerationRequest]:
    """``k`` requests per error with the same prompt and affinity (an ErrorExtrapolator's candidates)."""
    return [
        GenerationRequest(
            messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": f"error {e}"}],
            validate=validate,
            key={"task": "imdb", "error": e, "sample": sample},
            affinity=f"error-{e}",
            **kwargs,
        )
        for e in range(errors)
        for sample in range(k)
    ]


@pytest.mark.parametrize("mode", ["completions", "inline"])
def test_requests_that_share_a_prompt_are_asked_in_one_call_with_n_and_replay_from_the_cache(tmp_path, mode):
    """The k candidates of an error: one call with n=k, a distinct choice each, the prompt's tokens counted once;
    a second engine over the same cache replays every one of them without a call."""
    requests = candidate_requests(3, 2) + make_requests(2)  # two plain requests: a call each
    with FakeOpenAIServer() as server:
        with LLMEngine(config(server, tmp_path, seed=5, prefill_mode=mode)) as engine:
            first = engine.generate(requests, stage="extrapolate")
        bodies = [entry["body"] for entry in server.log]
        assert len(bodies) == 5 and engine.report.api_calls == 5
        assert sorted(b.get("n", 1) for b in bodies) == [1, 1, 2, 2, 2]
        assert all(r.example is not None for r in first)
        texts = [r.example["text"] for r in first]
        assert len(set(texts)) == len(texts)  # each candidate got its own choice
        assert [r.usage["api_calls"] for r in first[:6]] == [1, 0, 1, 0, 1, 0]
        prompt_tokens = sum(r.usage["prompt_tokens"] for r in first[:2])
        assert prompt_tokens == first[0].usage["prompt_tokens"] > 0 and first[1].usage["prompt_tokens"] == 0
        assert engine.usage.summary()["total"]["requests"] == 8
        server.reset_stats()
        with LLMEngine(config(server, tmp_path, seed=5, prefill_mode=mode)) as again:
            replayed = again.generate(requests, stage="extrapolate")
        assert server.stats()["calls"] == 0 and again.report.cache_hits == 8
        assert [r.example for r in replayed] == [r.example for r in first]


@pytest.mark.parametrize("answer_n", ["one", "reject"])
def test_a_server_without_n_still_answers_every_request_and_is_not_asked_with_n_again(tmp_path, answer_n):
    """llama-cpp-python's own server answers n=2 with one choice, others reject it: the requests without a choice
    are asked one call each, nothing is lost, and once the engine has seen it, it asks without n."""
    with FakeOpenAIServer(answer_n=answer_n) as server, LLMEngine(config(server, seed=1)) as engine:
        results = engine.generate(candidate_requests(3, 2), stage="extrapolate")
        first = [entry["body"] for entry in server.log]
        server.reset_stats()
        later = engine.generate(candidate_requests(2, 2, max_attempts=2), stage="extrapolate")
        second = [entry["body"] for entry in server.log]
    assert all(r.example is not None for r in results + later)
    assert len({r.example["text"] for r in results}) == 6
    asked_with_n = [b.get("n", 1) for b in first].count(2)
    assert 1 <= asked_with_n <= 3  # the groups in flight before the first answer
    answered = 6 if answer_n == "one" else 6 + asked_with_n  # a rejected call is one more, and answers nothing
    assert len(first) == answered
    assert len(second) == 4 and all("n" not in b for b in second)


def test_shared_prompt_calls_off_or_other_prompts_are_asked_one_call_each(tmp_path):
    from s3_hf.config import S3Config

    same_affinity = [
        GenerationRequest(
            messages=[{"role": "user", "content": f"describe error {i}"}],
            validate=validate,
            key={"task": "imdb", "describe": i},
            affinity="error-0",
        )
        for i in range(2)
    ]
    with FakeOpenAIServer() as server:
        with LLMEngine(config(server, tmp_path)) as engine:
            engine.generate(same_affinity, stage="describe")  # same affinity, other prompts: not shared
        with LLMEngine(config(server, shared_prompt_calls=False)) as engine:
            results = engine.generate(candidate_requests(2, 2), stage="extrapolate")
        bodies = [entry["body"] for entry in server.log]
    assert len(bodies) == 6 and all("n" not in b for b in bodies)
    assert all(r.example is not None for r in results)
    assert S3Config(shared_prompt_calls=False).llm_config().shared_prompt_calls is False
    assert S3Config().llm_config().shared_prompt_calls is True
