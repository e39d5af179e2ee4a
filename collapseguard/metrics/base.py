"""Mergeable metric states, in the manner of torchmetrics' ``add_state``, and each metric's direction.

A metric keeps *sufficient statistics* (counts, sums, n-gram tables) whose
merge is exact: ``a.merge(b)`` followed by ``compute()`` gives the value that
one metric updated with the outputs of both would give. This is what lets each
training process measure its own share of the generations and still reach the
same numbers as a single process. Every state is declared with
:meth:`Metric.add_state` as a typed :class:`State` (its empty value and its reduction).

Every metric also declares which way is healthy, as torchmetrics' ``higher_is_better``: ``True`` (diversity,
coverage), ``False`` (repetition, divergence from gold, perplexity) or ``None`` (no direction: a count, a length).
:func:`direction` reads the declarations by the names the metrics report; the detectors judge each metric by it.

>>> direction("distinct_2"), direction("self_bleu"), direction("num_outputs")
(True, False, None)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from collapseguard._validation import BOOL, NONE, ArgumentTypeError, OneOf, Satisfies, validate

Reduction = Literal["sum", "cat", "union", "counts"]

_EMPTY_KEYS = np.empty(0, dtype=np.uint64)


def merge_counts(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Add two (sorted unique keys, counts) tables."""
    for x, y in ((a, b), (b, a)):  # folding into an empty table (every first update) needs no re-count
        if x[0].size == 0 and y[0].dtype == _EMPTY_KEYS.dtype and _is_sorted_unique(y[0]):
            return y[0].copy(), np.asarray(y[1]).astype(np.int64)
    keys = np.concatenate([a[0], b[0]])
    if keys.size == 0:
        return _EMPTY_KEYS, np.empty(0, dtype=np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate([a[1], b[1]]), minlength=uniq.size)
    return uniq, counts.astype(np.int64)


def _is_sorted_unique(keys: np.ndarray) -> bool:
    return bool(keys.size < 2 or (keys[1:] > keys[:-1]).all())


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted unique values by sort-and-compare (numpy 2's hash path for np.unique is ~10x slower here)."""
    if keys.size == 0:
        return keys
    srt = np.sort(keys)
    keep = np.empty(srt.size, dtype=bool)
    keep[0] = True
    np.not_equal(srt[1:], srt[:-1], out=keep[1:])
    return srt[keep]


def count_table(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique keys, counts) of an array of hashes."""
    if keys.size == 0:
        return _EMPTY_KEYS, np.empty(0, dtype=np.int64)
    srt = np.sort(keys)
    starts = np.flatnonzero(np.concatenate(([True], srt[1:] != srt[:-1])))
    return srt[starts], np.diff(np.append(starts, srt.size)).astype(np.int64)


_REDUCERS: dict[str, Callable[[Any, Any], Any]] = {
    "sum": lambda a, b: a + b,
    "cat": lambda a, b: list(a) + list(b),
    "union": lambda a, b: sorted_unique(np.concatenate([a, b])).astype(np.uint64),
    "counts": merge_counts,
}


def _empty_like(default: Any) -> Any:
    return copy.deepcopy(default)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _is_keys(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype == np.uint64


_STATE_TYPES: dict[str, Satisfies] = {
    "sum": Satisfies(lambda d: _is_number(d) or (isinstance(d, np.ndarray) and d.dtype.kind in "iuf"),
                     "a number or a numeric array (added)"),
    "cat": Satisfies(lambda d: isinstance(d, list), "a list (concatenated)"),
    "union": Satisfies(_is_keys, "a 1-D uint64 array of sorted unique keys (united)"),
    "counts": Satisfies(lambda d: isinstance(d, tuple) and len(d) == 2 and _is_keys(d[0])
                        and isinstance(d[1], np.ndarray) and d[1].dtype == np.int64,
                        "a (uint64 keys, int64 counts) tuple of arrays (counts added key by key)"),
}
"""What a state's default must be for each reduction: the type of the state."""


@dataclass(frozen=True)
class State:
    """One declared state of a metric: its name, its empty value and how two values of it merge.

    ``sum``: numbers or numeric arrays, added. ``cat``: lists, concatenated. ``union``: sorted unique uint64 keys,
    united. ``counts``: (sorted unique uint64 keys, int64 counts) tables, added key by key. :attr:`type` is the
    Python type every value of the state has (its default's).
    """

    name: str
    default: Any
    reduction: Reduction

    @property
    def type(self) -> type:
        """The state's type: that of its empty default (a number, an array, a list or a tuple of arrays)."""
        return type(self.default)


# ------------------------------------------------------------------ directions
_DIRECTION_WORDS: dict[bool | None, str | None] = {True: "higher_is_better", False: "lower_is_better", None: None}
# Filled as metric classes are defined. Python imports the package (collapseguard/metrics/__init__.py) before this
# module, and the package imports every module that defines a metric (builtin.py: the length and the count), so the
# table is whole by the time anything asks; this module imports no suite (no cycle through suite.py).
_DECLARED: dict[str, tuple[bool | None, type]] = {}  # reported name (or template) -> (direction, declaring class)
_PATTERNS: dict[str, re.Pattern[str]] = {}  # templates ("distinct_{n}") -> their pattern
_LOOKUPS: dict[str, bool | None] = {}  # cache of direction(); cleared when a metric class declares more
_MISSING: Any = object()


def _register(cls: type[Metric]) -> None:
    """Record the directions ``cls`` declares; a name two classes declare must have one direction."""
    for name, hib in cls.directions().items():
        validate(f"{cls.__name__}.higher_is_better", name, hib, BOOL, NONE,
                 fix="True where a higher value is healthier, False where lower is, None for no direction")
        known = _DECLARED.get(name)
        if known is not None and known[0] is not hib:
            raise TypeError(f"{cls.__name__} declares {name} with higher_is_better={hib}, but "
                            f"{known[1].__name__} declares it with higher_is_better={known[0]}: one name, one "
                            "direction")
        if known is None:
            _DECLARED[name] = (hib, cls)
            if "{" in name:
                _PATTERNS[name] = re.compile(re.sub(r"\\\{\w+\\\}", r"\\d+", re.escape(name)))
    _LOOKUPS.clear()


def direction(name: str, default: Any = _MISSING) -> bool | None:
    """Whether a higher value of the metric reported as ``name`` is healthier: ``True``, ``False``, or ``None``
    where the metric declares no direction (``num_outputs``, ``mean_length``).

    Read from the metric classes' declarations (:attr:`Metric.higher_is_better`, :attr:`Metric.outputs`);
    parameterised names (``distinct_3``, ``seq_rep_4``) match their class's template (``distinct_{n}``).

    Raises:
        KeyError: for a name no metric declares, unless ``default`` is given (then that is returned).
    """
    if name in _LOOKUPS:
        return _LOOKUPS[name]
    found = _DECLARED.get(name)
    if found is None:
        found = next((_DECLARED[t] for t, pattern in _PATTERNS.items() if pattern.fullmatch(name)), None)
    if found is None:
        if default is not _MISSING:
            return default
        raise KeyError(f"no metric declares a direction for {name!r}; declared: {sorted(_DECLARED)}")
    _LOOKUPS[name] = found[0]
    return found[0]


def declared_directions() -> dict[str, bool | None]:
    """Every name (or template, ``distinct_{n}``) a metric class declares, with its direction."""
    return {name: hib for name, (hib, _) in sorted(_DECLARED.items())}


def declaring_class(name: str) -> type[Metric]:
    """The metric class that declared ``name`` (or the template it matches). Raises KeyError when none did."""
    if name in _DECLARED:
        return _DECLARED[name][1]
    for template, pattern in _PATTERNS.items():
        if pattern.fullmatch(name):
            return _DECLARED[template][1]
    raise KeyError(f"no metric declares a direction for {name!r}")


def direction_word(higher_is_better: bool | None) -> str | None:
    """``"higher_is_better"``, ``"lower_is_better"`` or None: the words of :attr:`Metric.direction`."""
    return _DIRECTION_WORDS[higher_is_better]


def from_direction_word(word: str | bool | None, caller: str = "Metric") -> bool | None:
    """The ``higher_is_better`` a direction word (or a bool, or None) stands for."""
    validate(caller, "direction", word, OneOf("higher_is_better", "lower_is_better"), BOOL, NONE,
             fix="'higher_is_better' where a higher value is healthier, 'lower_is_better' where lower is")
    return word if not isinstance(word, str) else word == "higher_is_better"


class Metric:
    """Base class: named, typed states with declared reductions, pure update/compute, a declared direction.

    Subclasses call :meth:`add_state` in ``__init__``, implement :meth:`update` (compute one batch's statistics and
    fold them in with :meth:`_fold`) and :meth:`compute`, and declare :attr:`higher_is_better` for the value they report as
    :attr:`name` (a template such as ``"distinct_{n}"`` where the instance fills it in) -- or, when
    ``compute_all`` reports several values, :attr:`outputs`, each reported name with its direction.
    """

    name: str = "metric"
    higher_is_better: bool | None = None
    """True: a higher value is healthier; False: a lower one is; None: no direction (a count)."""
    outputs: ClassVar[Mapping[str, bool | None] | None] = None
    """Every name ``compute_all`` reports, with its direction (None: just :attr:`name`, :attr:`higher_is_better`)."""
    direction: str | None = None
    """:attr:`higher_is_better` in words: ``"higher_is_better"``, ``"lower_is_better"`` or None."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "higher_is_better" in vars(cls) or "outputs" in vars(cls):
            cls.direction = direction_word(cls.higher_is_better)
            _register(cls)

    @classmethod
    def directions(cls) -> dict[str, bool | None]:
        """The names this metric reports (templates for parameterised ones) with their declared directions."""
        return dict(cls.outputs) if cls.outputs is not None else {cls.name: cls.higher_is_better}

    def __init__(self) -> None:
        self._states: dict[str, State] = {}
        self._reductions: dict[str, Reduction] = {}

    def add_state(self, name: str, default: Any, reduction: Reduction) -> None:
        """Declare a state: ``default`` is its empty value, of the type the ``reduction`` combines.

        Raises:
            ValueError: for an unknown reduction; TypeError: for a default of the wrong type for it.
        """
        caller = f"{type(self).__name__}.add_state"
        validate(caller, "reduction", reduction, OneOf(*_REDUCERS), fix="declare how two values of the state merge",
                 type_error=ArgumentTypeError)
        validate(caller, "default", default, _STATE_TYPES[reduction],
                 fix=f"a {reduction!r} state starts from an empty value of the type it merges")
        self._states[name] = State(name, default, reduction)
        self._reductions[name] = reduction
        setattr(self, name, _empty_like(default))

    def declared_states(self) -> dict[str, State]:
        """Every declared state (name, default, reduction, type), in declaration order."""
        return dict(self._states)

    def reset(self) -> None:
        """Empty every state (the settings stay)."""
        for name, state in self._states.items():
            setattr(self, name, _empty_like(state.default))

    def _fold(self, **batch_states: Any) -> None:
        """Combine a batch's statistics into the running states."""
        for name, value in batch_states.items():
            setattr(self, name, _REDUCERS[self._reductions[name]](getattr(self, name), value))

    def _settings(self) -> dict[str, Any]:
        """Everything but the states (n, max_n, bands, gold tables, ...): must match to merge."""
        return {k: v for k, v in vars(self).items() if k not in self._reductions and not k.startswith("_")}

    def merge(self, other: Metric) -> Metric:
        """Fold ``other``'s states into this metric (exact) and return self.

        Raises:
            TypeError: for another metric type, or the same type built with other settings.
        """
        if type(other) is not type(self) or other._reductions.keys() != self._reductions.keys():
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        mine, theirs = self._settings(), other._settings()
        differ = [k for k in mine.keys() | theirs.keys() if not _same(mine.get(k), theirs.get(k))]
        if differ:
            raise TypeError(f"cannot merge {type(self).__name__} built with other settings: {sorted(differ)} differ")
        self._fold(**{name: getattr(other, name) for name in self._reductions})
        return self

    def copy(self) -> Metric:
        """An independent copy of the states that shares the settings (gold tables, bands).

        Much cheaper than ``copy.deepcopy`` when the settings are large. Safe because states are
        only ever replaced (:meth:`_fold`), never changed in place, and settings are read-only.
        """
        new = copy.copy(self)
        for name in self._reductions:
            setattr(new, name, copy.deepcopy(getattr(self, name)))
        return new

    def states(self) -> dict[str, Any]:
        """The current states by name: what a merge or a gather exchanges."""
        return {name: getattr(self, name) for name in self._reductions}

    def update(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - abstract
        """Fold one batch into the states (outputs, samples or statistics, as the metric's class says)."""
        raise NotImplementedError

    def compute(self) -> float:  # pragma: no cover - abstract
        """The metric's value from the states folded in so far."""
        raise NotImplementedError


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dict__") and type(a) is type(b):
        return vars(a).keys() == vars(b).keys() and all(_same(vars(a)[k], vars(b)[k]) for k in vars(a))
    return bool(a == b)


def merge_all(metrics: Iterable[Metric]) -> Metric:
    """Merge a sequence of same-type metrics into a fresh copy of the first."""
    items = list(metrics)
    if not items:
        raise ValueError("merge_all() needs at least one metric")
    merged = copy.deepcopy(items[0])
    for other in items[1:]:
        merged.merge(other)
    return merged
