"""Speed of the core metric suite, side by side with reference implementations, and how it scales.

What it measures (wall time with ``time.perf_counter``; the median of at least 5
runs -- fast calls repeat until 0.25 s have passed, up to 50 runs -- except that a
slow peer whose first run takes over 2 s is timed once):

1. Each metric on 1,000 outputs x 64 tokens. Token ids are drawn i.i.d. from a
   Zipf-like distribution (p(k) ~ 1/k) over a 5,000-token vocabulary, seed 0.
   Every run starts from the raw token lists, so the times include building the
   ``TokenBatch`` and hashing its n-grams. Gold-relative metrics (tail coverage,
   JS divergence) get their gold context (another 1,000 x 64 Zipf sample, seed 1)
   built once outside the timer, as the monitor builds it once per run.
   Then the whole ``CollapseMonitor.check`` on real text: gold is
   ``GoldSet.from_texts(pydoc_paragraphs())``; outputs are consecutive token
   windows of the training paragraphs (``train_gold_split()[0]``), passed as
   token-id lists. 1,000 x 64 (``prompt_length=16, max_new_tokens=64``) and the
   guard's default check, 64 x 32. "warm" has the gold reference cached (every
   check after the first); "cold" is the first check of a fresh monitor.
2. Side by side on the same inputs, values asserted equal (|diff| < 1e-9):
   - self-BLEU vs nltk (``sentence_bleu(others, hyp, smoothing_function=
     SmoothingFunction().method1)`` averaged) at n = 100, 1,000 and 5,000. At
     5,000 nltk (O(n^2)) runs on a seeded random subset of 20 hypotheses against
     all 4,999 references each; its time is extrapolated linearly to all 5,000
     (labelled "estimate") and its 20 scores are checked against ours for the
     same hypotheses.
   - Vendi of float32 input (the dtype torch embeddings come in) beside the same numbers as float64, (n, 256)
     at n = 1,000,000 (``--dtypes-only`` runs just this row and prints it).
   - Vendi vs ``vendi_score.vendi.score_X`` (n x n kernel) and ``score_dual``
     (d x d) on random normal (n, 384) matrices, n = 500, 2,000, 10,000;
     ``score_X`` at 10,000 is estimated by n^3 from 2,000 unless
     ``--score-x-10k`` (it builds a 10,000 x 10,000 kernel, ~2.2 GiB).
   - distinct-n vs a naive Python set of tuples; and vs the ``diversity``
     package's ``ngram_diversity_score`` where it computes the same thing (see
     ``DIVERSITY_NOTES``: its n-grams run across output boundaries, so ours is
     given the outputs joined into one stream).
   - The text metric suite (all text metrics but self-BLEU, which has its own
     rows, and the model-side ones) vs a naive pass: plain Python loops, sets
     and Counters per metric, numpy only for the n x n Vendi kernel's
     eigenvalues. Every metric's value is checked.
3. Scaling: time vs n for ours (self-BLEU, distinct-2, Vendi of the hashed
   features, the suite) at n = 250, 1,000, 4,000, and the log-log least-squares
   slope of every implementation with two or more measured sizes (1 = linear,
   2 = quadratic). Estimated times never enter a slope.

Writes ``metrics_speed.json`` and ``metrics_speed.md`` to ``--out`` and prints
the Markdown. Reproduce with::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_metrics.py [--quick] [--score-x-10k] [--out benchmarks/results]
    python benchmarks/bench_metrics.py --smoke --out /tmp/smoke   # seconds: values only, no timing claims

Times depend on the machine and on what else runs on it: a second busy process
on a 2-core box makes OpenBLAS's threads wait on each other, which can slow the
small matrix products and eigendecompositions (Vendi) by 10x or more. The JSON
records the load before and after.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from collapseguard import CollapseMonitor, CollapseWarning, GoldSet
from collapseguard.demos.data import pydoc_paragraphs, train_gold_split
from collapseguard.metrics import (
    FrequencyBands,
    JSDivergence,
    TailCoverage,
    compression_ratio,
    distinct_n,
    duplicate_fraction,
    hashed_ngram_features,
    loop_fraction,
    ngram_entropy,
    self_bleu,
    seq_rep_n,
    vendi_score,
    zipf_coefficient,
)
from collapseguard.metrics._batch import TokenBatch
from collapseguard.metrics.base import count_table
from collapseguard.metrics.bleu import _self_bleu_scores
from collapseguard.metrics.suite import VENDI_DIM, TextGoldContext, TextSuite

LENGTH, VOCAB, ZIPF_S = 64, 5000, 1.0
SLOW_S = 2.0  # a peer whose first run takes longer than this is timed once
TOL = 1e-9
VENDI_D = 384
DTYPE_D = 256
TAIL_MASS = 0.25  # as TextGoldContext
# the suite's metrics that the naive pass re-implements (self-BLEU has its own rows; model-side ones need a model)
SUITE_KEYS = ("distinct_1", "distinct_2", "distinct_3", "distinct_4", "entropy_1", "entropy_2", "compression_ratio",
              "duplicate_fraction", "zipf_coefficient", "seq_rep_4", "loop_fraction", "tail_coverage", "js_1", "js_2",
              "vendi", "mean_length")
DIVERSITY_NOTES = [
    "`diversity` (PyPI, 0.3.1) has no self-BLEU. Its `homogenization_score(measure='bleu')` is a different "
    "quantity: for each output it scores all the *others as hypotheses* against that one output as the single "
    "reference with Hugging Face `evaluate`'s corpus-level BLEU (no smoothing, one brevity penalty over the "
    "corpus), averages, and rounds to 3 decimals; `evaluate.load('bleu')` also fetches the metric's code from "
    "the Hub at run time, so it cannot run offline. Not compared.",
    "`ngram_diversity_score(texts, 4)` = sum over n = 1..4 of distinct-n of the texts joined with spaces into "
    "one word stream (n-grams cross output boundaries), rounded to 3 decimals. Ours counts n-grams within each "
    "output; on one joined stream it computes the same thing, which is what the rows below compare.",
    "`compression_ratio` gzips the space-joined text and measures the size of a gzip file that holds that gzip "
    "stream (compressed twice, file header included); ours is raw / gzip-9 of the sorted outputs one per line. "
    "Not the same quantity: not compared.",
    "Installing it: `diversity` pins transformers<5 and imports spacy, sentence-transformers and evaluate in "
    "its `__init__`; the bench needs only its pure-Python `ngram_diversity.py` (nltk), which it loads by file "
    "path, so `pip install --no-deps diversity==0.3.1` suffices (its full install downgrades transformers).",
]


class Config(NamedTuple):  # not a dataclass: loading this script by file path must work without sys.modules
    """Sizes and repeats of one mode (full, quick or smoke)."""

    mode: str
    outputs: int = 1000  # per-metric table
    check_outputs: int = 1000
    bleu_ns: tuple[int, ...] = (100, 1000, 5000)
    nltk_full_max: int = 1000  # nltk scores every hypothesis up to this n, a subset above it
    nltk_subset: int = 20
    vendi_ns: tuple[int, ...] = (500, 2000, 10000)
    score_x_max: int = 2000  # score_X above this n only with --score-x-10k
    distinct_ns: tuple[int, ...] = (100, 1000, 10000)
    suite_ns: tuple[int, ...] = (250, 1000, 2000)
    scaling_ns: tuple[int, ...] = (250, 1000, 4000)
    dtype_n: int = 1_000_000  # Vendi of float32 (torch's embeddings) beside float64 input, (n, DTYPE_D)
    repeats: int = 5
    min_total_s: float = 0.25
    max_repeats: int = 50


CONFIGS = {
    "full": Config("full"),
    "quick": Config("quick", bleu_ns=(100, 300, 5000), nltk_full_max=300, nltk_subset=5, suite_ns=(250, 1000)),
    "smoke": Config("smoke", outputs=64, check_outputs=64, bleu_ns=(20, 40, 80), nltk_full_max=40, nltk_subset=4,
                    vendi_ns=(30, 60, 120), score_x_max=60, distinct_ns=(20, 50), suite_ns=(20, 40),
                    scaling_ns=(20, 40, 80), dtype_n=3000, repeats=1, min_total_s=0.0, max_repeats=1),
}

DEFINITIONS = {
    "distinct_1": "unique unigrams / all unigrams, over all outputs",
    "distinct_2": "unique bigrams / all bigrams, over all outputs",
    "distinct_3": "unique trigrams / all trigrams, over all outputs",
    "distinct_4": "unique 4-grams / all 4-grams, over all outputs",
    "entropy_1": "Shannon entropy (bits) of the unigram distribution",
    "entropy_2": "Shannon entropy (bits) of the bigram distribution",
    "self_bleu": "mean BLEU-4 (nltk method1) of each output vs all others",
    "compression_ratio": "raw bytes / gzip-9 bytes of all outputs joined",
    "duplicate_fraction": "1 - unique outputs / outputs",
    "zipf_coefficient": "minus the slope of log count on log rank (unigrams)",
    "seq_rep_4": "mean share of repeated 4-grams within an output",
    "loop_fraction": "share of outputs ending in a span repeated >= 3 times",
    "tail_coverage": "share of gold tail unigram types the outputs contain",
    "js_1": "Jensen-Shannon divergence (bits) of unigrams vs gold",
    "js_2": "Jensen-Shannon divergence (bits) of bigrams vs gold",
    "vendi": f"Vendi score (cosine) of {VENDI_DIM}-d hashed uni+bigram bags",
    "check (warm)": "CollapseMonitor.check, gold reference cached: all metrics, detectors, health",
    "check (cold)": "first check of a fresh monitor: the above plus the gold reference",
    "check: measure only": "CollapseMonitor.measure: the metric states, no compute/judging",
}


# ------------------------------------------------------------------ helpers
def timed(fn: Callable[[], Any], cfg: Config, repeats: int | None = None, slow_s: float | None = None
          ) -> dict[str, Any]:
    """Median/min seconds of at least ``repeats`` runs (more while under cfg.min_total_s) and the last value.

    A first run over ``slow_s`` is the only one.
    """
    repeats = cfg.repeats if repeats is None else repeats
    times: list[float] = []
    value = None
    while len(times) < repeats or (sum(times) < cfg.min_total_s and len(times) < cfg.max_repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
        if slow_s is not None and times[0] > slow_s:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times), "value": value}


def zipf_outputs(n: int, seed: int = 0, length: int = LENGTH, vocab: int = VOCAB) -> np.ndarray:
    """(n, length) token ids, i.i.d. with p(k) proportional to 1 / k**ZIPF_S, k = 1..vocab."""
    p = 1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** ZIPF_S
    return np.random.default_rng(seed).choice(vocab, size=(n, length), p=p / p.sum()).astype(np.int64)


def as_rows(x: np.ndarray) -> list[np.ndarray]:
    return list(x)


def as_lists(x: np.ndarray) -> list[list[int]]:
    return x.tolist()


def real_outputs(monitor: CollapseMonitor, n: int, length: int) -> list[list[int]]:
    """n consecutive ``length``-token windows of the encoded training paragraphs (wrapping with an offset if short)."""
    stream = np.concatenate([monitor.tokenizer.encode(p) for p in train_gold_split()[0]])
    per_pass = stream.size // length
    outs = []
    for i in range(n):
        offset = (i // per_pass) * (length // 4) % length  # later passes start at a shifted offset
        start = offset + (i % per_pass) * length
        if start + length > stream.size:
            start -= length
        outs.append(stream[start:start + length].tolist())
    return outs


def loglog_slope(ns: Sequence[int], times: Sequence[float]) -> float:
    return float(np.polyfit(np.log(ns), np.log(times), 1)[0])


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f}" if s >= 0.01 else f"{1e3 * s:.2f}"


def _s(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:,.1f}" if s >= 10 else (f"{s:.3f}" if s >= 0.1 else f"{s:.4f}")


def load_diversity_module(name: str) -> ModuleType | None:
    """One pure-Python module of the ``diversity`` package, loaded by file path.

    ``import diversity`` runs its ``__init__``, which needs spacy, sentence-transformers,
    evaluate and transformers<5; ``ngram_diversity.py`` itself needs only nltk.
    """
    spec = importlib.util.find_spec("diversity")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    if not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location(f"_diversity_{name}", path)
    if mod_spec is None or mod_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------- 1. metric table
def bench_metrics(cfg: Config) -> list[dict[str, Any]]:
    outs = as_rows(zipf_outputs(cfg.outputs, seed=0))
    gold = TokenBatch(as_rows(zipf_outputs(cfg.outputs, seed=1)))
    tail_bands = FrequencyBands.from_batch(gold, n=1, tail_mass=TAIL_MASS)
    gold_tables = {n: count_table(gold.ngrams(n)[0]) for n in (1, 2)}
    inputs = f"zipf {cfg.outputs}x{LENGTH}"

    def with_state(metric_factory: Callable[[], Any]) -> Callable[[], float]:
        def run() -> float:
            metric = metric_factory()
            metric.update(outs)
            return metric.compute()
        return run

    cases: dict[str, Callable[[], Any]] = {f"distinct_{n}": (lambda n=n: distinct_n(outs, n)) for n in (1, 2, 3, 4)}
    cases.update({
        "entropy_1": lambda: ngram_entropy(outs, 1),
        "entropy_2": lambda: ngram_entropy(outs, 2),
        "self_bleu": lambda: self_bleu(outs),
        "compression_ratio": lambda: compression_ratio(outs),
        "duplicate_fraction": lambda: duplicate_fraction(outs),
        "zipf_coefficient": lambda: zipf_coefficient(outs),
        "seq_rep_4": lambda: seq_rep_n(outs, 4),
        "loop_fraction": lambda: loop_fraction(outs),
        "tail_coverage": with_state(lambda: TailCoverage(tail_bands)),
        "js_1": with_state(lambda: JSDivergence(gold_tables[1], 1)),
        "js_2": with_state(lambda: JSDivergence(gold_tables[2], 2)),
        "vendi": lambda: vendi_score(hashed_ngram_features(TokenBatch(outs), VENDI_DIM)),
    })
    rows = []
    for name, fn in cases.items():
        fn()  # warm-up (imports, first-call allocations)
        t = timed(fn, cfg)
        rows.append({"metric": name, "definition": DEFINITIONS[name], "inputs": inputs,
                     "median_s": t["median_s"], "min_s": t["min_s"], "runs": t["runs"], "value": float(t["value"])})
    rows.append({"metric": "sum of the rows above", "definition": "each metric on its own (n-grams hashed per metric)",
                 "inputs": inputs, "median_s": sum(r["median_s"] for r in rows),
                 "min_s": sum(r["min_s"] for r in rows), "runs": None, "value": None})

    # the whole check on real text: a large check, and the guard's default size
    gold_set = GoldSet.from_texts(pydoc_paragraphs())
    for n_out, length in ((cfg.check_outputs, 64), (64, 32)):
        def fresh_monitor(length: int = length) -> CollapseMonitor:
            return CollapseMonitor(gold_set, prompt_length=16, max_new_tokens=length)

        monitor = fresh_monitor()
        real = real_outputs(monitor, n_out, length)
        step = iter(range(10**6))
        monitor.check(real, step=next(step))  # caches the gold reference
        warm = timed(lambda monitor=monitor, real=real, step=step: monitor.check(real, step=next(step)).health, cfg)
        measure = timed(lambda monitor=monitor, real=real: monitor.measure(real).num_outputs, cfg)
        cold_times = []
        for _ in range(max(cfg.repeats, 1)):
            m = fresh_monitor()
            t0 = time.perf_counter()
            m.check(real, step=0)
            cold_times.append(time.perf_counter() - t0)
        cold = {"median_s": statistics.median(cold_times), "min_s": min(cold_times), "runs": len(cold_times),
                "value": None}
        for name, t in (("check (warm)", warm), ("check (cold)", cold), ("check: measure only", measure)):
            rows.append({"metric": name, "definition": DEFINITIONS[name],
                         "inputs": f"real text {n_out}x{length}, gold {len(monitor.split)} refs",
                         "median_s": t["median_s"], "min_s": t["min_s"], "runs": t["runs"],
                         "value": float(t["value"]) if t["value"] is not None else None})
    return rows


# ------------------------------------------------------ 2. naive references
def nltk_bleu_one(docs: list[list[int]], i: int) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return sentence_bleu(docs[:i] + docs[i + 1:], docs[i], smoothing_function=SmoothingFunction().method1)


def nltk_self_bleu(docs: list[list[int]]) -> float:
    return sum(nltk_bleu_one(docs, i) for i in range(len(docs))) / len(docs)


def naive_distinct(docs: list[list[int]], n: int) -> float:
    grams: set[tuple[int, ...]] = set()
    total = 0
    for d in docs:
        for i in range(len(d) - n + 1):
            grams.add(tuple(d[i:i + n]))
            total += 1
    return len(grams) / total if total else 0.0


def _ngrams(d: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(d[i:i + n]) for i in range(len(d) - n + 1)]


_MASK = 2**64 - 1
_MULT = 0x9E3779B97F4A7C15


def _gram_hash(gram: tuple[int, ...]) -> int:
    # the suite's n-gram hash in Python ints: h = h * MULT + token (mod 2^64)
    h = gram[0] & _MASK
    for t in gram[1:]:
        h = (h * _MULT + t) & _MASK
    return h


class NaiveGold:
    """What the naive pass needs from gold, built once (as TextGoldContext): tail types, n-gram counts."""

    def __init__(self, gold: list[list[int]], head_mass: float = 0.5, tail_mass: float = TAIL_MASS) -> None:
        self.counts = {n: Counter(g for d in gold for g in _ngrams(d, n)) for n in (1, 2)}
        uni = self.counts[1]
        total = sum(uni.values())
        ranked = sorted(uni.items(), key=lambda kv: (-kv[1], kv[0][0]))  # ties by token id, as the hash of a 1-gram
        self.tail: set[tuple[int, ...]] = set()
        before = 0
        for gram, c in ranked:
            share = before / total
            if share >= 1 - tail_mass and share >= head_mass and c >= 2:
                self.tail.add(gram)
            before += c


def _naive_js(out: Counter, gold: Counter) -> float:
    total_p, total_q = sum(out.values()), sum(gold.values())
    js = 0.0
    for g in out.keys() | gold.keys():
        p, q = out.get(g, 0) / total_p, gold.get(g, 0) / total_q
        m = (p + q) / 2
        js += (p * math.log2(p / m) if p else 0.0) + (q * math.log2(q / m) if q else 0.0)
    return js / 2


def _naive_loops(d: list[int], min_repeats: int = 3, max_period: int = 16, min_tokens: int = 8) -> bool:
    for period in range(1, max_period + 1):
        span = max(period * min_repeats, min_tokens)
        span += (-span) % period
        if len(d) >= span and d[len(d) - span + period:] == d[len(d) - span:len(d) - period]:
            return True
    return False


def naive_suite(docs: list[list[int]], gold: NaiveGold) -> dict[str, float]:
    """The suite's text metrics, one straightforward pass per metric (Python sets, Counters and loops;
    numpy only for the n x n Vendi kernel's eigenvalues, as vendi-score's ``score_X``)."""
    m = len(docs)
    out: dict[str, float] = {}
    for n in (1, 2, 3, 4):
        out[f"distinct_{n}"] = naive_distinct(docs, n)
    counts = {n: Counter(g for d in docs for g in _ngrams(d, n)) for n in (1, 2)}
    for n in (1, 2):
        total = sum(counts[n].values())
        out[f"entropy_{n}"] = -sum(c / total * math.log2(c / total) for c in counts[n].values())
    raw = b"\n".join(sorted(" ".join(map(str, d)).encode("ascii") for d in docs))
    out["compression_ratio"] = len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))
    out["duplicate_fraction"] = 1 - len({tuple(d) for d in docs}) / m
    freq = sorted(counts[1].values(), reverse=True)
    xs = [math.log(r) for r in range(1, len(freq) + 1)]
    ys = [math.log(c) for c in freq]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    out["zipf_coefficient"] = -sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)
    reps = []
    for d in docs:
        grams = _ngrams(d, 4)
        reps.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    out["seq_rep_4"] = sum(reps) / m
    out["loop_fraction"] = sum(_naive_loops(d) for d in docs) / m
    out["tail_coverage"] = len(gold.tail & counts[1].keys()) / len(gold.tail)
    out["js_1"] = _naive_js(counts[1], gold.counts[1])
    out["js_2"] = _naive_js(counts[2], gold.counts[2])
    feats = np.zeros((m, VENDI_DIM))
    for i, d in enumerate(docs):
        for n in (1, 2):
            for g in _ngrams(d, n):
                feats[i, (((_gram_hash(g) * _MULT) & _MASK) >> 40) % VENDI_DIM] += 1
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(unit @ unit.T / m)
    out["vendi"] = math.exp(-sum(x * math.log(x) for x in lam.tolist() if x > 0))
    out["mean_length"] = sum(len(d) for d in docs) / m
    return out


def ours_suite(docs: list[list[int]], context: TextGoldContext) -> dict[str, float]:
    suite = TextSuite(context)
    del suite.metrics["self_bleu"]  # timed in its own rows
    values = suite.update(docs).compute()
    return {k: values[k] for k in SUITE_KEYS}


# ------------------------------------------------------ 3. side by side
def _row(what: str, n: int, peer: str, t_peer: dict[str, Any] | None, t_ours: dict[str, Any], note: str = "",
         diff: float | None = None, estimated: bool = False, tol: float = TOL) -> dict[str, Any]:
    if diff is None and t_peer is not None and t_peer["value"] is not None:
        diff = abs(t_peer["value"] - t_ours["value"])
    if diff is not None:
        assert diff < tol, (what, n, peer, diff)
    return {"what": what, "n": n, "peer": peer,
            "peer_s": t_peer["median_s"] if t_peer else None, "peer_min_s": t_peer["min_s"] if t_peer else None,
            "peer_runs": t_peer["runs"] if t_peer else 0, "peer_estimated": estimated,
            "ours_s": t_ours["median_s"], "ours_min_s": t_ours["min_s"], "ours_runs": t_ours["runs"],
            "speedup": t_peer["median_s"] / t_ours["median_s"] if t_peer else None,
            "abs_diff": diff, "value": float(t_ours["value"]), "note": note}


def _log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def bench_self_bleu(cfg: Config) -> list[dict[str, Any]]:
    rows = []
    for n in cfg.bleu_ns:
        docs = as_lists(zipf_outputs(n, seed=0))
        t_ours = timed(lambda docs=docs: self_bleu(docs), cfg)
        if n <= cfg.nltk_full_max:
            t_peer = timed(lambda docs=docs: nltk_self_bleu(docs), cfg, slow_s=SLOW_S)
            rows.append(_row("self-BLEU-4", n, "nltk sentence_bleu", t_peer, t_ours))
        else:
            # O(n^2): nltk scores a seeded subset of hypotheses, each against all n - 1 others; time x n / k
            k = cfg.nltk_subset
            subset = sorted(random.Random(0).sample(range(n), k))
            t0 = time.perf_counter()
            peer_scores = [nltk_bleu_one(docs, i) for i in subset]
            elapsed = time.perf_counter() - t0
            ours_scores = _self_bleu_scores(as_rows(np.asarray(docs)), 4)[subset]
            diff = float(np.max(np.abs(np.asarray(peer_scores) - ours_scores)))
            t_peer = {"median_s": elapsed * n / k, "min_s": elapsed * n / k, "runs": 1, "value": None}
            rows.append(_row("self-BLEU-4", n, "nltk sentence_bleu", t_peer, t_ours, diff=diff, estimated=True,
                             note=f"estimate: {k} of {n:,} hypotheses timed ({elapsed:.1f} s) x {n / k:,.0f}; "
                                  f"values checked on those {k}"))
        _log(f"self-BLEU n={n}: nltk {_s(rows[-1]['peer_s'])} s, ours {t_ours['median_s']:.4f} s")
    return rows


def bench_vendi(cfg: Config, score_x_all: bool) -> list[dict[str, Any]]:
    from vendi_score import vendi

    rows = []
    measured_x: dict[int, float] = {}
    for n in cfg.vendi_ns:
        x = np.random.default_rng(0).normal(size=(n, VENDI_D))
        t_ours = timed(lambda x=x: vendi_score(x), cfg)
        t_dual = timed(lambda x=x: vendi.score_dual(x), cfg, slow_s=SLOW_S)
        rows.append(_row(f"Vendi, d={VENDI_D}", n, "vendi-score score_dual (d x d)", t_dual, t_ours))
        if n <= cfg.score_x_max or score_x_all:
            t_x = timed(lambda x=x: vendi.score_X(x), cfg, slow_s=SLOW_S)
            measured_x[n] = t_x["median_s"]
            rows.append(_row(f"Vendi, d={VENDI_D}", n, "vendi-score score_X (n x n)", t_x, t_ours))
        else:
            n0 = max(measured_x)
            # n^3 from the largest measured n underestimates: LAPACK runs out of cache (119 s measured once, 2 CPUs)
            est = measured_x[n0] * (n / n0) ** 3
            gib = 3 * n * n * 8 / 2**30  # K, K / n and LAPACK's copy
            rows.append(_row(f"Vendi, d={VENDI_D}", n, "vendi-score score_X (n x n)",
                             {"median_s": est, "min_s": est, "runs": 0, "value": None}, t_ours, estimated=True,
                             note=f"estimate: (n/{n0:,})^3 x the n={n0:,} time, not run (--score-x-10k runs it; "
                                  f"~{gib:.1f} GiB); values checked at smaller n"))
        _log(f"Vendi n={n}: ours {t_ours['median_s']:.4f} s, score_dual {t_dual['median_s']:.4f} s")
    return rows


def bench_vendi_dtypes(cfg: Config) -> list[dict[str, Any]]:
    """Vendi of the same (n, 256) numbers given as float64 and as float32 (the dtype torch embeddings come in):
    both measured in float64 blocks, so float32 costs about what float64 does and is never copied whole."""
    n = cfg.dtype_n
    x32 = np.random.default_rng(0).standard_normal(size=(n, DTYPE_D), dtype=np.float32)
    x64 = x32.astype(np.float64)
    t64 = timed(lambda x=x64: vendi_score(x), cfg, repeats=min(cfg.repeats, 3), slow_s=SLOW_S)
    t32 = timed(lambda x=x32: vendi_score(x), cfg, repeats=min(cfg.repeats, 3), slow_s=SLOW_S)
    del x64
    _log(f"Vendi d={DTYPE_D} n={n:,}: float64 input {t64['median_s']:.3f} s, float32 input {t32['median_s']:.3f} s")
    return [_row(f"Vendi, d={DTYPE_D}, float32 input", n, "ours on the same numbers as float64", t64, t32,
                 note="float32 measured in float64 blocks: no full-size float64 copy; values equal to 1e-9 relative",
                 tol=TOL * max(1.0, abs(t64["value"])))]


def bench_distinct(cfg: Config) -> list[dict[str, Any]]:
    rows = []
    mid = cfg.distinct_ns[len(cfg.distinct_ns) // 2]
    for size in cfg.distinct_ns:
        docs = as_lists(zipf_outputs(size, seed=0))
        for n in ((1, 2, 3, 4) if size == mid else (2,)):
            t_peer = timed(lambda docs=docs, n=n: naive_distinct(docs, n), cfg, slow_s=SLOW_S)
            t_ours = timed(lambda docs=docs, n=n: distinct_n(docs, n), cfg)
            rows.append(_row(f"distinct-{n}", size, "naive Python set of tuples", t_peer, t_ours))
    div = load_diversity_module("ngram_diversity")
    for size in cfg.distinct_ns:
        docs = as_lists(zipf_outputs(size, seed=0))
        stream = [np.concatenate([np.asarray(d) for d in docs])]  # one joined stream, as diversity joins its texts

        def ours(stream: list[np.ndarray] = stream) -> float:
            return round(sum(distinct_n(stream, n) for n in (1, 2, 3, 4)), 3)

        t_ours = timed(ours, cfg)
        if div is None:
            rows.append(_row("distinct-1..4 summed, joined stream", size, "diversity ngram_diversity_score", None,
                             t_ours, note="diversity not installed (pip install --no-deps diversity==0.3.1)"))
            break
        texts = [" ".join(map(str, d)) for d in docs]
        t_peer = timed(lambda texts=texts: div.ngram_diversity_score(texts, 4), cfg, slow_s=SLOW_S)
        rows.append(_row("distinct-1..4 summed, joined stream", size, "diversity ngram_diversity_score", t_peer,
                         t_ours, note="both rounded to 3 decimals (diversity rounds)"))
    return rows


def bench_suite(cfg: Config) -> list[dict[str, Any]]:
    gold_docs = as_lists(zipf_outputs(1000, seed=1))
    context = TextGoldContext([np.asarray(d) for d in gold_docs], tail_mass=TAIL_MASS)
    naive_gold = NaiveGold(gold_docs)
    rows = []
    for n in cfg.suite_ns:
        docs = as_lists(zipf_outputs(n, seed=0))
        t_ours = timed(lambda docs=docs: ours_suite(docs, context), cfg)
        t_peer = timed(lambda docs=docs: naive_suite(docs, naive_gold), cfg, slow_s=SLOW_S)
        diffs = {k: abs(t_ours["value"][k] - t_peer["value"][k]) for k in SUITE_KEYS}
        worst = max(diffs, key=diffs.__getitem__)
        assert diffs[worst] < TOL, ("suite", n, worst, t_ours["value"][worst], t_peer["value"][worst])
        t_ours = {**t_ours, "value": t_ours["value"]["vendi"]}
        rows.append(_row(f"text suite ({len(SUITE_KEYS)} metrics)", n, "naive pass (Python sets/Counters/loops, "
                         "n x n Vendi kernel)", {**t_peer, "value": None}, t_ours, diff=diffs[worst],
                         note=f"every metric checked; largest |diff| in {worst}"))
        _log(f"suite n={n}: naive {t_peer['median_s']:.3f} s, ours {t_ours['median_s']:.4f} s")
    return rows


# ------------------------------------------------------------ 4. scaling
def bench_scaling(cfg: Config) -> list[dict[str, Any]]:
    gold_docs = as_rows(zipf_outputs(1000, seed=1))
    context = TextGoldContext(gold_docs, tail_mass=TAIL_MASS)
    cases: dict[str, Callable[[list[np.ndarray]], Any]] = {
        "self_bleu": self_bleu,
        "distinct_2": lambda o: distinct_n(o, 2),
        "vendi (hashed features)": lambda o: vendi_score(hashed_ngram_features(TokenBatch(o), VENDI_DIM)),
        f"text suite ({len(SUITE_KEYS)} metrics)": lambda o: ours_suite(o, context),
    }
    rows = []
    for name, fn in cases.items():
        times = []
        for n in cfg.scaling_ns:
            outs = as_rows(zipf_outputs(n, seed=0))
            fn(outs)  # warm-up
            times.append(timed(lambda outs=outs, fn=fn: fn(outs), cfg)["median_s"])
        rows.append({"what": name, "impl": "ours", "n": list(cfg.scaling_ns), "median_s": times,
                     "loglog_slope": loglog_slope(cfg.scaling_ns, times)})
    return rows


def peer_slopes(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log-log slope per (comparison, implementation) over its measured sizes (estimates left out)."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for p in peers:
        series.setdefault((p["what"], "ours"), []).append((p["n"], p["ours_s"]))
        if p["peer_s"] is not None and not p["peer_estimated"]:
            series.setdefault((p["what"], p["peer"]), []).append((p["n"], p["peer_s"]))
    rows = []
    for (what, impl), points in series.items():
        points = sorted(dict(points).items())  # one time per n
        if len(points) >= 2:
            ns, ts = zip(*points, strict=True)
            rows.append({"what": what, "impl": impl, "n": list(ns), "median_s": list(ts),
                         "loglog_slope": loglog_slope(ns, ts)})
    return rows


def floors(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def find(what: str, n: int, peer: str) -> dict[str, Any] | None:
        return next((p for p in peers if p["what"] == what and p["n"] == n and p["peer"].startswith(peer)), None)

    out = []
    for label, what, n, peer, need in (
            ("self-BLEU vs nltk at n = 1,000, equal values", "self-BLEU-4", 1000, "nltk", 100.0),
            ("Vendi vs vendi-score score_X at n = 2,000", f"Vendi, d={VENDI_D}", 2000, "vendi-score score_X", 50.0)):
        row = find(what, n, peer)
        speedup = row["speedup"] if row and not row["peer_estimated"] else None
        out.append({"floor": label, "need": need, "speedup": speedup,
                    "met": None if speedup is None else speedup >= need})
    return out


# ------------------------------------------------------------ reporting
def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(cfg: Config) -> dict[str, Any]:
    env: dict[str, Any] = {
        "mode": cfg.mode, "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": {p: _version(p) for p in ("collapseguard", "numpy", "scipy", "threadpoolctl", "nltk",
                                              "vendi-score", "scikit-learn", "diversity")},
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "command": "python " + " ".join(sys.argv),
        "config": cfg._asdict() | {"length": LENGTH, "vocab": VOCAB, "zipf_s": ZIPF_S, "tolerance": TOL,
                                 "vendi_d": VENDI_D},
    }
    try:
        from threadpoolctl import threadpool_info

        env["blas"] = [{k: i.get(k) for k in ("internal_api", "version", "num_threads")} for i in threadpool_info()]
    except ImportError:
        pass
    return env


def markdown(env: dict[str, Any], metrics: list[dict[str, Any]], peers: list[dict[str, Any]],
             scaling: list[dict[str, Any]], slopes: list[dict[str, Any]], floor_rows: list[dict[str, Any]]) -> str:
    smoke = env["mode"] == "smoke"
    load = "load {:.2f} at start and {:.2f} at end".format(env["load_avg_1m_at_start"] or math.nan,
                                                           env["load_avg_1m_at_end"] or math.nan)
    head = (f"Metric speed ({env['mode']} run, {env['date_utc']}, {env['cpu_count']} CPUs, {env['platform']}, "
            f"Python {env['python']}, numpy {env['versions']['numpy']}, {load}, {env['total_s']:.0f} s in all). "
            "Median of >= "
            f"{env['config']['repeats']} runs unless noted.")
    if smoke:
        head = ("**Smoke run: correctness only (every value check below passed); sizes are tiny and the times are "
                "not evidence of anything.** " + head)
    lines = [head, "", "| metric | definition | median ms | min ms | inputs |", "|---|---|---:|---:|---|"]
    lines += [f"| {r['metric']} | {r['definition']} | {_ms(r['median_s'])} | {_ms(r['min_s'])} | {r['inputs']} |"
              for r in metrics]
    lines += ["", f"Side by side (same inputs; |diff| asserted < {TOL:g}; estimates are labelled and never measured):",
              "", "| comparison | n | peer | peer s | ours s | ours min s | speed-up | abs diff | note |",
              "|---|---:|---|---:|---:|---:|---:|---|---|"]
    for p in peers:
        if p["peer_s"] is None:
            peer_s = "—"
        else:
            peer_s = _s(p["peer_s"]) + (" (estimate)" if p["peer_estimated"] else
                                        " (1 run)" if p["peer_runs"] == 1 and not smoke else "")
        speedup = "—"
        if p["speedup"] is not None:
            speedup = ("~" if p["peer_estimated"] else "") + (
                f"{p['speedup']:,.0f}x" if p["speedup"] >= 10 else f"{p['speedup']:.1f}x")
        diff = f"{p['abs_diff']:.1e}" if p["abs_diff"] is not None else "—"
        lines.append(f"| {p['what']} | {p['n']:,} | {p['peer']} | {peer_s} | {_s(p['ours_s'])} | "
                     f"{_s(p['ours_min_s'])} | {speedup} | {diff} | {p['note']} |")
    lines += ["", "About the `diversity` package:", ""] + [f"- {note}" for note in DIVERSITY_NOTES]
    ns = scaling[0]["n"]
    lines += ["", f"Scaling of ours ({LENGTH}-token outputs; slope of log time on log n, 1 = linear, 2 = quadratic):",
              "", "| metric | " + " | ".join(f"ms at n={n:,}" for n in ns) + " | log-log slope |",
              "|---|" + "---:|" * (len(ns) + 1)]
    lines += [f"| {s['what']} | " + " | ".join(_ms(t) for t in s["median_s"]) + f" | {s['loglog_slope']:.2f} |"
              for s in scaling]
    lines += ["", "Scaling exponents from the side-by-side rows (measured sizes only):", "",
              "| comparison | implementation | sizes | log-log slope |", "|---|---|---|---:|"]
    lines += [f"| {s['what']} | {s['impl']} | {', '.join(f'{n:,}' for n in s['n'])} | {s['loglog_slope']:.2f} |"
              for s in slopes]
    if not smoke:
        lines += ["", "Floors of the benchmark issue:", "", "| floor | needed | measured | met |", "|---|---:|---:|---|"]
        for f in floor_rows:
            got = "not measured in this mode" if f["speedup"] is None else f"{f['speedup']:,.1f}x"
            met = "—" if f["met"] is None else ("yes" if f["met"] else "**no**")
            lines.append(f"| {f['floor']} | {f['need']:.0f}x | {got} | {met} |")
        lines.append("| metrics <= 5% of a check | 5% | see overhead.md | — |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="nltk self-BLEU at n=100 and 300 instead of 100 and 1,000")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny sizes, one run each: checks every value against the peers in seconds, no timing claims")
    parser.add_argument("--score-x-10k", action="store_true",
                        help="also run vendi-score's n x n score_X at n=10,000 (about two minutes, ~2.2 GiB)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for metrics_speed.json / .md")
    parser.add_argument("--dtypes-only", action="store_true",
                        help="only Vendi of float32 beside float64 input at the mode's n (1,000,000; smoke 3,000), "
                        "d=256: prints the row, writes nothing")
    args = parser.parse_args(argv)
    cfg = CONFIGS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.dtypes_only:
        for row in bench_vendi_dtypes(cfg):
            print(f"{row['what']}, n={row['n']:,}: float64 input {row['peer_s']:.3f} s (min {row['peer_min_s']:.3f}), "
                  f"float32 input {row['ours_s']:.3f} s (min {row['ours_min_s']:.3f}), |diff| {row['abs_diff']:.1e}")
        return
    # synthetic and repeated outputs raise alerts, and 1,000 outputs outnumber the gold references: only speed counts
    logging.getLogger("collapseguard").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore", CollapseWarning)

    env = environment(cfg)
    if not args.smoke and env["load_avg_1m_at_start"] and env["load_avg_1m_at_start"] > 0.5:
        print(f"warning: 1-minute load average is {env['load_avg_1m_at_start']:.2f}; times may be inflated",
              file=sys.stderr)
    t0 = time.perf_counter()
    print("per-metric times ...", file=sys.stderr)
    metrics = bench_metrics(cfg)
    print("side by side ...", file=sys.stderr)
    peers = (bench_self_bleu(cfg) + bench_vendi(cfg, args.score_x_10k) + bench_vendi_dtypes(cfg) + bench_distinct(cfg)
             + bench_suite(cfg))
    print("scaling ...", file=sys.stderr)
    scaling = bench_scaling(cfg)
    slopes = peer_slopes(peers)
    floor_rows = floors(peers)
    env["total_s"] = time.perf_counter() - t0
    env["load_avg_1m_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"environment": env, "metrics": metrics, "peers": peers, "scaling": scaling, "peer_slopes": slopes,
              "floors": floor_rows, "diversity_notes": DIVERSITY_NOTES}
    (out / "metrics_speed.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    md = markdown(env, metrics, peers, scaling, slopes, floor_rows)
    (out / "metrics_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
