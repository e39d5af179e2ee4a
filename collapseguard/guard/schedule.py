"""When the guard checks: on epoch ends, every N optimizer steps, a cheap sentinel in between, within a budget.

A fine-tune of a pretrained LLM lasts one to three epochs and a continued pre-training run often less than one,
so a guard that judges only at epoch ends speaks after the damage. Checking often is only affordable in two tiers:

- the **sentinel** scores a small gold subset teacher-forced (one forward pass, no generation): gold perplexity by
  frequency band and overconfidence, the model-side signals that move first when a model forgets the human tail;
- the **full check** generates from the gold prompts and measures everything. It runs on a looser schedule, and at
  once when the sentinel warns: the sentinel triggers, the full check decides (halting reads full checks only).

:class:`OverheadBudget` times the guard's own checks against the training wall time between them and defers a due
step check while it would push the guard's share above ``max_overhead``. Epoch-end checks are never deferred (they
are the guard's contract with epoch-scheduled runs), and neither is the full check that a sentinel *critical*
triggers. Every decision here is pure bookkeeping: the adapters ask :meth:`GuardEngine.due` and make every rank agree
on rank 0's answer, since wall-clock times differ between processes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from collapseguard._validation import BOOL, NONE, InstanceOf, Interval, describe, validate

_CALLER = "CheckSchedule"

PRESETS: dict[str, dict[str, Any]] = {
    # the 0.1/0.2 behaviour: a full check at the end of every epoch
    "epoch": {},
    # fine-tunes and continued pre-training of LLMs: a sentinel every 10 optimizer steps and a full check every
    # 100, spaced further where they would cost more than 5% of training (docs/benchmarks.md, real model)
    "steps": {"every_n_steps": 100, "sentinel_every_n_steps": 10},
}
SHORTHAND = {"steps": "every_n_steps", "every_n_steps": "every_n_steps", "sentinel": "sentinel_every_n_steps",
             "sentinel_every_n_steps": "sentinel_every_n_steps", "epochs": "every_n_epochs",
             "every_n_epochs": "every_n_epochs", "overhead": "max_overhead", "max_overhead": "max_overhead",
             "sentinel_samples": "sentinel_samples"}


@dataclass(frozen=True)
class CheckSchedule:
    """When a guard checks, in one validated object (the callbacks' ``schedule=``).

    Args:
        every_n_epochs: a full check at the end of every n-th epoch. ``None`` (default): every epoch end when no step
            schedule is set, else none. ``0``: never at epoch ends.
        every_n_steps: a full check (generation and every metric) every n optimizer steps (gradient accumulation
            counts once), mid-epoch; ``None``: none on steps.
        sentinel_every_n_steps: the cheap model-side check every n optimizer steps; ``None``: no sentinel. A sentinel
            that warns triggers a full check at once.
        sentinel_samples: gold texts the sentinel scores teacher-forced (the first ones of the full check's prompts).
            ``None`` (default): the full check's own (``num_samples``). On the same texts both tiers share one
            model-side trajectory: a full check judges gold perplexity against the best point a sentinel saw between
            full checks, and a sentinel against the full checks' points. A smaller number makes a sentinel cheaper,
            and each tier then keeps its own history (their values are not comparable).
        max_overhead: the most of training wall time the guard may spend on step checks (0.05: 5%); a due check waits
            while it would exceed it. ``None``: no cap. Epoch-end checks and the full check a sentinel critical
            triggers always run.
        check_on_train_start: measure the model once before training (not judged): the run's starting point, which
            the trajectory reads (see :mod:`collapseguard.detection.trajectory`). Skipped on resume.

    A string names a preset (``"epoch"``, ``"steps"``) or spells fields out, ``"steps=200,sentinel=20,overhead=0.02"``.

    >>> CheckSchedule.coerce("steps").every_n_steps
    100
    >>> CheckSchedule.coerce("steps=200,sentinel=20").sentinel_every_n_steps
    20
    >>> CheckSchedule(every_n_steps=0)
    Traceback (most recent call last):
    ...
    ValueError: CheckSchedule: every_n_steps=0 is invalid: every_n_steps must be an int >= 1 or None. Pass None for no step checks.
    """

    every_n_epochs: int | None = None
    every_n_steps: int | None = None
    sentinel_every_n_steps: int | None = None
    sentinel_samples: int | None = None
    max_overhead: float | None = 0.05
    check_on_train_start: bool = True

    def __post_init__(self) -> None:
        validate(_CALLER, "check_on_train_start", self.check_on_train_start, BOOL)
        validate(_CALLER, "every_n_epochs", self.every_n_epochs, Interval(int, 0, None), NONE,
                 fix="pass 1 to check at every epoch end, 0 for never")
        for name in ("every_n_steps", "sentinel_every_n_steps"):
            validate(_CALLER, name, getattr(self, name), Interval(int, 1, None), NONE,
                     fix=f"Pass None for no {'sentinel' if name.startswith('sentinel') else 'step'} checks")
        validate(_CALLER, "sentinel_samples", self.sentinel_samples, Interval(int, 2, None), NONE,
                 fix="the sentinel averages over at least 2 gold texts; None scores the full check's own")
        validate(_CALLER, "max_overhead", self.max_overhead, Interval(float, 0, 1, closed="right"), NONE,
                 fix="pass a share of training time such as 0.05, or None for no cap")
        if self.every_n_steps is not None and self.sentinel_every_n_steps is not None \
                and self.sentinel_every_n_steps > self.every_n_steps:
            raise ValueError(f"{_CALLER}: sentinel_every_n_steps={self.sentinel_every_n_steps} is invalid: the "
                             f"sentinel is the frequent tier, so it must be at most every_n_steps={self.every_n_steps}."
                             " Lower sentinel_every_n_steps or raise every_n_steps.")

    @property
    def steps(self) -> bool:
        """Whether any check runs on optimizer steps."""
        return self.every_n_steps is not None or self.sentinel_every_n_steps is not None

    def epochs(self) -> int:
        """Full checks at every this many epoch ends (0: none)."""
        if self.every_n_epochs is not None:
            return self.every_n_epochs
        return 0 if self.steps else 1

    def to_dict(self) -> dict[str, Any]:
        """The schedule's fields as a JSON-ready dict (as the trail's config line records them)."""
        return asdict(self)

    @classmethod
    def coerce(cls, value: CheckSchedule | str | dict[str, Any] | None, caller: str = _CALLER) -> CheckSchedule:
        """A schedule from a :class:`CheckSchedule`, a preset name, a ``"key=value,..."`` string, a dict or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise TypeError(f"{caller}: schedule={describe(value)} is invalid: unknown field(s) {unknown}; "
                                f"CheckSchedule takes {[f.name for f in fields(cls)]}")
            return cls(**value)
        validate(caller, "schedule", value, InstanceOf(str, name="a CheckSchedule, a preset name or a dict"),
                 fix="e.g. schedule=CheckSchedule(every_n_steps=100, sentinel_every_n_steps=10) or schedule='steps'")
        if value in PRESETS:
            return cls(**PRESETS[value])
        out: dict[str, Any] = {}
        for part in (p.strip() for p in value.split(",") if p.strip()):
            key, sep, raw = part.partition("=")
            name = SHORTHAND.get(key.strip())
            if not sep or name is None:
                raise ValueError(f"{caller}: schedule={value!r} is invalid: {part!r} is neither a preset "
                                 f"({', '.join(map(repr, PRESETS))}) nor key=value with a key among "
                                 f"{sorted(set(SHORTHAND))}. E.g. schedule='steps=200,sentinel=20,overhead=0.02'")
            raw = raw.strip()
            out[name] = None if raw.lower() == "none" else float(raw) if name == "max_overhead" else int(raw)
        return cls(**out)

    @classmethod
    def merged(cls, caller: str, value: CheckSchedule | str | dict[str, Any] | None,
               fields_: dict[str, Any]) -> CheckSchedule:
        """``value`` with ``fields_`` set (the callbacks' 0.2 ``every_n_epochs=`` / ``check_on_train_start=``); a
        field given both ways is an error."""
        schedule, defaults = cls.coerce(value, caller), cls()
        for name in fields_:
            if getattr(schedule, name) != getattr(defaults, name):
                raise ValueError(f"{caller}: {name}={fields_[name]} and schedule.{name}={getattr(schedule, name)} "
                                 f"were both given: pass only schedule.{name}")
        return replace(schedule, **fields_)


SCHEDULE = (InstanceOf(CheckSchedule, str, dict, name="a CheckSchedule, a preset name ('epoch', 'steps') or a dict"),
            NONE)
"""What the callbacks' ``schedule=`` accepts (for :mod:`collapseguard.guard.options`)."""


class OverheadBudget:
    """The guard's share of training wall time, and whether a check of a given cost still fits under the cap.

    The clock starts when training starts (after the check before training, which is the run's starting point and
    is reported apart); the share is the guard's seconds over the wall time since.
    """

    def __init__(self, max_overhead: float | None, clock: Any = time.perf_counter) -> None:
        self.max_overhead = max_overhead
        self.clock = clock
        self.started: float | None = None
        self.guard_seconds = 0.0

    def start(self) -> None:
        """Start (or, on resume in a new process, restart) the training clock."""
        self.started = self.clock()
        self.guard_seconds = 0.0

    def add(self, seconds: float) -> None:
        """Count seconds the guard spent (a check, its gather)."""
        self.guard_seconds += max(float(seconds), 0.0)

    @property
    def elapsed(self) -> float:
        """Wall-clock seconds since :meth:`start` (0 before it)."""
        return self.clock() - self.started if self.started is not None else 0.0

    @property
    def share(self) -> float:
        """The guard's seconds over the wall time since training started (0 before any time passed)."""
        elapsed = self.elapsed
        return self.guard_seconds / elapsed if elapsed > 0 else 0.0

    def allows(self, cost: float | None) -> bool:
        """Whether a check expected to take ``cost`` seconds keeps the share within the cap (an unmeasured tier is
        allowed once, so its cost becomes known)."""
        if self.max_overhead is None or cost is None or self.started is None:
            return True
        return (self.guard_seconds + cost) / (self.elapsed + cost) <= self.max_overhead


__all__ = ["SCHEDULE", "CheckSchedule", "OverheadBudget"]
