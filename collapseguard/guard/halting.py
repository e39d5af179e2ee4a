"""When to stop training: ``patience`` consecutive critical checks, as Lightning's ``EarlyStopping`` counts them."""

from __future__ import annotations

from collapseguard._validation import Interval, validate
from collapseguard.detection.alerts import Alert
from collapseguard.detection.monitor import CheckResult

PHASE_ORDER = {"late": 0, "mid": 1, "early": 2}  # the reason quotes the most advanced phase's alert


class HaltPolicy:
    """Stop training after ``patience`` consecutive critical checks (faults included): the callbacks'
    ``on_collapse=HaltPolicy(patience=...)`` (``on_collapse="halt"`` is ``HaltPolicy()``).

    Args:
        patience: consecutive critical checks before halting (1: the first).
        enabled: whether to halt at all; a guard that only warns keeps a disabled policy, so the streak is counted
            either way and a resumed run and the report see it.
    """

    def __init__(self, patience: int = 1, *, enabled: bool = True) -> None:
        validate(type(self).__name__, "patience", patience, Interval(int, 1, None),
                 fix="halt after this many consecutive critical checks (1: the first)")
        self.enabled = enabled
        self.patience = patience
        self.critical_streak = 0

    def __repr__(self) -> str:
        return f"HaltPolicy(patience={self.patience})"

    def update(self, result: CheckResult | None, faults: list[Alert]) -> None:
        """Count this check: the streak grows on a critical verdict or a critical fault, else restarts."""
        critical = (result is not None and result.critical) or any(f.severity == "critical" for f in faults)
        self.critical_streak = self.critical_streak + 1 if critical else 0

    def _evaluate_stopping_criteria(self, result: CheckResult | None, faults: list[Alert]) -> tuple[bool, str | None]:
        """(should_stop, reason): halt once ``patience`` consecutive checks were critical."""
        if not self.enabled or self.critical_streak < self.patience:
            return False, None
        worst = next((a for a in faults if a.severity == "critical"), None)
        if worst is None and result is not None:
            worst = min((a for a in result.alerts if a.severity == "critical"),
                        key=lambda a: PHASE_ORDER.get(a.phase, 3))
        what = f"{worst.metric}={worst.value:.4g} (gold reference {worst.reference:.4g}): {worst.message}" if worst else ""
        return True, (f"collapseguard halted training after {self.critical_streak} consecutive critical check(s) "
                      f"(patience={self.patience}); {what}")

    def decide(self, result: CheckResult | None, faults: list[Alert]) -> tuple[bool, str | None]:
        """Count the check, then decide: ``(should_stop, reason)``."""
        self.update(result, faults)
        return self._evaluate_stopping_criteria(result, faults)
