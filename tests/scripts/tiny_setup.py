"""Deterministic tiny models and gold sets shared by the callback tests and the 2-process script.

Imported by ``tests/test_callback*.py`` and run by ``misclassification_run.py`` under ``torchrun``; nothing here
downloads: the tokenizer is the offline MiniLM one, the models are random 2-layer BERTs.
"""

from __future__ import annotations

import random
from pathlib import Path

import datasets

from s3_hf.tasks import get_task

WORDS = (
    "the cat sat on a mat while dogs ran across green fields under bright summer skies and birds sang "
    "quietly near old stone bridges where children played games every sunny afternoon in small towns"
).split()


def make_models(root: Path) -> dict[str, Path]:
    """Save a random tiny BERT for sequence classification (2 labels) and one for QA, with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering, BertForSequenceClassification

    from s3_hf.assets import encoder_path

    tokenizer = AutoTokenizer.from_pretrained(encoder_path())
    config = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    paths = {}
    for name, cls, extra in (
        ("cls", BertForSequenceClassification, {"num_labels": 2, "id2label": {0: "entailment", 1: "not_entailment"}}),
        ("qa", BertForQuestionAnswering, {}),
    ):
        torch.manual_seed(7)
        model = cls(BertConfig(**config, **extra))
        path = root / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[name] = path
    return paths


def rte_rows(n: int, seed: int = 0) -> datasets.Dataset:
    rng = random.Random(seed)
    rows = {"premise": [], "hypothesis": [], "label": []}
    for _ in range(n):
        rows["premise"].append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))).capitalize() + ".")
        rows["hypothesis"].append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + ".")
        rows["label"].append(rng.randint(0, 1))
    return datasets.Dataset.from_dict(rows, features=get_task("rte").features)


def qa_rows(n: int, seed: int = 0) -> datasets.Dataset:
    """SQuAD-style rows; contexts long enough (60-140 words) to overflow a 48-token window into several features."""
    rng = random.Random(seed)
    rows = {"id": [], "context": [], "question": [], "answers": []}
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(60, 140))]
        context = " ".join(words)
        k = rng.randint(0, len(words) - 3)
        answer = " ".join(words[k : k + rng.randint(1, 3)])
        start = len(" ".join(words[:k])) + (1 if k else 0)
        assert context[start : start + len(answer)] == answer
        rows["id"].append(f"q{i}")
        rows["context"].append(context)
        rows["question"].append("where is " + " ".join(rng.choice(WORDS) for _ in range(4)) + "?")
        rows["answers"].append({"text": [answer], "answer_start": [start]})
    return datasets.Dataset.from_dict(rows, features=get_task("adqa").features)
