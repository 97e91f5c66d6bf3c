"""Gold data adapters: the offline IMDb split, QNLI derived from SQuAD, local files with bad rows."""

import json

import pytest

from s3_hf.errors import S3ConfigError, S3DataError
from s3_hf.gold import context_pool, load_gold, qnli_pairs


def test_offline_imdb_split_is_fixed_disjoint_and_balanced_enough():
    gold = load_gold("imdb")
    assert {k: v.num_rows for k, v in gold.items()} == {"validation": 1000, "test": 2000, "train": 21904}
    val, test, train = (set(gold[s]["text"]) for s in ("validation", "test", "train"))
    assert not (val & test) and not (val & train) and not (test & train)
    assert 400 < sum(gold["validation"]["label"]) < 600
    assert gold["validation"][0] == load_gold("imdb")["validation"][0]  # fixed permutation


def test_qnli_pairs_follow_glue_recipe():
    article = {
        "paragraphs": [
            {
                "context": "Paris is the capital. It lies on the Seine. Rome is in Italy.",
                "qas": [
                    {"question": "What river is Paris on?", "answers": [{"text": "the Seine", "answer_start": 33}]}
                ],
            }
        ]
    }
    rows = qnli_pairs([article])
    assert rows["label"] == [0, 1]
    assert rows["sentence"][0] == "It lies on the Seine."
    assert rows["sentence"][1] == "Paris is the capital."  # the negative with the most word overlap


def test_local_gold_file_with_glue_columns_and_bad_row(tmp_path):
    good = {"sentence1": "A man walks.", "sentence2": "Someone walks.", "label": 0}
    path = tmp_path / "rte_validation.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "label": 1}) + "\n")
    gold = load_gold("rte", str(path))
    assert gold["validation"].column_names == ["premise", "hypothesis", "label"]
    assert gold["validation"]["label"] == [0, 1]
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "label": 4}) + "\n")
    with pytest.raises(S3DataError) as info:
        load_gold("rte", str(path))
    assert (info.value.line, info.value.field) == (2, "label")


def test_rte_has_no_offline_gold_and_says_what_to_do():
    with pytest.raises(S3ConfigError, match="nyu-mll/glue"):
        load_gold("rte")


def test_context_pools():
    assert context_pool("imdb") == []
    rte = context_pool("rte", limit=50)
    assert len(rte) == 50 and all(20 <= len(c) <= 400 for c in rte)
    assert context_pool("rte", limit=5) == rte[:5]


def test_gold_from_a_hub_dataset_id_maps_glue_columns(hub_server):
    """`load_gold("rte", "<org>/glue")` through the real datasets client, against the loopback Hub."""
    import datasets

    glue = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {
                    "sentence1": ["A man walks.", "It rains."],
                    "sentence2": ["Someone walks.", "It is dry."],
                    "label": [0, 1],
                    "idx": [0, 1],
                }
            ),
            "test": datasets.Dataset.from_dict(
                {"sentence1": ["A cat sleeps."], "sentence2": ["A cat rests."], "label": [-1], "idx": [0]}
            ),
        }
    )
    repo = "s3-tester/glue"
    glue.push_to_hub(repo, config_name="rte")
    gold = load_gold("rte", repo, name="rte")
    assert gold["train"].column_names == ["premise", "hypothesis", "label"]
    assert gold["train"]["label"] == [0, 1]
    assert gold["train"].features["label"].names == ["entailment", "not_entailment"]
    assert gold["test"].num_rows == 0  # GLUE test labels are hidden (-1): unlabelled rows are dropped


def test_csv_gold_error_line_counts_the_header_and_dropped_rows(tmp_path):
    path = tmp_path / "rte_test.csv"
    path.write_text(
        "sentence1,sentence2,label\nA man walks.,Someone walks.,0\nHidden.,Label.,-1\nA cat.,An animal.,7\n"
    )
    with pytest.raises(S3DataError) as info:
        load_gold("rte", str(path))
    assert (info.value.line, info.value.field) == (4, "label")


def test_a_missing_local_file_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(S3ConfigError, match="no such file"):
        load_gold("rte", str(tmp_path / "gold.jsonl"))
    with pytest.raises(S3ConfigError, match="no such file"):
        load_gold("rte", "rte_gold.jsonl")
