"""Extractive QA for the small model: features with a document stride, and start/end post-processing.

A long context is cut into several overlapping *features* (``doc_stride`` tokens of overlap), each
``question + context window``. Training features carry the answer's token ``start_positions``/``end_positions``
(the ``[CLS]`` index when the answer is outside the window). Evaluation features also carry ``example_id`` (the raw
example's ``id``) and ``offset_mapping`` (character spans, ``None`` outside the context) so that
:func:`postprocess_predictions` can map the model's start/end logits back to a text span of the context: the best
``n_best_size`` starts and ends of every feature of an example, valid spans only (inside the context, end >= start,
at most ``max_answer_length`` tokens), highest ``start + end`` score wins.

Evaluation features also keep the answer positions, so the Trainer computes an evaluation loss and calls
``compute_metrics`` (it only does when labels are present).

Example:

```python
>>> feats = raw_eval.map(prepare_eval_features, batched=True, remove_columns=raw_eval.column_names,
...                      fn_kwargs={"tokenizer": tok, "max_length": 384, "doc_stride": 128})
>>> answers = postprocess_predictions(raw_eval, feats, start_logits, end_logits)
>>> answers[raw_eval[0]["id"]]["text"]
'Denver Broncos'
```
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from .errors import S3ConfigError
from .predictions import flatten_batches


def check_lengths(max_length: int, doc_stride: int) -> None:
    """Raise :class:`~s3_hf.errors.S3ConfigError` unless ``0 <= doc_stride < max_length``."""
    if doc_stride < 0 or doc_stride >= max_length:
        raise S3ConfigError(
            f"need 0 <= doc_stride < max_length, got doc_stride={doc_stride} and max_length={max_length}"
        )


def _tokenize(examples: dict[str, list], tokenizer, max_length: int, doc_stride: int):
    check_lengths(max_length, doc_stride)
    pad_on_right = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in examples["question"]]
    return pad_on_right, tokenizer(
        questions if pad_on_right else examples["context"],
        examples["context"] if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )


def _answer_positions(tokenized, examples, tokenizer, pad_on_right: bool) -> tuple[list[int], list[int]]:
    """Token start/end of the first gold answer in every feature (``[CLS]`` index when outside the window)."""
    starts, ends = [], []
    context_index = 1 if pad_on_right else 0
    for i, offsets in enumerate(tokenized["offset_mapping"]):
        input_ids = tokenized["input_ids"][i]
        cls_id = tokenizer.cls_token_id
        cls_index = input_ids.index(cls_id) if cls_id is not None and cls_id in input_ids else 0
        sequence_ids = tokenized.sequence_ids(i)
        answers = examples["answers"][tokenized["overflow_to_sample_mapping"][i]]
        if not answers["answer_start"]:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = 0
        while sequence_ids[token_start] != context_index:
            token_start += 1
        token_end = len(input_ids) - 1
        while sequence_ids[token_end] != context_index:
            token_end -= 1
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        while token_start < len(offsets) and offsets[token_start][0] <= start_char:
            token_start += 1
        starts.append(token_start - 1)
        while offsets[token_end][1] >= end_char:
            token_end -= 1
        ends.append(token_end + 1)
    return starts, ends


def prepare_train_features(
    examples: dict[str, list], tokenizer, max_length: int = 384, doc_stride: int = 128
) -> dict[str, list]:
    """Batched ``Dataset.map`` function: canonical QA examples -> training features (no padding).

    Each feature has the tokenizer's inputs plus ``start_positions``/``end_positions``.
    """
    pad_on_right, tokenized = _tokenize(examples, tokenizer, max_length, doc_stride)
    starts, ends = _answer_positions(tokenized, examples, tokenizer, pad_on_right)
    tokenized["start_positions"] = starts
    tokenized["end_positions"] = ends
    tokenized.pop("offset_mapping")
    tokenized.pop("overflow_to_sample_mapping")
    return tokenized


def prepare_eval_features(
    examples: dict[str, list], tokenizer, max_length: int = 384, doc_stride: int = 128, with_labels: bool = True
) -> dict[str, list]:
    """Batched ``Dataset.map`` function: canonical QA examples -> evaluation features (no padding).

    Each feature has the tokenizer's inputs, ``example_id`` (the example's ``id``), ``offset_mapping`` with ``None``
    for tokens outside the context, and (``with_labels``) ``start_positions``/``end_positions``.
    """
    pad_on_right, tokenized = _tokenize(examples, tokenizer, max_length, doc_stride)
    if with_labels:
        starts, ends = _answer_positions(tokenized, examples, tokenizer, pad_on_right)
        tokenized["start_positions"] = starts
        tokenized["end_positions"] = ends
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    context_index = 1 if pad_on_right else 0
    tokenized["example_id"] = []
    for i in range(len(tokenized["input_ids"])):
        sequence_ids = tokenized.sequence_ids(i)
        tokenized["example_id"].append(str(examples["id"][sample_mapping[i]]))
        tokenized["offset_mapping"][i] = [
            list(o) if sequence_ids[k] == context_index else None for k, o in enumerate(tokenized["offset_mapping"][i])
        ]
    return tokenized


def qa_logits(predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(start_logits, end_logits)``, each ``[n_features, seq_len]``, from a Trainer's QA predictions.

    Accepts the concatenated tuple, or per-batch lists (``eval_do_concat_batches=False``); shorter rows are padded
    with ``-100`` (never chosen: padded positions have no offsets).
    """
    predictions = flatten_batches(predictions)
    if not isinstance(predictions, (tuple, list)) or len(predictions) < 2:
        raise ValueError("QA predictions must be a tuple (start_logits, end_logits, ...)")
    return np.asarray(predictions[0]), np.asarray(predictions[1])


def postprocess_predictions(
    examples,
    features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, dict[str, Any]]:
    """Best answer span per example from the start/end logits of its features.

    Args:
        examples: canonical QA examples (a ``datasets.Dataset`` or a list of dicts with ``id`` and ``context``).
        features: the evaluation features, in the order of the logits, with ``example_id`` and ``offset_mapping``.
        start_logits / end_logits: ``[n_features, seq_len]``.
        n_best_size: how many top starts and ends of a feature are combined.
        max_answer_length: longest answer in tokens.

    Returns:
        ``{example id: {"text", "answer_start", "score"}}``; ``text`` is ``""`` (``answer_start`` -1) when no
        valid span exists.
    """
    if n_best_size < 1 or max_answer_length < 1:
        raise S3ConfigError(
            f"need n_best_size >= 1 and max_answer_length >= 1, got {n_best_size}, {max_answer_length}"
        )
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    feature_ids = list(features["example_id"])
    if len(feature_ids) != len(start_logits):
        raise ValueError(f"{len(start_logits)} rows of logits for {len(feature_ids)} features")
    offsets_all = list(features["offset_mapping"])
    by_example: dict[str, list[int]] = collections.defaultdict(list)
    for i, example_id in enumerate(feature_ids):
        by_example[str(example_id)].append(i)
    ids = [str(x) for x in examples["id"]]
    contexts = examples["context"]
    answers: dict[str, dict[str, Any]] = {}
    for qid, context in zip(ids, contexts):
        best = {"text": "", "answer_start": -1, "score": float("-inf")}
        for i in by_example.get(qid, []):
            offsets = offsets_all[i]
            starts, ends = start_logits[i], end_logits[i]
            width = min(len(offsets), len(starts))
            top_starts = np.argsort(starts[:width])[::-1][:n_best_size]
            top_ends = np.argsort(ends[:width])[::-1][:n_best_size]
            for s in top_starts:
                if offsets[s] is None:
                    continue
                for e in top_ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = float(starts[s] + ends[e])
                    if score > best["score"]:
                        char_start, char_end = offsets[s][0], offsets[e][1]
                        best = {"text": context[char_start:char_end], "answer_start": int(char_start), "score": score}
        if best["answer_start"] < 0:
            best["score"] = 0.0
        answers[qid] = best
    return answers
