"""Mergeable metric states, in the manner of torchmetrics' ``add_state``.

A metric keeps *sufficient statistics* (counts, sums, n-gram tables) whose
merge is exact: ``a.merge(b)`` followed by ``compute()`` gives the value that
one metric updated with the outputs of both would give. This is what lets each
training process measure its own share of the generations and still reach the
same numbers as a single process.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np

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


class Metric:
    """Base class: named states with declared reductions, pure update/compute.

    Subclasses call :meth:`add_state` in ``__init__``, implement
    :meth:`_update_states` (fold one batch's statistics in) and :meth:`compute`.
    """

    name: str = "metric"

    def __init__(self) -> None:
        self._defaults: dict[str, Any] = {}
        self._reductions: dict[str, Reduction] = {}

    def add_state(self, name: str, default: Any, reduction: Reduction) -> None:
        """Declare a state: its empty ``default`` and how two values merge (``reduction``)."""
        if reduction not in _REDUCERS:
            raise ValueError(f"reduction={reduction!r} is not one of {sorted(_REDUCERS)}")
        self._defaults[name] = default
        self._reductions[name] = reduction
        setattr(self, name, _empty_like(default))

    def reset(self) -> None:
        """Empty every state (the settings stay)."""
        for name, default in self._defaults.items():
            setattr(self, name, _empty_like(default))

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
