"""pass@k from groups of correct / wrong samples (issue 22), against a brute-force count of every draw of k samples
and against the binomial-coefficient form of Chen et al. (2021)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from collapseguard.metrics.base import direction
from collapseguard.metrics.correctness import PassAtK, pass_at_k


def brute_force(flags: list[bool], k: int) -> float:
    """The share of all k-subsets of the samples that hold at least one correct one."""
    draws = list(itertools.combinations(flags, k))
    return sum(any(d) for d in draws) / len(draws)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_pass_at_k_is_the_share_of_draws_of_k_with_a_correct_sample(n):
    for c in range(n + 1):
        flags = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(flags, k), abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_hand_computed_values():
    assert pass_at_k(4, 1, 1) == 0.25  # one right answer in four: a single draw hits it a quarter of the time
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 3 of the 6 pairs hold it
    assert pass_at_k(16, 2, 4) == pytest.approx(1 - (14 * 13 * 12 * 11) / (16 * 15 * 14 * 13))
    assert pass_at_k(200, 3, 100) == pytest.approx(1 - math.comb(197, 100) / math.comb(200, 100))


def test_metric_averages_groups_and_splits_them():
    m = PassAtK(4)
    groups = [[True, False, False, False], [False] * 4, [True] * 4, [True, True, False, False]]
    m.update(groups)
    out = m.compute_all()
    for k in range(1, 5):
        assert out[f"pass_at_{k}"] == pytest.approx(sum(brute_force(g, k) for g in groups) / 4)
    assert out["pass_at_1"] == pytest.approx((0.25 + 0 + 1 + 0.5) / 4)
    assert out["pass_at_k"] == out["pass_at_4"] == pytest.approx(3 / 4)
    assert (out["frac_all_correct"], out["frac_mixed"], out["frac_all_wrong"]) == (0.25, 0.5, 0.25)
    assert out["num_groups"] == 4.0


def test_merge_across_ranks_and_checks_is_exact_and_order_free():
    rng = random.Random(0)
    groups = [[rng.random() < p for _ in range(8)] for p in (0.1, 0.5, 0.9) for _ in range(20)]
    whole = PassAtK(8)
    whole.update(groups)
    shards = [PassAtK(8) for _ in range(3)]
    for i, g in enumerate(groups):
        shards[i % 3].update([g])
    merged = shards[2].copy().merge(shards[0]).merge(shards[1])
    assert merged.compute_all() == whole.compute_all()
    counted = PassAtK(8)
    counted.update_counts([sum(g) for g in groups])
    assert counted.compute_all() == whole.compute_all()


def test_empty_and_bad_input():
    out = PassAtK(4).compute_all()
    assert math.isnan(out["pass_at_1"]) and out["num_groups"] == 0.0
    with pytest.raises(ValueError, match=r"PassAtK.update: group 1 holds 3 samples, not group_size=4"):
        PassAtK(4).update([[True] * 4, [True] * 3])
    with pytest.raises(ValueError, match=r"PassAtK: group_size=0 is invalid.*num_generations"):
        PassAtK(0)
    with pytest.raises(ValueError, match=r"0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(TypeError, match=r"cannot merge PassAtK built with other settings: \['group_size'\]"):
        PassAtK(4).merge(PassAtK(8))


def test_directions_are_declared():
    assert direction("pass_at_1") is True and direction("pass_at_16") is True and direction("pass_at_k") is True
    assert direction("frac_all_wrong") is False and direction("frac_mixed") is True
    assert direction("frac_all_correct") is None
