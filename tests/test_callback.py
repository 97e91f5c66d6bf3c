"""MisclassificationCallback: the collected errors equal a direct reference computation (1 and 2 processes), with
every way of binding the callback to its Trainer."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

import misclassification_run  # noqa: E402
import reference  # noqa: E402
import tiny_setup  # noqa: E402

from s3_hf.callback import (  # noqa: E402
    MisclassificationCallback,
    MisclassificationTrainer,
    MisclassificationTrainerMixin,
)
from s3_hf.errors import S3ConfigError, S3DataError  # noqa: E402
from s3_hf.metrics import normalize_answer  # noqa: E402
from s3_hf.s3_json import read_s3_json  # noqa: E402

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

N_CLS, N_QA = 33, 12  # 33 is odd: with 2 processes and batches of 4 the sampler pads with duplicates


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny models, and gold sets whose errors are known: labels/answers are set from a direct reference pass."""
    root = tmp_path_factory.mktemp("callback")
    models = tiny_setup.make_models(root / "models")

    rte = tiny_setup.rte_rows(N_CLS, seed=2)
    logits = reference.classification_logits(models["cls"], rte)
    predicted = logits.argmax(-1)
    gold = [int(p) if i % 3 else int(1 - p) for i, p in enumerate(predicted)]  # every third example is wrong
    rte = rte.remove_columns("label").add_column("label", gold, feature=rte.features["label"])
    expected_cls = [i for i in range(N_CLS) if i % 3 == 0]

    qa = tiny_setup.qa_rows(N_QA, seed=4)
    answers = reference.qa_answers(
        models["qa"], qa, misclassification_run.QA_MAX_LENGTH, misclassification_run.QA_STRIDE
    )
    assert all(start >= 0 and text for text, start in answers)
    rows = qa.to_list()
    for i, (text, start) in enumerate(answers):
        if i % 2 == 0:  # even examples: gold = the model's answer (correct); odd ones keep their own answer
            rows[i]["answers"] = {"text": [text], "answer_start": [start]}
    import datasets

    qa = datasets.Dataset.from_list(rows, features=qa.features)
    expected_qa = [
        i for i in range(N_QA) if normalize_answer(answers[i][0]) != normalize_answer(qa[i]["answers"]["text"][0])
    ]
    assert expected_qa and all(i % 2 for i in expected_qa)

    data = root / "data"
    rte.save_to_disk(str(data / "rte"))
    qa.save_to_disk(str(data / "adqa"))
    return {
        "root": root,
        "models": models,
        "models_dir": root / "models",
        "data": data,
        "rte": rte,
        "qa": qa,
        "cls_probabilities": np.exp(logits) / np.exp(logits).sum(-1, keepdims=True),
        "cls_predicted": predicted,
        "expected_cls": expected_cls,
        "qa_answers": answers,
        "expected_qa": expected_qa,
    }


@pytest.fixture(scope="module")
def single_process(setup):
    out = setup["root"] / "single"
    out.mkdir()
    return misclassification_run.run(setup["models_dir"], setup["data"], out)


def _check_against_reference(result: dict, setup: dict) -> None:
    bindings = {key: result[key]["binding"] for key in ("rte-concat0", "rte-concat1", "adqa-concat0", "adqa-concat1")}
    assert sorted(bindings.values()) == sorted(misclassification_run.BINDINGS.values())  # each path ran once
    for key in bindings:
        assert result[key]["bound"] and result[key]["registered"] == 1, key  # bound, and registered exactly once
    assert result["adqa-concat0"]["custom_evaluations"] == 1  # the user's Trainer subclass really ran
    for concat in (0, 1):
        cls = result[f"rte-concat{concat}"]
        assert cls["eval_index"] == setup["expected_cls"]
        assert cls["predicted_label"] == [int(setup["cls_predicted"][i]) for i in setup["expected_cls"]]
        np.testing.assert_allclose(
            np.array(cls["probabilities"]), setup["cls_probabilities"][setup["expected_cls"]], atol=1e-4
        )
        assert cls["metrics"]["eval_misclassified"] == len(setup["expected_cls"])
        assert cls["metrics"]["eval_accuracy"] == pytest.approx(1 - len(setup["expected_cls"]) / N_CLS)
        qa = result[f"adqa-concat{concat}"]
        assert qa["eval_index"] == setup["expected_qa"]
        assert qa["predicted_answer"] == [setup["qa_answers"][i][0] for i in setup["expected_qa"]]
        assert qa["metrics"]["eval_misclassified"] == len(setup["expected_qa"])
        assert qa["metrics"]["eval_exact_match"] == pytest.approx(100 * (1 - len(setup["expected_qa"]) / N_QA))
        assert qa["metrics"]["eval_squad_exact_match"] == pytest.approx(qa["metrics"]["eval_exact_match"])


def test_single_process_errors_equal_reference(single_process, setup):
    _check_against_reference(single_process, setup)


def test_error_file_is_s3_json_of_the_errors(single_process, setup):
    path = Path(single_process["rte-concat1"]["path"])
    assert path.name == "step-0.jsonl" and path.parent.name == "misclassified"
    examples = read_s3_json(path, "rte")
    assert [e["premise"] for e in examples] == [setup["rte"][i]["premise"] for i in setup["expected_cls"]]
    assert [e["label"] for e in examples] == [setup["rte"][i]["label"] for i in setup["expected_cls"]]
    first = json.loads(path.read_text().splitlines()[0])
    assert {"text1", "text2", "label", "predicted_label", "probabilities", "eval_index", "step"} <= set(first)
    qa_path = Path(single_process["adqa-concat0"]["path"])
    qa_records = [json.loads(line) for line in qa_path.read_text().splitlines()]
    assert [r["id"] for r in qa_records] == [f"q{i}" for i in setup["expected_qa"]]
    assert {"context", "question", "answer", "start_idx", "end_idx", "predicted_answer", "exact_match", "f1"} <= set(
        qa_records[0]
    )
    assert len(read_s3_json(qa_path, "adqa")) == len(setup["expected_qa"])


def _torchrun(setup, out: Path, port: int, *extra: str) -> list[dict]:
    """Run tests/scripts/misclassification_run.py under 2 CPU processes; each process's result."""
    out.mkdir()
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(Path.cwd())}
    script = Path(__file__).parent / "scripts" / "misclassification_run.py"
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(port), str(script), str(setup["models_dir"]),
         str(setup["data"]), str(out), *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    return ranks


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_collect_exactly_the_single_process_errors(setup, single_process):
    ranks = _torchrun(setup, setup["root"] / "two", 29731)
    for rank, result in enumerate(ranks):
        _check_against_reference(result, setup)  # every process holds the full, de-duplicated set, for every binding
        for key in ("rte-concat0", "rte-concat1", "adqa-concat0", "adqa-concat1"):
            assert result[key]["eval_index"] == single_process[key]["eval_index"]
            assert (result[key]["path"] is not None) == (rank == 0)  # only the main process writes
    written = Path(ranks[0]["rte-concat0"]["path"])
    assert len(written.read_text().splitlines()) == len(setup["expected_cls"])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_with_an_unbound_callback_all_raise(setup):
    ranks = _torchrun(setup, setup["root"] / "two-unbound", 29732, "unbound")
    for result in ranks:  # every process raises the same clear error (and none waits for the other)
        assert result["error"] == "S3ConfigError" and "attach(trainer)" in result["message"], result
        assert result["reports"] == 0


# ---------------------------------------------------------------------- binding paths and edge cases
def _trainer(setup, tmp_path, compute_metrics=None, callbacks=None, trainer_class=None, features=None, **kwargs):
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    from s3_hf.training import load_small_model, tokenize_dataset

    tokenizer = AutoTokenizer.from_pretrained(setup["models"]["cls"])
    features = features if features is not None else tokenize_dataset("rte", setup["rte"], tokenizer, split="eval")
    args = TrainingArguments(
        str(tmp_path), per_device_eval_batch_size=8, use_cpu=True, report_to=[], disable_tqdm=True, **kwargs
    )
    return (trainer_class or Trainer)(
        model=load_small_model("rte", setup["models"]["cls"]),
        args=args,
        train_dataset=features,
        eval_dataset=features,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )


def _ours(trainer) -> list[MisclassificationCallback]:
    return [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MisclassificationCallback)]


def _wrappers(trainer) -> int:
    """How many times ``trainer.compute_metrics`` is wrapped."""
    count, fn = 0, trainer.compute_metrics
    while hasattr(fn, "callback") and hasattr(fn, "user_fn"):
        count, fn = count + 1, fn.user_fn
    return count


def test_callbacks_list_on_a_plain_trainer_needs_attach(setup, tmp_path):
    callback = MisclassificationCallback("rte", setup["rte"], write_files=False)
    trainer = _trainer(setup, tmp_path, callbacks=[callback], max_steps=1)
    assert callback.trainer is None and _wrappers(trainer) == 0  # transformers never tells a callback its Trainer
    with pytest.raises(S3ConfigError, match=r"attach\(trainer\)"):
        trainer.evaluate()
    with pytest.raises(S3ConfigError, match="on_train_begin"):  # fails before any training step, not after
        trainer.train()
    assert trainer.state.global_step == 0
    assert callback.attach(trainer) is callback
    assert callback.attach(trainer) is callback  # idempotent
    assert callback.trainer is trainer and _ours(trainer) == [callback] and _wrappers(trainer) == 1
    metrics = trainer.evaluate()
    assert list(callback.errors["eval_index"]) == setup["expected_cls"]
    assert metrics["eval_misclassified"] == len(setup["expected_cls"])


def test_add_callback_instance_then_attach_keeps_user_metrics(setup, tmp_path):
    calls = []

    def user_metrics(eval_pred):
        calls.append(len(eval_pred.predictions))
        return {"my_accuracy": float((eval_pred.predictions.argmax(-1) == eval_pred.label_ids).mean())}

    trainer = _trainer(setup, tmp_path, compute_metrics=user_metrics)
    callback = MisclassificationCallback("rte", setup["rte"])
    trainer.add_callback(callback)
    callback.attach(trainer)
    assert _ours(trainer) == [callback] and _wrappers(trainer) == 1  # not added a second time
    metrics = trainer.evaluate()
    assert calls == [N_CLS]
    assert metrics["eval_my_accuracy"] == pytest.approx(1 - len(setup["expected_cls"]) / N_CLS)
    assert list(callback.errors["eval_index"]) == setup["expected_cls"]
    assert metrics["eval_misclassified"] == len(setup["expected_cls"])
    per_label = sum(metrics[f"eval_misclassified_{name}"] for name in ("entailment", "not_entailment"))
    assert per_label == len(setup["expected_cls"])
    assert trainer.state.log_history[-1]["eval_misclassified"] == len(setup["expected_cls"])

    replaced = []
    trainer.compute_metrics = lambda eval_pred: replaced.append(1) or {"other": 1.0}  # replaced after attach
    metrics = trainer.evaluate()
    assert replaced == [1] and metrics["eval_other"] == 1.0 and len(callback.history) == 2  # wrapped again


def test_mixin_trainer_attaches_callbacks_list_and_add_callback(setup, tmp_path):
    given = MisclassificationCallback("rte", setup["rte"], write_files=False)
    trainer = _trainer(setup, tmp_path, callbacks=[given], trainer_class=MisclassificationTrainer)
    assert given.trainer is trainer and _wrappers(trainer) == 1  # no compute_metrics: still gathers logits
    added = MisclassificationCallback("rte", setup["rte"], write_files=False)
    trainer.add_callback(added)
    assert added.trainer is trainer and _ours(trainer) == [given, added] and _wrappers(trainer) == 2
    added.attach(trainer)  # explicit attach on top of the mixin's: still one wrapper each
    assert _ours(trainer) == [given, added] and _wrappers(trainer) == 2
    metrics = trainer.evaluate()
    for callback in (given, added):
        assert list(callback.errors["eval_index"]) == setup["expected_cls"]
    assert metrics["eval_error_rate"] == pytest.approx(len(setup["expected_cls"]) / N_CLS)


def test_add_callback_with_the_class_is_a_clear_error(setup, tmp_path):
    for trainer_class in (None, MisclassificationTrainer):
        trainer = _trainer(setup, tmp_path, trainer_class=trainer_class)
        with pytest.raises(S3ConfigError, match="add an instance instead"):
            trainer.add_callback(MisclassificationCallback)  # transformers instantiates it without arguments
        assert _ours(trainer) == [] and _wrappers(trainer) == 0


def test_subclassed_trainer_with_the_mixin(setup, tmp_path):
    from transformers import Trainer

    class MyTrainer(Trainer):  # a user's own Trainer, e.g. with its own loss
        losses = 0

        def compute_loss(self, model, inputs, *args, **kwargs):
            MyTrainer.losses += 1
            return super().compute_loss(model, inputs, *args, **kwargs)

    class MyS3Trainer(MisclassificationTrainerMixin, MyTrainer):
        pass

    callback = MisclassificationCallback("rte", setup["rte"], write_files=False)
    trainer = _trainer(setup, tmp_path, callbacks=[callback], trainer_class=MyS3Trainer)
    assert callback.trainer is trainer
    trainer.evaluate()
    assert MyTrainer.losses > 0  # the subclass's own code ran
    assert list(callback.errors["eval_index"]) == setup["expected_cls"]

    plain = MisclassificationCallback("rte", setup["rte"], write_files=False)  # a subclass without the mixin
    subclassed = _trainer(setup, tmp_path, trainer_class=MyTrainer)
    plain.attach(subclassed).trainer.evaluate()
    assert list(plain.errors["eval_index"]) == setup["expected_cls"]

    with pytest.raises(S3ConfigError, match="before the Trainer class"):

        class WrongOrder(MyTrainer, MisclassificationTrainerMixin):  # the mixin's __init__ would never run
            pass


def test_attach_refuses_a_second_trainer_and_non_trainers(setup, tmp_path):
    callback = MisclassificationCallback("rte", setup["rte"], write_files=False)
    callback.attach(_trainer(setup, tmp_path))
    with pytest.raises(S3ConfigError, match="another Trainer"):
        callback.attach(_trainer(setup, tmp_path))
    with pytest.raises(S3ConfigError, match="another Trainer"):
        _trainer(setup, tmp_path, callbacks=[callback], trainer_class=MisclassificationTrainer)
    with pytest.raises(S3ConfigError, match="dict"):
        MisclassificationCallback("rte", setup["rte"]).attach({"not": "a trainer"})


def test_evaluation_without_predictions_is_an_error(setup, tmp_path, caplog):
    from s3_hf.errors import S3Error

    unlabeled = _trainer(setup, tmp_path).eval_dataset.remove_columns("label")
    callback = MisclassificationCallback("rte", setup["rte"], write_files=False)
    trainer = _trainer(setup, tmp_path, callbacks=[callback], trainer_class=MisclassificationTrainer)
    with pytest.raises(S3ConfigError, match="saw no predictions") as raised:
        trainer.evaluate(eval_dataset=unlabeled)  # no labels: the Trainer never calls compute_metrics
    assert isinstance(raised.value, S3Error) and "label_names" in str(raised.value)
    loss_only = MisclassificationCallback("rte", setup["rte"], write_files=False)
    trainer = _trainer(setup, tmp_path, trainer_class=MisclassificationTrainer, prediction_loss_only=True)
    loss_only.attach(trainer)
    with pytest.raises(S3ConfigError, match="prediction_loss_only is False \\(got True\\)"):
        trainer.evaluate()
    assert loss_only.reports == []

    # predictions of another (smaller) eval set are skipped with a warning, not an error
    trainer = _trainer(setup, tmp_path, trainer_class=MisclassificationTrainer)
    other = MisclassificationCallback("rte", setup["rte"], write_files=False).attach(trainer)
    with caplog.at_level(logging.WARNING, logger="s3_hf.callback"):
        trainer.evaluate(eval_dataset=trainer.eval_dataset.select(range(10)))
    assert other.reports == [] and "10 predictions" in caplog.text
    trainer.evaluate()
    assert list(other.errors["eval_index"]) == setup["expected_cls"]


def test_attach_without_compute_metrics_writes_files(setup, tmp_path):
    trainer = _trainer(setup, tmp_path)
    callback = MisclassificationCallback("rte", setup["rte"]).attach(trainer)
    metrics = trainer.evaluate()
    assert list(callback.errors["eval_index"]) == setup["expected_cls"]
    assert metrics["eval_error_rate"] == pytest.approx(len(setup["expected_cls"]) / N_CLS)
    assert (tmp_path / "misclassified" / "step-0.jsonl").is_file()
    trainer.evaluate()  # same step again: a second file, not an overwrite
    assert (tmp_path / "misclassified" / "step-0-2.jsonl").is_file()
    trainer.predict(trainer.eval_dataset)  # predict() is not an evaluation of the gold set
    assert len(callback.history) == 2


def test_misaligned_raw_eval_set_is_refused(setup, tmp_path):
    shuffled = setup["rte"].shuffle(seed=3)
    trainer = _trainer(
        setup, tmp_path, callbacks=[MisclassificationCallback("rte", shuffled)], trainer_class=MisclassificationTrainer
    )
    with pytest.raises(S3DataError, match="row-aligned"):
        trainer.evaluate()


def test_bad_arguments_are_refused(setup, tmp_path):
    with pytest.raises(S3ConfigError, match="1.5"):
        MisclassificationCallback("adqa", f1_threshold=1.5)
    with pytest.raises(S3ConfigError, match="batch_eval_metrics"):
        MisclassificationCallback("rte", setup["rte"]).attach(_trainer(setup, tmp_path, batch_eval_metrics=True))


def test_load_best_model_at_end_gives_the_chosen_models_errors(setup, tmp_path):
    callback = MisclassificationCallback("rte", setup["rte"], write_files=False)
    trainer = _trainer(
        setup,
        tmp_path,
        callbacks=[callback],
        trainer_class=MisclassificationTrainer,
        max_steps=6,
        learning_rate=5e-3,
        per_device_train_batch_size=8,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="misclassified",
        greater_is_better=False,
    )
    trainer.train()
    assert [r.step for r in callback.reports] == [2, 4, 6]
    best_step = trainer.state.best_global_step
    assert best_step in (2, 4, 6)
    best = callback.best_errors
    assert best is not None and set(best["step"]) <= {best_step}
    assert len(best) == min(r.metrics["misclassified"] for r in callback.reports)
    trainer.evaluate()  # the loaded best model gives the same errors again
    assert list(callback.errors["eval_index"]) == list(best["eval_index"])


def test_inputs_for_metrics_and_preprocessed_logits(setup, tmp_path):
    seen = {}

    def user_metrics(eval_pred):
        seen["inputs"] = eval_pred.inputs is not None and eval_pred.losses is not None
        return {"n": float(len(eval_pred.predictions))}

    trainer = _trainer(setup, tmp_path, compute_metrics=user_metrics, include_for_metrics=["inputs", "loss"])
    trainer.preprocess_logits_for_metrics = lambda logits, labels: logits.argmax(-1)  # ids only: no probabilities
    callback = MisclassificationCallback("rte", setup["rte"], write_files=False).attach(trainer)
    metrics = trainer.evaluate()
    assert seen["inputs"] and metrics["eval_n"] == N_CLS
    assert list(callback.errors["eval_index"]) == setup["expected_cls"]
    assert callback.errors["probabilities"][0] is None
    trainer.remove_callback(callback)
    metrics = trainer.evaluate()
    assert "eval_misclassified" not in metrics and len(callback.history) == 1
