"""The two S3 json forms, for every built-in task, and the bad-input errors (file, line/row, field)."""

import json
from pathlib import Path

import pytest
from samples import COLUMNS, CTX, RECORDS

from s3_hf.errors import S3DataError
from s3_hf.s3_json import read_s3_json, write_s3_json


def _write_lines(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _write_columns(path: Path, task, records) -> Path:
    path.write_text(json.dumps([[r[k] for r in records] for k in COLUMNS[task]]), encoding="utf-8")
    return path


@pytest.mark.parametrize("task", sorted(RECORDS))
def test_both_forms_give_the_same_canonical_examples(tmp_path, task):
    lines = read_s3_json(_write_lines(tmp_path / "a.jsonl", RECORDS[task]), task)
    columns = read_s3_json(_write_columns(tmp_path / "b.json", task, RECORDS[task]), task)
    assert lines == columns
    assert len(lines) == 2
    if task == "adqa":
        assert lines[0] == {
            "id": "q1",
            "context": CTX,
            "question": "When was it finished?",
            "answers": {"text": ["1889"], "answer_start": [33]},
        }
    elif task == "rte":
        assert lines[1] == {"premise": CTX, "hypothesis": "The tower is in Rome.", "label": 1}
    elif task == "qnli":
        assert lines[0]["question"] == "When was the Eiffel Tower finished?" and lines[0]["sentence"] == CTX


@pytest.mark.parametrize("task", sorted(RECORDS))
def test_write_then_read_round_trips(tmp_path, task):
    examples = read_s3_json(_write_lines(tmp_path / "a.jsonl", RECORDS[task]), task)
    out = tmp_path / "out" / "b.jsonl"
    assert write_s3_json(out, examples, task) == 2
    assert read_s3_json(out, task) == examples
    assert json.loads(out.read_text().splitlines()[0]).keys() == set(COLUMNS[task])


def test_label_names_and_squad_style_records_are_accepted(tmp_path):
    rte = read_s3_json(
        _write_lines(tmp_path / "r.jsonl", [{"text1": CTX, "text2": "It is in Paris.", "label": "entailment"}]), "rte"
    )
    assert rte[0]["label"] == 0
    squad = {"context": CTX, "question": "Where?", "answers": {"text": ["Paris"], "answer_start": [41]}}
    qa = read_s3_json(_write_lines(tmp_path / "q.jsonl", [squad]), "adqa")
    assert qa[0]["answers"] == {"text": ["Paris"], "answer_start": [41]} and len(qa[0]["id"]) == 40


@pytest.mark.parametrize(
    "task, line2, field, needle",
    [
        ("rte", '{"text1": "a premise", "label": 0}', "text2", "missing"),
        ("rte", '{"text1": "a premise", "text2": "a hypothesis", "label": 7}', "label", "not in"),
        ("imdb", '{"text": "", "label": 1}', "text", "empty"),
        ("imdb", '{"text": "fine", "label": "great"}', "label", "not in"),
        (
            "adqa",
            json.dumps({"context": CTX, "question": "When?", "answer": "1889", "start_idx": 30}),
            "start_idx",
            "not the span",
        ),
        (
            "adqa",
            json.dumps({"context": CTX, "question": "When?", "answer": "1889", "start_idx": 33, "end_idx": 50}),
            "end_idx",
            "does not end",
        ),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, task, line2, field, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[task][0]) + "\n" + line2 + "\n")
    with pytest.raises(S3DataError) as info:
        read_s3_json(path, task)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), 2, field)
    assert needle in str(err) and "bad.jsonl, line 2" in str(err)


def test_malformed_json_line_and_column_list_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS["imdb"][0]) + "\n\n" + '{"text": "oops", "label": 1\n')
    with pytest.raises(S3DataError, match=r"bad\.jsonl, line 3: invalid JSON"):
        read_s3_json(path, "imdb")
    cols = tmp_path / "cols.json"
    cols.write_text(json.dumps([["a fine film", "bad film"], [1, 5]]))
    with pytest.raises(S3DataError) as info:
        read_s3_json(cols, "imdb")
    assert (info.value.row, info.value.field) == (2, "label")
    cols.write_text(json.dumps([["a fine film"], [1], [0]]))
    with pytest.raises(S3DataError, match="has 2 columns"):
        read_s3_json(cols, "imdb")
    cols.write_text(json.dumps([["a fine film", "x y z"], [1]]))
    with pytest.raises(S3DataError, match="differ in length"):
        read_s3_json(cols, "imdb")


def test_failed_write_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    good = {"text": "fine film", "label": 1}
    with pytest.raises(ValueError):
        write_s3_json(out, [good, {"text": "x", "label": 9}], "imdb")
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    out = tmp_path / "data.jsonl"
    write_s3_json(out, [{"text": "fine film", "label": 1}], "imdb")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_empty_answer_lists_name_file_line_and_field(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"context": CTX, "question": "When?", "answer": [], "start_idx": []}) + "\n")
    with pytest.raises(S3DataError) as info:
        read_s3_json(path, "adqa")
    assert (info.value.line, info.value.field) == (1, "answer")


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(RECORDS["imdb"][0]).encode() + b'\n{"text": "caf\xe9 film", "label": 1}\n')
    with pytest.raises(S3DataError, match=r"latin1\.jsonl, line 2: not UTF-8"):
        read_s3_json(path, "imdb")
