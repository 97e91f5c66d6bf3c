"""Direct reference computations for the callback tests: one unpadded forward pass per example (or feature).

Independent of the Trainer, its gathering and batching, and of the n-best shortcut of :mod:`s3_hf.qa`: QA answers
come from a brute-force search over every valid (start, end) pair.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer


@torch.no_grad()
def classification_logits(model_dir, raw, fields=("premise", "hypothesis"), max_length=256) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    rows = []
    for example in raw:
        encoded = tokenizer(*[example[f] for f in fields], truncation=True, max_length=max_length, return_tensors="pt")
        rows.append(model(**encoded).logits[0].double().numpy())
    return np.stack(rows)


@torch.no_grad()
def qa_answers(model_dir, raw, max_length=48, doc_stride=16, max_answer_length=30) -> list[tuple[str, int]]:
    """Best ``(text, char_start)`` per example over all its windows, by brute force."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    answers = []
    for example in raw:
        encoded = tokenizer(
            example["question"].lstrip(),
            example["context"],
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        best = (float("-inf"), "", -1)
        for j in range(len(encoded["input_ids"])):
            inputs = {k: torch.tensor([encoded[k][j]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
            out = model(**inputs)
            start, end = out.start_logits[0].double().numpy(), out.end_logits[0].double().numpy()
            context_tokens = [k for k, s in enumerate(encoded.sequence_ids(j)) if s == 1]
            offsets = encoded["offset_mapping"][j]
            for s in context_tokens:
                for e in context_tokens:
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = start[s] + end[e]
                    if score > best[0]:
                        best = (score, example["context"][offsets[s][0] : offsets[e][1]], offsets[s][0])
        answers.append((best[1], best[2]))
    return answers
