"""QA features with a stride, start/end post-processing, and SQuAD EM/F1 (also as an offline evaluate module)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

import tiny_setup  # noqa: E402

from s3_hf.metrics import best_em_f1, evaluate_metric_path, normalize_answer, squad_em_f1  # noqa: E402
from s3_hf.qa import postprocess_predictions, prepare_eval_features, prepare_train_features, qa_logits  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from s3_hf.assets import encoder_path

    return AutoTokenizer.from_pretrained(encoder_path())


@pytest.fixture(scope="module")
def rows():
    return tiny_setup.qa_rows(6, seed=11)


def test_train_features_point_at_the_answer_in_every_window_that_holds_it(tokenizer, rows):
    batch = rows.to_dict()
    feats = prepare_train_features(batch, tokenizer, max_length=48, doc_stride=16)
    eval_feats = prepare_eval_features(batch, tokenizer, max_length=48, doc_stride=16)
    assert len(feats["input_ids"]) == len(eval_feats["input_ids"]) > 2 * len(rows)  # long contexts overflow
    assert max(len(ids) for ids in feats["input_ids"]) <= 48
    assert "attention_mask" in feats and "offset_mapping" not in feats
    found = {qid: 0 for qid in batch["id"]}
    for i, qid in enumerate(eval_feats["example_id"]):
        example = batch["answers"][batch["id"].index(qid)]
        start, end = feats["start_positions"][i], feats["end_positions"][i]
        assert eval_feats["start_positions"][i] == start and eval_feats["end_positions"][i] == end
        if start == 0:
            assert end == 0
            continue
        offsets = eval_feats["offset_mapping"][i]
        context = batch["context"][batch["id"].index(qid)]
        assert context[offsets[start][0] : offsets[end][1]] == example["text"][0]
        found[qid] += 1
    assert all(count >= 1 for count in found.values())  # the stride never loses an answer


def test_eval_features_offsets_only_cover_the_context(tokenizer, rows):
    feats = prepare_eval_features(rows.to_dict(), tokenizer, max_length=48, doc_stride=16, with_labels=False)
    assert "start_positions" not in feats
    for i, offsets in enumerate(feats["offset_mapping"]):
        sequence_ids = feats.sequence_ids(i)
        assert [o is not None for o in offsets] == [s == 1 for s in sequence_ids]


def _features(offsets_per_feature, example_ids):
    return {"example_id": example_ids, "offset_mapping": offsets_per_feature}


def test_postprocess_picks_best_valid_span_across_windows():
    examples = {"id": ["a", "b"], "context": ["hello big world", "one two three"]}
    # feature 0 of "a": tokens 0-1 are question tokens (no offsets); context tokens: hello(2) big(3) world(4)
    ctx_a = [None, None, [0, 5], [6, 9], [10, 15]]
    ctx_b = [None, [0, 3], [4, 7], [8, 13]]
    features = _features([ctx_a, ctx_a, ctx_b], ["a", "a", "b"])
    start = np.full((3, 5), -10.0)
    end = np.full((3, 5), -10.0)
    start[0, 0], end[0, 0] = 50, 50  # best raw score is a question token: invalid
    start[0, 4], end[0, 2] = 9, 9  # end before start: invalid
    start[0, 3], end[0, 3] = 3, 3  # "big": score 6
    start[1, 2], end[1, 2] = 4, 4  # window 2 of "a": "hello", score 8: wins across windows
    start[2, 1], end[2, 3] = 1, 1  # "one two three" (3 tokens)
    start[2, 4], end[2, 4] = 30, 30  # padded position beyond this feature's offsets: ignored
    answers = postprocess_predictions(examples, features, start, end, n_best_size=5)
    assert answers["a"]["text"] == "hello" and answers["a"]["answer_start"] == 0
    assert answers["b"]["text"] == "one two three"
    short = postprocess_predictions(examples, features, start, end, n_best_size=5, max_answer_length=2)
    assert short["b"]["text"] != "one two three"


def test_qa_logits_flattens_batches_of_different_lengths():
    batches = [(np.ones((2, 3)), np.zeros((2, 3))), (np.ones((1, 5)), np.zeros((1, 5)))]
    start, end = qa_logits(batches)
    assert start.shape == end.shape == (3, 5)
    assert start[0, 4] == -100 and start[2, 4] == 1


def test_squad_normalization_and_scores():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert best_em_f1("the Eiffel tower", ["Eiffel Tower", "Paris"]) == (1.0, 1.0)
    em, f1 = best_em_f1("big red house", ["red house on the hill"])
    assert em == 0.0 and f1 == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    scores = squad_em_f1(["Denver Broncos", "cats"], [["Denver Broncos"], ["dogs"]])
    assert scores == {"exact_match": 50.0, "f1": 50.0}
    by_id = squad_em_f1(
        [{"id": "2", "prediction_text": "cats"}, {"id": "1", "prediction_text": "Broncos"}],
        [{"id": "1", "answers": {"text": ["Denver Broncos"], "answer_start": [0]}}, {"id": "2", "answers": ["cats"]}],
    )
    assert by_id["exact_match"] == 50.0 and by_id["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_shipped_evaluate_modules_load_offline(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    squad = evaluate.load(str(evaluate_metric_path("squad")))
    predictions = [{"id": "1", "prediction_text": "1976"}, {"id": "2", "prediction_text": "a red car"}]
    references = [
        {"id": "1", "answers": {"text": ["in 1976"], "answer_start": [0]}},
        {"id": "2", "answers": {"text": ["red car", "car"], "answer_start": [2, 6]}},
    ]
    assert squad.compute(predictions=predictions, references=references) == squad_em_f1(predictions, references)
    accuracy = evaluate.load(str(evaluate_metric_path("accuracy")))
    assert accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"accuracy": 0.75}
