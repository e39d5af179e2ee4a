"""One validator for every public argument, with one message format.

Modelled on scikit-learn's ``_param_validation``: a parameter is checked against a list of constraints, any of
which may hold, and a refusal reads the same everywhere::

    HaltPolicy: patience=0 is invalid: patience must be an int >= 1. Halt after this many consecutive critical checks (1: the first).

naming the caller (the class or function the user called), the argument, the value and, where one exists, the
fix. A value of the wrong type raises ``TypeError``; a value of the right type out of range, ``ValueError``.
No state is kept: constraints are plain values, so one table (e.g. the callbacks' shared argument
specification, :mod:`collapseguard.guard.options`) can hold them.

>>> validate("GuardEngine", "patience", 0, Interval(int, 1, None))
Traceback (most recent call last):
...
ValueError: GuardEngine: patience=0 is invalid: patience must be an int >= 1.
>>> validate("GuardEngine", "on_collapse", "stop", OneOf("warn", "halt"), fix="halt stops training")
Traceback (most recent call last):
...
ValueError: GuardEngine: on_collapse='stop' is invalid: on_collapse must be one of 'warn', 'halt'. Halt stops training.
"""

from __future__ import annotations

import numbers
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist = 60, 60, 4


class Constraint:
    """What a valid value is: ``accepts_type`` (a value of the right kind) and ``accepts`` (and in range)."""

    def accepts_type(self, value: Any) -> bool:
        return self.accepts(value)

    def accepts(self, value: Any) -> bool:  # pragma: no cover - every constraint overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """A number of ``kind`` (``int`` or ``float``; a float interval accepts ints) within bounds (``None``: open)."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both", "left", "right" or "neither"

    def accepts_type(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        return isinstance(value, numbers.Integral) if self.kind is int else isinstance(value, numbers.Real)

    def accepts(self, value: Any) -> bool:
        if not self.accepts_type(value):
            return False
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return bool(lo_ok and hi_ok)

    def __str__(self) -> str:
        noun = "an int" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = "[" if self.closed in ("both", "left") else "(", "]" if self.closed in ("both", "right") else ")"
            return f"{noun} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{noun} {'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        return noun


class OneOf(Constraint):
    """One of a fixed set of values (strings: the options a ``Literal`` annotation lists)."""

    def __init__(self, *options: Any) -> None:
        self.options = options

    def accepts_type(self, value: Any) -> bool:
        return any(isinstance(value, type(o)) for o in self.options)

    def accepts(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) for o in self.options)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


class InstanceOf(Constraint):
    """An instance of one of ``types``, described as ``name`` (e.g. "a dict")."""

    def __init__(self, *types: type, name: str) -> None:
        self.types, self.name = types, name

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.types) and not (bool not in self.types and isinstance(value, bool))

    def __str__(self) -> str:
        return self.name


class HasMethods(Constraint):
    """An object with these callable methods (duck typing: a sampler, a ledger, a tokenizer)."""

    def __init__(self, *methods: str, name: str) -> None:
        self.methods, self.name = methods, name

    def accepts(self, value: Any) -> bool:
        return all(callable(getattr(value, m, None)) for m in self.methods)

    def __str__(self) -> str:
        return self.name


class Satisfies(Constraint):
    """A value for which ``predicate`` holds, described as ``name``. With ``types``, a value of one of them for
    which the predicate fails is of the right type (``ValueError``); without, any refusal is a ``TypeError``."""

    def __init__(self, predicate: Callable[[Any], bool], name: str, types: tuple[type, ...] | None = None) -> None:
        self.predicate, self.name, self.types = predicate, name, types

    def accepts_type(self, value: Any) -> bool:
        return isinstance(value, self.types) if self.types is not None else self.accepts(value)

    def accepts(self, value: Any) -> bool:
        return (self.types is None or isinstance(value, self.types)) and bool(self.predicate(value))

    def __str__(self) -> str:
        return self.name


class ArgumentTypeError(TypeError, ValueError):
    """A value of the wrong type for an argument whose check raised ``ValueError`` for every bad value before it
    moved to :func:`validate` (``n``, ``batch_size``, ``samples_per_prompt``, ...): a ``TypeError`` as every
    wrong type is, and still caught by ``except ValueError`` (pass ``type_error=ArgumentTypeError``)."""


NONE = InstanceOf(type(None), name="None")
BOOL = InstanceOf(bool, name="True or False")
PATH = InstanceOf(str, Path, name="a file path (str or pathlib.Path)")
CALLABLE = Satisfies(callable, "callable")
FRACTION = Interval(float, 0, 1, closed="right")


def describe(value: Any) -> str:
    """A short repr for messages (a list of a thousand texts is not printed whole)."""
    return _REPR.repr(value)


def message(caller: str, name: str, value: Any, allowed: str, fix: str | None = None, *,
            wrong_type: bool = False) -> str:
    """The one refusal format: caller, argument, value (and its type, where that is what is wrong), what it must
    be, the fix."""
    text = f"{caller}: {name}={describe(value)} is invalid: {name} must be {allowed}"
    if wrong_type:
        text += f", got {type(value).__name__}"
    if not fix:
        return text + "."
    first = fix.split(" ", 1)[0]
    if first.isalpha() and first.islower():  # a sentence: capitalise it; an argument name (every_n_epochs=1) stays
        fix = fix[:1].upper() + fix[1:]
    ending = "" if fix.endswith(".") else "."  # "save_profile_to=..." keeps its dots, a sentence gets one
    return f"{text}. {fix}{ending}"


def validate(caller: str, name: str, value: Any, *constraints: Constraint, fix: str | None = None,
             type_error: type[TypeError] = TypeError) -> Any:
    """``value`` if any constraint accepts it; else ``type_error`` (no constraint takes its type; a check that
    raised ``ValueError`` for wrong types too keeps doing so with :class:`ArgumentTypeError`) or ``ValueError``."""
    if any(c.accepts(value) for c in constraints):
        return value
    allowed = " or ".join(str(c) for c in constraints)
    wrong_type = not any(c.accepts_type(value) for c in constraints)
    raise (type_error if wrong_type else ValueError)(message(caller, name, value, allowed, fix, wrong_type=wrong_type))
