"""The append-only response cache: hashing, crash safety (torn lines), and what goes into the key."""

from __future__ import annotations

import json

from s3_hf.llm_engine import GenerationRequest, LLMConfig, LLMEngine
from s3_hf.response_cache import CACHE_FILE, ResponseCache, cache_key


def _response(text: str) -> dict:
    return {"text": text, "finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


def test_cache_round_trip_and_torn_tail_is_ignored_and_cut(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("k1", _response("one"), request={"item": 1})
    cache.put("k2", _response("two"))
    path = tmp_path / CACHE_FILE
    whole = path.read_bytes()
    # a process killed mid-write leaves half a line
    path.write_bytes(whole + b'{"format": 1, "key": "k3", "response": {"te')
    reopened = ResponseCache(tmp_path)
    assert len(reopened) == 2 and reopened.skipped_lines == 1
    assert reopened.get("k1")["text"] == "one" and reopened.get("k3") is None
    assert path.read_bytes() == whole  # the torn tail was cut, so the next append starts a clean line
    reopened.put("k3", _response("three"))
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["sha256"] for line in lines)
    assert ResponseCache(tmp_path).get("k3")["text"] == "three"


def test_cache_skips_records_whose_hash_does_not_match(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("good", _response("fine"))
    cache.put("bad", _response("original"))
    path = tmp_path / CACHE_FILE
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("original", "tampered")
    path.write_text("\n".join(lines) + "\n")
    reopened = ResponseCache(tmp_path)
    assert "good" in reopened and "bad" not in reopened and reopened.skipped_lines == 1


def test_cache_key_is_stable_and_sensitive():
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "params": {"t": 1.0}, "attempt": 0}
    assert cache_key(base) == cache_key(dict(reversed(list(base.items()))))  # key order does not matter
    for change in ({"model": "m2"}, {"attempt": 1}, {"params": {"t": 0.5}}):
        assert cache_key({**base, **change}) != cache_key(base)


def _request(content: str, item: int, **kwargs) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": content}],
        validate=lambda obj: (obj, None),
        key={"task": "t", "item": item},
        **kwargs,
    )


def test_engine_keys_cover_what_changes_the_output(tmp_path):
    engine = LLMEngine(LLMConfig(base_url="http://127.0.0.1:9/v1", model="m", cache_dir=str(tmp_path)))
    key = engine._build_call(_request("hello", 1), 0)[2]
    assert engine._build_call(_request("hello", 1), 0)[2] == key
    different = [
        engine._build_call(_request("hello!", 1), 0)[2],  # prompt
        engine._build_call(_request("hello", 2), 0)[2],  # request identity (item, prompt version...)
        engine._build_call(_request("hello", 1), 1)[2],  # attempt
        engine._build_call(_request("hello", 1, prefill='{"a": "'), 0)[2],  # prefill
        engine._build_call(_request("hello", 1, json_schema={"type": "object"}), 0)[2],  # schema
        engine._build_call(_request("hello", 1, max_tokens=7), 0)[2],  # per-request generation parameters
        engine._build_call(_request("hello", 1, temperature=0.1), 0)[2],
        LLMEngine(LLMConfig(base_url="http://127.0.0.1:9/v1", model="m2"))._build_call(_request("hello", 1), 0)[2],
        LLMEngine(LLMConfig(base_url="http://127.0.0.1:9/v1", model="m", temperature=0.2))._build_call(
            _request("hello", 1), 0
        )[2],
        LLMEngine(LLMConfig(base_url="http://127.0.0.1:8/v1", model="m", max_tokens=9))._build_call(
            _request("hello", 1), 0
        )[2],
    ]
    assert len({key, *different}) == len(different) + 1
    # the base URL alone (same model behind another server) does not change the key
    other_server = LLMEngine(LLMConfig(base_url="http://127.0.0.1:8/v1", model="m"))
    assert other_server._build_call(_request("hello", 1), 0)[2] == key
