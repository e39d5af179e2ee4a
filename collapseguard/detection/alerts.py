"""Alerts, their severities and the warning category users filter on."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

Phase = Literal["early", "mid", "late", "fault"]
Severity = Literal["warn", "critical"]

PHASES: tuple[Phase, ...] = ("early", "mid", "late")
PHASE_NAMES = {"early": "tail loss", "mid": "modes narrowing", "late": "functional collapse", "fault": "check failed"}
SEVERITY_RANK = {None: 0, "warn": 1, "critical": 2}

logger = logging.getLogger("collapseguard")


class CollapseWarning(UserWarning):
    """A new collapse alert as a Python warning, where :class:`CollapseWarningHandler` is installed: for code that
    wants alerts through ``warnings`` (``pytest.warns``, ``warnings.filterwarnings("error", CollapseWarning)``)."""


@dataclass(frozen=True)
class Alert:
    """One detector finding at one check.

    Attributes:
        phase: ``"early"`` (tail loss), ``"mid"`` (modes narrowing), ``"late"`` (functional collapse),
            or ``"fault"`` when the check itself could not run (generation raised, NaN outputs, gold changed).
        severity: ``"warn"`` or ``"critical"``.
        metric: the metric that crossed its bound.
        value: its value at this check.
        reference: what it was judged against (gold reference, or best-so-far for rises).
        threshold: the bound crossed, in the units of the detector's score.
        message: one sentence: what moved, by how much, against what, what to try.
        detector: the detector's name.
        step: the training step of the check, when known.
    """

    phase: Phase
    severity: Severity
    metric: str
    value: float
    reference: float
    threshold: float
    message: str
    detector: str = ""
    step: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(detector, metric): what identifies one signal's alert from check to check."""
        return (self.detector, self.metric)

    def to_dict(self) -> dict[str, Any]:
        """The alert's fields as a JSON-ready dict (as the alert trail writes them)."""
        return asdict(self)

    def __str__(self) -> str:
        # the step schedule's cheap tier names itself: its alert calls the full check, which decides
        tier = "sentinel " if self.detector.startswith("sentinel ") else ""
        return f"[collapseguard {tier}{self.severity} | {self.phase}: {PHASE_NAMES[self.phase]}] {self.message}"


# Frames of these packages are skipped when a warning is attributed: the user's own line (the
# ``trainer.fit(...)`` or ``monitor.check(...)`` call) is what a warning should point at.
_LIBRARY_MODULES = ("collapseguard", "lightning", "pytorch_lightning", "lightning_fabric", "transformers",
                    "accelerate", "trl", "torch", "datatrove", "ray", "contextlib", "threading", "runpy", "logging")


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes ``warnings.warn`` (called by the caller of this function) name the first
    frame outside collapseguard and the training frameworks: the user's own code."""
    frame = sys._getframe(2)  # the caller of the function that calls warnings.warn (stacklevel 2)
    level = 2
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not any(module == m or module.startswith(m + ".") for m in _LIBRARY_MODULES):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def emit(alert: Alert, new: bool) -> None:
    """Log every alert: one line on the console by default (the log keeps the whole trail). The record carries the
    alert and whether it is new, for handlers such as :class:`CollapseWarningHandler`."""
    logger.log(logging.ERROR if alert.severity == "critical" else logging.WARNING, "%s", alert,
               extra={"collapseguard_alert": alert, "collapseguard_new": new})


class CollapseWarningHandler(logging.Handler):
    """Issue each *new* alert as a :class:`CollapseWarning`, attributed to the user's own line (the
    ``trainer.fit(...)`` call), not to this library's. Opt-in, so that an alert prints once by default::

        logging.getLogger("collapseguard").addHandler(CollapseWarningHandler())

    A logger with a handler no longer falls back to Python's default console line: add a ``StreamHandler`` as well
    to keep the log line beside the warning.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Warn for a record that carries a new alert; ignore every other record."""
        alert = getattr(record, "collapseguard_alert", None)
        if alert is not None and getattr(record, "collapseguard_new", False):
            warnings.warn(str(alert), CollapseWarning, stacklevel=user_stacklevel())


@contextlib.contextmanager
def alert_warnings() -> Iterator[None]:
    """Inside, new alerts are also issued as :class:`CollapseWarning` (a :class:`CollapseWarningHandler` installed on
    the ``collapseguard`` logger, removed after)."""
    handler = CollapseWarningHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def silenced_alerts(quiet: bool = True) -> Iterator[None]:
    """No ``CollapseWarning`` inside, and with ``quiet`` no alert log lines either; both restored after.

    For code that reports the alerts itself (the demo's table, an audit, a benchmark's records).
    """
    log = logging.getLogger("collapseguard")
    level = log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        if quiet:
            log.setLevel(logging.CRITICAL + 1)  # setLevel (not .level =) so the logger's cache is cleared
        try:
            yield
        finally:
            log.setLevel(level)
