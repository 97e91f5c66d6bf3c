"""The small-model recipe: tokenization without padding, dynamic padding, length grouping, ready Trainers."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import EvalPrediction, TrainingArguments

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

import tiny_setup  # noqa: E402

from s3_hf.errors import S3ConfigError, S3DataError  # noqa: E402
from s3_hf.metrics import accuracy, compute_metrics_for, predicted_labels  # noqa: E402
from s3_hf.tasks import get_task  # noqa: E402
from s3_hf.training import build_trainer, tokenize_dataset  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_setup.make_models(tmp_path_factory.mktemp("training"))


@pytest.fixture(scope="module")
def tokenizer(models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models["cls"])


def _args(path, **kwargs):
    defaults = dict(
        per_device_train_batch_size=8, per_device_eval_batch_size=8, use_cpu=True, report_to=[], disable_tqdm=True
    )
    return TrainingArguments(str(path), **{**defaults, **kwargs})


def test_tokenize_classification_keeps_rows_and_does_not_pad(tokenizer):
    raw = tiny_setup.rte_rows(16, seed=5)
    tokenized = tokenize_dataset("rte", raw, tokenizer, max_length=40)
    assert tokenized.column_names == ["label", "input_ids", "token_type_ids", "attention_mask"]
    assert list(tokenized["label"]) == list(raw["label"])
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    assert max(lengths) == 40 and min(lengths) < 40  # truncated to the budget, otherwise unpadded
    pair = tokenizer(raw[3]["premise"], raw[3]["hypothesis"], truncation=True, max_length=40)["input_ids"]
    assert tokenized[3]["input_ids"] == pair
    with pytest.raises(S3DataError, match="hypothesis"):
        tokenize_dataset("rte", raw.remove_columns("hypothesis"), tokenizer)


def test_build_trainer_classification_pads_each_batch_to_its_longest(models, tmp_path):
    raw_train, raw_eval = tiny_setup.rte_rows(32, seed=6), tiny_setup.rte_rows(16, seed=7)
    trainer = build_trainer("rte", models["cls"], raw_train, raw_eval, _args(tmp_path, max_steps=2))
    batch = next(iter(trainer.get_train_dataloader()))
    lengths = batch["attention_mask"].sum(-1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) < 512
    trainer.train()
    metrics = trainer.evaluate()
    errors = trainer.misclassification_callback.errors
    assert metrics["eval_misclassified"] == len(errors)
    assert metrics["eval_accuracy"] == pytest.approx(1 - len(errors) / 16)
    assert trainer.model.config.id2label == {0: "entailment", 1: "not_entailment"}


def test_group_by_length_uses_the_length_grouped_sampler(models, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    args = _args(tmp_path)
    raw = tiny_setup.rte_rows(32, seed=8)
    trainer = build_trainer("rte", models["cls"], raw, None, args, group_by_length=True)
    assert trainer.args.train_sampling_strategy == "group_by_length"
    assert args.train_sampling_strategy == "random"  # the caller's arguments are left alone
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    assert trainer.misclassification_callback is None  # no eval set, nothing to collect


def test_build_trainer_qa_reports_squad_metrics_and_errors(models, tmp_path):
    raw_train, raw_eval = tiny_setup.qa_rows(8, seed=9), tiny_setup.qa_rows(6, seed=10)
    trainer = build_trainer(
        "adqa", models["qa"], raw_train, raw_eval, _args(tmp_path, max_steps=1), max_length=48, doc_stride=16
    )
    assert {"example_id", "offset_mapping", "start_positions"} <= set(trainer.eval_dataset.column_names)
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_exact_match", "eval_f1", "eval_squad_f1", "eval_misclassified"} <= set(metrics)
    errors = trainer.misclassification_callback.errors
    assert len(errors) == metrics["eval_misclassified"] == round(6 * (1 - metrics["eval_exact_match"] / 100))
    assert set(errors["id"]) <= set(raw_eval["id"])


def test_build_trainer_refuses_bad_input(models, tmp_path, tokenizer):
    from transformers import AutoModel

    with pytest.raises(S3ConfigError, match="TrainingArguments"):
        build_trainer("rte", models["cls"], None, None, {"output_dir": str(tmp_path)})
    with pytest.raises(S3ConfigError, match="tokenizer"):
        build_trainer("rte", AutoModel.from_pretrained(models["cls"]), None, None, _args(tmp_path))


def test_accuracy_and_compute_metrics_handle_unconcatenated_batches():
    assert accuracy([1, 0, 1, 1], np.array([1, 1, 1, 0])) == {"accuracy": 0.5}
    logits = [np.array([[0.1, 0.9], [2.0, 0.0]]), np.array([[0.0, 1.0]])]
    labels = [np.array([1, 1]), np.array([1])]
    assert list(predicted_labels(logits)) == [1, 0, 1]
    compute = compute_metrics_for("imdb")
    assert compute(EvalPrediction(predictions=logits, label_ids=labels)) == {"accuracy": pytest.approx(2 / 3)}
    as_tuple = (np.concatenate(logits), np.zeros((3, 4, 8)))  # extra model outputs after the logits
    assert compute(EvalPrediction(predictions=as_tuple, label_ids=np.concatenate(labels)))["accuracy"] == 2 / 3
    with pytest.raises(S3ConfigError, match="eval_examples"):
        compute_metrics_for("adqa")


def test_qa_window_overlap_follows_the_token_budget(models):
    """The default overlap is below any budget, so adqa with a short max_length tokenizes instead of raising."""
    from transformers import AutoTokenizer

    from s3_hf.training import default_doc_stride

    assert [default_doc_stride(n) for n in (16, 128, 384, 1024)] == [4, 32, 96, 128]
    qa_tokenizer = AutoTokenizer.from_pretrained(models["qa"])
    context = " ".join(f"word{i}" for i in range(300))
    raw = datasets.Dataset.from_list(
        [
            {
                "id": "a",
                "context": context,
                "question": "which word?",
                "answers": {"text": ["word7"], "answer_start": [35]},
            }
        ],
        features=get_task("adqa").features,
    )
    features = tokenize_dataset("adqa", raw, qa_tokenizer, split="eval", max_length=128)
    assert len(features) > 1 and max(len(ids) for ids in features["input_ids"]) == 128
    with pytest.raises(S3ConfigError, match="doc_stride=128 and max_length=128"):
        tokenize_dataset("adqa", raw, qa_tokenizer, split="eval", max_length=128, doc_stride=128)


def test_same_seed_gives_the_same_fresh_model_whatever_ran_before(models, tmp_path):
    """The new task head is drawn with args.seed: random numbers drawn before (sampling, LLM calls) change nothing."""
    import random

    from transformers import AutoTokenizer, BertModel

    base = tmp_path / "encoder"  # an encoder without a classification head, like all-MiniLM-L6-v2
    BertModel.from_pretrained(models["cls"]).save_pretrained(base)
    AutoTokenizer.from_pretrained(models["cls"]).save_pretrained(base)
    raw = tiny_setup.rte_rows(8, seed=1)
    first = build_trainer("rte", base, raw, None, _args(tmp_path / "a", seed=3)).model
    torch.rand(1000)
    random.random()
    np.random.rand(10)
    second = build_trainer("rte", base, raw, None, _args(tmp_path / "b", seed=3)).model
    other = build_trainer("rte", base, raw, None, _args(tmp_path / "c", seed=4)).model
    pairs = list(zip(first.state_dict().items(), second.state_dict().items(), other.state_dict().values()))
    assert all(torch.equal(a, b) for (_, a), (_, b), _ in pairs)
    assert any(not torch.equal(a, c) for (_, a), _, c in pairs)  # the seed matters: some weights are fresh


def test_evaluation_reads_longest_first_and_returns_everything_in_dataset_order(models, tmp_path):
    from s3_hf.training import LengthSortedEvalTrainer, _length_order_sampler

    raw_train, raw_eval = tiny_setup.rte_rows(16, seed=11), tiny_setup.rte_rows(21, seed=12)
    seen: list[np.ndarray] = []

    def metrics_recording_labels(eval_pred):
        seen.append(np.asarray(eval_pred.label_ids))
        return {"rows": len(eval_pred.label_ids)}

    outputs = {}
    for sort in (True, False):
        trainer = build_trainer(
            "rte",
            models["cls"],
            raw_train,
            raw_eval,
            _args(tmp_path / str(sort), max_steps=1, seed=3),
            compute_metrics=metrics_recording_labels,
            sort_eval_by_length=sort,
        )
        assert isinstance(trainer, LengthSortedEvalTrainer) == sort
        trainer.train()
        loader = trainer.get_eval_dataloader()
        sampler = _length_order_sampler(loader)
        if sort:  # read longest first: the order differs from the dataset's, and the first batch is the widest
            lengths = [len(ids) for ids in trainer.eval_dataset["input_ids"]]
            assert list(sampler.order) != list(range(21))
            assert next(iter(loader))["input_ids"].shape[1] == max(lengths)
        else:
            assert sampler is None
        metrics = trainer.evaluate()
        predicted = trainer.predict(trainer.eval_dataset)
        assert np.array_equal(seen[-1], raw_eval["label"])  # compute_metrics got dataset order (predict's call)
        assert np.array_equal(seen[-2], raw_eval["label"])  # and evaluate's
        assert np.array_equal(predicted.label_ids, raw_eval["label"])
        assert trainer.compute_metrics.user_fn is metrics_recording_labels  # wrapped by the callback once, restored
        errors = trainer.misclassification_callback.errors
        outputs[sort] = (metrics, predicted.predictions, list(errors["eval_index"]), list(errors["hypothesis"]))
    (m_sorted, p_sorted, i_sorted, h_sorted), (m_plain, p_plain, i_plain, h_plain) = outputs[True], outputs[False]
    assert np.allclose(p_sorted, p_plain, atol=1e-5)  # the same logits per row, whatever the batch's padding
    assert i_sorted == i_plain and h_sorted == h_plain and len(i_sorted) == m_sorted["eval_misclassified"]
    assert m_sorted["eval_misclassified"] == m_plain["eval_misclassified"]
