import pytest

from s3_hf import S3ConfigError, TaskSpec, get_task, list_tasks, load_task_yaml, register_task


def test_builtin_tasks_describe_their_data():
    assert {"imdb", "qnli", "rte", "adqa"} <= set(list_tasks())
    rte = get_task("rte")
    assert rte.label_names == ("entailment", "not_entailment")
    assert rte.s3_keys == {"premise": "text1", "hypothesis": "text2", "label": "label"}
    assert rte.features["label"].names == ["entailment", "not_entailment"]
    qnli = get_task("qnli")
    assert qnli.input_fields == ("question", "sentence") and qnli.generated_field == "question"
    assert qnli.s3_columns == ("sentence", "question", "label")
    adqa = get_task("adqa")
    assert adqa.is_qa and adqa.metric == "squad"
    assert set(adqa.features["answers"]) == {"text", "answer_start"}
    assert get_task("imdb").features["label"].names == ["negative", "positive"]


def test_fingerprint_follows_what_changes_output():
    rte = get_task("rte")
    assert rte.fingerprint() == get_task("rte").fingerprint()
    import dataclasses

    bumped = dataclasses.replace(rte, version="9.9.9")
    assert bumped.fingerprint() != rte.fingerprint()


def test_invalid_reason_checks_labels_lengths_and_spans():
    rte = get_task("rte")
    ok = {"premise": "A man walks his dog.", "hypothesis": "A man is outside.", "label": 0}
    assert rte.invalid_reason(ok) is None
    assert rte.invalid_reason({**ok, "label": 2})[0] == "label"
    assert rte.invalid_reason({**ok, "hypothesis": "  "}) == ("hypothesis", "is empty")
    assert rte.invalid_reason({**ok, "label": "entailment"}) is None
    adqa = get_task("adqa")
    qa = {
        "id": "1",
        "context": "Paris is in France.",
        "question": "Where is Paris?",
        "answers": {"text": ["France"], "answer_start": [12]},
    }
    assert adqa.invalid_reason(qa) is None
    bad = {**qa, "answers": {"text": ["France"], "answer_start": [3]}}
    assert adqa.invalid_reason(bad)[0] == "answers"


def test_user_task_from_dataclass_and_yaml(tmp_path):
    spec = register_task(
        TaskSpec(
            name="topic3",
            kind="classification",
            description="news topic",
            input_fields=("text",),
            label_names=("world", "sports", "business"),
        ),
        overwrite=True,
    )
    assert get_task("topic3") is spec and spec.num_labels == 3 and spec.s3_keys["text"] == "text"
    path = tmp_path / "task.yaml"
    path.write_text(
        "name: stance\nkind: classification\ndescription: stance\ninput_fields: [text]\n"
        "label_names: [against, neutral, favor]\n"
    )
    assert load_task_yaml(path).label_names == ("against", "neutral", "favor")
    assert get_task("stance").features["label"].num_classes == 3


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"label_names": ("only",)}, "label_names"),
        ({"kind": "regression"}, "'regression'"),
        ({"generated_field": "nope"}, "'nope'"),
    ],
)
def test_bad_specs_print_the_bad_value(kwargs, needle):
    base = dict(name="x", kind="classification", description="d", input_fields=("text",), label_names=("a", "b"))
    with pytest.raises(S3ConfigError, match=needle):
        TaskSpec(**{**base, **kwargs})


def test_bad_yaml_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nkind: classification\nlabels: [a, b]\n")
    with pytest.raises(S3ConfigError, match=r"bad\.yaml.*unknown TaskSpec field.*labels"):
        load_task_yaml(path)
    with pytest.raises(S3ConfigError, match="unknown task"):
        get_task("no-such-task")


def test_task_yaml_with_bad_prompts_names_the_file(tmp_path):
    path = tmp_path / "prompted.yaml"
    path.write_text(
        "name: p\nkind: classification\ndescription: d\ninput_fields: [text]\nlabel_names: [a, b]\n"
        "prompts: {version: '1', sytem: typo}\n"
    )
    with pytest.raises(S3ConfigError, match=r"prompted\.yaml: .*sytem"):
        load_task_yaml(path)


def test_fingerprint_ignores_where_gold_data_lives():
    import dataclasses

    rte = get_task("rte")
    assert dataclasses.replace(rte, hub_gold={"path": "me/rte"}).fingerprint() == rte.fingerprint()
