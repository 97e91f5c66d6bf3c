"""S3Pipeline and ``s3-hf run``: config from flags and YAML, the 2-round loop pushed to a loopback Hub, resume.

The end-to-end tests use the loopback OpenAI server (canned, valid answers), a random 2-layer BERT and the loopback
Hub server from ``conftest.py``; one separate test runs the real SmolLM2 through llama.cpp when it is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

os.environ.setdefault("OMP_NUM_THREADS", "1")

from s3_hf.config import BASELINES  # noqa: E402
from s3_hf.errors import S3ConfigError  # noqa: E402
from s3_hf.pipeline import S3Config, config_from_args  # noqa: E402

POSITIVE = ("wonderful", "brilliant", "moving", "superb", "delightful", "charming", "gripping", "beautiful")
NEGATIVE = ("boring", "awful", "dull", "terrible", "clumsy", "tedious", "lifeless", "dreadful")


def imdb_responder(body: dict) -> str:
    """Valid JSON for every S3 prompt of the imdb task, distinct per prompt."""
    from s3_hf.testing.openai_server import last_user_text

    text = last_user_text(body)
    # the per-request seed counts, as sampling does: ZeroGen's prompts are the same for every example of a label
    h = int(hashlib.sha256(f"{text}{body.get('seed')}".encode()).hexdigest()[:8], 16)
    if text.startswith("Is the movie review below positive"):  # the LLM verifier: label the review by its words
        review = text.split("<data>")[1]
        positive = sum(w in review for w in POSITIVE) >= sum(w in review for w in NEGATIVE)
        return json.dumps({"label": "positive" if positive else "negative"})
    if "reasons why" in text:
        words = POSITIVE if "could be positive" in text else NEGATIVE
        return json.dumps({"rationales": [f"{w} {h % 1000} scenes" for w in words[:4]]})
    if "say what kind of movie it is about" in text:  # describing an error (error_view="description")
        return json.dumps(
            {"summary": f"A film the reviewer found {'superb' if 'Here is a positive' in text else 'dull'} ({h})."}
        )
    head = text.split("<data>")[0]
    if "different positive movie review" in text or "different negative movie review" in text:  # extrapolation
        positive = "different positive movie review" in text
    else:
        positive = "label is positive" in head or "a positive" in head.lower() or "is positive" in head
    words = POSITIVE if positive else NEGATIVE
    picks = [words[(h >> (3 * i)) % len(words)] for i in range(4)]
    return json.dumps({"text": f"The film {h} was {picks[0]} and {picks[1]}; a {picks[2]}, {picks[3]} story."})


def imdb_fake_reply(request, n: int) -> dict:
    """A FakeEngine reply for IMDb: verifier labels from the review's tone, rationales, and reviews numbered by ``n``
    (the requests seen so far), glowing for a positive one and bitter for a negative one."""
    from fake_llm import user_prompt

    prompt = user_prompt(request)
    if prompt.startswith("Is the movie review below"):
        return {"label": "positive" if "glowing" in prompt.split("<data>")[1] else "negative"}
    if "reasons why" in prompt:
        return {"rationales": [f"reason {i} {n}" for i in range(6)]}
    tone = "glowing, I loved it" if "positive movie review" in prompt else "bitter, I hated it"
    return {"text": f"Review number {n} of the film: {tone}, and long enough to keep."}


# ---------------------------------------------------------------------- config
def test_config_validation_names_the_bad_value():
    with pytest.raises(S3ConfigError, match="seed_size.*-3"):
        S3Config(seed_size=-3)
    with pytest.raises(S3ConfigError, match="method.*'gold'"):
        S3Config(method=["s3", "gold"])
    with pytest.raises(S3ConfigError, match="unknown task 'nope'"):
        S3Config(task="nope")
    with pytest.raises(S3ConfigError, match="stop_after.*'round_9.data'"):
        S3Config(rounds=2, stop_after="round_9.data")
    with pytest.raises(S3ConfigError, match="push_to_hub.*'no-slash'"):
        S3Config(push_to_hub="no-slash")
    with pytest.raises(S3ConfigError, match="LLMConfig.base_url"):
        S3Config(base_url="ftp://x")
    with pytest.raises(S3ConfigError, match="round_gate.*'sometimes'"):
        S3Config(round_gate="sometimes")
    with pytest.raises(S3ConfigError, match="seed_prompt.*'rationale'"):
        S3Config(seed_prompt="rationale")
    assert S3Config(method="s3,zerogen").method == ["s3", "zerogen"]


def test_config_from_flags_and_yaml_same_fields(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: rte\nrounds: 3\nseed_size: 40\nmethod: [s3, zerogen]\nmax_errors_per_round: 10\n")
    config = config_from_args(["--config", str(path), "--seed-size", "24", "--push-to-hub", "me/rte-s3"])
    assert (config.task, config.rounds, config.seed_size) == ("rte", 3, 24)  # the flag overrides the file
    assert config.method == ["s3", "zerogen"] and config.max_errors_per_round == 10
    assert config.push_to_hub == "me/rte-s3"
    flags = config_from_args(
        [
            "--task",
            "rte",
            "--rounds",
            "3",
            "--seed_size",
            "24",
            "--method",
            "s3",
            "zerogen",
            "--max-errors-per-round",
            "10",
            "--push-to-hub",
            "me/rte-s3",
        ]
    )
    assert flags == config
    assert config_from_args([]) == S3Config()  # the embedded defaults
    # every field has a help text
    import dataclasses

    assert all(f.metadata.get("help") for f in dataclasses.fields(S3Config))


def test_config_yaml_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: imdb\nseed_sise: 3\n")
    with pytest.raises(S3ConfigError, match=r"bad.yaml: unknown S3Config field\(s\) \['seed_sise'\]"):
        config_from_args(["--config", str(bad)])
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [imdb\n")
    with pytest.raises(S3ConfigError, match="broken.yaml line"):
        config_from_args(["--config", str(broken)])
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("rounds: -1\n")
    with pytest.raises(S3ConfigError, match="rounds.*-1"):
        config_from_args(["--config", str(wrong)])


def test_run_config_json_holds_no_secret(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    data = json.dumps(S3Config(base_url="http://127.0.0.1:1/v1", model="gpt-4o-mini").to_dict())
    assert "sk-secret" not in data and '"api_key_env": "OPENAI_API_KEY"' in data


# ---------------------------------------------------------------------- the loop, end to end
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import tiny_setup

    return str(tiny_setup.make_models(tmp_path_factory.mktemp("pipeline_models"))["cls"])


def _config(tmp_path, server_url, tiny_model, **overrides) -> S3Config:
    values = dict(
        task="imdb",
        rounds=2,
        output_dir=str(tmp_path / "run"),
        base_url=server_url,
        model="fake-llm",
        small_model=tiny_model,
        seed_size=12,
        rationales_per_label=4,
        rationales_per_request=4,
        validation_size=24,
        test_size=30,
        max_errors_per_round=6,
        error_pool_size=40,
        epochs=1.0,
        batch_size=8,
        max_concurrency=4,
        # the tiny model predicts one label, so every round ties the seed on validation and the gate would set it
        # aside: these tests follow the data through every round (the gate has its own test)
        round_gate="none",
    )
    values.update(overrides)
    return S3Config(**values)


@pytest.mark.slow
def test_two_rounds_pushed_to_hub_with_kill_and_resume(tmp_path, monkeypatch, hub_server, hub_repo_id, tiny_model):
    from datasets import load_dataset
    from huggingface_hub import HfApi, hf_hub_download

    import s3_hf.training
    from s3_hf.pipeline import S3Pipeline
    from s3_hf.s3_json import read_s3_json
    from s3_hf.testing.openai_server import FakeOpenAIServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    trained: list[int] = []
    real_build = s3_hf.training.build_trainer

    def counting_build(task, model, train, *args, **kwargs):
        trained.append(len(train))
        return real_build(task, model, train, *args, **kwargs)

    monkeypatch.setattr(s3_hf.training, "build_trainer", counting_build)

    with FakeOpenAIServer(responder=imdb_responder) as server:
        # run 1: stops after the round-1 data stage (as if killed there)
        config = _config(tmp_path, server.url, tiny_model, push_to_hub=hub_repo_id, stop_after="round_1.data")
        results = S3Pipeline(config).run()
        assert results["stopped_after"] == "round_1.data"
        state = results["state"]
        assert state["done"] == ["round_0.data", "round_0.train", "round_0.publish", "round_1.data"]
        assert len(trained) == 1
        calls_run1 = server.stats()["calls"]
        assert calls_run1 > 0

        # run 2: crashes while publishing round 1 (after round 1 was trained)
        original_push = S3Pipeline._push

        def crashing_push(self, folder, k, config_name):
            if k == 1:
                raise RuntimeError("simulated crash during the round-1 push")
            return original_push(self, folder, k, config_name)

        monkeypatch.setattr(S3Pipeline, "_push", crashing_push)
        with pytest.raises(RuntimeError, match="simulated crash"):
            S3Pipeline(_config(tmp_path, server.url, tiny_model, push_to_hub=hub_repo_id)).run()
        assert len(trained) == 2
        assert server.stats()["calls"] == calls_run1  # round 1's data came from disk: no LLM call at all
        monkeypatch.setattr(S3Pipeline, "_push", original_push)

        # run 3: resumes at round_1.publish; trains round 2 only; calls the LLM only for round 2's extrapolation
        results = S3Pipeline(_config(tmp_path, server.url, tiny_model, push_to_hub=hub_repo_id)).run()
        stats = server.stats()

    state = results["state"]
    assert state["done"][-3:] == ["round_2.data", "round_2.train", "round_2.publish"]
    assert len(trained) == 3  # rounds 0, 1, 2: each trained exactly once across the three runs
    rounds = state["s3"]["rounds"]
    # every call of run 3 is round 2's: its requests, less one per error (its 2 candidates share a call with n=2)
    assert stats["calls"] - calls_run1 == rounds["2"]["usage"]["requests"] - rounds["2"]["errors_used"] > 0
    assert max(stats["calls_by_digest"].values()) == 1  # no request body was ever sent twice
    out = Path(config.output_dir)
    data = {
        k: read_s3_json(out / "data" / name, "imdb")
        for k, name in ((0, "seed.jsonl"), (1, "round_1.jsonl"), (2, "round_2.jsonl"))
    }
    assert trained == [len(data[0]), len(data[0]) + len(data[1]), len(data[0]) + len(data[1]) + len(data[2])]
    for k in (1, 2):
        info = rounds[str(k)]
        assert info["errors_used"] == min(6, rounds[str(k - 1)]["errors"])
        assert rounds[str(k - 1)]["pool_size"] == 40  # errors come from the error pool, not the validation rows
        # a description request per error (the default error view for IMDb), then k = 2 candidates per error, each
        # verified by the LLM; every candidate is accounted for
        assert info["described"] == info["errors_used"]
        assert info["requested"] == 2 * info["errors_used"] == info["accepted"] + sum(info["rejected"].values())
        assert info["verification"]["llm"]["checked"] == info["accepted"] + info["rejected"].get("verifier_llm", 0)
        assert info["mixing_ratio"] == round(info["new_rows"] / sum(len(data[j]) for j in range(k)), 3)
        assert info["new_rows"] == len(data[k])
        # the gold label of each error is kept (label-balanced error sample)
        errors = read_s3_json(out / "errors" / f"round_{k - 1}.jsonl", "imdb")
        assert len(errors) == rounds[str(k - 1)]["errors"]
    for k in (0, 1, 2):
        assert 0.0 <= rounds[str(k)]["validation"] <= 1.0 and 0.0 <= rounds[str(k)]["test"] <= 1.0
        assert rounds[str(k)]["train_rows"] == trained[k]

    # the Hub repo: one commit per round, tagged, with configs seed/round_k/all as of each round
    api = HfApi()
    refs = api.list_repo_refs(hub_repo_id, repo_type="dataset")
    tags = {t.name: t.target_commit for t in refs.tags}
    assert set(tags) == {"round-0", "round-1", "round-2"}
    commits = api.list_repo_commits(hub_repo_id, repo_type="dataset")
    assert [tags["round-2"], tags["round-1"], tags["round-0"]] == [c.commit_id for c in commits[:3]]

    def texts(config_name, revision):
        return sorted(load_dataset(hub_repo_id, config_name, split="train", revision=revision)["text"])

    assert texts("all", "round-0") == sorted(e["text"] for e in data[0])
    assert texts("all", "round-1") == sorted(e["text"] for e in data[0] + data[1])
    assert texts("all", "round-2") == sorted(e["text"] for e in data[0] + data[1] + data[2])
    assert texts("round_1", "round-2") == sorted(e["text"] for e in data[1])
    assert texts("seed", "round-2") == sorted(e["text"] for e in data[0])
    round2 = load_dataset(hub_repo_id, "round_2", split="train", revision="round-2")
    assert round2.features["label"].names == ["negative", "positive"]

    card = Path(hf_hub_download(hub_repo_id, "README.md", repo_type="dataset", revision="round-2")).read_text()
    assert "## S3 rounds" in card and "![accuracy per round](accuracy.png)" in card
    header = next(line for line in card.splitlines() if line.startswith("| round |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for k, name in ((0, "seed"), (1, "1"), (2, "2")):
        row = next(line for line in card.splitlines() if line.startswith(f"| {name} |"))
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
        described = rounds[str(k)].get("described")  # rounds 1-2: one description request per error
        assert cells["requested"] == (
            f"{rounds[str(k)]['requested']} + {described} descriptions"
            if described
            else str(rounds[str(k)]["requested"])
        )
        assert bool(described) == (k > 0)
        assert cells["accepted"] == str(rounds[str(k)]["accepted"])
        assert cells["test accuracy"] == f"{rounds[str(k)]['test']:.3f}"
        assert cells["pool"] == str(rounds[str(k)]["pool_size"])
    png = Path(hf_hub_download(hub_repo_id, "accuracy.png", repo_type="dataset", revision="round-2"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_config = json.loads(
        Path(hf_hub_download(hub_repo_id, "s3_run_config.json", repo_type="dataset", revision="round-2")).read_text()
    )
    assert run_config["seed_size"] == 12 and run_config["api_key_env"] == "OPENAI_API_KEY"
    assert "sk-test-not-a-real-key" not in json.dumps(run_config)
    # the round-1 card (as of tag round-1) has only two rounds in its table
    card1 = Path(hf_hub_download(hub_repo_id, "README.md", repo_type="dataset", revision="round-1")).read_text()
    assert "| 1 |" in card1 and "| 2 |" not in card1

    # a fourth run has nothing left to do: no LLM call, no training, the same table
    before = len(trained)
    again = S3Pipeline(_config(tmp_path, "http://127.0.0.1:9/v1", tiny_model, push_to_hub=hub_repo_id)).run()
    assert len(trained) == before and again["table"] == results["table"]


@pytest.mark.slow
def test_baselines_match_s3_size_and_reuse_seed_calls(tmp_path, tiny_model, capsys):
    from s3_hf.pipeline import main
    from s3_hf.s3_json import read_s3_json
    from s3_hf.testing.openai_server import FakeOpenAIServer

    os.environ.setdefault("OPENAI_API_KEY", "unused")
    with FakeOpenAIServer(responder=imdb_responder) as server:
        out = tmp_path / "run"
        argv = [
            "--task",
            "imdb",
            "--rounds",
            "1",
            "--output-dir",
            str(out),
            "--base-url",
            server.url,
            "--model",
            "fake-llm",
            "--small-model",
            tiny_model,
            "--seed-size",
            "10",
            "--rationales-per-label",
            "4",
            "--validation-size",
            "20",
            "--test-size",
            "20",
            "--max-errors-per-round",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--error-pool-size",
            "30",
            "--round-gate",
            "none",  # the tiny model's rounds tie on validation; this test follows every round's rows
            "--method",
            "s3",
            "zerogen",
            "seed_same_size",
            "goldgen",
            "goldgen_correct",
        ]
        assert main(argv) == 0
        stats = server.stats()
        prompts = [entry["user"] for entry in server.log]
    printed = capsys.readouterr().out
    state = json.loads((out / "state.json").read_text())
    # S3's size: the rows of its kept rounds (a round that does not beat the seed on validation is set aside)
    s3_rows = sum(r["new_rows"] for r in state["s3"]["rounds"].values() if r.get("round_kept", True))
    rows = {name: read_s3_json(out / name / f"{name}_train.jsonl", "imdb") for name in BASELINES}
    for name in BASELINES:  # every baseline trains on as many rows as S3 ended with
        assert len(rows[name]) == state[name]["target_rows"] == state[name]["train_rows"] == s3_rows
        assert 0.0 <= state[name]["test"] <= 1.0
    # seed_same_size's first seed_size requests are S3's seed requests: replayed from the cache, not sent again
    assert max(stats["calls_by_digest"].values()) == 1
    seed = read_s3_json(out / "data" / "seed.jsonl", "imdb")
    assert [e["text"] for e in rows["seed_same_size"][: len(seed)]] == [e["text"] for e in seed]
    # goldgen: S3's seed, then extrapolations of pool rows, verified like S3's
    assert rows["goldgen"][: len(seed)] == seed and state["goldgen"]["verification"]["llm"]["checked"] > 0
    # zerogen: ZeroGen's own plain prompt, without rationales
    assert sum("Write a positive movie review. Answer" in p or "Write a negative movie review. Answer" in p
               for p in prompts) >= state["zerogen"]["requested"]  # fmt: skip
    assert not any(e["text"] in {s["text"] for s in seed} for e in rows["zerogen"])
    # the local dataset folder is versioned with git, one tag per round
    from s3_hf.hub import load_round

    assert len(load_round(str(out / "dataset"), "all", revision="round-0")) == len(seed)
    assert "| seed |" in printed and "| s3 (all rounds) |" in printed
    assert all(f"| {name} |" in printed for name in BASELINES)


@pytest.mark.slow
@pytest.mark.llm
def test_one_round_with_real_smollm2(tmp_path, tiny_model):
    from s3_hf.local_llm import llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed")
    from s3_hf.pipeline import S3Pipeline

    config = S3Config(
        task="imdb",
        rounds=1,
        output_dir=str(tmp_path / "run"),
        local_model="smollm2",
        small_model=tiny_model,
        seed_size=4,
        rationales_per_label=2,
        rationales_per_request=2,
        validation_size=16,
        test_size=0,
        max_errors_per_round=1,
        max_tokens=80,
        max_attempts=2,
        epochs=1.0,
        batch_size=8,
        max_concurrency=1,
    )
    results = S3Pipeline(config).run()
    rounds = results["state"]["s3"]["rounds"]
    for k in ("0", "1"):
        info = rounds[k]
        assert info["requested"] == info["accepted"] + sum(info["rejected"].values())
        assert info["usage"]["completion_tokens"] > 0
    assert rounds["0"]["requested"] == 4 and rounds["1"]["requested"] == 2 * min(1, rounds["0"]["errors"])
    assert rounds["0"]["accepted"] >= 1
    assert (Path(config.output_dir) / "dataset" / "README.md").is_file()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_two_processes_generate_once_and_train_on_both(tmp_path, tiny_model):
    import shutil
    import socket
    import subprocess

    from s3_hf.hub import load_round
    from s3_hf.s3_json import read_s3_json
    from s3_hf.testing.openai_server import FakeOpenAIServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    out = tmp_path / "run"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "OPENAI_API_KEY": "unused",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    with FakeOpenAIServer(responder=imdb_responder) as server:
        proc = subprocess.run(
            [torchrun, "--nproc_per_node", "2", "--master_port", str(port), "-m", "s3_hf.pipeline",
             "--task", "imdb", "--rounds", "1", "--output-dir", str(out), "--base-url", server.url, "--model",
             "fake-llm", "--small-model", tiny_model, "--seed-size", "10", "--rationales-per-label", "4",
             "--validation-size", "20", "--test-size", "20", "--max-errors-per-round", "4", "--epochs", "1",
             "--batch-size", "4", "--error-pool-size", "30", "--round-gate", "none"],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        stats = server.stats()
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == [f"round_{k}.{s}" for k in (0, 1) for s in ("data", "train", "publish")]
    rounds = state["s3"]["rounds"]
    # the LLM was called by the main process only: once per request (an error's 2 candidates share one call), no
    # body twice
    requests = rounds["0"]["usage"]["requests"] + rounds["1"]["usage"]["requests"]
    assert stats["calls"] == requests - rounds["1"]["errors_used"]
    assert max(stats["calls_by_digest"].values()) == 1
    # the evaluation saw every error-pool example once (gathered across the 2 processes, padding dropped)
    errors = read_s3_json(out / "errors" / "round_0.jsonl", "imdb")
    assert len(errors) == rounds["0"]["errors"] == round((1 - rounds["0"]["pool"]) * 30)
    assert len(load_round(str(out / "dataset"), "all", revision="round-1")) == sum(
        r["new_rows"] for r in rounds.values()
    )
    assert proc.stdout.count("per-round results") == 1  # the table is printed by the main process only


@pytest.mark.slow
def test_example_trainer_script_extrapolates_its_errors(tmp_path, tiny_model):
    import subprocess

    from s3_hf.s3_json import read_s3_json
    from s3_hf.testing.openai_server import FakeOpenAIServer

    script = Path(__file__).resolve().parents[1] / "examples" / "trainer_with_s3_callback.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "unused"}
    with FakeOpenAIServer(responder=imdb_responder) as server:
        proc = subprocess.run(
            [sys.executable, str(script), "--output-dir", str(tmp_path), "--small-model", tiny_model,
             "--validation-size", "30", "--max-errors", "5", "--base-url", server.url, "--model", "fake-llm"],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        calls = server.stats()["calls"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["errors"] == round((1 - summary["eval_accuracy"]) * 30)
    written = read_s3_json(tmp_path / "extrapolated.jsonl", "imdb")
    extrapolation = summary["extrapolation"]
    assert len(written) == extrapolation["accepted"] > 0
    assert extrapolation["accepted"] + sum(extrapolation["rejected"].values()) == extrapolation["requested"] <= calls
    assert summary["extrapolation"]["requested"] == min(5, summary["errors"])


def context_responder(task: str):
    """Canned answers for pair/QA prompts: a question about the delimited context (QA: a word of it as the answer)."""

    def respond(body: dict) -> str:
        from s3_hf.testing.openai_server import last_user_text

        text = last_user_text(body)
        h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        if text.startswith("Does the sentence contain the answer"):  # the LLM verifier of QNLI: a coin flip
            return json.dumps({"label": "entailment" if h % 2 else "not_entailment"})
        if text.startswith("Answer the question about the paragraph"):  # the QA verifier: the word the question names
            return json.dumps({"answer": text.split("is '")[1].split("'?")[0]})
        data = text.split("<data>\n")[1].split("\n</data>")[0]
        data = data.removeprefix("paragraph: ").split("\nquestion: ")[0]
        words = [w.strip(".,;:()\"'") for w in data.split()]
        word = next((w for w in words[h % len(words) :] + words if len(w) > 2), words[0])
        if task == "adqa":
            return json.dumps({"question": f"Which word {h % 1000} is '{word}'?", "answer": word})
        if "a new sentence in your own words" in text:  # extrapolate_context: a new sentence too
            return json.dumps({"sentence": f"A new sentence {h % 9973} on {word}.", "question": f"What of {word}?"})
        return json.dumps({"question": f"What about {word} number {h % 997}?"})

    return respond


@pytest.mark.slow
@pytest.mark.parametrize("task", ["qnli", "adqa"])
def test_pair_and_qa_tasks_keep_the_context_of_each_error(tmp_path, task):
    import tiny_setup

    from s3_hf.pipeline import S3Pipeline
    from s3_hf.s3_json import read_s3_json
    from s3_hf.testing.openai_server import FakeOpenAIServer

    models = tiny_setup.make_models(tmp_path / "models")
    with FakeOpenAIServer(responder=context_responder(task)) as server:
        config = S3Config(
            task=task, rounds=1, output_dir=str(tmp_path / "run"), base_url=server.url, model="fake-llm",
            small_model=str(models["qa" if task == "adqa" else "cls"]), seed_size=8, validation_size=16, test_size=16,
            max_errors_per_round=4, epochs=1.0, batch_size=8, max_length=192,
        )  # fmt: skip
        os.environ.setdefault("OPENAI_API_KEY", "unused")
        results = S3Pipeline(config).run()
    rounds = results["state"]["s3"]["rounds"]
    out = Path(config.output_dir)
    spec = config.spec
    seed = read_s3_json(out / "data" / "seed.jsonl", task)
    new = read_s3_json(out / "data" / "round_1.jsonl", task)
    errors = read_s3_json(out / "errors" / "round_0.jsonl", task)
    assert len(seed) == rounds["0"]["accepted"] > 0 and len(new) == rounds["1"]["accepted"] > 0
    error_contexts = {e[spec.context_field] for e in errors}
    assert all(e[spec.context_field] in error_contexts for e in new)  # each new example keeps an error's context
    if task == "adqa":
        assert all(e["context"][e["answers"]["answer_start"][0] :].startswith(e["answers"]["text"][0]) for e in new)
        assert "val f1" in results["table"]
    else:
        gold_labels = {(e["sentence"], e["label"]) for e in errors}
        assert all((e["sentence"], e["label"]) in gold_labels for e in new)  # the gold label is kept


@pytest.mark.slow
def test_kill_9_during_seed_synthesis_repeats_no_completed_call(tmp_path, tiny_model):
    import signal
    import subprocess
    import time

    from s3_hf.testing.openai_server import FakeOpenAIServer

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "unused"}
    with FakeOpenAIServer(responder=imdb_responder, latency_s=0.05) as server:
        argv = [sys.executable, "-m", "s3_hf.pipeline", "--task", "imdb", "--rounds", "0", "--output-dir", str(out),
                "--base-url", server.url, "--model", "fake-llm", "--small-model", tiny_model, "--seed-size", "40",
                "--rationales-per-label", "4", "--validation-size", "16", "--test-size", "0",
                "--max-concurrency", "2", "--stop-after", "round_0.data"]  # fmt: skip
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while server.stats()["ok"] < 16 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.5)  # calls in flight at the kill still finish on the server side
        before = server.stats()["ok"]
        assert 16 <= before < 40 and not (out / "data" / "seed.jsonl").exists()  # killed inside the stage
        rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        stats = server.stats()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == ["round_0.data"]
    # at most the calls in flight at the kill (max_concurrency=2) are sent again; every completed one was cached
    repeated = sum(n - 1 for n in stats["ok_by_digest"].values() if n > 1)
    assert repeated <= 2
    assert stats["ok"] - before == state["s3"]["rounds"]["0"]["usage"]["requests"]
    # the killed run's calls: 2 rationale requests (their result file was written: not asked again), then seed
    # calls that were cached (replayed now) or in flight at the kill (sent again)
    cached = state["s3"]["rounds"]["0"]["usage"]["cached_requests"]
    assert 2 + cached <= before <= 2 + cached + 2
    # llm_usage.json kept the killed process's paid calls (saved while it ran) as a session without an end
    sessions = json.loads((out / "llm_usage.json").read_text())["sessions"]
    assert len(sessions) == 2 and "ended_at" not in sessions[0] and "ended_at" in sessions[1]
    assert 1 <= sessions[0]["total"]["requests"] <= before  # its first reply at least (saved at most every 2 s)
    assert sessions[1]["total"]["requests"] == stats["ok"] - before


# ---------------------------------------------------------------------- review fixes: defaults, YAML, secrets, gold, usage
def test_default_token_budget_fits_each_task_before_any_llm_call():
    from s3_hf.training import default_doc_stride

    adqa = S3Config(task="adqa")  # the defaults once crashed at round_0.train (stride 128 == max_length 128)
    assert adqa.max_length == 384 and default_doc_stride(adqa.max_length) == 96
    assert S3Config(task="imdb").max_length == 128 and S3Config(task="adqa", max_length=64).max_length == 64
    with pytest.raises(S3ConfigError, match="max_length.*8"):
        S3Config(task="adqa", max_length=8)


def test_yaml_method_string_is_split_like_the_flag(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text('method: "s3 zerogen"\nbaseline_size: 10\nverifiers: llm,student\n')
    assert config_from_args(["--config", str(path)]).verifiers == ["llm", "student"]
    assert config_from_args(["--config", str(path)]).method == ["s3", "zerogen"]
    path.write_text("method: s3,zerogen\n")
    assert config_from_args(["--config", str(path)]).method == ["s3", "zerogen"]


def test_published_run_config_has_no_credentials_in_base_url():
    config = S3Config(base_url="https://user:pa55@llm.example.com:8443/v1?api-key=k3y#x", model="m")
    public = json.dumps(config.public_dict())
    assert config.public_dict()["base_url"] == "https://llm.example.com:8443/v1"
    assert "pa55" not in public and "k3y" not in public and "user" not in public
    assert config.base_url.startswith("https://user:pa55@")  # the run itself still uses it


def test_empty_gold_test_split_gives_no_score(tmp_path, monkeypatch, caplog):
    """GLUE test splits hold only label -1 rows; dropped, nothing is left: no test score on 0 rows."""
    import datasets

    import s3_hf.gold
    from s3_hf.pipeline import S3Pipeline

    spec = S3Config().spec
    rows = [{"text": f"review {i}", "label": i % 2} for i in range(6)]
    splits = {
        "validation": datasets.Dataset.from_list(rows, features=spec.features),
        "test": datasets.Dataset.from_dict({"text": [], "label": []}, features=spec.features),
    }
    monkeypatch.setattr(s3_hf.gold, "load_gold", lambda spec, source: splits)
    validation, test = S3Pipeline(S3Config(output_dir=str(tmp_path / "run"), gold="nyu-mll/glue")).gold()
    assert len(validation) == 6 and test is None
    assert "no labelled rows; skipping the test score" in caplog.text


def test_seed_same_size_usage_counts_only_its_own_calls(tmp_path):
    from fake_llm import FakeEngine

    from s3_hf.pipeline import S3Pipeline
    from s3_hf.usage import UsageTracker

    def responder(request):
        return {"text": f"A film review number {len(engine.seen)} that is long enough to keep."}

    engine = FakeEngine(responder, usage=UsageTracker(prices={}))
    engine.usage.add(stage="seed", round_index=0, model="fake", prompt_tokens=1000, completion_tokens=500)  # S3's
    config = S3Config(
        output_dir=str(tmp_path / "run"), method="seed_same_size", baseline_size=4, rationales_per_label=2
    )
    pipeline = S3Pipeline(config, engine=engine)
    pipeline._load_state()
    (pipeline.out / "rationales.json").parent.mkdir(parents=True, exist_ok=True)
    pipeline._stage_baseline_data("seed_same_size")
    usage = pipeline.state["seed_same_size"]["usage"]
    seed_calls = engine.calls["seed"]
    assert seed_calls >= 4 and usage["requests"] == seed_calls
    assert usage["prompt_tokens"] == 10 * seed_calls and usage["completion_tokens"] == 5 * seed_calls


def test_goldgen_correct_extrapolates_only_pool_rows_the_seed_model_got_right(tmp_path, monkeypatch):
    """goldgen draws random pool rows, errors or not; goldgen_correct only rows the seed model classified correctly
    (the pool minus errors/round_0.jsonl), labels alternating (the seed model's errors here all have label 0, so its
    correct rows are mostly label 1), in its own usage bucket, so S3 against it isolates the choice of errors."""
    import datasets
    from fake_llm import FakeEngine, user_prompt

    from s3_hf.pipeline import GOLDGEN_ROUNDS, S3Pipeline
    from s3_hf.s3_json import write_s3_json
    from s3_hf.usage import UsageTracker

    def responder(request):
        return {"text": f"A brand new film review, number {len(engine.seen)}, long enough to be kept as it is."}

    engine = FakeEngine(responder, usage=UsageTracker(prices={}))
    config = S3Config(
        output_dir=str(tmp_path / "run"),
        method=["s3", "goldgen", "goldgen_correct"],
        error_view="text",
        verifiers=["none"],
        examples_per_error=1,
        baseline_size=7,
    )
    pipeline = S3Pipeline(config, engine=engine)
    spec = config.spec
    pool_rows = [{"text": f"Pool review {i} of a film, in words of its own.", "label": i % 2} for i in range(12)]
    pool = datasets.Dataset.from_list(pool_rows, features=spec.features)
    monkeypatch.setattr(pipeline, "error_pool", lambda: pool)
    pipeline._load_state()
    pipeline.state["s3"]["rounds"] = {"0": {"new_rows": 4}, "1": {"errors_used": 3, "new_rows": 6}}
    seed = [{"text": f"Seed review {i}, as the seed stage wrote it.", "label": i % 2} for i in range(4)]
    write_s3_json(pipeline.data_path(0), seed, spec)
    errors = [row for row in pool_rows[:9] if row["label"] == 0]  # the seed model's errors: all of label 0
    wrong = {row["text"] for row in errors}
    write_s3_json(pipeline.errors_path(0), errors, spec)

    def shown(name):
        texts = {row["text"] for row in pool_rows}
        calls = [(stage, rnd, user_prompt(r)) for stage, rnd, r in engine.seen if stage == name]
        assert calls and all(rnd == GOLDGEN_ROUNDS[name] for _, rnd, _ in calls)
        return {text for text in texts if any(text in prompt for _, _, prompt in calls)}

    pipeline._stage_baseline_data("goldgen_correct")
    correct_shown = shown("goldgen_correct")
    assert correct_shown and not correct_shown & wrong
    assert pool_rows[10]["text"] in correct_shown  # the one correct row of label 0 is drawn first, not left last
    usage = pipeline.state["goldgen_correct"]["usage"]
    assert usage["requests"] == engine.calls["goldgen_correct"] and pipeline.state["goldgen_correct"]["new_rows"] == 7
    pipeline._stage_baseline_data("goldgen")
    assert shown("goldgen") & wrong  # random pool rows: errors among them
    assert pipeline.state["goldgen"]["usage"]["requests"] == engine.calls["goldgen"]


def test_llm_usage_json_accumulates_over_resumed_runs(tmp_path):
    from s3_hf.usage import UsageRecord, UsageTracker

    path = tmp_path / "run" / "llm_usage.json"
    path.parent.mkdir()
    for session in range(2):
        tracker = UsageTracker(prices={})
        tracker.add(stage="seed", round_index=0, model="m", prompt_tokens=100, completion_tokens=10)
        tracker.add(stage="extrapolate", round_index=session + 1, model="m", prompt_tokens=7, completion_tokens=3)
        UsageRecord(path).save(tracker, ended=True)
    saved = json.loads(path.read_text())
    assert len(saved["sessions"]) == 2
    assert saved["total"]["requests"] == 4 and saved["total"]["prompt_tokens"] == 214
    assert saved["by_stage"]["seed"]["completion_tokens"] == 20
    assert {k: v["prompt_tokens"] for k, v in saved["by_round"].items()} == {"0": 200, "1": 7, "2": 7}
    assert [r["requests"] for r in saved["rows"] if r["stage"] == "seed"] == [2]  # one row per (stage, round, model)


def test_usage_record_keeps_a_killed_sessions_calls(tmp_path, monkeypatch):
    """Saved while the process runs (at most every min_interval_s), so a process that never reaches close() leaves
    its paid calls counted up to its last save; the next process adds its own session beside it."""
    from s3_hf import usage as usage_module
    from s3_hf.usage import UsageRecord, UsageTracker

    clock = [100.0]
    monkeypatch.setattr(usage_module.time, "monotonic", lambda: clock[0])
    path = tmp_path / "llm_usage.json"
    killed, tracker = UsageRecord(path, min_interval_s=5), UsageTracker(prices={})
    killed.watch(tracker)
    tracker.add(stage="seed", round_index=0, model="m", prompt_tokens=10, completion_tokens=1)  # saved (first)
    tracker.add(stage="seed", round_index=0, model="m", prompt_tokens=10, completion_tokens=1)  # within 5 s: not
    assert json.loads(path.read_text())["total"]["requests"] == 1
    clock[0] += 5
    tracker.add(stage="seed", round_index=0, model="m", prompt_tokens=10, completion_tokens=1, cached=True)
    saved = json.loads(path.read_text())
    assert saved["total"]["requests"] == 2 and saved["total"]["cached_requests"] == 1
    assert "saved_at" in saved["sessions"][0] and "ended_at" not in saved["sessions"][0]
    # killed here: no ended save; the resumed process replays and pays one more call
    resumed, tracker = UsageRecord(path, min_interval_s=5), UsageTracker(prices={})
    resumed.watch(tracker)
    tracker.add(stage="seed", round_index=0, model="m", prompt_tokens=10, completion_tokens=1)
    resumed.save(tracker, ended=True)
    saved = json.loads(path.read_text())
    assert [("ended_at" in one, one["total"]["requests"]) for one in saved["sessions"]] == [(False, 2), (True, 1)]
    assert saved["total"]["requests"] == 3 and saved["total"]["prompt_tokens"] == 30
    # an unreadable file is moved aside (nothing lost), and the record starts again
    path.write_text('{"rows": [')
    UsageRecord(path).save(tracker, ended=True)
    assert [p.read_text() for p in tmp_path.glob("llm_usage.json.unreadable-*")] == ['{"rows": [']
    assert len(json.loads(path.read_text())["sessions"]) == 1


def test_local_gold_counts_by_content(tmp_path, monkeypatch):
    """A gold file named by another path spelling is the same run; edited gold data is not."""
    from s3_hf.pipeline import S3Pipeline

    gold = tmp_path / "gold" / "rte.jsonl"
    gold.parent.mkdir()
    gold.write_text('{"premise": "A cat sat.", "hypothesis": "A cat.", "label": 0}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    def config(path: str) -> S3Config:
        return S3Config(task="rte", gold=path, context_pool=path, output_dir=str(tmp_path / "run"))

    relative, absolute = config("gold/rte.jsonl"), config(str(gold))
    assert relative.data_fingerprint() == absolute.data_fingerprint()
    folder = config(str(gold.parent))
    before = folder.data_fingerprint()

    pipeline = S3Pipeline(relative)
    pipeline._load_state()
    (tmp_path / "run").mkdir(exist_ok=True)
    pipeline.state_path.write_text(json.dumps(pipeline.state), encoding="utf-8")
    S3Pipeline(absolute)._load_state()  # the same data by another path: resumes

    gold.write_text('{"premise": "A dog ran.", "hypothesis": "A dog.", "label": 0}\n', encoding="utf-8")
    assert folder.data_fingerprint() != before
    with pytest.raises(S3ConfigError, match="another configuration"):
        S3Pipeline(config(str(gold)))._load_state()


@pytest.mark.slow
def test_extrapolate_context_writes_new_contexts_and_best_epoch_selection(tmp_path):
    """--extrapolate-context: no new example keeps a gold context; --load-best-model-at-end: every method picks its
    epoch on the error pool, the pool errors are those of the chosen epoch, and no checkpoint is left behind."""
    import tiny_setup

    from s3_hf.pipeline import S3Pipeline
    from s3_hf.s3_json import read_s3_json
    from s3_hf.testing.openai_server import FakeOpenAIServer

    models = tiny_setup.make_models(tmp_path / "models")
    with FakeOpenAIServer(responder=context_responder("qnli")) as server:
        config = S3Config(
            task="qnli", rounds=1, output_dir=str(tmp_path / "run"), base_url=server.url, model="fake-llm",
            small_model=str(models["cls"]), seed_size=8, validation_size=16, test_size=16, error_pool_size=24,
            max_errors_per_round=4, epochs=3.0, batch_size=8, extrapolate_context=True, load_best_model_at_end=True,
            method=["s3", "zerogen"],
        )  # fmt: skip
        os.environ.setdefault("OPENAI_API_KEY", "unused")
        results = S3Pipeline(config).run()
    state = results["state"]
    out = Path(config.output_dir)
    errors = read_s3_json(out / "errors" / "round_0.jsonl", "qnli")
    new = read_s3_json(out / "data" / "round_1.jsonl", "qnli")
    assert new and all(e["sentence"].startswith("A new sentence") for e in new)
    assert not {e["sentence"] for e in new} & {e["sentence"] for e in errors}
    for record in (state["s3"]["rounds"]["0"], state["s3"]["rounds"]["1"], state["zerogen"]):
        assert record["best_epoch"] in (2.0, 3.0)
        # the pool's score after each epoch from select_from_epoch (2) on is kept, and the chosen epoch is the first
        # with the best of them
        scores = dict(map(tuple, record["pool_by_epoch"]))
        assert sorted(scores) == [2.0, 3.0]
        assert record["best_epoch"] == min(e for e, v in scores.items() if v == max(scores.values()))
    first = state["s3"]["rounds"]["0"]
    assert len(errors) == first["errors"] == round(first["pool_size"] * (1 - first["pool"]))
    assert not list(out.rglob("checkpoint-*"))


@pytest.mark.parametrize(
    "scores, final_round, gate",
    [
        ((0.70, 0.60, 0.75), 2, "validation"),
        ((0.70, 0.80, 0.75), 1, "validation"),
        ((0.70, 0.70, 0.75), 2, "validation"),  # a tie is no gain: round 1 is set aside
        ((0.70, 0.70, 0.65), 1, "validation_or_tie"),  # the older rule keeps the tie, sets aside round 2's fall
    ],
)
def test_round_gate_sets_aside_a_round_that_does_not_gain_on_validation(
    tmp_path, monkeypatch, scores, final_round, gate
):
    """round_gate='validation': a round that does not beat the best kept round on validation (a tie included) leaves
    training, the 'all' config and the error source; the final model is the last kept round's. 'validation_or_tie'
    keeps a tie."""
    from fake_llm import FakeEngine, user_prompt

    from s3_hf.pipeline import S3Pipeline
    from s3_hf.s3_json import write_s3_json

    engine = FakeEngine(lambda request: imdb_fake_reply(request, len(engine.seen)))
    validation = iter(scores)
    trained: dict[int, list[dict]] = {}

    def fake_train(self, examples, run_dir, errors_path=None, *, save_to=None):
        k = int(run_dir.name.split("_")[1])
        trained[k] = list(examples)
        errors = [
            {"text": f"Gold review {k}-{i}, which the round {k} model got wrong, glowing or not.", "label": i % 2}
            for i in range(4)
        ]
        write_s3_json(errors_path, errors, self.spec)
        if save_to is not None:
            save_to.mkdir(parents=True, exist_ok=True)
            (save_to / "round.txt").write_text(str(k))
        return {"train_rows": len(examples), "validation": next(validation), "test": 0.5, "errors": 4}

    monkeypatch.setattr(S3Pipeline, "_train_and_evaluate", fake_train)
    config = S3Config(
        output_dir=str(tmp_path / "run"), seed_size=4, rationales_per_label=6, max_errors_per_round=4,
        examples_per_error=1, rounds=2, round_gate=gate,
    )  # fmt: skip
    results = S3Pipeline(config, engine=engine).run()
    rounds = results["state"]["s3"]["rounds"]
    set_aside = 3 - final_round  # the round whose validation fell
    assert [rounds[str(k)].get("round_kept", True) for k in range(3)] == [k != set_aside for k in range(3)]
    rows = {k: len((tmp_path / "run" / "data" / name).read_text().splitlines())
            for k, name in enumerate(["seed.jsonl", "round_1.jsonl", "round_2.jsonl"])}  # fmt: skip
    if set_aside == 1:
        # round 2 trains without round 1's rows and extrapolates the seed model's errors
        assert len(trained[2]) == rows[0] + rows[2] and rounds["2"]["errors_from"] == 0
        round_2_prompts = [user_prompt(r) for stage, k, r in engine.seen if stage == "extrapolate" and k == 2]
        assert round_2_prompts and all("Gold review 0-" in p for p in round_2_prompts)
    else:
        assert len(trained[2]) == rows[0] + rows[1] + rows[2] and rounds["2"]["errors_from"] == 1
    assert (tmp_path / "run" / "s3" / "final_model" / "round.txt").read_text() == str(final_round)
    assert f"| {set_aside} (set aside) |" in results["table"]
    # the published 'all' config of the last round holds the kept rounds' rows only
    import datasets

    all_rows = datasets.load_dataset("parquet", data_files=str(tmp_path / "run" / "dataset" / "all" / "*.parquet"))
    assert all_rows["train"].num_rows == sum(n for k, n in rows.items() if k != set_aside)
    # S3's size for the baselines: the kept rows
    resumed = S3Pipeline(config, engine=engine)
    resumed._load_state()
    assert resumed._baseline_size() == all_rows["train"].num_rows


def test_seed_prompt_zerogen_shares_the_seed_requests_with_the_zerogen_baseline(tmp_path, monkeypatch):
    """seed_prompt='zerogen': S3's seed is written with ZeroGen's plain prompt (no rationale requests), and the zerogen
    baseline's first requests are the seed's (same cache keys), so the two differ only in what follows the seed."""
    from fake_llm import FakeEngine, user_prompt

    from s3_hf.pipeline import S3Pipeline
    from s3_hf.s3_json import write_s3_json

    def fake_train(self, examples, run_dir, errors_path=None, *, save_to=None):
        if errors_path is not None:
            errors = [{"text": f"Gold review {i}, which the model got wrong, glowing or not.", "label": i % 2}
                      for i in range(4)]  # fmt: skip
            write_s3_json(errors_path, errors, self.spec)
        return {"train_rows": len(examples), "validation": 0.5, "test": 0.5, "errors": 4}

    monkeypatch.setattr(S3Pipeline, "_train_and_evaluate", fake_train)
    keys = {}
    for seed_prompt in ("task", "zerogen"):
        engine = FakeEngine(None)
        engine.responder = lambda request, seen=engine.seen: imdb_fake_reply(request, len(seen))
        config = S3Config(
            output_dir=str(tmp_path / seed_prompt), seed_size=4, rationales_per_label=6, max_errors_per_round=4,
            examples_per_error=1, rounds=1, method=["s3", "zerogen"], seed_prompt=seed_prompt,
            round_gate="none",  # the fake training scores every round 0.5: a tie the gate would set aside
        )  # fmt: skip
        S3Pipeline(config, engine=engine).run()
        keys[seed_prompt] = {stage: [r.key for s, _, r in engine.seen if s == stage] for stage in ("seed", "zerogen")}
        prompts = [user_prompt(r) for s, _, r in engine.seen if s == "seed"]
        rationale_calls = sum(s == "rationales" for s, _, _ in engine.seen)
        if seed_prompt == "zerogen":
            assert rationale_calls == 0
            assert all(
                p.startswith(("Write a positive movie review.", "Write a negative movie review.")) for p in prompts
            )
        else:
            assert rationale_calls > 0 and not any(p.startswith("Write a positive movie review.") for p in prompts)
    shared = keys["zerogen"]
    assert (
        len(shared["seed"]) == 4 and shared["zerogen"][:4] == shared["seed"]
    )  # replayed from the cache in a real run
    assert not set(map(str, keys["task"]["seed"])) & set(map(str, keys["task"]["zerogen"]))
    assert S3Config(seed_prompt="zerogen").data_fingerprint() != S3Config().data_fingerprint()


def test_select_from_epoch_is_validated_and_keeps_earlier_fingerprints(monkeypatch):
    """select_from_epoch must be a positive integer (the error names the field and value); 1 (every epoch scored,
    as before the field) leaves the data fingerprint as it was, the default (2) changes it."""
    for bad in (0, -1, 1.5, True):
        with pytest.raises(
            S3ConfigError, match=rf"S3Config.select_from_epoch must be a positive integer, got {bad!r}"
        ):
            S3Config(select_from_epoch=bad)
    every_epoch = S3Config(select_from_epoch=1)
    fingerprint = every_epoch.data_fingerprint()
    assert S3Config().select_from_epoch == 2 and S3Config().data_fingerprint() != fingerprint
    to_dict = S3Config.to_dict
    monkeypatch.setattr(
        S3Config, "to_dict", lambda self: {k: v for k, v in to_dict(self).items() if k != "select_from_epoch"}
    )
    assert every_epoch.data_fingerprint() == fingerprint  # as before the field existed


def test_run_help_lists_every_field(capsys):
    """`s3-hf run --help` prints every S3Config field's flag (argparse %-formats help strings: a stray '%' in one
    made --help raise a TypeError)."""
    import dataclasses

    with pytest.raises(SystemExit) as exit_info:
        config_from_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(S3Config):
        assert f"--{f.name.replace('_', '-')}" in out, f.name


def test_selection_arguments_score_the_pool_from_select_from_epoch():
    """The Trainer scores the pool once eval_delay <= state.epoch: the default skips epoch 1, a run shorter than
    select_from_epoch still scores its last epoch, and without model selection nothing is scored."""
    from transformers import TrainingArguments

    from s3_hf.pipeline import selection_arguments

    assert selection_arguments(S3Config(), "accuracy")["eval_delay"] == 2.0
    assert selection_arguments(S3Config(select_from_epoch=1), "accuracy")["eval_delay"] == 1.0
    assert selection_arguments(S3Config(epochs=1.0), "accuracy")["eval_delay"] == 1.0
    assert selection_arguments(S3Config(load_best_model_at_end=False), "accuracy") == dict(
        eval_strategy="no", save_strategy="no"
    )
    args = TrainingArguments("unused", use_cpu=True, **selection_arguments(S3Config(), "f1"))
    assert args.eval_delay == 2.0 and args.metric_for_best_model == "f1" and args.load_best_model_at_end


def test_error_view_description_round_end_to_end(tmp_path):
    """--error-view description: round 1 asks one description per error, then writes its rows from the
    descriptions alone (no gold review reaches a candidate prompt); the round counts both kinds of request."""
    import tiny_setup

    from s3_hf.pipeline import S3Pipeline
    from s3_hf.s3_json import read_s3_json
    from s3_hf.testing.openai_server import FakeOpenAIServer, last_user_text

    seen: list[str] = []

    def responder(body: dict) -> str:
        text = last_user_text(body)
        seen.append(text)
        if "In one or two sentences, say what kind of movie" in text:
            tone = "dull" if "Here is a negative" in text else "wonderful"
            return json.dumps({"summary": f"A {tone} film with a {tone} cast, described in own words {len(seen)}."})
        return imdb_responder(body)

    models = tiny_setup.make_models(tmp_path / "models")
    with FakeOpenAIServer(responder=responder) as server:
        config = S3Config(
            task="imdb", rounds=1, output_dir=str(tmp_path / "run"), base_url=server.url, model="fake-llm",
            small_model=str(models["cls"]), seed_size=8, validation_size=16, test_size=16, error_pool_size=24,
            max_errors_per_round=4, examples_per_error=2, epochs=1.0, batch_size=8, verifiers=[],
            error_view="description", round_gate="none",  # the tiny model's round ties the seed on validation
        )  # fmt: skip
        os.environ.setdefault("OPENAI_API_KEY", "unused")
        state = S3Pipeline(config).run()["state"]
    out = Path(config.output_dir)
    errors = read_s3_json(out / "errors" / "round_0.jsonl", "imdb")
    described = [t for t in seen if "was described like this" in t]
    assert len(errors) >= 4 and len(described) == 8  # k=2 per error, 4 errors
    assert not any(e["text"][:40] in t for e in errors for t in described)
    record = state["s3"]["rounds"]["1"]
    assert record["described"] == 4 and record["requested"] == 8
    assert record["accepted"] == len(read_s3_json(out / "data" / "round_1.jsonl", "imdb"))
    table = (out / "report.md").read_text()
    assert "8 + 4 descriptions" in table
    # the round's data-stage seconds per new row, the figure issue 14's extrapolation target compares with the seed's
    per_row = round(record["seconds_data"] / record["accepted"], 2)
    header = next(line for line in table.splitlines() if line.startswith("| round |")).split(" | ")
    round_1 = next(line for line in table.splitlines() if line.startswith("| 1 |")).split(" | ")
    assert float(round_1[header.index("s / new row")]) == per_row > 0
