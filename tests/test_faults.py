"""The seeded fault plan shared by the loopback OpenAI and Hub stand-ins."""

from __future__ import annotations

import pytest

from s3_hf.testing import FakeOpenAIServer, FaultPlan
from s3_hf.testing.hub_server import FAULT_TARGETS, FAULTS, HubServer


def test_draws_depend_only_on_seed_target_and_index_not_on_order():
    rates = {"500": 0.3, "drop": 0.3}
    forward = FaultPlan(rates, seed=7, targets=("commit",))
    backward = FaultPlan(rates, seed=7, targets=("commit",))
    first = [forward.draw(i, "commit") for i in range(40)]
    assert [backward.draw(i, "commit") for i in reversed(range(40))][::-1] == first
    assert {"500", "drop", None} == set(first)
    assert all(forward.draw(i, "tag") is None for i in range(40))  # not a target of this plan


def test_max_faults_caps_the_faults_drawn():
    plan = FaultPlan({"429": 1.0}, seed=0, max_faults=2)
    assert [plan(i, {}) for i in range(4)] == ["429", "429", None, None]


def test_bad_plans_are_refused_with_the_bad_value():
    with pytest.raises(ValueError, match="sum to <= 1"):
        FaultPlan({"500": 0.7, "drop": 0.7})
    with pytest.raises(ValueError, match=r"unknown faults \['garbled'\]"):
        with HubServer() as hub:
            hub.inject_faults(FaultPlan({"garbled": 0.1}))
    with pytest.raises(ValueError, match=r"unknown fault targets \['nope'\]"):
        FaultPlan({"500": 0.1}, targets=("nope",)).check(FAULTS, FAULT_TARGETS)
    with pytest.raises(ValueError, match=r"unknown faults \['drop_after'\]"):
        FakeOpenAIServer(faults=FaultPlan({"drop_after": 0.1}))
