"""Builders (configs seed / round_k / all) and the Hub-layout export that plain `load_dataset` reads."""

import json
import os
from pathlib import Path

import pytest
from datasets import load_dataset
from samples import COLUMNS, RECORDS

from s3_hf.builders import RteS3Builder, build_config, discover_configs
from s3_hf.errors import S3DataError
from s3_hf.export import export_s3_folder, main

SHARED_RTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "s3_release" / "RTE"


def _folder(tmp_path: Path, task: str) -> Path:
    src = tmp_path / f"src_{task}"
    src.mkdir()
    recs = RECORDS[task]
    (src / f"{task}_seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    # round 1 in the column-list form, round 2 in the record form
    (src / f"{task}_additional_1.json").write_text(json.dumps([[r[k] for r in recs[:1]] for k in COLUMNS[task]]))
    (src / f"{task}_round_2.json").write_text(json.dumps(recs[1]) + "\n")
    return src


def test_discover_configs_orders_rounds(tmp_path):
    src = _folder(tmp_path, "rte")
    assert list(discover_configs(src)) == ["seed", "round_1", "round_2"]
    (src / "notes.json").write_text("{}")
    with pytest.raises(S3DataError, match=r"notes\.json.*names no config"):
        discover_configs(src)


@pytest.mark.parametrize("task", sorted(RECORDS))
def test_export_then_load_dataset_every_task(tmp_path, task):
    src = _folder(tmp_path, task)
    out = tmp_path / f"{task}_repo"
    sizes = export_s3_folder(task, src, out)
    assert sizes == {"seed": 2, "round_1": 1, "round_2": 1, "all": 4}
    for config, rows in sizes.items():
        ds = load_dataset(str(out), config, split="train")
        assert ds.num_rows == rows
    all_rows = load_dataset(str(out), "all", split="train")
    if task == "adqa":
        assert all_rows.features["answers"]["answer_start"].feature.dtype == "int32"
        assert all_rows[2]["answers"]["text"] == ["1889"]
    else:
        assert (
            all_rows.features["label"].names == list(RteS3Builder(config_name="all").spec.label_names)
            or task == "imdb"
        )
        assert all_rows["label"][:2] == [RECORDS[task][0]["label"], RECORDS[task][1]["label"]]
    card = (out / "README.md").read_text()
    assert "config_name: round_1" in card and f"task: {task}" in card


def test_bad_json_writes_nothing_and_keeps_existing_output(tmp_path):
    src = _folder(tmp_path, "rte")
    (src / "rte_round_3.json").write_text(json.dumps(RECORDS["rte"][0]) + "\n" + '{"text1": "p", "text2": "h"}\n')
    out = tmp_path / "repo"
    with pytest.raises(S3DataError, match=r"rte_round_3\.json, line 2, field 'label'"):
        export_s3_folder("rte", src, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_s3_folder("rte", src, out)
    with pytest.raises(S3DataError):
        export_s3_folder("rte", src, out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"


def test_builder_used_directly(tmp_path):
    src = _folder(tmp_path, "qnli")
    ds = build_config("qnli", src, "round_2")
    assert ds.num_rows == 1 and ds.features["label"].names == ["entailment", "not_entailment"]
    with pytest.raises(S3DataError, match="no data for config 'round_7'"):
        build_config("qnli", src, "round_7")


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["--task", "rte", "--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 1
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_RTE.is_dir(), reason="the authors' RTE release (../shared) is not present")
def test_authors_rte_release_exports_every_row(tmp_path):
    out = tmp_path / "rte_s3"
    sizes = export_s3_folder("rte", SHARED_RTE, out)
    expected = {p.name: sum(1 for line in p.read_text().splitlines() if line.strip()) for p in SHARED_RTE.iterdir()}
    assert sizes["round_1"] == expected["rte_additional_1.json"] == 883
    assert sizes["round_2"] == expected["rte_additional_2.json"]
    ds = load_dataset(str(out), "round_1", split="train")
    assert ds.num_rows == 883 and ds.features["label"].names == ["entailment", "not_entailment"]
    assert os.path.exists(out / "all" / "train-00000-of-00001.parquet")
