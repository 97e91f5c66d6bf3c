"""ErrorExtrapolator: n new examples per error, gold label kept, context kept for pair/QA tasks, any input form."""

from __future__ import annotations

import dataclasses

import datasets
import pytest
from fake_llm import FakeEngine, user_prompt

from s3_hf.errors import S3ConfigError, S3DataError
from s3_hf.extrapolation import ErrorExtrapolator, load_errors
from s3_hf.prompts import COPY_RETRY, PromptSet
from s3_hf.s3_json import write_s3_json
from s3_hf.tasks import get_task

PREMISE = "The Eiffel Tower was finished in 1889 in Paris."
RTE_ERRORS = [
    {"premise": PREMISE, "hypothesis": "The tower was finished in 1889.", "label": 0, "predicted_label": 1},
    {"premise": "Water boils at 100 C.", "hypothesis": "Water freezes at 100 C.", "label": 1, "predicted_label": 0},
]


def rte_responder(request):
    prompt = user_prompt(request)
    label = "not_entailment" if "true label is not_entailment" in prompt else "entailment"
    return {"hypothesis": f"New {label} hypothesis number {request.meta['sample']} for {request.meta['error'][:8]}."}


def test_rte_n_per_error_keeps_gold_label_and_premise():
    engine = FakeEngine(rte_responder)
    outcome = ErrorExtrapolator("rte", engine, per_error=3).extrapolate(RTE_ERRORS, round_index=2)
    assert engine.calls == {"extrapolate": 6}
    assert all(stage == "extrapolate" and rnd == 2 for stage, rnd, _ in engine.seen)
    assert outcome.requested == 6 and outcome.accepted == 6
    assert [e["label"] for e in outcome.examples] == [0, 0, 0, 1, 1, 1]
    assert [e["premise"] for e in outcome.examples] == [PREMISE] * 3 + ["Water boils at 100 C."] * 3
    assert outcome.examples[3]["hypothesis"].startswith("New not_entailment hypothesis number 0")
    # the error is shown as delimited data, with its gold label (not the predicted one) in the instruction
    prompt = user_prompt(engine.seen[0][2])
    assert "true label is entailment" in prompt
    assert "<data>\npremise: The Eiffel Tower" in prompt and "hypothesis: The tower was finished in 1889." in prompt
    # samples of one error are distinct requests (distinct keys)
    assert len({str(r.key) for _, _, r in engine.seen}) == 6


def test_inputs_dataset_file_and_list_give_same_requests(tmp_path):
    spec = get_task("rte")
    dataset = datasets.Dataset.from_list(
        [{k: v for k, v in e.items() if k != "predicted_label"} for e in RTE_ERRORS], features=spec.features
    ).add_column("predicted_label", [1, 0])
    path = tmp_path / "errors.jsonl"
    write_s3_json(path, RTE_ERRORS, spec, extra_fields=["predicted_label"])
    canonical = [{k: v for k, v in e.items() if k != "predicted_label"} for e in RTE_ERRORS]
    assert load_errors(dataset, spec) == load_errors(path, spec) == load_errors(RTE_ERRORS, spec) == canonical
    keys = []
    for source in (dataset, str(path), RTE_ERRORS):
        engine = FakeEngine(rte_responder)
        ErrorExtrapolator("rte", engine).extrapolate(source)
        keys.append([r.key for _, _, r in engine.seen])
    assert keys[0] == keys[1] == keys[2]


def test_bad_errors_name_row_and_field():
    with pytest.raises(S3DataError, match="row 2.*field 'label'"):
        load_errors([RTE_ERRORS[0], {**RTE_ERRORS[1], "label": 7}], "rte")
    with pytest.raises(S3DataError, match="field 'hypothesis'"):
        load_errors([{"premise": "p", "label": 0}], "rte")


def test_imdb_max_errors_balanced_and_prompt_override():
    errors = [{"text": f"Gold review {i} text.", "label": int(i >= 6)} for i in range(8)]
    prompts = PromptSet(version="custom-1", system="sys", seed="unused", extrapolate="LABEL={label} EX={example}")
    engine = FakeEngine(lambda r: {"text": f"Generated review from {user_prompt(r)[-40:]}"})
    outcome = ErrorExtrapolator("imdb", engine, max_errors=4, prompts=prompts, seed=3).extrapolate(errors)
    prompts_seen = [user_prompt(r) for _, _, r in engine.seen]
    assert len(prompts_seen) == 4
    assert sum("LABEL=positive" in p for p in prompts_seen) == 2  # 2 of each label though 6 of 8 are negative
    assert all(p.startswith("LABEL=") and "<data>\nGold review" in p for p in prompts_seen)
    assert engine.seen[0][2].messages[0]["content"] == "sys"
    assert engine.seen[0][2].key["prompts"] == "custom-1"
    assert sorted(e["label"] for e in outcome.examples) == [0, 0, 1, 1]


def test_adqa_keeps_context_and_validates_span():
    ctx = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911."
    errors = [
        {
            "id": "q1",
            "context": ctx,
            "question": "When did she win in Chemistry?",
            "answers": {"text": ["1911"], "answer_start": [ctx.index("1911")]},
        }
    ]
    replies = iter(
        [{"question": "Which prize came first?", "answer": "Physics"}, {"question": "Who won?", "answer": "Pierre"}]
    )
    engine = FakeEngine(lambda r: next(replies))
    outcome = ErrorExtrapolator("adqa", engine, per_error=2).extrapolate(errors)
    assert outcome.rejected == {"answer_not_in_context": 1}
    (example,) = outcome.examples
    assert example["context"] == ctx and example["answers"] == {
        "text": ["Physics"],
        "answer_start": [ctx.index("Physics")],
    }
    assert "answer: 1911" in user_prompt(engine.seen[0][2])


def test_long_gold_text_is_cut_in_prompt():
    engine = FakeEngine(lambda r: {"text": "A new review that is long enough."})
    ErrorExtrapolator("imdb", engine, max_example_chars=100).extrapolate([{"text": "word " * 500, "label": 1}])
    prompt = user_prompt(engine.seen[0][2])
    assert "word " * 19 in prompt and "word " * 30 not in prompt and " ..." in prompt


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_max_attempts_is_validated_like_the_seed_synthesizer(bad):
    from s3_hf.errors import S3ConfigError

    with pytest.raises(S3ConfigError, match=f"max_attempts.*{bad!r}"):
        ErrorExtrapolator("rte", FakeEngine(rte_responder), max_attempts=bad)


def test_rte_new_context_writes_premise_and_rejects_copies():
    """With new_context the LLM writes the premise too: no gold premise reaches the data, a copy is rejected."""

    def responder(request):
        sample = request.meta["sample"]
        if sample == 0:  # copies the gold premise of the error it is shown
            prompt = user_prompt(request)
            premise = PREMISE if "Eiffel" in prompt else "Water boils at 100 C."
            return {"premise": premise, "hypothesis": "Some hypothesis about the copied premise here."}
        if sample == 1:
            return {"hypothesis": "A hypothesis without any premise at all."}
        error = RTE_ERRORS[0] if "Eiffel" in user_prompt(request) else RTE_ERRORS[1]
        new_premise = f"A new premise sentence number {request.meta['error'][:6]} written by the model itself."
        if sample == 3:  # the gold hypothesis under a new premise
            return {"premise": new_premise, "hypothesis": error["hypothesis"]}
        if sample == 4:  # the gold hypothesis as the premise
            return {"premise": error["hypothesis"], "hypothesis": "Another hypothesis sentence here."}
        return {
            "premise": f"A new premise sentence number {request.meta['error'][:6]} written by the model itself.",
            "hypothesis": "A new hypothesis sentence about that premise.",
        }

    engine = FakeEngine(responder)
    outcome = ErrorExtrapolator("rte", engine, examples_per_error=5, new_context=True).extrapolate(RTE_ERRORS)
    assert outcome.accepted == 2 and [e["label"] for e in outcome.examples] == [0, 1]
    gold_texts = {e[name] for e in RTE_ERRORS for name in ("premise", "hypothesis")}
    assert all(e["premise"].startswith("A new premise") for e in outcome.examples)
    assert not gold_texts & {e[name] for e in outcome.examples for name in ("premise", "hypothesis")}
    assert outcome.rejected["copied_premise"] == 4 and outcome.rejected["copied_hypothesis"] == 2
    assert outcome.rejected["missing_premise"] == 2
    request = engine.seen[0][2]
    assert request.prefill == '{"premise": "' and list(request.json_schema["properties"]) == ["premise", "hypothesis"]
    assert "a new premise" in user_prompt(request) and request.key["new_context"] is True
    # the keep-the-premise requests have another cache key
    plain = FakeEngine(rte_responder)
    ErrorExtrapolator("rte", plain, examples_per_error=5).extrapolate(RTE_ERRORS)
    assert {str(r.key) for _, _, r in plain.seen}.isdisjoint(str(r.key) for _, _, r in engine.seen)


@pytest.mark.parametrize("task", ["imdb", "adqa"])
def test_new_context_is_refused_for_tasks_without_a_pair_context(task):
    with pytest.raises(S3ConfigError, match="new_context is for pair classification tasks"):
        ErrorExtrapolator(task, FakeEngine(rte_responder), new_context=True)


def test_a_candidate_that_copies_the_shown_error_in_part_is_rejected():
    """A 0.5B generator tends to copy the review it is shown: half of it copied is a copy, one phrase is not."""
    review = (
        "The acting was wooden and the plot made no sense at all. I kept checking my watch during the second half. "
        "The soundtrack was loud and the jokes fell flat every single time. A waste of two hours and of a good cast."
    )
    half = "The acting was wooden and the plot made no sense at all. I kept checking my watch during the second half."
    candidates = {
        0: {"text": half + " Nothing else about it worked for me, not the score, not the story, not the ending."},
        1: {
            "text": "The acting was wooden, sadly. Dull story, flat characters, and an ending I saw coming for miles."
        },
    }
    engine = FakeEngine(lambda request: candidates[request.meta["sample"]])
    outcome = ErrorExtrapolator("imdb", engine, examples_per_error=2).extrapolate([{"text": review, "label": 0}])
    assert [e["text"] for e in outcome.examples] == [candidates[1]["text"]]
    assert outcome.rejected == {"copied_text": 1}
    # the near-duplicate filter alone (overlap 0.8, seeded with the errors) would have let that half-copy through
    from s3_hf.dedup import Deduplicator

    near = Deduplicator()
    near.add(review)
    assert near.check(candidates[0]["text"]) is None


def test_a_copy_is_re_asked_with_the_prompts_copy_note_when_they_have_one():
    """With ``PromptSet.copy_retry`` each extrapolation request names the note that follows a reply rejected as a
    copy of its shown field(s); unset (the default), a copy is re-asked by the same prompt and the task's fingerprint
    (so every LLM cache key) is what it was before the field existed."""
    errors = [{"text": "A dull film with a plot that made no sense at all, sadly.", "label": 0}]
    (request,) = ErrorExtrapolator("imdb", FakeEngine(lambda r: {}), examples_per_error=1).requests(errors)
    assert request.retry_notes == {} and "copy_retry" not in get_task("imdb").prompts.to_dict()
    noted = dataclasses.replace(get_task("imdb").prompts, copy_retry=COPY_RETRY)
    (request,) = ErrorExtrapolator("imdb", FakeEngine(lambda r: {}), examples_per_error=1, prompts=noted).requests(
        errors
    )
    assert list(request.retry_notes) == ["copied_text"] and "Your text copies" in request.retry_notes["copied_text"]
    rte = dataclasses.replace(get_task("rte").prompts, copy_retry=COPY_RETRY)
    (request,) = ErrorExtrapolator(
        "rte", FakeEngine(rte_responder), new_context=True, examples_per_error=1, prompts=rte
    ).requests(RTE_ERRORS[:1])
    assert sorted(request.retry_notes) == ["copied_hypothesis", "copied_premise"]
    spec = get_task("imdb")
    assert dataclasses.replace(spec, prompts=noted).fingerprint() != spec.fingerprint()


IMDB_ERRORS = [
    {"text": "The plot dragged on for hours and the ending made no sense to anyone in the theatre.", "label": 0},
    {"text": "A warm, funny little film with a lead performance that carries every single scene.", "label": 1},
    {"text": "Gorgeous photography cannot rescue a script this lazy, loud and endlessly predictable.", "label": 0},
]


def described_responder(request):
    """Describes errors 0 and 1 in its own words, copies error 2's text as its description, and writes candidates
    that echo the description they were given."""
    prompt = user_prompt(request)
    if request.key["stage"] == "describe":
        if "Gorgeous photography" in prompt:
            return {"summary": IMDB_ERRORS[2]["text"]}
        topic = "a slow film with a senseless ending" if "plot dragged" in prompt else "a charming comedy, warmly told"
        return {"summary": f"A review of {topic}."}
    topic = "slow senseless" if "slow film" in prompt else "charming comedy"
    return {"text": f"Candidate {request.meta['sample']} about a {topic} picture, written anew for training."}


def test_description_view_writes_candidates_from_the_llm_description_not_the_gold_text():
    """error_view='description': one describe request per error, then k candidates whose prompts carry the
    description and no gold text; a description that copies its error is no description (that error gets no
    candidates, its k count as ``no_description``); ``described`` counts the description requests."""
    engine = FakeEngine(described_responder)
    extrapolator = ErrorExtrapolator("imdb", engine, examples_per_error=2, error_view="description", max_attempts=1)
    outcome = extrapolator.extrapolate(IMDB_ERRORS)
    describe = [r for _, _, r in engine.seen if r.key["stage"] == "describe"]
    candidates = [r for _, _, r in engine.seen if r.key["stage"] == "extrapolate"]
    assert len(describe) == 3 and len(candidates) == 4
    assert "The plot dragged on" in user_prompt(describe[0])  # the description request sees the error...
    for request in candidates:  # ...the candidates see only its description
        prompt = user_prompt(request)
        assert "A review of" in prompt and not any(e["text"][:30] in prompt for e in IMDB_ERRORS)
        assert request.key["description"].startswith("A review of")
    assert [e["label"] for e in outcome.examples] == [0, 0, 1, 1]
    assert outcome.described == 3 and outcome.requested == 2 * 3 and outcome.accepted == 4
    assert outcome.rejected == {"no_description": 2}
    assert (
        outcome.to_dict()["described"] == 3
        and "described" not in ErrorExtrapolator("imdb", engine).extrapolate(IMDB_ERRORS[:1]).to_dict()
    )


def test_a_long_description_is_cut_to_its_leading_sentences_not_re_asked():
    """A description over MAX_DESCRIPTION_WORDS keeps its leading sentences within the limit (no re-ask); one whose
    first sentence alone is over it is ``long_summary`` (its error gets no candidates)."""
    from s3_hf.extrapolation import MAX_DESCRIPTION_WORDS

    first = "A review of a slow film with a senseless ending that bored the whole audience."
    rambling = " ".join(["and then it went on"] * 20)

    def responder(request):
        prompt = user_prompt(request)
        if request.key["stage"] == "describe":
            if "plot dragged" in prompt:  # two sentences fit, the third would not
                return {"summary": f"{first} The tone is flat. The reviewer also says {rambling}."}
            return {"summary": f"The reviewer says {rambling}."}  # one sentence, far over the limit
        return {"text": f"Candidate {request.meta['sample']} written anew for training about a slow film."}

    engine = FakeEngine(responder)
    extrapolator = ErrorExtrapolator("imdb", engine, examples_per_error=1, error_view="description", max_attempts=1)
    outcome = extrapolator.extrapolate(IMDB_ERRORS[:2])
    candidates = [r for _, _, r in engine.seen if r.key["stage"] == "extrapolate"]
    assert len(candidates) == 1
    assert candidates[0].key["description"] == f"{first} The tone is flat."
    assert len(candidates[0].key["description"].split()) <= MAX_DESCRIPTION_WORDS
    assert outcome.described == 2 and outcome.rejected == {"no_description": 1}


def test_a_description_lead_is_prefilled_per_label_and_its_words_do_not_count_as_the_models():
    """PromptSet.describe_lead: the description reply is prefilled with ``{"summary": "`` and the lead (its
    ``{label}`` filled per error), the lead is in the request key, and the model must add MIN_DESCRIPTION_WORDS
    words of its own: a title after the lead is ``short_summary``. Unset, the prefill and key are as before."""
    spec = get_task("imdb")
    leaded = dataclasses.replace(spec, prompts=dataclasses.replace(spec.prompts, describe_lead="A {label} review of"))

    def responder(request):  # what the summary would hold once the model's words are appended to the prefill
        lead = request.prefill.removeprefix('{"summary": "')
        if "plot dragged" in user_prompt(request):
            return {"summary": f"{lead} a slow film with a senseless ending, told with irritation."}
        return {"summary": f"{lead} Amélie"}  # the lead plus a title: no description of the model's own

    engine = FakeEngine(responder)
    extrapolator = ErrorExtrapolator(leaded, engine, examples_per_error=1, error_view="description", max_attempts=1)
    requests = extrapolator.description_requests(IMDB_ERRORS[:2])
    assert [r.prefill for r in requests] == ['{"summary": "A negative review of', '{"summary": "A positive review of']
    assert requests[0].key["describe_lead"] == "A negative review of"
    outcome, descriptions = extrapolator.describe(IMDB_ERRORS[:2])
    described = "A negative review of a slow film with a senseless ending, told with irritation."
    assert list(descriptions.values()) == [described]
    assert outcome.rejected == {"short_summary": 1}
    # an endpoint that does not take the prefill (prefill_mode="inline") answers without the lead: its own 4 words
    inline = FakeEngine(lambda request: {"summary": "A slow, senseless film."})
    _, described = ErrorExtrapolator(leaded, inline, error_view="description", max_attempts=1).describe(
        IMDB_ERRORS[:1]
    )
    assert list(described.values()) == ["A slow, senseless film."]
    unled = dataclasses.replace(spec, prompts=dataclasses.replace(spec.prompts, describe_lead=None))
    plain = ErrorExtrapolator(unled, engine, error_view="description").description_requests(IMDB_ERRORS[:1])[0]
    assert plain.prefill == '{"summary": "' and "describe_lead" not in plain.key


def test_description_view_config_errors_name_the_field(monkeypatch):
    with pytest.raises(S3ConfigError, match="error_view must be one of .*'summary'"):
        ErrorExtrapolator("imdb", FakeEngine(described_responder), error_view="summary")
    with pytest.raises(S3ConfigError, match="single-text classification tasks, not 'rte'"):
        ErrorExtrapolator("rte", FakeEngine(rte_responder), error_view="description")
    from s3_hf.config import S3Config

    with pytest.raises(S3ConfigError, match="S3Config.error_view='description' is for single-text"):
        S3Config(task="qnli", error_view="description")
    with pytest.raises(S3ConfigError, match="S3Config.error_view must be one of"):
        S3Config(task="imdb", error_view="gist")
    # 'auto' (the default): a description where the task allows one, the error's text elsewhere
    assert S3Config(task="imdb").error_view == "description" and S3Config(task="rte").error_view == "text"
    # the text view leaves the data fingerprint (and so the resume check of earlier runs) as it was; the other not
    text = S3Config(task="imdb", error_view="text")
    fingerprint = text.data_fingerprint()
    assert S3Config(task="imdb").data_fingerprint() != fingerprint
    to_dict = S3Config.to_dict
    monkeypatch.setattr(
        S3Config, "to_dict", lambda self: {k: v for k, v in to_dict(self).items() if k != "error_view"}
    )
    assert text.data_fingerprint() == fingerprint  # as before the field existed


def test_description_templates_key_their_own_requests_not_the_task_fingerprint():
    """Changing the describe templates re-keys the description-view requests only: the task fingerprint (and so
    every seed and text-view request) stays as it was."""
    spec = get_task("imdb")
    other = dataclasses.replace(spec, prompts=dataclasses.replace(spec.prompts, describe="Describe {example}."))
    assert other.fingerprint() == spec.fingerprint()
    leaded = dataclasses.replace(spec, prompts=dataclasses.replace(spec.prompts, describe_lead="The reviewer"))
    assert leaded.fingerprint() == spec.fingerprint()
    keys = []
    for task in (spec, other):
        extrapolator = ErrorExtrapolator(task, FakeEngine(described_responder), error_view="description")
        keys.append(extrapolator.description_requests(IMDB_ERRORS[:1])[0].key)
    assert keys[0] != keys[1] and keys[0]["describe"] == spec.prompts.describe


def test_description_and_extrapolation_prompts_can_name_the_label_the_model_gave():
    """``{other_label}`` in the describe and extrapolate templates is the label the small model gave the error (the
    other label of a two-label task); the shipped templates do not use it, so their prompts are as before."""
    spec = get_task("imdb")
    naming = dataclasses.replace(
        spec,
        prompts=dataclasses.replace(
            spec.prompts,
            describe="A {label} review taken for {other_label}: {example}",
            extrapolate_described="Write a {label} review a model could take for {other_label}, like: {example}",
            extrapolate="Like {example}, {label}, not {other_label}.",
        ),
    )
    described = ErrorExtrapolator(naming, FakeEngine(described_responder), error_view="description")
    prompts = [user_prompt(r) for r in described.description_requests(IMDB_ERRORS[:2])]
    assert prompts[0].startswith("A negative review taken for positive:")
    assert prompts[1].startswith("A positive review taken for negative:")
    digests = [r.meta["error"] for r in described.description_requests(IMDB_ERRORS[:2])]
    written = described.requests(IMDB_ERRORS[:2], descriptions=dict.fromkeys(digests, "A film."))
    assert user_prompt(written[0]).startswith("Write a negative review a model could take for positive, like:")
    text_view = ErrorExtrapolator(naming, FakeEngine(described_responder), error_view="text")
    assert user_prompt(text_view.requests(IMDB_ERRORS[1:2])[0]).endswith(", positive, not negative.")
    assert "{other_label}" not in spec.prompts.describe and "{other_label}" not in spec.prompts.extrapolate_described
    assert (
        ErrorExtrapolator("adqa", FakeEngine(described_responder)).other_label(
            {"context": "c", "question": "q", "answers": {"text": ["c"], "answer_start": [0]}}
        )
        == ""
    )
