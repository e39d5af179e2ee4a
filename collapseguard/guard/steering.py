"""How far to push an RL trainer's exploration back up: the ``on_collapse="steer"`` policy.

The mirror of :class:`~collapseguard.guard.reweighting.ReweightPolicy` for RL: instead of a human share, it moves a
knob the trainer reads while the run goes on -- TRL's ``GRPOConfig.entropy_target`` under adaptive entropy control,
below which the entropy bonus applies. A warn raises it one step, a critical two; ``recovery_checks`` clean checks
in a row lower it one, never below where the run started and never above the ceiling: the policy entropy of the
run's own start, the level at which it still explored. Every change is logged.
"""

from __future__ import annotations

from collapseguard._validation import FRACTION, Interval, validate
from collapseguard.detection.alerts import logger
from collapseguard.detection.monitor import CheckResult


class SteerPolicy:
    """Steers one exploration knob (``knob``, starting at ``start``) from the checks' verdicts.

    Args:
        start: the knob's value when training starts (its floor).
        step: one step, as a share of the distance from ``start`` to the ceiling.
        recovery_checks: clean checks in a row that lower the knob one step.
        knob: the knob's name, for messages and logs.
        caller: the guard that owns the policy, for messages.

    The ceiling is set once the run's own start is known (:meth:`set_ceiling`); until then nothing moves.
    """

    def __init__(self, start: float, step: float = 0.25, recovery_checks: int = 3, *, knob: str = "entropy_target",
                 caller: str = "SteerPolicy") -> None:
        validate(caller, "steer_step", step, FRACTION, fix="a share of the way from the start to the ceiling, e.g. 0.25")
        validate(caller, "recovery_checks", recovery_checks, Interval(int, 1, None))
        self.start = self.value = float(start)
        self.step = float(step)
        self.recovery_checks = recovery_checks
        self.knob = knob
        self.ceiling: float | None = None
        self.clean_streak = 0
        self.changes: list[dict[str, float | int | str | None]] = []

    def set_ceiling(self, ceiling: float) -> None:
        """The highest value the knob may reach (the policy entropy at the run's own start)."""
        self.ceiling = max(float(ceiling), self.start)

    def update(self, result: CheckResult | None, step: int | None = None) -> float | None:
        """The knob's new value after a judged check, or None when it stays."""
        if result is None:
            return None
        severity = result.severity
        self.clean_streak = 0 if severity else self.clean_streak + 1
        moves = {"warn": 1, "critical": 2}.get(severity or "", 0)
        if not moves and self.clean_streak >= self.recovery_checks:
            moves, self.clean_streak = -1, 0
        if not moves or self.ceiling is None or self.ceiling <= self.start:
            return None
        unit = self.step * (self.ceiling - self.start)
        new = round(min(self.ceiling, max(self.start, self.value + moves * unit)), 6)
        if new == self.value:
            return None
        why = f"{severity} alert" if moves > 0 else f"{self.recovery_checks} clean checks"
        logger.warning("collapseguard steer: %s %.4g -> %.4g at step %s (%s; start %.4g, ceiling %.4g)", self.knob,
                       self.value, new, step, why, self.start, self.ceiling)
        self.changes.append({"step": step, "knob": self.knob, "from": self.value, "to": new, "why": why})
        self.value = new
        return new

    def state_dict(self) -> dict[str, object]:
        """Where the knob stands, for checkpoints: a resumed run steers on from there, not from its start."""
        return {"start": self.start, "value": self.value, "ceiling": self.ceiling, "clean_streak": self.clean_streak,
                "changes": [dict(c) for c in self.changes]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.start, self.value = float(state["start"]), float(state["value"])  # type: ignore[arg-type]
        ceiling = state.get("ceiling")
        self.ceiling = None if ceiling is None else float(ceiling)  # type: ignore[arg-type]
        self.clean_streak = int(state.get("clean_streak", 0))  # type: ignore[call-overload]
        self.changes = [dict(c) for c in state.get("changes", [])]  # type: ignore[union-attr]

    def log_metrics(self) -> dict[str, float]:
        """The knob's current value, as ``collapseguard/steer/<knob>``."""
        return {f"collapseguard/steer/{self.knob}": self.value}


__all__ = ["SteerPolicy"]
