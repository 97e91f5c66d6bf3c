"""Verification of generated candidates: keep an extrapolated example only when a verifier confirms its label.

A small generator asked for a *negative* review often writes a positive one, and S3 then teaches the small model the
wrong label on exactly the examples it finds hard. So :class:`~s3_hf.extrapolation.ErrorExtrapolator` can sample
``k`` candidates per error and pass each through verifiers, in order. With ``mode="all"`` (the default) a candidate
must pass every verifier: one dropped by a verifier is counted under ``verifier_<name>`` and never reaches the next.
With ``mode="any"`` the verifiers are a cascade: a candidate kept by one is kept without asking the rest, and only
the candidates a verifier doubts reach the next (``verifiers=["student", "llm"]``: the LLM labels only what the small
model disagrees with, the candidates where a wrong label and a hard example look alike); a candidate every verifier
doubts is counted under the last one's ``verifier_<name>``. A selection (``StudentLabelVerifier(mode="hard")``) is
not a verifier: in either mode it applies to what the verifiers kept.

- :class:`LLMLabelVerifier` (``"llm"``): the generator itself labels the candidate zero-shot (the task's
  ``PromptSet.verify`` prompt, temperature 0, the answer constrained to the label names by JSON schema where the
  endpoint supports it). Where the endpoint returns logprobs, the label words' probabilities at the first answer
  token decide (kept iff p(asked label) >= ``threshold``); otherwise the answered label must be the asked one. With
  ``calibration="batch"`` those probabilities are first divided by their mean over the candidates verified together,
  taken class-balanced over the asked labels (Batch Calibration, Zhou et al., ICLR 2024): a small generator that answers one label for almost everything (the
  0.5B model says *entailment* to nearly every QNLI pair) then no longer keeps every candidate of that label and drops
  every other one. For
  extractive QA it answers the question itself and the candidate is kept iff the two answers' token F1 >=
  ``threshold`` (round-trip consistency, Alberti et al., 2019). Its calls go through the engine's cache: a resumed run
  replays every verdict it already paid for.
- :class:`StudentLabelVerifier` (``"student"``): a small model trained on the seed and the earlier rounds (the student
  whose errors are being extrapolated); kept iff its p(asked label) >= ``threshold``. With ``mode="hard"`` it is the
  optional *selection* of the candidates the student still gets wrong (argmax != asked label).

Example:

```python
>>> verifier = LLMLabelVerifier("imdb", engine)
>>> [v.keep for v in verifier.verdicts([{"text": "A dull, lifeless film.", "label": 1}])]
[False]
```
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import S3ConfigError
from .output_parsing import delimit_data
from .prompts import GENERIC_VERIFY, VERIFY_SYSTEM, PromptSet
from .tasks import TaskSpec, get_task

VERIFIERS = ("llm", "student")
VERIFY_MODES = ("all", "any")
CALIBRATIONS = ("none", "batch")
VERIFY_STAGE = "verify"
# fewer candidates with label probabilities than this (in all, or asked for any one label) give too noisy a mean:
# they are decided uncalibrated
MIN_CALIBRATION_BATCH = 8
MIN_CALIBRATION_PER_LABEL = 2


@dataclass(frozen=True)
class Verdict:
    """One candidate's verdict: ``keep``, and the score it was decided on (a probability or an F1; ``None`` when the
    decision came from the answered label alone)."""

    keep: bool
    score: float | None = None


def cut_text(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters at a sentence (else word) boundary, marked with `` ...``."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    stop = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
    if stop >= limit // 2:
        return head[: stop + 1] + " ..."
    space = head.rfind(" ")
    return (head[:space] if space >= limit // 2 else head) + " ..."


def shown_example(spec: TaskSpec, example: dict[str, Any], max_chars: int) -> str:
    """An example as shown to the LLM (delimited; each text cut to ``max_chars``). QA shows paragraph, question and
    answer; pair tasks both fields by name."""
    if spec.is_qa:
        return delimit_data(
            {
                "paragraph": cut_text(example["context"], max_chars),
                "question": example["question"],
                "answer": example["answers"]["text"][0],
            }
        )
    if len(spec.input_fields) == 1:
        return delimit_data(cut_text(example[spec.input_fields[0]], max_chars))
    return delimit_data({name: cut_text(example[name], max_chars) for name in spec.input_fields})


def example_digest(example: dict[str, Any]) -> str:
    """sha256 of a canonical example (all its columns): the identity of an error or a candidate in cache keys."""
    return hashlib.sha256(json.dumps(example, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def label_probabilities(logprobs: Sequence[dict[str, float]] | None, label_names: Sequence[str]) -> dict | None:
    """Probabilities of the label names at the answer's first label token: the first generated position where an
    alternative starts exactly one label name (``"pos"`` for ``positive``; positions of the JSON around it, such as
    ``{"label": "`` on an endpoint without prefill, are skipped); each label takes the best logprob among such tokens,
    renormalised over labels. ``None`` when no position has one."""
    for alternatives in logprobs or []:
        best: dict[str, float] = {}
        for token, logprob in (alternatives or {}).items():
            piece = token.strip().strip('"').lower()
            if not piece:
                continue
            matches = [name for name in label_names if name.lower().startswith(piece)]
            if len(matches) == 1 and logprob > best.get(matches[0], -math.inf):
                best[matches[0]] = logprob
        if best:
            top = max(best.values())
            weights = {name: math.exp(best[name] - top) if name in best else 0.0 for name in label_names}
            total = sum(weights.values())
            return {name: weight / total for name, weight in weights.items()}
    return None


def batch_calibrated(
    probabilities: Sequence[dict[str, float] | None], asked: Sequence[str]
) -> list[dict[str, float] | None]:
    """Label probabilities divided by the verifier's estimated bias and renormalised (Batch Calibration, Zhou et al.,
    ICLR 2024): the bias is the mean prediction over the batch, taken class-balanced, i.e. the mean over the asked
    labels of each label's candidates' mean prediction. On a label-balanced batch this is the paper's batch mean; on an
    unbalanced one it keeps the label mix itself from passing for a bias (ten confident *entailment* candidates and
    two *not_entailment* ones would otherwise push the weaker entailment ones below the threshold).

    ``asked``: each candidate's asked label name. ``None`` entries stay ``None``. With fewer than
    :data:`MIN_CALIBRATION_BATCH` known entries, or fewer than :data:`MIN_CALIBRATION_PER_LABEL` for some label, the
    probabilities come back as they are."""
    known = [(p, label) for p, label in zip(probabilities, asked) if p is not None]
    if len(known) < MIN_CALIBRATION_BATCH:
        return list(probabilities)
    names = list(known[0][0])
    groups = {name: [p for p, label in known if label == name] for name in names}
    if any(len(group) < MIN_CALIBRATION_PER_LABEL for group in groups.values()):
        return list(probabilities)
    prior = {y: sum(sum(p[y] for p in group) / len(group) for group in groups.values()) / len(groups) for y in names}
    out: list[dict[str, float] | None] = []
    for p in probabilities:
        if p is None:
            out.append(None)
            continue
        weights = {name: p[name] / prior[name] if prior[name] > 0 else 0.0 for name in p}
        total = sum(weights.values())
        out.append({name: w / total for name, w in weights.items()} if total > 0 else p)
    return out


class LLMLabelVerifier:
    """The generator labels each candidate zero-shot (QA: answers it); see the module docstring.

    Args:
        task: task name or spec.
        engine: an entered :class:`~s3_hf.llm_engine.LLMEngine` (or anything with the same ``generate``).
        threshold: classification: the p(asked label) needed, where logprobs are available; QA: the token F1 needed.
        prompts: override the task's prompts (the ``verify`` template; a generic one when it has none).
        max_example_chars: longer texts are cut in the prompt.
        max_attempts: attempts per verification request.
        logprobs: top alternatives asked per token (``None``: decide on the answered label alone).
        calibration: ``"none"`` or ``"batch"`` (classification with logprobs: divide the label probabilities by
            their mean over the candidates of one :meth:`verdicts` call; see the module docstring).
    """

    name = "llm"

    def __init__(
        self,
        task: str | TaskSpec,
        engine: Any,
        *,
        threshold: float = 0.5,
        prompts: PromptSet | None = None,
        max_example_chars: int = 600,
        max_attempts: int = 2,
        logprobs: int | None = 5,
        calibration: str = "none",
    ):
        self.spec = get_task(task)
        if not 0 < threshold < 1:
            raise S3ConfigError(f"LLMLabelVerifier threshold must be in (0, 1), got {threshold!r}")
        if calibration not in CALIBRATIONS:
            raise S3ConfigError(f"LLMLabelVerifier calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        self.calibration = calibration
        self.engine = engine
        self.threshold = threshold
        self.prompts = prompts or self.spec.prompts
        self.max_example_chars = max_example_chars
        self.max_attempts = max_attempts
        self.logprobs = logprobs

    def _shown(self, example: dict[str, Any]) -> str:
        if not self.spec.is_qa:
            return shown_example(self.spec, example, self.max_example_chars)
        return delimit_data({"paragraph": example["context"], "question": example["question"]})

    def _validate(self, obj: dict) -> tuple[dict | None, str | None]:
        if not isinstance(obj, dict):
            return None, "not_a_json_object"
        if self.spec.is_qa:
            answer = obj.get("answer")
            return (
                ({"answer": answer.strip()}, None)
                if isinstance(answer, str) and answer.strip()
                else (None, "no_answer")
            )
        label = obj.get("label")
        names = {name.lower(): i for i, name in enumerate(self.spec.label_names)}
        if isinstance(label, str) and label.strip().lower() in names:
            return {"label": names[label.strip().lower()]}, None
        return None, "no_label"

    def requests(self, candidates: Sequence[dict[str, Any]]) -> list[Any]:
        """One verification request per candidate (keyed by its content: the cache replays known verdicts)."""
        from .generation import GenerationRequest
        from .synthesis import format_prompt

        spec = self.spec
        template = self.prompts.verify or GENERIC_VERIFY
        if spec.is_qa:
            schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
            prefill = '{"answer": "'
        else:
            schema = {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": list(spec.label_names)}},
                "required": ["label"],
                "additionalProperties": False,
            }
            prefill = '{"label": "'
        out = []
        for candidate in candidates:
            user = format_prompt(template, spec, prompts=self.prompts, example=self._shown(candidate))
            out.append(
                GenerationRequest(
                    messages=[{"role": "system", "content": VERIFY_SYSTEM}, {"role": "user", "content": user}],
                    validate=self._validate,
                    key={
                        "task": spec.fingerprint(),
                        "prompts": self.prompts.version,
                        "stage": VERIFY_STAGE,
                        "candidate": example_digest(candidate),
                    },
                    json_schema=schema,
                    prefill=prefill,
                    span_fields=("answer",) if spec.is_qa else (),
                    max_attempts=self.max_attempts,
                    max_tokens=48 if spec.is_qa else 16,  # room for the whole `{"label": ...}` without prefill
                    temperature=0.0,
                    logprobs=None if spec.is_qa else self.logprobs,
                )
            )
        return out

    def verdicts(self, candidates: Sequence[dict[str, Any]], *, round_index: int = 0) -> list[Verdict]:
        """A :class:`Verdict` per candidate, in order (an unanswered verification request drops the candidate)."""
        from .metrics import token_f1

        if not candidates:
            return []
        results = self.engine.generate(
            self.requests(candidates), stage=VERIFY_STAGE, round_index=round_index, desc=f"verify round {round_index}"
        )
        if self.spec.is_qa:
            out = []
            for candidate, result in zip(candidates, results):
                if result.example is None:
                    out.append(Verdict(False))
                    continue
                f1 = max(token_f1(result.example["answer"], gold) for gold in candidate["answers"]["text"])
                out.append(Verdict(f1 >= self.threshold, f1))
            return out
        label_probs = [label_probabilities(getattr(r, "logprobs", None), self.spec.label_names) for r in results]
        if self.calibration == "batch":
            label_probs = batch_calibrated(label_probs, [self.spec.label_names[c["label"]] for c in candidates])
        out = []
        for candidate, result, probabilities in zip(candidates, results, label_probs):
            asked = self.spec.label_names[candidate["label"]]
            if probabilities is not None:
                out.append(Verdict(probabilities[asked] >= self.threshold, probabilities[asked]))
            elif result.example is not None:
                out.append(Verdict(result.example["label"] == candidate["label"]))
            else:
                out.append(Verdict(False))
        return out


class StudentLabelVerifier:
    """A small classification model judges each candidate's label; see the module docstring.

    Args:
        task: task name or spec (classification).
        model: a model folder (``save_model`` output, with its tokenizer) or a loaded model.
        tokenizer: the tokenizer, when ``model`` is a loaded model.
        threshold: ``mode="agree"``: the p(asked label) needed to keep a candidate.
        mode: ``"agree"`` (verifier ``"student"``) or ``"hard"`` (keep the candidates it gets wrong).
        max_length: token budget per candidate.
        batch_size: candidates per forward pass.
    """

    def __init__(
        self,
        task: str | TaskSpec,
        model: str | Path | Any,
        tokenizer: Any = None,
        *,
        threshold: float = 0.5,
        mode: str = "agree",
        max_length: int = 128,
        batch_size: int = 32,
    ):
        self.spec = get_task(task)
        if self.spec.is_qa:
            raise S3ConfigError(f"StudentLabelVerifier is for classification tasks, got {self.spec.name!r}")
        if mode not in ("agree", "hard"):
            raise S3ConfigError(f"StudentLabelVerifier mode must be 'agree' or 'hard', got {mode!r}")
        if not 0 < threshold < 1:
            raise S3ConfigError(f"StudentLabelVerifier threshold must be in (0, 1), got {threshold!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.threshold = threshold
        self.mode = mode
        self.max_length = max_length
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return "student" if self.mode == "agree" else "hard"

    @property
    def is_selection(self) -> bool:
        """``mode="hard"`` selects candidates (it drops the ones whose label it confirms) rather than verifying them:
        :func:`apply_verifiers` applies it after the verifiers in either mode."""
        return self.mode == "hard"

    def load(self) -> None:
        """Load the model and tokenizer (once; a loaded model is kept)."""
        if isinstance(self.model, (str, Path)):
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            path = str(self.model)
            if not Path(path).is_dir():
                raise S3ConfigError(f"StudentLabelVerifier: no saved model at {path}")
            self.tokenizer = self.tokenizer or AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
        if self.tokenizer is None:
            raise S3ConfigError("StudentLabelVerifier: pass tokenizer= with a loaded model")

    def probabilities(self, candidates: Sequence[dict[str, Any]]):
        """``[len(candidates), num_labels]`` class probabilities (numpy)."""
        import numpy as np
        import torch

        self.load()
        self.model.eval()
        rows = []
        for start in range(0, len(candidates), self.batch_size):
            batch = candidates[start : start + self.batch_size]
            texts = [[c[name] for c in batch] for name in self.spec.input_fields]
            inputs = self.tokenizer(
                *texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
            )
            inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
            with torch.no_grad():
                logits = self.model(**inputs).logits
            rows.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.spec.num_labels))

    def verdicts(self, candidates: Sequence[dict[str, Any]], *, round_index: int = 0) -> list[Verdict]:
        if not candidates:
            return []
        probabilities = self.probabilities(candidates)
        out = []
        for candidate, row in zip(candidates, probabilities):
            asked = float(row[candidate["label"]])
            if self.mode == "agree":
                out.append(Verdict(asked >= self.threshold, asked))
            else:
                out.append(Verdict(int(row.argmax()) != candidate["label"], asked))
        return out


def apply_verifiers(
    candidates: list[dict[str, Any]], verifiers: Sequence[Any], *, round_index: int = 0, mode: str = "all"
) -> tuple[list[bool], dict[str, dict[str, int]]]:
    """Run ``verifiers`` in order over ``candidates``, then any selection among them (``is_selection``) over what
    they kept. ``mode="all"``: each verifier sees only what the previous ones kept; ``mode="any"``: each sees only
    what the previous ones doubted, and a candidate one of them keeps is kept (see the module docstring).

    Returns a keep flag per candidate and, per verifier name, ``{"checked", "kept", "dropped"}``; in ``"any"`` mode
    a verifier before the last drops nothing: what it doubted is counted as ``"deferred"`` (to the next one).
    """
    if mode not in VERIFY_MODES:
        raise S3ConfigError(f"apply_verifiers mode must be one of {VERIFY_MODES}, got {mode!r}")
    stats: dict[str, dict[str, int]] = {}

    def decide(verifier: Any, indices: list[int]) -> int:
        """Set ``keep`` of the candidates at ``indices`` to ``verifier``'s verdicts; return how many it kept."""
        verdicts = verifier.verdicts([candidates[i] for i in indices], round_index=round_index)
        for i, verdict in zip(indices, verdicts):
            keep[i] = verdict.keep
        return sum(keep[i] for i in indices)

    checks = [v for v in verifiers if not getattr(v, "is_selection", False)]
    sequential = list(verifiers)  # "all": every verifier and selection in the order given
    keep = [True] * len(candidates)
    if mode == "any" and checks:
        sequential = [v for v in verifiers if v not in checks]
        keep = [False] * len(candidates)
        for position, verifier in enumerate(checks):
            doubted = [i for i, flag in enumerate(keep) if not flag]
            kept = decide(verifier, doubted)
            last = position == len(checks) - 1  # only the last verifier drops; the earlier ones defer
            stats[verifier.name] = {
                "checked": len(doubted),
                "kept": kept,
                "dropped": len(doubted) - kept if last else 0,
            }
            if not last:
                stats[verifier.name]["deferred"] = len(doubted) - kept
    for verifier in sequential:
        alive = [i for i, flag in enumerate(keep) if flag]
        kept = decide(verifier, alive)
        stats[verifier.name] = {"checked": len(alive), "kept": kept, "dropped": len(alive) - kept}
    return keep, stats
