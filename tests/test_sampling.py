"""AnchorMixSampler: a hard per-batch human floor, no repeats, determinism, disjoint ranks."""

from __future__ import annotations

import logging
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collapseguard.guard.sampling import AnchorMixSampler

sizes = st.tuples(st.integers(0, 60), st.integers(0, 120), st.integers(0, 10))  # human, synthetic, unknown


def labels_of(n_h: int, n_s: int, n_u: int) -> list[str]:
    return ["human"] * n_h + ["synthetic"] * n_s + ["unknown"] * n_u


@settings(max_examples=150, deadline=None)
@given(sizes, st.integers(1, 16), st.floats(0, 1), st.integers(0, 5), st.integers(1, 3), st.booleans(),
       st.booleans())
def test_every_batch_holds_the_floor(n, batch_size, fraction, seed, replicas, drop_last, repeat):
    labels = labels_of(*n)
    if not labels or (fraction > 0 and n[0] == 0):
        return
    epoch_batches = []
    for rank in range(replicas):
        s = AnchorMixSampler(labels, batch_size, fraction, seed, drop_last=drop_last, allow_repeat_anchors=repeat,
                             num_replicas=replicas, rank=rank)
        s.set_epoch(3)
        batches = list(s)
        assert len(batches) == len(s)
        epoch_batches.append(batches)
        for batch in batches:
            humans = sum(labels[i] == "human" for i in batch)
            assert humans >= math.ceil(fraction * len(batch) - 1e-9), (batch, fraction)
            assert 0 < len(batch) <= batch_size
            if drop_last:
                assert len(batch) == batch_size
    assert len({len(b) for b in epoch_batches}) == 1  # every rank gets as many batches
    drawn = [i for batches in epoch_batches for b in batches for i in b]
    if not repeat:
        assert len(drawn) == len(set(drawn))  # without replacement, across ranks too


def test_deterministic_per_seed_and_epoch_and_changes_with_them():
    labels = labels_of(30, 70, 0)
    a = list(AnchorMixSampler(labels, 8, 0.25, seed=1))
    assert a == list(AnchorMixSampler(labels, 8, 0.25, seed=1))
    assert a != list(AnchorMixSampler(labels, 8, 0.25, seed=2))
    s = AnchorMixSampler(labels, 8, 0.25, seed=1)
    s.set_epoch(1)
    assert list(s) != a


def test_unknown_is_never_counted_as_human():
    labels = ["human"] * 4 + ["unknown"] * 28
    for batch in AnchorMixSampler(labels, 8, 0.5, allow_repeat_anchors=True):
        assert sum(i < 4 for i in batch) >= 4


def test_small_human_pool_shortens_the_epoch_and_says_how_many_are_missing(caplog):
    labels = labels_of(5, 95, 0)
    s = AnchorMixSampler(labels, 10, 0.2)
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        batches = list(s)
    assert len(batches) == 2  # 5 humans, 2 per batch
    msg = caplog.records[-1].getMessage()
    assert "10 batches need 20 human samples, there are 5 (15 missing)" in msg and "allow_repeat_anchors=True" in msg
    repeated = list(AnchorMixSampler(labels, 10, 0.2, allow_repeat_anchors=True))
    assert len(repeated) == 10
    assert Counter(i for b in repeated for i in b if i < 5).most_common(1)[0][1] > 1


def test_fraction_changes_take_effect_next_epoch():
    labels = labels_of(50, 50, 0)
    s = AnchorMixSampler(labels, 10, 0.1)
    list(s)
    low = s.realized_human_fraction
    s.set_human_fraction(0.8)
    s.set_epoch(1)
    batches = list(s)
    assert all(sum(i < 50 for i in b) >= 8 for b in batches)
    assert s.realized_human_fraction >= 0.8 and low == pytest.approx(0.5)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"labels": ["human", "robot"]}, r"labels hold \['robot'\]"),
    ({"labels": []}, "labels is empty"),
    ({"min_human_fraction": 1.5}, r"min_human_fraction=1.5 is invalid: min_human_fraction must be a number in \[0, 1\]"),
    ({"batch_size": 0}, "batch_size=0 is invalid: batch_size must be an int >= 1"),
    ({"labels": ["synthetic"] * 4}, "no index is labelled 'human'"),
    ({"rank": 2, "num_replicas": 2}, r"rank=2 is invalid: rank must be an int in \[0, 2\). Pass this process's index among num_replicas=2"),
])
def test_bad_arguments_are_refused(kwargs, match):
    args = {"labels": labels_of(4, 4, 0), "batch_size": 4, "min_human_fraction": 0.25, **kwargs}
    with pytest.raises(ValueError, match=match):
        AnchorMixSampler(**args)
