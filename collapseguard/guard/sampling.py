"""A batch sampler that guarantees a floor of human ("anchor") data in every batch.

Mixing a minimum share of human-written data into training is the standard guard
against drifting into one's own outputs (Bertrand et al., ICLR 2024: iterative
retraining stays stable when the real-data share is large enough). The floor here
is hard -- every batch holds it -- not an expectation over batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from collapseguard._validation import ArgumentTypeError, Interval, validate
from collapseguard.detection.alerts import logger

LABELS = ("human", "synthetic", "unknown")
_CALLER = "AnchorMixSampler"


def _fraction(caller: str, name: str, value: float) -> float:
    validate(caller, name, value, Interval(float, 0, 1), fix="0.2 = at least 20% human samples per batch",
             type_error=ArgumentTypeError)
    return float(value)


def _positive(name: str, value: int, fix: str) -> int:
    validate(_CALLER, name, value, Interval(int, 1, None), fix=fix, type_error=ArgumentTypeError)
    return value


class AnchorMixSampler:
    """Batches of indices with at least ``min_human_fraction`` human samples in every batch.

    Use it as a DataLoader ``batch_sampler``. Each epoch draws every index at most once
    (shuffled with ``seed`` and the epoch), fills each batch's human floor first, then the
    remaining slots from the rest. ``unknown`` provenance never counts as human. Under
    several processes each rank takes a disjoint share of the batches (call
    :meth:`set_epoch` each epoch, as with ``DistributedSampler``).

    If the human pool is too small for the floor over an epoch, the epoch is shortened
    (fewer synthetic samples drawn) and a warning says how many human samples are missing,
    unless ``allow_repeat_anchors=True`` lets human samples repeat instead.

    Args:
        labels: provenance label of each dataset index: ``"human"``, ``"synthetic"`` or ``"unknown"``.
        batch_size: samples per batch.
        min_human_fraction: the floor, in [0, 1]; changeable between epochs with :meth:`set_human_fraction`.
        seed: shuffling seed.
        drop_last: drop a final short batch.
        allow_repeat_anchors: repeat human samples (with replacement) rather than shorten the epoch.
        num_replicas: processes sharing the batches (default: one process).
        rank: this process's index among them.

    >>> s = AnchorMixSampler(["human"] * 4 + ["synthetic"] * 12, batch_size=4, min_human_fraction=0.25)
    >>> [sum(i < 4 for i in batch) >= 1 for batch in s]
    [True, True, True, True]
    """

    def __init__(self, labels: Sequence[str], batch_size: int, min_human_fraction: float = 0.2, seed: int = 0, *,
                 drop_last: bool = False, allow_repeat_anchors: bool = False, num_replicas: int = 1,
                 rank: int = 0) -> None:
        labels = list(labels)
        bad = sorted({str(x) for x in labels} - set(LABELS))
        if bad:
            raise ValueError(f"{_CALLER}: labels hold {bad}: each must be one of {list(LABELS)}. Relabel them "
                             "(unknown is never counted as human)")
        if not labels:
            raise ValueError(f"{_CALLER}: labels is empty: the sampler needs one provenance label per dataset index. "
                             "Pass the label of every index")
        _positive("batch_size", batch_size, "pass the number of samples in a batch")
        _positive("num_replicas", num_replicas, "pass the number of processes (1 for one)")
        validate(_CALLER, "rank", rank, Interval(int, 0, num_replicas, closed="left"),
                 fix=f"pass this process's index among num_replicas={num_replicas}", type_error=ArgumentTypeError)
        self.labels = np.asarray(labels)
        self.human = np.flatnonzero(self.labels == "human")
        self.other = np.flatnonzero(self.labels != "human")
        self.batch_size = batch_size
        self.min_human_fraction = _fraction(_CALLER, "min_human_fraction", min_human_fraction)
        if self.min_human_fraction > 0 and self.human.size == 0:
            raise ValueError(f"{_CALLER}: min_human_fraction={min_human_fraction} but no index is labelled 'human': "
                             "add human data or set min_human_fraction=0")
        self.seed, self.drop_last, self.allow_repeat_anchors = seed, drop_last, allow_repeat_anchors
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.realized_human_fraction: float | None = None  # of the last epoch drawn, on this rank

    def set_epoch(self, epoch: int) -> None:
        """The epoch to draw next (as ``DistributedSampler.set_epoch``): it seeds the epoch's draw."""
        self.epoch = int(epoch)

    def set_human_fraction(self, fraction: float) -> None:
        """Change the floor; it applies from the next epoch drawn."""
        self.min_human_fraction = _fraction(f"{_CALLER}.set_human_fraction", "fraction", fraction)

    # ------------------------------------------------------------------ plan
    def _floor(self) -> int:
        return math.ceil(self.min_human_fraction * self.batch_size - 1e-9)

    def _all_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        human, other = rng.permutation(self.human), rng.permutation(self.other)
        b, h = self.batch_size, self._floor()
        n = human.size + other.size
        k = n // b if self.drop_last else math.ceil(n / b)
        need = k * h
        if human.size < need:
            missing = need - human.size
            if self.allow_repeat_anchors:
                human = np.concatenate([human, rng.choice(self.human, size=missing, replace=True)])
            else:
                k_fit = human.size // h
                used_other = k_fit * (b - h)
                logger.warning(
                    "human pool too small for min_human_fraction=%.2f with batch_size=%d: %d batches need %d human "
                    "samples, there are %d (%d missing); this epoch has %d batches and leaves %d non-human samples "
                    "out. Add human data, lower min_human_fraction, or pass allow_repeat_anchors=True",
                    self.min_human_fraction, b, k, need, human.size, missing, k_fit, other.size - used_other)
                k, need, other = k_fit, k_fit * h, other[:used_other]
                human = human[:need]
        floors, rest = human[:need].reshape(k, h) if h else np.empty((k, 0), int), human[need:]
        pool = rng.permutation(np.concatenate([rest, other])) if rest.size else other
        batches, start = [], 0
        for j in range(k):
            take = min(b - h, pool.size - start)
            if take < 0 or (self.drop_last and take < b - h):
                break
            batch = np.concatenate([floors[j], pool[start:start + take]])
            start += take
            batches.append(rng.permutation(batch))
        return batches

    def _mine(self) -> list[np.ndarray]:
        batches = self._all_batches()
        usable = len(batches) - len(batches) % self.num_replicas  # equal counts keep DDP ranks in step
        return batches[self.rank:usable:self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self._mine()
        total = sum(len(b) for b in mine)
        humans = sum(int(np.isin(b, self.human).sum()) for b in mine)
        self.realized_human_fraction = humans / total if total else None
        for batch in mine:
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self._mine())
