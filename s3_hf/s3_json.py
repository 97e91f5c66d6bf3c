"""Read and write the json data of the S3 release, in both of its forms, as canonical examples.

The S3 authors released their synthetic data as JSON lines, one record a line, keyed by the original field names:
IMDb ``{"text", "label"}``, QNLI/RTE ``{"text1", "text2", "label"}`` (see :attr:`TaskSpec.s3_keys`). Their README also
describes a column-list form: one JSON array of columns, e.g. RTE ``[[premises], [hypotheses], [labels]]`` and AdQA
``[[contexts], [questions], [answers], [start_idx], [end_idx], [id]]`` (order: :attr:`TaskSpec.s3_columns`). Both
are read here, and only here; QA records may also be SQuAD-style (``answers: {text, answer_start}``).

Every problem raises :class:`~s3_hf.errors.S3DataError` naming the file, the line (or row) and the field.

Example:

```python
>>> from s3_hf.s3_json import read_s3_json
>>> rows = read_s3_json("rte_additional_1.json", "rte")
>>> sorted(rows[0])
['hypothesis', 'label', 'premise']
```
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .atomic import atomic_open
from .errors import S3DataError
from .tasks import TaskSpec, get_task


def qa_id(context: str, question: str) -> str:
    """The id given to a QA example that has none: sha1 of its context and question."""
    return hashlib.sha1(f"{context}\x1f{question}".encode()).hexdigest()


def _field_key(spec: TaskSpec, name: str) -> str:
    """The json key a user sees for canonical field ``name``."""
    return spec.s3_keys.get(name, name)


def _get(record: dict[str, Any], spec: TaskSpec, name: str, *, required: bool = True) -> Any:
    key = _field_key(spec, name)
    if key in record:
        return record[key]
    if name in record:  # canonical names are accepted as aliases of the S3 keys
        return record[name]
    if required:
        raise KeyError(key)
    return None


def _qa_example(record: dict[str, Any], spec: TaskSpec) -> dict[str, Any]:
    """Canonical QA example from an S3 record (answer/start_idx/end_idx) or a SQuAD-style one (answers)."""
    context = _get(record, spec, "context")
    question = _get(record, spec, "question")
    if "answers" in record:
        answers = record["answers"]
        if not isinstance(answers, dict):
            raise ValueError("answers", "must be {'text': [...], 'answer_start': [...]}")
        texts, starts = answers.get("text"), answers.get("answer_start")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        starts = [starts] if isinstance(starts, int) else list(starts or [])
        end = None
    else:
        answer = _get(record, spec, "answer")
        start = _get(record, spec, "start_idx")
        end = _get(record, spec, "end_idx", required=False)
        texts = list(answer) if isinstance(answer, list) else [answer]
        starts = list(start) if isinstance(start, list) else [start]
        if not texts:
            raise ValueError("answer", "is an empty list")
        if not starts:
            raise ValueError("start_idx", "is an empty list")
        if isinstance(end, list):
            end = end[0] if end else None
        if not isinstance(texts[0], str):
            raise ValueError("answer", f"must be a string, got {type(texts[0]).__name__}")
        if not isinstance(starts[0], int) or isinstance(starts[0], bool):
            raise ValueError("start_idx", f"must be an integer, got {starts[0]!r}")
        if isinstance(context, str) and context[starts[0] : starts[0] + len(texts[0])] != texts[0]:
            found = context[starts[0] : starts[0] + len(texts[0])] if isinstance(context, str) else ""
            raise ValueError(
                "start_idx",
                f"answer {texts[0]!r} is not the span of the context at start_idx={starts[0]} "
                f"(the context there reads {found!r})",
            )
        if end is not None:
            if not isinstance(end, int) or isinstance(end, bool):
                raise ValueError("end_idx", f"must be an integer, got {end!r}")
            # the release is not explicit on whether end_idx is exclusive or inclusive: accept both, nothing else
            if end not in (starts[0] + len(texts[0]), starts[0] + len(texts[0]) - 1):
                raise ValueError(
                    "end_idx",
                    f"{end} does not end the answer {texts[0]!r} that starts at {starts[0]} "
                    f"(expected {starts[0] + len(texts[0])})",
                )
    qid = record.get(_field_key(spec, "id"), record.get("id"))
    if qid is None or qid == "":
        qid = qa_id(str(context), str(question))
    return {
        "id": str(qid),
        "context": context,
        "question": question,
        "answers": {"text": texts, "answer_start": starts},
    }


def record_to_example(record: Any, spec: TaskSpec | str) -> dict[str, Any]:
    """Canonical example from one S3 json record; raises ``ValueError((field, reason))`` (field = json key)."""
    spec = get_task(spec)
    if not isinstance(record, dict):
        raise ValueError(None, f"a record must be a JSON object, got {type(record).__name__}")
    try:
        if spec.is_qa:
            example = _qa_example(record, spec)
        else:
            example = {name: _get(record, spec, name) for name in spec.columns}
    except KeyError as err:
        raise ValueError(err.args[0], "is missing") from None
    problem = spec.invalid_reason(example, check_lengths=False)
    if problem is not None:
        name, reason = problem
        raise ValueError(_field_key(spec, name) if name != "answers" else "answer", reason)
    if not spec.is_qa:
        example["label"] = spec.label_id(example["label"])
    return example


def example_to_record(example: dict[str, Any], spec: TaskSpec | str) -> dict[str, Any]:
    """The S3 json record (release keys) of a canonical example; QA uses ``answer/start_idx/end_idx`` (exclusive)."""
    spec = get_task(spec)
    if spec.is_qa:
        text = example["answers"]["text"][0]
        start = int(example["answers"]["answer_start"][0])
        return {
            "context": example["context"],
            "question": example["question"],
            "answer": text,
            "start_idx": start,
            "end_idx": start + len(text),
            "id": example["id"],
        }
    record = {spec.s3_keys[name]: example[name] for name in spec.input_fields}
    record[spec.s3_keys["label"]] = spec.label_id(example["label"])
    return record


def _column_list_records(data: list, spec: TaskSpec, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    columns = spec.s3_columns
    if len(data) != len(columns):
        raise S3DataError(
            f"the column-list form of task {spec.name!r} has {len(columns)} columns {list(columns)}, got {len(data)}",
            file=path,
            line=1,
        )
    lengths = {len(col) for col in data}
    if len(lengths) != 1:
        sizes = {columns[i]: len(col) for i, col in enumerate(data)}
        raise S3DataError(f"columns differ in length: {sizes}", file=path, line=1)
    for row in range(lengths.pop()):
        yield row, {_field_key(spec, name): data[j][row] for j, name in enumerate(columns)}


def iter_s3_json(path: str | Path, task: TaskSpec | str) -> Iterator[dict[str, Any]]:
    """Yield canonical examples from an S3 json file (record lines, a JSON array of records, or column lists)."""
    spec = get_task(task)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise S3DataError(f"not UTF-8 text: {err.reason}", file=path, line=line) from None
    except OSError as err:
        raise S3DataError(f"cannot read: {err.strerror}", file=path) from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise S3DataError(f"invalid JSON: {err.msg} (column {err.colno})", file=path, line=err.lineno) from None
        if data and all(isinstance(col, list) for col in data):
            rows: Iterable[tuple[int, Any]] = _column_list_records(data, spec, path)
        else:
            rows = enumerate(data)
        for index, record in rows:
            try:
                yield record_to_example(record, spec)
            except ValueError as err:
                field, reason = err.args if len(err.args) == 2 else (None, str(err))
                raise S3DataError(reason, file=path, field=field, row=index + 1) from None
        return
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines(): \x85 and U+2028 are text
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise S3DataError(f"invalid JSON: {err.msg} (column {err.colno})", file=path, line=lineno) from None
        try:
            yield record_to_example(record, spec)
        except ValueError as err:
            field, reason = err.args if len(err.args) == 2 else (None, str(err))
            raise S3DataError(reason, file=path, line=lineno, field=field) from None


def read_s3_json(path: str | Path, task: TaskSpec | str) -> list[dict[str, Any]]:
    """All canonical examples of an S3 json file; the first bad record raises :class:`S3DataError`."""
    return list(iter_s3_json(path, task))


def write_s3_json(
    path: str | Path,
    examples: Iterable[dict[str, Any]],
    task: TaskSpec | str,
    *,
    extra_fields: Iterable[str] = (),
) -> int:
    """Write canonical examples as S3 json lines (record form), atomically; returns the number written.

    Args:
        extra_fields: canonical example keys copied as is after the record's own keys (e.g. ``predicted_label``).
    """
    spec = get_task(task)
    extra = tuple(extra_fields)
    count = 0
    with atomic_open(path) as handle:
        for example in examples:
            record = example_to_record(example, spec)
            for name in extra:
                if name in example:
                    record[name] = example[name]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
