"""Seed synthesis: rationales per label (asked once, reused), examples from sampled rationales, pair/QA contexts."""

from __future__ import annotations

import json
import re

import pytest
from fake_llm import FakeEngine, user_prompt

from s3_hf.errors import S3ConfigError
from s3_hf.synthesis import SeedSynthesizer, example_validator, find_span
from s3_hf.tasks import get_task

CTX = "The Eiffel Tower was finished in 1889 in Paris. It is 330 metres tall."


def imdb_responder(request):
    prompt = user_prompt(request)
    if "reasons why" in prompt:
        label = "positive" if "could be positive" in prompt else "negative"
        aspect = re.search(r"focusing on ([^.]+)\.", prompt).group(1)
        return {"rationales": [f"{label} {aspect} reason {i}" for i in range(3)]}
    label = "positive" if "Write a positive" in prompt else "negative"
    reasons = re.findall(r"^- (.+)$", prompt, flags=re.M)
    return {"text": f"A {label} review, written because of: {'; '.join(reasons)}. Truly memorable."}


def test_imdb_rationales_once_then_examples_from_sampled_rationales(tmp_path):
    engine = FakeEngine(imdb_responder)
    synth = SeedSynthesizer(
        "imdb",
        engine,
        rationales_per_label=6,
        rationales_per_request=3,
        rationales_per_example=2,
        seed=1,
        deduplicator=None,
    )
    path = tmp_path / "rationales.json"
    outcome = synth.generate(8, rationales_path=path)
    # 2 labels x ceil(6/3) rationale requests, each about a different aspect
    assert engine.calls["rationales"] == 4
    rationales = json.loads(path.read_text())
    assert set(rationales) == {"negative", "positive"}
    assert all(len(v) == 6 for v in rationales.values())
    assert "positive the acting reason 0" in rationales["positive"]
    assert "positive the plot and the script reason 0" in rationales["positive"]
    # examples: balanced labels, each written from k=2 rationales of its own label
    assert outcome.requested == 8 and outcome.accepted == 8 and not outcome.rejected
    assert [e["label"] for e in outcome.examples] == [0, 1] * 4
    for example in outcome.examples:
        name = ("negative", "positive")[example["label"]]
        cited = example["text"].split("because of: ")[1].split(". Truly")[0].split("; ")
        assert len(cited) == 2 and all(c.startswith(name) and c in rationales[name] for c in cited)

    # a new synthesizer reuses the saved rationales: no rationale request at all, same prompts for same indices
    engine2 = FakeEngine(imdb_responder)
    synth2 = SeedSynthesizer(
        "imdb",
        engine2,
        rationales_per_label=6,
        rationales_per_request=3,
        rationales_per_example=2,
        seed=1,
        deduplicator=None,
    )
    again = synth2.generate(8, rationales_path=path)
    assert engine2.calls["rationales"] == 0
    assert [user_prompt(r) for _, _, r in engine2.seen] == [user_prompt(r) for s, _, r in engine.seen if s == "seed"]
    assert again.examples == outcome.examples
    # example i always has the same key, so a longer run (zerogen) extends a shorter one
    longer = synth2.requests(12)
    assert [r.key for r in longer[:8]] == [r.key for _, _, r in engine2.seen]


def test_imdb_rejections_and_duplicates_are_counted():
    def responder(request):
        if "reasons why" in user_prompt(request):
            return {"rationales": ["great acting", "a dull plot"]}
        index = request.meta["index"]
        if index == 0:
            return {"text": "too short"}
        if index == 1:
            return {"wrong": "field"}
        return {"text": "The very same review text, again and again and again."}

    outcome = SeedSynthesizer("imdb", FakeEngine(responder), rationales_per_label=2).generate(5)
    assert outcome.accepted == 1
    assert outcome.rejected == {"invalid_text": 1, "missing_text": 1, "duplicate": 2}
    assert outcome.to_dict()["requested"] == 5


def test_rationale_fallback_when_llm_gives_none():
    def responder(request):
        if "reasons why" in user_prompt(request):
            return {"rationales": ["...", "<reason 2>", ""]}  # placeholders copied from the prompt
        return {"text": f"Review number {request.meta['index']} is long enough to pass."}

    synth = SeedSynthesizer("imdb", FakeEngine(responder), rationales_per_label=3, rationales_per_example=1)
    synth.generate(2)
    assert synth.rationales()["positive"] == ["the acting", "the plot and the script", "the directing and the visuals"]


def test_a_label_with_few_rationales_is_asked_once_more():
    """Seen in a demo run: the LLM listed 3 positive rationales (the same few each time), so the positive seed reviews
    repeated each other. A label left with fewer than half the rationales asked for gets one more batch of requests,
    about other aspects; a label with enough does not."""
    asked = []

    def responder(request):
        prompt = user_prompt(request)
        if "reasons why" in prompt:
            label = "positive" if "could be positive" in prompt else "negative"
            aspect = re.search(r"focusing on ([^.]+)\.", prompt).group(1)
            asked.append((label, request.key["index"]))
            if label == "positive" and request.key["index"] < 2:
                return {"rationales": ["a great film", "A great film"]}  # one distinct rationale, twice
            return {"rationales": [f"{label} {aspect} reason {i}" for i in range(3)]}
        return {"text": f"Review number {request.meta['index']} is long enough to pass."}

    engine = FakeEngine(responder)
    synth = SeedSynthesizer("imdb", engine, rationales_per_label=6, rationales_per_request=3)
    found = synth.rationales()
    assert sorted(asked) == [("negative", 0), ("negative", 1), ("positive", 0), ("positive", 1), ("positive", 2),
                             ("positive", 3)]  # fmt: skip
    assert len(found["negative"]) == 6 and len(found["positive"]) == 6
    assert found["positive"][0] == "a great film" and all("reason" in t for t in found["positive"][1:])
    keys = [r.key for _, _, r in engine.seen]
    assert len({json.dumps(k, sort_keys=True) for k in keys}) == len(keys)  # the top-up has cache keys of its own


def test_pair_task_writes_second_text_for_given_context_and_label():
    contexts = [CTX, "Water boils at 100 degrees Celsius at sea level."]

    def responder(request):
        prompt = user_prompt(request)
        label = "entailment" if "is entailment" in prompt else "not_entailment"
        return {"hypothesis": f"Hypothesis for {label} about {prompt.split('<data>')[1][:15].strip()}."}

    engine = FakeEngine(responder)
    outcome = SeedSynthesizer("rte", engine, contexts=contexts).generate(4)
    assert engine.calls == {"seed": 4}
    # each context gets every label, the context is kept verbatim, the hypothesis comes from the LLM
    assert [(e["premise"], e["label"]) for e in outcome.examples] == [
        (contexts[0], 0),
        (contexts[0], 1),
        (contexts[1], 0),
        (contexts[1], 1),
    ]
    assert outcome.examples[1]["hypothesis"] == "Hypothesis for not_entailment about The Eiffel Tow."
    assert set(outcome.examples[0]) == {"premise", "hypothesis", "label"}
    # the context is delimited as data in the prompt
    assert f"<data>\n{contexts[0]}\n</data>" in user_prompt(engine.seen[0][2])


def test_pair_task_needs_contexts():
    with pytest.raises(S3ConfigError, match="contexts"):
        SeedSynthesizer("qnli", FakeEngine(lambda r: {}))


def test_qa_writes_question_and_answer_span():
    answers = iter(["1889", "330 METRES", "Berlin"])
    engine = FakeEngine(lambda r: {"question": f"What about {r.meta['index']}?", "answer": next(answers)})
    outcome = SeedSynthesizer("adqa", engine, contexts=[CTX]).generate(3)
    assert outcome.rejected == {"answer_not_in_context": 1}
    first, second = outcome.examples
    assert first["answers"] == {"text": ["1889"], "answer_start": [CTX.index("1889")]}
    # case-insensitive match keeps the context's own spelling of the span
    assert second["answers"]["text"] == ["330 metres"]
    assert first["context"] == CTX and first["id"] != second["id"]
    assert get_task("adqa").invalid_reason(second) is None


def test_qa_rejects_sentence_long_answers_and_names_the_answer_a_span_field():
    # a whole sentence of the context: a span, but no QA answer
    long_answer = (
        "It was built as the entrance arch for the 1889 World's Fair by the company of Gustave Eiffel, whose engineers "
        "designed it"
    )
    context = f"{CTX} {long_answer} in two years."
    assert len(long_answer.split()) > 20
    engine = FakeEngine(lambda r: {"question": "What is it?", "answer": long_answer})
    outcome = SeedSynthesizer("adqa", engine, contexts=[context]).generate(1)
    assert outcome.examples == [] and outcome.rejected == {"answer_too_long": 1}
    assert engine.seen[0][2].span_fields == ("answer",)


def test_validator_applies_task_lengths_and_find_span():
    validate = example_validator(get_task("qnli"), label=1, context=CTX)
    assert validate({"question": "Why?"}) == (None, "invalid_question")
    example, reason = validate({"question": "  How tall is the tower  ? "})
    assert reason is None and example == {"question": "How tall is the tower ?", "sentence": CTX, "label": 1}
    assert find_span("abc Def", "def") == 4 and find_span("abc", "x") is None
