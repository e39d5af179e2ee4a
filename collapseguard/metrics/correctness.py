"""pass@k from groups of samples judged right or wrong: what RL with verifiable rewards gains and loses.

A GRPO step samples ``n`` completions of each prompt and rewards each one; where a reward says *right* or *wrong*
(an exact answer, a passing test), a group is ``c`` correct samples out of ``n``. From that group, the chance that at
least one of ``k`` samples drawn without replacement is correct has the unbiased estimator of Chen et al. (2021,
"Evaluating Large Language Models Trained on Code"):

    pass@k = 1 - C(n - c, k) / C(n, k)

averaged over groups. RL that *narrows* a policy raises pass@1 (the model's favourite answer gets more likely) while
pass@k at large k falls (the answers it no longer samples were sometimes the right ones: Yue et al., 2025,
arXiv 2504.13837). Both come from the groups the trainer already generated, at no extra generation.

The state is a histogram of groups by their number of correct samples (an int64 array of ``group_size + 1`` counts,
added on merge), so the merge across ranks and checks is exact and order-free. Groups split into *all correct*
(``c == n``: nothing left to learn there, and no GRPO gradient), *mixed* (the only groups GRPO learns from) and *all
wrong* (the policy is lost on that prompt).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np

from collapseguard._validation import ArgumentTypeError, Interval, validate
from collapseguard.metrics.base import Metric


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k for one group of ``n`` samples with ``c`` correct (Chen et al., 2021).

    Computed as a product, not from binomial coefficients, so it stays exact-ish for large ``n``.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 3, 2)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every draw of k holds a correct sample
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


class PassAtK(Metric):
    """pass@1 ... pass@n over groups of ``group_size`` samples judged correct or not, and how the groups split.

    Reports ``pass_at_{k}`` for every k from 1 to ``group_size`` (``pass_at_1`` and ``pass_at_k``, the group size's,
    under those names too), ``frac_all_correct``, ``frac_mixed``, ``frac_all_wrong`` and ``num_groups``.

    >>> m = PassAtK(4)
    >>> m.update([[True, False, False, False], [False] * 4, [True] * 4])
    >>> out = m.compute_all()
    >>> round(out["pass_at_1"], 4), round(out["pass_at_k"], 4), round(out["frac_mixed"], 4)
    (0.4167, 0.6667, 0.3333)
    """

    name = "pass_at_k"
    higher_is_better = True  # compute(): pass@k at the group size
    # frac_all_correct has no direction: a policy that converged on a prompt leaves no GRPO gradient there, which
    # is neither good nor bad by itself; frac_mixed: the groups GRPO learns from
    outputs: ClassVar[dict[str, bool | None]] = {
        "pass_at_{k}": True, "pass_at_k": True, "frac_all_correct": None, "frac_mixed": True,
        "frac_all_wrong": False, "num_groups": None}
    counts: np.ndarray

    def __init__(self, group_size: int) -> None:
        super().__init__()
        validate("PassAtK", "group_size", group_size, Interval(int, 1, None),
                 fix="pass the number of samples of each prompt (GRPO's num_generations)", type_error=ArgumentTypeError)
        self.group_size = int(group_size)
        self.add_state("counts", np.zeros(self.group_size + 1, dtype=np.int64), "sum")

    def update(self, correct: Iterable[Sequence[bool]]) -> None:
        """Fold in groups, each the correctness of one prompt's ``group_size`` samples (``correct``: the name a suite
        hands it under).

        Raises:
            ValueError: for a group of another size.
        """
        batch = np.zeros(self.group_size + 1, dtype=np.int64)
        for i, group in enumerate(correct):
            flags = [bool(x) for x in group]
            if len(flags) != self.group_size:
                raise ValueError(f"PassAtK.update: group {i} holds {len(flags)} samples, not group_size="
                                 f"{self.group_size}: pass each prompt's samples as one group")
            batch[sum(flags)] += 1
        self._fold(counts=batch)

    def update_counts(self, correct: Iterable[int]) -> None:
        """Fold in groups given by their number of correct samples."""
        values = np.asarray(list(correct), dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > self.group_size):
            raise ValueError(f"PassAtK.update_counts: a group's correct count must lie in 0..{self.group_size}")
        self._fold(counts=np.bincount(values, minlength=self.group_size + 1).astype(np.int64))

    @property
    def num_groups(self) -> int:
        """Groups folded in so far."""
        return int(self.counts.sum())

    def compute(self) -> float:
        """pass@k at the group size (NaN with no groups)."""
        return self.compute_all()["pass_at_k"]

    def compute_all(self) -> dict[str, float]:
        """Every value this metric reports (NaN for all but ``num_groups`` with no groups)."""
        n, total = self.group_size, self.num_groups
        if total == 0:
            nan = math.nan
            return {**{f"pass_at_{k}": nan for k in range(1, n + 1)}, "pass_at_k": nan, "frac_all_correct": nan,
                    "frac_mixed": nan, "frac_all_wrong": nan, "num_groups": 0.0}
        counts = [int(x) for x in self.counts]
        out = {f"pass_at_{k}": math.fsum(m * pass_at_k(n, c, k) for c, m in enumerate(counts) if m) / total
               for k in range(1, n + 1)}
        out["pass_at_k"] = out[f"pass_at_{n}"]
        out["frac_all_correct"] = counts[n] / total
        out["frac_all_wrong"] = counts[0] / total
        out["frac_mixed"] = sum(counts[1:n]) / total
        out["num_groups"] = float(total)
        return out


__all__ = ["PassAtK", "pass_at_k"]
