"""How far to raise the human floor: the ``on_collapse="reweight"`` policy, owner of its four settings."""

from __future__ import annotations

from typing import Any

from collapseguard._validation import FRACTION, HasMethods, Interval, validate
from collapseguard.detection.alerts import logger
from collapseguard.detection.monitor import CheckResult


class ReweightPolicy:
    """Steer an :class:`~collapseguard.guard.sampling.AnchorMixSampler`'s human share from the checks' verdicts: the
    callbacks' ``on_collapse=ReweightPolicy(anchor_sampler, ...)``.

    A warn raises the share one ``step``, a critical two; ``recovery_checks`` clean checks in a row lower it one. It
    never goes below the sampler's starting ``min_human_fraction`` (the floor) or above ``max_human_fraction`` (the
    ceiling). The new share applies from the sampler's next epoch.

    Args:
        anchor_sampler: the :class:`~collapseguard.AnchorMixSampler` of the training DataLoader.
        max_human_fraction: the ceiling of the human share.
        step: how far a warn moves the human share (a critical: twice).
        recovery_checks: clean checks in a row before the human share steps back down.
    """

    def __init__(self, anchor_sampler: Any, max_human_fraction: float = 0.8, step: float = 0.1,
                 recovery_checks: int = 2) -> None:
        caller = type(self).__name__
        validate(caller, "anchor_sampler", anchor_sampler,
                 HasMethods("set_human_fraction", name="an AnchorMixSampler"),
                 fix="pass the AnchorMixSampler of your training DataLoader")
        validate(caller, "max_human_fraction", max_human_fraction, FRACTION)
        validate(caller, "step", step, FRACTION)
        validate(caller, "recovery_checks", recovery_checks, Interval(int, 1, None))
        self.sampler = anchor_sampler
        self.floor = float(anchor_sampler.min_human_fraction)
        self.ceiling = float(max_human_fraction)
        if self.ceiling < self.floor:
            raise ValueError(f"{caller}: max_human_fraction={max_human_fraction} is invalid: it is below the "
                             f"sampler's min_human_fraction={self.floor}. Raise max_human_fraction.")
        self.step = float(step)
        self.recovery_checks = recovery_checks
        self.fraction = self.floor
        self.clean_streak = 0

    def update(self, result: CheckResult | None) -> None:
        """Move the share after a judged check (a failed check moves nothing)."""
        if result is None:
            return
        severity = result.severity
        self.clean_streak = 0 if severity else self.clean_streak + 1
        steps = {"warn": 1, "critical": 2}.get(severity or "", 0)
        if not steps and self.clean_streak >= self.recovery_checks:
            steps, self.clean_streak = -1, 0
        new = round(min(self.ceiling, max(self.floor, self.fraction + steps * self.step)), 6)
        if new != self.fraction:
            why = f"{severity} alert" if steps > 0 else f"{self.recovery_checks} clean checks"
            logger.warning("collapseguard reweight: human share %.2f -> %.2f from the next epoch (%s; floor %.2f, "
                           "ceiling %.2f)", self.fraction, new, why, self.floor, self.ceiling)
            self.fraction = new
            self.sampler.set_human_fraction(new)

    def __repr__(self) -> str:
        return (f"ReweightPolicy({type(self.sampler).__name__}, max_human_fraction={self.ceiling}, step={self.step}, "
                f"recovery_checks={self.recovery_checks})")

    def restore(self, fraction: float | None, clean_streak: int) -> None:
        """Resume where a checkpointed run left off."""
        self.clean_streak = clean_streak
        if fraction is not None:
            self.fraction = float(fraction)
            self.sampler.set_human_fraction(self.fraction)

    def log_metrics(self) -> dict[str, float]:
        """The human share the sampler drew in the epoch just trained, and the target for the next."""
        out = {"collapseguard/human_fraction_target": self.fraction}
        realized = getattr(self.sampler, "realized_human_fraction", None)
        if realized is not None:
            out["collapseguard/human_fraction"] = float(realized)
        return out
