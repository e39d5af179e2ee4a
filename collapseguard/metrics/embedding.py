"""Embedding diversity for any modality: Vendi score, total variance, effective rank, tail mass.

All four come from the same d-dimensional moments (n, sum x, sum x x^T, and
sum of the unit-normalised outer products), so a check costs O(n d^2) and the
state merges by addition, never needing the n x n kernel.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar

import numpy as np
from scipy.linalg import eigvalsh as _scipy_eigvalsh
from threadpoolctl import ThreadpoolController

from collapseguard.metrics._batch import TokenBatch
from collapseguard.metrics.base import Metric

_MULT = np.uint64(0x9E3779B97F4A7C15)
# Moment updates below this many multiply-adds (n * d * d) run on one BLAS thread: on a small
# machine a multi-threaded OpenBLAS competing with a training framework's threads takes 10-100x
# longer for them (64 x 256 features: 0.2 ms on one thread, ~24 ms contended on two). Larger
# ones keep every thread. (With d = 256 or 384 the product is bit-identical either way.)
_ONE_THREAD_WORK = 2**27
_controller: ThreadpoolController | None = None


def blas_controller() -> ThreadpoolController:
    """The process's BLAS thread controller, built on first use (gold contexts build it at setup).

    Built once: ``threadpool_limits()`` rescans every loaded library on each call -- 2 ms in a bare
    process, ~11 ms once torch is loaded -- more than the 256 x 256 eigendecomposition it wraps.
    """
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def _one_blas_thread() -> Any:
    """A context manager that runs BLAS/LAPACK on one thread."""
    return blas_controller().limit(limits=1, user_api="blas")


def as_matrix(x: Any, name: str = "outputs") -> np.ndarray:
    """A finite float64 (n, d) matrix, or a clear error."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} holds NaN or inf in {bad} of {arr.shape[0]} rows")
    return arr


_BLOCK_VALUES = 2**20
"""Rows are measured in blocks of about this many values (8 MB in float64): float32 input (torch's embeddings) is
converted to float64 one block at a time, and no (n, d) temporary is ever made; the sums stay float64, O(d^2)."""


def _rows(x: Any, name: str = "outputs") -> np.ndarray:
    """:func:`as_matrix`'s checks without its float64 copy: float32 and float64 input as it comes (measured in
    float64 block by block), anything else as float64."""
    arr = np.asarray(x)
    if arr.dtype not in (np.float32, np.float64):
        arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {arr.shape}")
    bad = 0
    for block in _blocks(arr, cast=False):
        if not np.isfinite(block).all():
            bad += int((~np.isfinite(block)).any(axis=1).sum())
    if bad:
        raise ValueError(f"{name} holds NaN or inf in {bad} of {arr.shape[0]} rows")
    return arr


def _blocks(x: np.ndarray, cast: bool = True) -> Any:
    """Consecutive row blocks of ``x`` (float64 with ``cast``: a view of float64 input, a block-sized copy else)."""
    step = max(_BLOCK_VALUES // max(x.shape[1], 1), 1)
    for start in range(0, x.shape[0], step):
        block = x[start:start + step]
        yield np.asarray(block, dtype=np.float64) if cast else block


def eigvalsh(matrix: np.ndarray) -> np.ndarray:
    # one BLAS thread: for d <= a few hundred it is as fast, and on small machines a
    # multi-threaded OpenBLAS competing with torch's threads can be 100x slower;
    # check_finite=False: every matrix here is built from validated finite inputs
    with _one_blas_thread():
        return _scipy_eigvalsh(matrix, check_finite=False)


def _entropy_exp(w: np.ndarray) -> float:
    # exp of the Shannon entropy of the positive weights; no positive weight gives exp(0) = 1,
    # as the vendi-score package does for all-zero rows
    w = w[w > 0]
    return float(np.exp(-(w * np.log(w)).sum()))


# -------------------------------------------------------------------- moments
def _moments_update(x: np.ndarray, full: bool = True, center: np.ndarray | None = None) -> dict[str, Any]:
    n, d = x.shape
    suu = np.zeros((d, d))
    sx, sxx = np.zeros(d), np.zeros((d, d))
    small = n * d**2 <= _ONE_THREAD_WORK
    with _one_blas_thread() if small else contextlib.nullcontext():
        for block in _blocks(x):  # float64 sums of float64 blocks: float32 input is never copied whole
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            # plain division when no row is zero: the same quotients without the masked divide's extra buffer
            unit = block / norms if (norms > 0).all() else np.divide(block, norms, out=np.zeros_like(block),
                                                                      where=norms > 0)
            suu += unit.T @ unit
            if full:  # moments about a fixed centre (shift-invariant statistics; avoids cancellation far from 0)
                c = block - center if center is not None else block
                sx += c.sum(axis=0)
                sxx += c.T @ c
    out: dict[str, Any] = {"n": n, "suu": suu}
    if full:
        out.update(sx=sx, sxx=sxx)
    return out


def _mean(m: np.ndarray) -> np.ndarray | None:
    """The column means, accumulated in float64 (float32 input is cast in numpy's small buffers, not copied)."""
    return m.mean(axis=0, dtype=np.float64) if m.size else None


def _vendi_compute(n: int, suu: np.ndarray) -> float:
    return _entropy_exp(eigvalsh(suu / n)) if n else 0.0


def _total_variance_compute(n: int, sx: np.ndarray, sxx: np.ndarray) -> float:
    if n == 0:
        return 0.0
    mean = sx / n
    return float(max(np.trace(sxx) / n - mean @ mean, 0.0))


def _effective_rank_compute(n: int, sx: np.ndarray, sxx: np.ndarray) -> float:
    if n == 0:
        return 0.0
    scatter = sxx - np.outer(sx, sx) / n  # centred X^T X
    lam = eigvalsh(scatter)
    lam = np.where(lam > lam.max(initial=0.0) * 1e-12, lam, 0.0)  # rounding noise is not a direction
    sigma = np.sqrt(lam)
    total = sigma.sum()
    return _entropy_exp(sigma / total) if total > 0 else 0.0


def _frechet_compute(n: int, sx: np.ndarray, sxx: np.ndarray, gold_cov_sqrt: np.ndarray) -> float:
    """Squared Fréchet distance between Gaussian fits of the outputs and of gold (as FID reports it), from
    moments taken about gold's mean: ``|mu|^2 + tr(S_o) + tr(S_g) - 2 tr((S_g^1/2 S_o S_g^1/2)^1/2)``."""
    if n == 0:
        return math.nan
    mu = sx / n
    cov = sxx / n - np.outer(mu, mu)
    root = eigvalsh(gold_cov_sqrt @ cov @ gold_cov_sqrt)
    cross = float(np.sqrt(np.clip(root, 0.0, None)).sum())
    gold_trace = float(np.square(gold_cov_sqrt).sum())  # tr(S_g) = ||S_g^1/2||_F^2
    return float(max(mu @ mu + np.trace(cov) + gold_trace - 2.0 * cross, 0.0))


def frechet_distance(x: Any, gold: Any) -> float:
    r"""Squared Fréchet distance between Gaussians fitted to ``x`` and to ``gold`` (population covariances).

    .. math:: \|\mu_x - \mu_g\|^2 + \mathrm{tr}\big(\Sigma_x + \Sigma_g - 2 (\Sigma_g^{1/2} \Sigma_x \Sigma_g^{1/2})^{1/2}\big)

    >>> round(frechet_distance([[1.0], [3.0]], [[0.0], [2.0]]), 6)
    1.0
    """
    m, g = _rows(x), as_matrix(gold, "gold")
    centre = g.mean(axis=0)
    st = _moments_update(m, center=centre)
    return _frechet_compute(st["n"], st["sx"], st["sxx"], covariance_sqrt(np.cov(g, rowvar=False, bias=True)))


def covariance_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance matrix (negative rounding noise clipped to 0)."""
    cov = np.atleast_2d(cov)
    with _one_blas_thread():
        lam, vec = np.linalg.eigh(cov)
    return (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T


def vendi_score(x: Any) -> float:
    r"""Vendi score (Friedman & Dieng, 2023) with the cosine kernel.

    With unit-normalised rows :math:`\hat x_i`, the kernel's eigenvalues
    equal those of the d x d matrix :math:`\frac1n \hat X^\top \hat X`:

    .. math:: \mathrm{VS} = \exp\Big(-\sum_k \lambda_k \log \lambda_k\Big)

    It reads as the effective number of distinct samples: 1 for identical
    rows, n for orthogonal ones. Zero rows are kept as zero (as sklearn does).

    Raises:
        ValueError: for a non-2-D input or NaN/inf values.

    >>> round(vendi_score(np.eye(3)), 6)
    3.0
    """
    st = _moments_update(_rows(x), full=False)
    return _vendi_compute(st["n"], st["suu"])


def total_variance(x: Any) -> float:
    r"""Trace of the (population) covariance: :math:`\frac1n\sum_i \|x_i - \bar x\|^2`.

    >>> total_variance([[0.0], [2.0]])
    1.0
    """
    m = _rows(x)
    st = _moments_update(m, center=_mean(m))
    return _total_variance_compute(st["n"], st["sx"], st["sxx"])


def effective_rank(x: Any) -> float:
    r"""Effective rank (Roy & Vetterli, 2007) of the centred data.

    :math:`\exp H(p)` with :math:`p_k = \sigma_k / \sum_j \sigma_j` over the
    singular values of the centred matrix; d for isotropic data, 1 for a line.

    >>> round(effective_rank([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), 6)
    2.0
    """
    m = _rows(x)
    st = _moments_update(m, center=_mean(m))
    return _effective_rank_compute(st["n"], st["sx"], st["sxx"])


class EmbeddingMoments(Metric):
    """Mergeable moments behind Vendi, total variance and effective rank (``full=False``: Vendi only).

    ``center`` (e.g. the gold mean) is subtracted before the second moments are summed, so data far
    from the origin keeps its precision; every shard must use the same centre.
    """

    name = "embedding_moments"
    higher_is_better = True  # compute(): the Vendi score
    outputs: ClassVar[dict[str, bool | None]] = {"vendi": True, "total_variance": True, "effective_rank": True,
               "frechet_distance": False}  # a distance to gold's Gaussian fit
    n: int
    suu: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray

    def __init__(self, dim: int, full: bool = True, center: np.ndarray | None = None,
                 gold_cov_sqrt: np.ndarray | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.full = full
        self.center = None if center is None else np.asarray(center, dtype=np.float64)
        # with the gold mean as centre and the square root of gold's covariance: also the Fréchet distance
        self.gold_cov_sqrt = gold_cov_sqrt
        self.add_state("n", 0, "sum")
        self.add_state("suu", np.zeros((dim, dim)), "sum")
        if full:
            self.add_state("sx", np.zeros(dim), "sum")
            self.add_state("sxx", np.zeros((dim, dim)), "sum")

    def update(self, x: Any) -> None:
        m = _rows(x)
        if m.shape[1] != self.dim:
            raise ValueError(f"x has {m.shape[1]} features but this metric was built for dim={self.dim}")
        self._fold(**_moments_update(m, self.full, self.center))

    def compute_all(self) -> dict[str, float]:
        """Every value the states give: ``vendi``, and with full moments ``total_variance``, ``effective_rank``
        (and ``frechet_distance`` against gold's covariance, where given)."""
        out = {"vendi": _vendi_compute(self.n, self.suu)}
        if self.full:
            out["total_variance"] = _total_variance_compute(self.n, self.sx, self.sxx)
            out["effective_rank"] = _effective_rank_compute(self.n, self.sx, self.sxx)
            if self.gold_cov_sqrt is not None:
                out["frechet_distance"] = _frechet_compute(self.n, self.sx, self.sxx, self.gold_cov_sqrt)
        return out

    def compute(self) -> float:
        return self.compute_all()["vendi"]


# ------------------------------------------------------------------- tail mass
class GoldEllipsoid:
    """Gold mean and whitening, plus the Mahalanobis radius that leaves ``tail_quantile`` of gold outside (the
    gold set's tail region) and the radius that leaves ``far_quantile`` outside (beyond it: far from gold)."""

    def __init__(self, gold: np.ndarray, tail_quantile: float = 0.1, far_quantile: float = 0.01) -> None:
        blas_controller()  # built here, once per monitor, rather than inside the first check
        self.mean = gold.mean(axis=0)
        cov = np.atleast_2d(np.cov(gold, rowvar=False))
        self.precision = np.linalg.pinv(cov)
        # population covariance, as the outputs' moments are: the reference of the Fréchet distance
        self.cov_sqrt = covariance_sqrt(cov * (gold.shape[0] - 1) / max(gold.shape[0], 1))
        self.tail_quantile = tail_quantile
        distances = self.distance(gold)
        self.radius = float(np.quantile(distances, 1.0 - tail_quantile))
        self.far_radius = float(np.quantile(distances, 1.0 - far_quantile))

    def distance(self, x: np.ndarray) -> np.ndarray:
        c = x - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", c, self.precision, c))


class TailMass(Metric):
    """Share of outputs outside the gold ellipsoid that holds 1 - q of gold (q for gold itself), and
    (``far_mass``) the share beyond the ellipsoid that holds 99% of gold.

    As variance collapses, samples stop reaching the gold tails and ``tail_mass`` falls toward 0 -- the
    early phase for continuous data. Samples that leave the human data altogether (garbage) push both up:
    ``far_mass`` near 1 means almost no sample looks like gold, the late phase.
    """

    name = "tail_mass"
    higher_is_better = True  # compute(): tail_mass
    outputs: ClassVar[dict[str, bool | None]] = {"tail_mass": True,  # samples that still reach gold's tails
               "far_mass": False}  # samples beyond almost all of gold: garbage
    outside: int
    far: int
    count: int

    def __init__(self, ellipsoid: GoldEllipsoid) -> None:
        super().__init__()
        self.ellipsoid = ellipsoid
        self.add_state("outside", 0, "sum")
        self.add_state("far", 0, "sum")
        self.add_state("count", 0, "sum")

    def update(self, x: Any) -> None:
        m = _rows(x)
        outside = far = 0
        for block in _blocks(m):
            distance = self.ellipsoid.distance(block)
            outside += int((distance > self.ellipsoid.radius).sum())
            far += int((distance > self.ellipsoid.far_radius).sum())
        self._fold(outside=outside, far=far, count=m.shape[0])

    def compute_all(self) -> dict[str, float]:
        """``tail_mass`` and ``far_mass``: the shares of samples outside gold's 90% and 99% ellipsoids."""
        if not self.count:
            return {"tail_mass": 0.0, "far_mass": 0.0}
        return {"tail_mass": self.outside / self.count, "far_mass": self.far / self.count}

    def compute(self) -> float:
        return self.compute_all()["tail_mass"]


# ----------------------------------------------- hashed n-gram features (text)
def hashed_ngram_features(batch: TokenBatch, dim: int = 256, orders: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Bag of hashed n-grams per output, (m, dim): the text "embedding" for Vendi.

    Feature hashing keeps it free of any model, so the same outputs always get
    the same vectors and the gold reference is comparable across runs.
    """
    flat = np.zeros(len(batch) * dim)
    for n in orders:
        hashes, docs = batch.ngrams(n)
        buckets = (((hashes * _MULT) >> np.uint64(40)) % np.uint64(dim)).astype(np.int64)
        flat += np.bincount(docs * dim + buckets, minlength=flat.size)  # np.add.at is ~10x slower
    return flat.reshape(len(batch), dim)
