"""Verification of extrapolated candidates, k candidates per error, contrastive prompts and the error pool."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
from fake_llm import FakeEngine, user_prompt

from s3_hf.errors import S3ConfigError
from s3_hf.extrapolation import ErrorExtrapolator
from s3_hf.pipeline import S3Config
from s3_hf.verification import (
    LLMLabelVerifier,
    StudentLabelVerifier,
    Verdict,
    apply_verifiers,
    label_probabilities,
)

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

POSITIVE_REVIEW = "A wonderful, moving film with superb acting and a gripping story from start to end."
NEGATIVE_REVIEW = "A dull and tedious film; the acting is awful and the story lifeless from start to end."
IMDB_ERRORS = [
    {"text": POSITIVE_REVIEW + " I loved every minute of it.", "label": 1},
    {"text": NEGATIVE_REVIEW + " I hated every minute of it.", "label": 0},
]
POOL = [
    {"text": "A superb, moving film that I loved.", "label": 1},
    {"text": "A tedious film with awful acting; I hated it.", "label": 0},
    {"text": "Dull, lifeless and awful from start to end.", "label": 0},
]


def sentiment_of(text: str) -> str:
    good = sum(w in text for w in ("wonderful", "superb", "moving", "loved", "gripping"))
    bad = sum(w in text for w in ("dull", "tedious", "awful", "hated", "lifeless"))
    return "positive" if good >= bad else "negative"


def imdb_responder(request):
    """Extrapolation: a review whose sentiment is right for even samples and flipped for odd ones; verification:
    the label by the review's words."""
    prompt = user_prompt(request)
    if prompt.startswith("Is the movie review below"):
        return {"label": sentiment_of(prompt.split("<data>")[1])}
    asked = "positive" if "different positive movie review" in prompt else "negative"
    flip = request.meta["sample"] % 2 == 1
    positive = (asked == "positive") != flip
    body = "wonderful and superb, I loved it" if positive else "dull and awful, I hated it"
    return {"text": f"Candidate {request.meta['sample']} for {request.meta['error'][:6]}: {body}."}


# ---------------------------------------------------------------------- label probabilities
def test_label_probabilities_from_first_token_alternatives():
    probs = label_probabilities([{"pos": -0.1, "neg": -2.4, "the": -5.0}], ("negative", "positive"))
    assert probs["positive"] > 0.9 and abs(sum(probs.values()) - 1) < 1e-9
    # a token that starts two labels says nothing; no label-starting token at all: None (fall back to the answer)
    assert label_probabilities([{"n": -0.1, "x": -1.0}], ("negative", "not_entailment")) is None
    assert label_probabilities([{"ent": -0.3, "not": -1.5}], ("entailment", "not_entailment"))["entailment"] > 0.7
    assert label_probabilities(None, ("a", "b")) is None and label_probabilities([], ("a", "b")) is None


def test_batch_calibration_takes_out_a_verifier_biased_to_one_label():
    """The 0.5B model answers 'entailment' to nearly every QNLI pair (benchmarks/verifier_precision.py): p(entailment)
    above 0.5 for every candidate, only higher for the right ones. Uncalibrated it keeps every entailment candidate
    and drops every other; batch-calibrated it keeps the candidates whose label is right, of both labels."""
    from types import SimpleNamespace

    class BiasedEngine:
        def __init__(self, table=None):
            self.table = table or {"Zanzibar": 0.75}  # marker in the question -> p(entailment); else 0.6

        def generate(self, requests, **kwargs):
            out = []
            for request in requests:
                prompt = user_prompt(request)
                p = next((v for marker, v in self.table.items() if marker in prompt), 0.6)
                alternatives = {"ent": math.log(p), "not": math.log(1 - p)}
                out.append(SimpleNamespace(example={"label": 0}, reason=None, logprobs=[alternatives]))
            return out

    def pair(i: int, answers: bool, label: int) -> dict:
        question = f"Question {i}: where is Zanzibar?" if answers else f"Question {i}: what is unrelated?"
        return {"question": question, "sentence": f"Sentence {i} of the paragraph.", "label": label}

    right = [pair(i, i % 2 == 0, 0 if i % 2 == 0 else 1) for i in range(10)]  # label 0 = entailment
    flipped = [{**c, "label": 1 - c["label"]} for c in right]
    plain = LLMLabelVerifier("qnli", BiasedEngine())
    assert [v.keep for v in plain.verdicts(right)] == [c["label"] == 0 for c in right]
    assert [v.keep for v in plain.verdicts(flipped)] == [c["label"] == 0 for c in flipped]
    calibrated = LLMLabelVerifier("qnli", BiasedEngine(), calibration="batch")
    assert all(v.keep for v in calibrated.verdicts(right))
    assert not any(v.keep for v in calibrated.verdicts(flipped))
    # too few candidates for a mean: decided as given
    assert [v.keep for v in calibrated.verdicts(right[:3])] == [c["label"] == 0 for c in right[:3]]
    # a label-unbalanced batch of right labels and a confident verifier: ten entailment candidates (one weaker, p 0.7)
    # and two not_entailment ones; the label mix is not a bias, so the weaker one is kept (a plain batch mean, 0.77,
    # would put it at p 0.41 and drop it)
    table = {"Strong": 0.9, "Weak": 0.7, "Other": 0.1}
    unbalanced = [
        {"question": f"{kind} question {i}?", "sentence": f"Sentence {i}.", "label": label}
        for i, (kind, label) in enumerate([("Strong", 0)] * 9 + [("Weak", 0)] + [("Other", 1)] * 2)
    ]
    verdicts = LLMLabelVerifier("qnli", BiasedEngine(table), calibration="batch").verdicts(unbalanced)
    assert all(v.keep for v in verdicts) and 0.7 < verdicts[9].score < 0.75
    with pytest.raises(S3ConfigError, match="calibration.*'platt'"):
        LLMLabelVerifier("qnli", BiasedEngine(), calibration="platt")
    with pytest.raises(S3ConfigError, match="verify_calibration.*'platt'"):
        S3Config(verify_calibration="platt")


# ---------------------------------------------------------------------- k candidates + the LLM verifier
def test_k_candidates_per_error_share_a_prompt_and_wrong_labels_are_dropped():
    engine = FakeEngine(imdb_responder)
    verifier = LLMLabelVerifier("imdb", engine)
    outcome = ErrorExtrapolator("imdb", engine, examples_per_error=4, verifiers=[verifier]).extrapolate(IMDB_ERRORS)
    extrapolations = [r for stage, _, r in engine.seen if stage == "extrapolate"]
    assert len(extrapolations) == 8 and outcome.requested == 8
    # the 4 candidates of one error: one prompt, one affinity (one KV cache on a local server), 4 cache keys
    first = [r for r in extrapolations if r.meta["error"] == extrapolations[0].meta["error"]]
    assert len({json.dumps(r.messages) for r in first}) == 1 and len({r.affinity for r in first}) == 1
    assert len({json.dumps(r.key, sort_keys=True) for r in first}) == 4
    # odd samples carry the wrong sentiment: the verifier drops exactly those
    assert outcome.accepted == 4 and outcome.rejected["verifier_llm"] == 4
    assert all(sentiment_of(e["text"]) == ("positive" if e["label"] == 1 else "negative") for e in outcome.examples)
    assert outcome.verification == {"llm": {"checked": 8, "kept": 4, "dropped": 4}}
    assert outcome.requested == outcome.accepted + sum(outcome.rejected.values())
    verify_requests = [r for stage, _, r in engine.seen if stage == "verify"]
    assert len(verify_requests) == 8 and all(r.temperature == 0.0 and r.logprobs for r in verify_requests)


def test_keep_per_error_caps_verified_candidates():
    engine = FakeEngine(imdb_responder)
    extrapolator = ErrorExtrapolator("imdb", engine, examples_per_error=4, keep_per_error=1)
    outcome = extrapolator.extrapolate(IMDB_ERRORS)
    assert outcome.accepted == 2 and outcome.rejected["over_keep_per_error"] == 6


def test_contrast_prompt_shows_the_nearest_correct_example_of_the_other_label():
    engine = FakeEngine(imdb_responder)
    extrapolator = ErrorExtrapolator("imdb", engine, contrast_pool=POOL)
    assert extrapolator.neighbour(IMDB_ERRORS[0]) == POOL[1]  # the negative pool review most like the error
    assert extrapolator.neighbour(IMDB_ERRORS[1]) == POOL[0]
    extrapolator.extrapolate(IMDB_ERRORS)
    prompt = user_prompt(engine.seen[0][2])
    assert "got review B right: B is negative" in prompt and POOL[1]["text"] in prompt and "I loved every" in prompt
    assert prompt.index("<data>") < prompt.index("Answer as JSON")  # the instruction comes last
    plain = FakeEngine(imdb_responder)
    ErrorExtrapolator("imdb", plain).extrapolate(IMDB_ERRORS)
    assert "review B" not in user_prompt(plain.seen[0][2])


def test_long_gold_texts_are_cut_at_a_sentence_in_the_prompt():
    long_review = " ".join(f"Sentence number {i} says the film was dull." for i in range(60))
    engine = FakeEngine(imdb_responder)
    ErrorExtrapolator("imdb", engine, max_example_chars=300).extrapolate([{"text": long_review, "label": 0}])
    shown = user_prompt(engine.seen[0][2]).split("<data>\n")[1].split("\n</data>")[0]
    assert len(shown) <= 305 and shown.endswith("dull. ...")


def test_llm_verifier_through_the_real_engine_with_and_without_logprobs(tmp_path):
    from s3_hf.llm_engine import LLMConfig, LLMEngine
    from s3_hf.testing.openai_server import FakeOpenAIServer, last_user_text

    def responder(body):
        return json.dumps({"label": sentiment_of(last_user_text(body).split("<data>")[1])})

    candidates = [{"text": POSITIVE_REVIEW, "label": 1}, {"text": NEGATIVE_REVIEW, "label": 1}]
    for logprobs, reject_format in ((True, False), (False, True)):
        cache = tmp_path / f"cache-{logprobs}"
        with FakeOpenAIServer(responder=responder, logprobs=logprobs, reject_response_format=reject_format) as server:
            config = LLMConfig(base_url=server.url, model="fake", cache_dir=str(cache), progress=False)
            with LLMEngine(config) as engine:
                verdicts = LLMLabelVerifier("imdb", engine).verdicts(candidates)
            calls = server.stats()["calls"]
            with LLMEngine(config) as engine:  # a resumed run: every verdict replays from the cache
                again = LLMLabelVerifier("imdb", engine).verdicts(candidates)
            assert server.stats()["calls"] == calls
        assert [v.keep for v in verdicts] == [True, False] and again == verdicts
        if logprobs:  # p(positive) from the first answer token's alternatives
            assert verdicts[0].score > 0.99 and verdicts[1].score < 0.01
            body = server.log[-1]["body"]
            assert body["logprobs"] is True and body["top_logprobs"] == 5
        else:  # no logprobs, no JSON mode: the answered label decides
            assert verdicts[0].score is None


def test_qa_round_trip_verifier_keeps_consistent_answers():
    def responder(request):
        return {"answer": "1889"}

    engine = FakeEngine(responder)
    context = "The Eiffel Tower was finished in 1889 in Paris."
    make = lambda answer: {  # noqa: E731
        "id": "q", "context": context, "question": "When was it finished?",
        "answers": {"text": [answer], "answer_start": [context.index(answer)]},
    }  # fmt: skip
    verdicts = LLMLabelVerifier("adqa", engine).verdicts([make("1889"), make("Paris")])
    assert [v.keep for v in verdicts] == [True, False] and verdicts[0].score == 1.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import tiny_setup

    return str(tiny_setup.make_models(tmp_path_factory.mktemp("verification_models"))["cls"])


def test_student_verifier_and_hard_selection_are_complementary(tiny_model):
    candidates = [{"text": t, "label": label} for t in (POSITIVE_REVIEW, NEGATIVE_REVIEW) for label in (0, 1)]
    agree = StudentLabelVerifier("imdb", tiny_model, threshold=0.5)
    hard = StudentLabelVerifier("imdb", tiny_model, mode="hard")
    probabilities = agree.probabilities(candidates)
    assert probabilities.shape == (4, 2)
    agreed = [v.keep for v in agree.verdicts(candidates)]
    wrong = [v.keep for v in hard.verdicts(candidates)]
    for c, row, a, w in zip(candidates, probabilities, agreed, wrong):
        assert a == (row[c["label"]] >= 0.5) and w == (int(row.argmax()) != c["label"])
    keep, stats = apply_verifiers(candidates, [agree, hard])
    assert stats["student"]["checked"] == 4 and stats["hard"]["checked"] == sum(agreed)
    assert keep == [a and w for a, w in zip(agreed, wrong)]
    with pytest.raises(S3ConfigError, match="classification"):
        StudentLabelVerifier("adqa", tiny_model)


class ScriptedVerifier:
    """Keeps the candidates whose text contains one of ``keeps``; records what it was shown."""

    def __init__(self, name, keeps, *, is_selection=False):
        self.name, self.keeps, self.is_selection, self.seen = name, keeps, is_selection, []

    def verdicts(self, candidates, *, round_index=0):
        self.seen.append([c["text"] for c in candidates])
        return [Verdict(any(k in c["text"] for k in self.keeps)) for c in candidates]


def test_any_mode_is_a_cascade_that_asks_the_next_verifier_only_about_doubted_candidates():
    candidates = [{"text": t, "label": 0} for t in ("a", "b", "c", "d", "e")]
    first, second = ScriptedVerifier("student", "ab"), ScriptedVerifier("llm", "cd")
    keep, stats = apply_verifiers(candidates, [first, second], mode="any")
    assert keep == [True, True, True, True, False]
    assert first.seen == [["a", "b", "c", "d", "e"]] and second.seen == [["c", "d", "e"]]
    # only the last verifier drops; the first one's doubts are deferred, not dropped
    assert stats == {
        "student": {"checked": 5, "kept": 2, "dropped": 0, "deferred": 3},
        "llm": {"checked": 3, "kept": 2, "dropped": 1},
    }
    # "all" (the default) on the same verifiers: both must keep a candidate
    first.seen, second.seen = [], []
    keep, stats = apply_verifiers(candidates, [ScriptedVerifier("student", "abc"), second])
    assert keep == [False, False, True, False, False] and second.seen == [["a", "b", "c"]]
    # a selection is not part of the cascade: it applies to what the verifiers kept, in either mode
    hard = ScriptedVerifier("hard", "bce", is_selection=True)
    keep, stats = apply_verifiers(candidates, [first, second, hard], mode="any")
    assert keep == [False, True, True, False, False] and hard.seen == [["a", "b", "c", "d"]]
    assert stats["hard"] == {"checked": 4, "kept": 2, "dropped": 2}
    with pytest.raises(S3ConfigError, match="mode.*'either'"):
        apply_verifiers(candidates, [first], mode="either")


def test_any_mode_extrapolator_counts_only_final_drops():
    engine = FakeEngine(imdb_responder)
    # a "student" that doubts every candidate: the LLM decides them all, and drops the wrong ones
    student = ScriptedVerifier("student", ())
    outcome = ErrorExtrapolator(
        "imdb", engine, examples_per_error=4, verifiers=[student, LLMLabelVerifier("imdb", engine)], verify_mode="any"
    ).extrapolate(IMDB_ERRORS)
    assert outcome.verification["student"] == {"checked": 8, "kept": 0, "dropped": 0, "deferred": 8}
    assert outcome.verification["llm"] == {"checked": 8, "kept": 4, "dropped": 4}
    assert dict(outcome.rejected) == {"verifier_llm": 4}
    assert outcome.requested == outcome.accepted + sum(outcome.rejected.values())
    with pytest.raises(S3ConfigError, match="verify_mode.*'some'"):
        ErrorExtrapolator("imdb", engine, verify_mode="some")


def test_a_cascaded_llm_verifier_decides_uncalibrated(tmp_path):
    """What reaches a later verifier is what the earlier ones doubted, not a sample of the round's candidates."""
    from s3_hf.pipeline import S3Pipeline

    def calibrations(**fields):
        pipeline = S3Pipeline(S3Config(output_dir=str(tmp_path / "run"), **fields))
        pipeline._engine = FakeEngine(imdb_responder)  # no server: the verifiers are only built
        return {v.name: getattr(v, "calibration", None) for v in pipeline._verifiers(0)}

    assert calibrations(verifiers=["student", "llm"], verify_mode="any") == {"student": None, "llm": "none"}
    assert calibrations(verifiers=["llm", "student"], verify_mode="any") == {"llm": "batch", "student": None}
    assert calibrations(verifiers=["student", "llm"]) == {"student": None, "llm": "batch"}


# ---------------------------------------------------------------------- config and the error pool
def test_config_errors_name_the_field():
    with pytest.raises(S3ConfigError, match="examples_per_error.*0"):
        S3Config(examples_per_error=0)
    with pytest.raises(S3ConfigError, match="error_pool must not be the test split.*'test'"):
        S3Config(error_pool="test")
    with pytest.raises(S3ConfigError, match=r"verifiers must be.*\['magic'\]"):
        S3Config(verifiers=["magic"])
    with pytest.raises(S3ConfigError, match="verifiers 'student' and select_hard.*adqa"):
        S3Config(task="adqa", verifiers=["student"])
    with pytest.raises(S3ConfigError, match="verify_threshold.*1.5"):
        S3Config(verify_threshold=1.5)
    with pytest.raises(S3ConfigError, match="keep_per_error.*0"):
        S3Config(keep_per_error=0)
    with pytest.raises(S3ConfigError, match="verify_mode.*'some'"):
        S3Config(verify_mode="some")
    with pytest.raises(S3ConfigError, match=r"verify_mode 'any'.*at least two.*\['llm'\]"):
        S3Config(verifiers=["llm"], verify_mode="any")
    cascade = S3Config(verifiers=["student", "llm"], verify_mode="any")
    assert cascade.data_fingerprint() != S3Config(verifiers=["student", "llm"]).data_fingerprint()
    with pytest.raises(S3ConfigError, match=r"verifiers must be.*\['auto', 'llm'\]"):
        S3Config(verifiers=["auto", "llm"])
    # 'auto' (the default): the cascade where the small model can judge a label, the LLM alone elsewhere
    assert (S3Config(task="imdb").verifiers, S3Config(task="imdb").verify_mode) == (["student", "llm"], "any")
    for task in ("qnli", "rte", "adqa"):
        assert (S3Config(task=task).verifiers, S3Config(task=task).verify_mode) == (["llm"], "all")
    assert S3Config(verifiers=["student", "llm"]).verify_mode == "all"  # named verifiers: each must pass
    assert S3Config(task="imdb").data_fingerprint() == cascade.data_fingerprint()
    with pytest.raises(S3ConfigError, match="extrapolate_context is for pair classification tasks.*'imdb'"):
        S3Config(task="imdb", extrapolate_context=True)
    assert S3Config(task="rte", extrapolate_context=True).extrapolate_context
    assert S3Config(verifiers="none").verifiers == [] and S3Config(verifiers="llm,student").verifiers == [
        "llm",
        "student",
    ]


def test_error_pool_never_shares_a_row_with_the_test_split(tmp_path, monkeypatch):
    import datasets

    import s3_hf.gold
    from s3_hf.dedup import content_digest
    from s3_hf.pipeline import S3Pipeline

    spec = S3Config().spec
    rows = [{"text": f"Review number {i} of the film.", "label": i % 2} for i in range(30)]
    splits = {
        "validation": datasets.Dataset.from_list(rows[:10], features=spec.features),
        "test": datasets.Dataset.from_list(rows[10:20], features=spec.features),
        # the train split repeats 3 test rows (one re-cased) and 2 validation rows
        "train": datasets.Dataset.from_list(
            rows[20:] + rows[10:12] + [{"text": rows[12]["text"].upper(), "label": 1}] + rows[:2],
            features=spec.features,
        ),
    }
    monkeypatch.setattr(s3_hf.gold, "load_gold", lambda spec, source: splits)
    pipeline = S3Pipeline(S3Config(output_dir=str(tmp_path / "run"), error_pool="train", error_pool_size=None))
    pipeline._load_state()
    pool = pipeline.error_pool()
    digest = lambda ds: {content_digest(r, ("text",)) for r in ds}  # noqa: E731
    assert not digest(pool) & digest(splits["test"]) and not digest(pool) & digest(splits["validation"])
    assert len(pool) == 10 and pipeline.state["error_pool"] == {"dropped_overlap": 5, "source": "train", "size": 10}
    with pytest.raises(S3ConfigError, match="error_pool 'dev' is neither a split"):
        S3Pipeline(S3Config(output_dir=str(tmp_path / "r2"), error_pool="dev")).error_pool()


# ---------------------------------------------------------------------- the loop with verification, end to end
@pytest.mark.slow
def test_round_completes_on_an_endpoint_without_logprobs_or_json_mode(tmp_path, tiny_model):
    from test_pipeline import imdb_responder as pipeline_responder

    from s3_hf.pipeline import S3Pipeline
    from s3_hf.testing.openai_server import FakeOpenAIServer

    os.environ.setdefault("OPENAI_API_KEY", "unused")
    with FakeOpenAIServer(responder=pipeline_responder, logprobs=False, reject_response_format=True) as server:
        config = S3Config(
            task="imdb", rounds=1, output_dir=str(tmp_path / "run"), base_url=server.url, model="fake-llm",
            small_model=tiny_model, seed_size=10, rationales_per_label=4, validation_size=16, test_size=16,
            error_pool_size=30, max_errors_per_round=4, epochs=1.0, batch_size=8, verifiers=["llm", "student"],
            select_hard=True,
        )  # fmt: skip
        results = S3Pipeline(config).run()
        rejected_format = server.stats()["counts"].get("rejected_format", 0)
    info = results["state"]["s3"]["rounds"]["1"]
    assert results["state"]["done"][-1] == "round_1.publish" and rejected_format >= 1
    assert list(info["verification"]) == ["llm", "student", "hard"]
    assert info["verification"]["llm"]["checked"] > 0
    assert info["requested"] == info["accepted"] + sum(info["rejected"].values())
    assert (Path(config.output_dir) / "s3" / "round_0" / "model").is_dir()  # the student of round 1
    assert "kept / checked by verifier" in results["methods"]


@pytest.mark.slow
def test_kill_9_during_verification_pays_no_verdict_twice(tmp_path, tiny_model):
    import signal
    import subprocess
    import time

    from test_pipeline import imdb_responder as pipeline_responder

    from s3_hf.testing.openai_server import FakeOpenAIServer

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "unused",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    argv = [sys.executable, "-m", "s3_hf.pipeline", "--task", "imdb", "--rounds", "1", "--output-dir", str(out),
            "--base-url", "URL", "--model", "fake-llm", "--small-model", tiny_model, "--seed-size", "24",
            "--rationales-per-label", "4", "--validation-size", "16", "--test-size", "0", "--error-pool-size", "60",
            "--max-errors-per-round", "12", "--examples-per-error", "3", "--max-concurrency", "2",
            "--epochs", "1", "--batch-size", "8", "--stop-after", "round_1.data"]  # fmt: skip

    def verifications(server) -> list[str]:
        return [e["digest"] for e in server.log if e["outcome"] == "ok" and e["user"].startswith("Is the movie")]

    with FakeOpenAIServer(responder=pipeline_responder, latency_s=0.05) as server:
        argv[argv.index("URL")] = server.url
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while len(verifications(server)) < 6 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.5)  # calls in flight at the kill still finish on the server side
        before = verifications(server)
        assert len(before) >= 6 and not (out / "data" / "round_1.jsonl").exists()  # killed inside the stage
        rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        after = verifications(server)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["done"][-1] == "round_1.data"
    # every verdict paid before the kill is replayed from the cache; at most the 2 in flight are asked again
    repeated = sum(after.count(d) - 1 for d in set(after))
    assert repeated <= 2
    assert len(set(after)) == state["s3"]["rounds"]["1"]["verification"]["llm"]["checked"]
