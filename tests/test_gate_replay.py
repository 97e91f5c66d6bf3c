"""`benchmarks/gate_replay.py`: the round gate's rules replayed over recorded round scores."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

GATE_REPLAY = Path(__file__).resolve().parents[1] / "benchmarks" / "gate_replay.py"


@pytest.fixture(scope="module")
def replay():
    spec = importlib.util.spec_from_file_location("gate_replay_benchmark", GATE_REPLAY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rounds(*scores, kept=None):
    kept = kept or [True] * len(scores)
    return [{"validation": v, "test": t, "kept": k} for (v, t), k in zip(scores, kept)]


def test_a_last_round_tie_is_replayed_under_both_rules(replay):
    rounds = _rounds((0.59, 0.620), (0.75, 0.754), (0.75, 0.728))  # demo seed 42 at e217821
    strict = replay.replay_final(rounds, "validation")
    assert strict == {"test": 0.754, "replayable": True, "decisions": [True, True, False]}
    assert replay.replay_final(rounds, "validation_or_tie")["test"] == 0.728


def test_an_earlier_tie_is_not_replayable_when_the_rule_changes_it(replay):
    rounds = _rounds((0.70, 0.60), (0.70, 0.65), (0.72, 0.66))
    assert replay.replay_final(rounds, "validation") == {
        "test": None, "replayable": False, "decisions": [True, False]
    }  # fmt: skip
    assert replay.replay_final(rounds, "validation_or_tie")["test"] == 0.66


def test_a_round_the_run_set_aside_stays_aside_and_the_best_is_the_kept_rounds(replay):
    # round 1 fell and was set aside by the run; round 2 ties the seed, not round 1
    rounds = _rounds((0.52, 0.48), (0.515, 0.49), (0.52, 0.522), kept=[True, False, True])
    assert replay.replay_final(rounds, "validation")["test"] == 0.48
    assert replay.replay_final(rounds, "validation_or_tie")["test"] == 0.522


def test_quality_rows_pair_each_rule_with_the_baselines(replay, tmp_path):
    results = [
        {"task": "imdb", "seed": seed, "s3": {"rounds": _rounds((0.6, 0.60), (0.7, 0.70), (0.7, last))},
         "zerogen": {"test": 0.65}}
        for seed, last in ((1, 0.68), (2, 0.72))
    ]  # fmt: skip
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(results))
    text = "\n".join(replay.quality_rows(path))
    assert "| `validation` | zerogen | +5.00 [+5.00, +5.00] | 0.500 | +5.00, +5.00 |" in text
    assert "| `validation_or_tie` | zerogen | +5.00 [-20.41, +30.41] | 0.500 | +3.00, +7.00 |" in text
