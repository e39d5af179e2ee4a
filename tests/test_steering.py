"""The steer policy (issue 22): bounded moves of an RL trainer's exploration knob, like the reweight policy's."""

from __future__ import annotations

import pytest

from collapseguard.guard.steering import SteerPolicy


class Verdict:
    def __init__(self, severity):
        self.severity = severity


def test_moves_up_by_severity_within_the_ceiling_and_back_after_clean_checks():
    policy = SteerPolicy(0.2, step=0.25, recovery_checks=2)
    assert policy.update(Verdict("critical"), step=1) is None  # no ceiling yet: the run's start is not known
    policy.set_ceiling(1.0)
    assert policy.update(Verdict("warn"), step=2) == pytest.approx(0.4)  # one step: a quarter of 0.2 -> 1.0
    assert policy.update(Verdict("critical"), step=3) == pytest.approx(0.8)  # two steps
    assert policy.update(Verdict("critical"), step=4) == pytest.approx(1.0)  # capped at the ceiling
    assert policy.update(Verdict(None), step=5) is None  # one clean check is not recovery
    assert policy.update(Verdict(None), step=6) == pytest.approx(0.8)
    for step in range(7, 20):
        policy.update(Verdict(None), step=step)
    assert policy.value == pytest.approx(0.2)  # never below where the run started
    assert [c["to"] for c in policy.changes][:3] == [pytest.approx(0.4), pytest.approx(0.8), pytest.approx(1.0)]


def test_a_ceiling_below_the_start_never_moves_and_bad_steps_are_refused():
    policy = SteerPolicy(0.5)
    policy.set_ceiling(0.3)
    assert policy.update(Verdict("critical")) is None and policy.value == 0.5
    with pytest.raises(ValueError, match=r"GRPOCollapseGuard: steer_step=1.5 is invalid"):
        SteerPolicy(0.2, step=1.5, caller="GRPOCollapseGuard")
