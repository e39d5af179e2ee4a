"""Speed of the core metric suite, side by side with the reference implementations.

What it measures (wall time with ``time.perf_counter``; the median of at least 5
runs -- fast calls repeat until 0.25 s have passed, up to 50 runs -- except that a
slow peer whose first run takes over 2 s is timed once):

1. Each metric on 1,000 outputs x 64 tokens. Token ids are drawn i.i.d. from a
   Zipf-like distribution (p(k) ~ 1/k) over a 5,000-token vocabulary, seed 0.
   Every run starts from the raw token lists, so the times include building the
   ``TokenBatch`` and hashing its n-grams. Gold-relative metrics (tail coverage,
   JS divergence) get their gold context (another 1,000 x 64 Zipf sample, seed 1)
   built once outside the timer, as the monitor builds it once per run.
   Then the whole ``CollapseMonitor.check`` on 1,000 real-text outputs: gold is
   ``GoldSet.from_texts(pydoc_paragraphs())`` with ``prompt_length=16,
   max_new_tokens=64``; outputs are consecutive 64-token windows of the training
   paragraphs (``train_gold_split()[0]``) encoded by the monitor's tokenizer and
   passed as token-id lists. "warm" is a check with the gold reference already
   cached (every check after the first); "cold" is the first check of a fresh
   monitor (includes the gold reference's metrics).
2. Side by side on the same inputs, values asserted equal (|diff| < 1e-9):
   self-BLEU vs nltk (``sentence_bleu(others, hyp, smoothing_function=
   SmoothingFunction().method1)`` averaged) at n = 100 and 1,000 outputs
   (``--quick``: 100 and 300), ours alone at 5,000; Vendi vs
   ``vendi_score.vendi.score_X`` (n x n kernel) and ``score_dual`` (d x d) on
   random normal (n, 384) matrices, n = 500 and 2,000, plus ``score_dual`` and
   ours at 10,000 (``score_X`` at 10,000 only with ``--score-x-10k``: it builds a
   10,000 x 10,000 kernel, ~2.2 GiB with copies, and its eigendecomposition takes
   about two minutes on 2 cores); distinct-n vs a naive Python set of tuples.
3. The scaling exponent (log-log least-squares slope of time vs n) of ours for
   self_bleu and distinct_2 across n = 250, 1,000, 4,000 outputs of 64 tokens.

Writes ``metrics_speed.json`` and ``metrics_speed.md`` to ``--out`` and prints
the Markdown. Reproduce with::

    python benchmarks/bench_metrics.py [--quick] [--score-x-10k] [--out benchmarks/results]

Times depend on the machine and on what else runs on it: a second busy process
on a 2-core box makes OpenBLAS's threads wait on each other, which can slow the
small eigendecompositions (Vendi) by 10x or more. The JSON records the load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from collapseguard import CollapseMonitor, CollapseWarning, GoldSet
from collapseguard.data import pydoc_paragraphs, train_gold_split
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
from collapseguard.suite import VENDI_DIM

N_OUTPUTS, LENGTH, VOCAB, ZIPF_S = 1000, 64, 5000, 1.0
REPEATS = 5  # at least this many runs ...
MIN_TOTAL_S, MAX_REPEATS = 0.25, 50  # ... and more, up to MAX_REPEATS, until MIN_TOTAL_S have passed
SLOW_S = 2.0  # a peer whose first run takes longer than this is timed once
TOL = 1e-9
VENDI_D = 384

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
def timed(fn: Callable[[], Any], repeats: int = REPEATS, slow_s: float | None = None) -> dict[str, Any]:
    """Median/min seconds of at least ``repeats`` runs (more while under MIN_TOTAL_S) and the last value.

    A first run over ``slow_s`` is the only one.
    """
    times: list[float] = []
    value = None
    while len(times) < repeats or (sum(times) < MIN_TOTAL_S and len(times) < MAX_REPEATS):
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


def real_outputs(monitor: CollapseMonitor, n: int, length: int = LENGTH) -> list[list[int]]:
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


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f}" if s >= 0.01 else f"{1e3 * s:.2f}"


def _s(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.3f}" if s >= 0.1 else f"{s:.4f}"


# ---------------------------------------------------------- 1. metric table
def bench_metrics() -> list[dict[str, Any]]:
    outs = as_rows(zipf_outputs(N_OUTPUTS, seed=0))
    gold = TokenBatch(as_rows(zipf_outputs(N_OUTPUTS, seed=1)))
    tail_bands = FrequencyBands.from_batch(gold, n=1, tail_mass=0.25)
    gold_tables = {n: count_table(gold.ngrams(n)[0]) for n in (1, 2)}

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
        t = timed(fn)
        rows.append({"metric": name, "definition": DEFINITIONS[name], "inputs": "zipf 1000x64",
                     "median_s": t["median_s"], "min_s": t["min_s"], "runs": t["runs"], "value": float(t["value"])})
    rows.append({"metric": "sum of the rows above", "definition": "each metric on its own (n-grams hashed per metric)",
                 "inputs": "zipf 1000x64", "median_s": sum(r["median_s"] for r in rows),
                 "min_s": sum(r["min_s"] for r in rows), "runs": None, "value": None})

    # the whole check on real text
    gold_set = GoldSet.from_texts(pydoc_paragraphs())

    def fresh_monitor() -> CollapseMonitor:
        return CollapseMonitor(gold_set, prompt_length=16, max_new_tokens=64)

    monitor = fresh_monitor()
    real = real_outputs(monitor, N_OUTPUTS)
    step = iter(range(10**6))
    monitor.check(real, step=next(step))  # caches the gold reference
    warm = timed(lambda: monitor.check(real, step=next(step)).health)
    measure = timed(lambda: monitor.measure(real).num_outputs)
    cold_times = []
    for _ in range(REPEATS):
        m = fresh_monitor()
        t0 = time.perf_counter()
        m.check(real, step=0)
        cold_times.append(time.perf_counter() - t0)
    cold = {"median_s": statistics.median(cold_times), "min_s": min(cold_times), "runs": REPEATS, "value": None}
    for name, t in (("check (warm)", warm), ("check (cold)", cold), ("check: measure only", measure)):
        rows.append({"metric": name, "definition": DEFINITIONS[name],
                     "inputs": f"real text 1000x64, gold {len(monitor.split)} refs", "median_s": t["median_s"],
                     "min_s": t["min_s"], "runs": t["runs"],
                     "value": float(t["value"]) if t["value"] is not None else None})
    return rows


# ------------------------------------------------------ 2. side by side
def nltk_self_bleu(docs: list[list[int]]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    sm = SmoothingFunction().method1
    return sum(sentence_bleu(docs[:i] + docs[i + 1:], d, smoothing_function=sm) for i, d in enumerate(docs)) / len(docs)


def naive_distinct(docs: list[list[int]], n: int) -> float:
    grams: set[tuple[int, ...]] = set()
    total = 0
    for d in docs:
        for i in range(len(d) - n + 1):
            grams.add(tuple(d[i:i + n]))
            total += 1
    return len(grams) / total if total else 0.0


def _row(what: str, n: int, peer: str, t_peer: dict[str, Any] | None, t_ours: dict[str, Any],
         note: str = "") -> dict[str, Any]:
    diff = abs(t_peer["value"] - t_ours["value"]) if t_peer is not None else None
    if diff is not None:
        assert diff < TOL, (what, n, peer, t_peer["value"], t_ours["value"])
    return {"what": what, "n": n, "peer": peer,
            "peer_s": t_peer["median_s"] if t_peer else None, "peer_min_s": t_peer["min_s"] if t_peer else None,
            "peer_runs": t_peer["runs"] if t_peer else 0,
            "ours_s": t_ours["median_s"], "ours_min_s": t_ours["min_s"], "ours_runs": t_ours["runs"],
            "speedup": t_peer["median_s"] / t_ours["median_s"] if t_peer else None,
            "abs_diff": diff, "value": float(t_ours["value"]), "note": note}


def bench_peers(quick: bool, score_x_10k: bool) -> list[dict[str, Any]]:
    rows = []
    # self-BLEU
    for n in ((100, 300) if quick else (100, 1000)):
        docs = as_lists(zipf_outputs(n, seed=0))
        t_peer = timed(lambda docs=docs: nltk_self_bleu(docs), slow_s=SLOW_S)
        t_ours = timed(lambda docs=docs: self_bleu(docs))
        rows.append(_row("self-BLEU-4", n, "nltk sentence_bleu", t_peer, t_ours))
        print(f"  self-BLEU n={n}: nltk {t_peer['median_s']:.2f} s, ours {t_ours['median_s']:.4f} s", file=sys.stderr)
    docs = as_lists(zipf_outputs(5000, seed=0))
    rows.append(_row("self-BLEU-4", 5000, "—", None, timed(lambda: self_bleu(docs)), "no peer run (nltk O(n^2))"))

    # Vendi
    from vendi_score import vendi

    x_by_n = {n: np.random.default_rng(0).normal(size=(n, VENDI_D)) for n in (500, 2000, 10000)}
    score_x_2000 = None
    for n, x in x_by_n.items():
        t_ours = timed(lambda x=x: vendi_score(x))
        t_dual = timed(lambda x=x: vendi.score_dual(x), slow_s=SLOW_S)
        rows.append(_row("Vendi, d=384", n, "vendi-score score_dual (d x d)", t_dual, t_ours))
        if n <= 2000:
            t_x = timed(lambda x=x: vendi.score_X(x), slow_s=SLOW_S)
            if n == 2000:
                score_x_2000 = t_x["median_s"]
            rows.append(_row("Vendi, d=384", n, "vendi-score score_X (n x n)", t_x, t_ours))
        else:
            if score_x_10k:
                t_x = timed(lambda x=x: vendi.score_X(x), repeats=1)
                rows.append(_row("Vendi, d=384", n, "vendi-score score_X (n x n)", t_x, t_ours))
            else:
                # n^3 from n = 2,000 underestimates: LAPACK runs out of cache (119 s measured once, 2 CPUs)
                estimate = score_x_2000 * (n / 2000) ** 3 if score_x_2000 else float("nan")
                gib = 3 * n * n * 8 / 2**30  # K, K / n and LAPACK's copy
                rows.append(_row("Vendi, d=384", n, "vendi-score score_X (n x n)", None, t_ours,
                                 f"skipped (--score-x-10k): >= {estimate:.0f} s by n^3, ~{gib:.1f} GiB"))
        print(f"  Vendi n={n}: ours {t_ours['median_s']:.4f} s", file=sys.stderr)

    # distinct-n
    docs = as_lists(zipf_outputs(N_OUTPUTS, seed=0))
    for n in (1, 2, 3, 4):
        t_peer = timed(lambda n=n: naive_distinct(docs, n))
        t_ours = timed(lambda n=n: distinct_n(docs, n))
        rows.append(_row(f"distinct-{n}", N_OUTPUTS, "naive Python set of tuples", t_peer, t_ours))
    big = as_lists(zipf_outputs(10000, seed=0))
    rows.append(_row("distinct-2", 10000, "naive Python set of tuples", timed(lambda: naive_distinct(big, 2)),
                     timed(lambda: distinct_n(big, 2))))
    return rows


# ------------------------------------------------------------ 3. scaling
def bench_scaling() -> list[dict[str, Any]]:
    ns = (250, 1000, 4000)
    rows = []
    for name, fn in (("self_bleu", self_bleu), ("distinct_2", lambda o: distinct_n(o, 2))):
        times = []
        for n in ns:
            outs = as_rows(zipf_outputs(n, seed=0))
            fn(outs)  # warm-up
            times.append(timed(lambda outs=outs, fn=fn: fn(outs))["median_s"])
        slope = float(np.polyfit(np.log(ns), np.log(times), 1)[0])
        rows.append({"metric": name, "n": list(ns), "median_s": times, "loglog_slope": slope})
    return rows


# ------------------------------------------------------------ reporting
def environment(mode: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "mode": mode, "python": platform.python_version(), "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": {p: version(p) for p in ("collapseguard", "numpy", "scipy", "nltk", "vendi-score")},
        "command": "python " + " ".join(sys.argv),
        "config": {"outputs": N_OUTPUTS, "length": LENGTH, "vocab": VOCAB, "zipf_s": ZIPF_S, "repeats": REPEATS,
                   "tolerance": TOL, "vendi_d": VENDI_D},
    }
    try:
        from threadpoolctl import threadpool_info

        env["blas"] = [{k: i.get(k) for k in ("internal_api", "version", "num_threads")} for i in threadpool_info()]
    except ImportError:
        pass
    return env


def markdown(env: dict[str, Any], metrics: list[dict[str, Any]], peers: list[dict[str, Any]],
             scaling: list[dict[str, Any]]) -> str:
    lines = [
        f"Metric speed ({env['mode']} run, {env['cpu_count']} CPUs, Python {env['python']}, "
        f"numpy {env['versions']['numpy']}, load {env['load_avg_1m_at_start']:.2f} at start, "
        f"{env['total_s']:.0f} s in all). Median of >= {REPEATS} runs unless noted.",
        "",
        "| metric | definition | median ms | min ms | inputs |",
        "|---|---|---:|---:|---|",
    ]
    lines += [f"| {r['metric']} | {r['definition']} | {_ms(r['median_s'])} | {_ms(r['min_s'])} | {r['inputs']} |"
              for r in metrics]
    lines += ["", "Side by side (same inputs; |diff| asserted < 1e-9):", "",
              "| comparison | n | peer | peer s | ours s | ours min s | speed-up | abs diff |",
              "|---|---:|---|---:|---:|---:|---:|---|"]
    for p in peers:
        peer_s = _s(p["peer_s"]) + (" (1 run)" if p["peer_runs"] == 1 else "")
        speedup = f"{p['speedup']:,.0f}x" if p["speedup"] and p["speedup"] >= 10 else (
            f"{p['speedup']:.1f}x" if p["speedup"] else "—")
        diff = f"{p['abs_diff']:.1e}" if p["abs_diff"] is not None else (p["note"] or "—")
        lines.append(f"| {p['what']} | {p['n']:,} | {p['peer']} | {peer_s} | {_s(p['ours_s'])} | {_s(p['ours_min_s'])} | {speedup} | {diff} |")
    ns = scaling[0]["n"]
    lines += ["", "Scaling of ours (64-token outputs; slope of log time on log n, 1 = linear, 2 = quadratic):", "",
              "| metric | " + " | ".join(f"ms at n={n:,}" for n in ns) + " | log-log slope |",
              "|---|" + "---:|" * (len(ns) + 1)]
    lines += [f"| {s['metric']} | " + " | ".join(_ms(t) for t in s["median_s"]) + f" | {s['loglog_slope']:.2f} |"
              for s in scaling]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="nltk self-BLEU at n=100 and 300 instead of 100 and 1,000")
    parser.add_argument("--score-x-10k", action="store_true",
                        help="also run vendi-score's n x n score_X at n=10,000 (about two minutes, ~2.2 GiB)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for metrics_speed.json / .md")
    args = parser.parse_args()
    # synthetic and repeated outputs raise alerts, and 1,000 outputs outnumber the gold references: only speed counts
    logging.getLogger("collapseguard").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore", CollapseWarning)

    env = environment("quick" if args.quick else "full")
    if env["load_avg_1m_at_start"] and env["load_avg_1m_at_start"] > 0.5:
        print(f"warning: 1-minute load average is {env['load_avg_1m_at_start']:.2f}; times may be inflated",
              file=sys.stderr)
    t0 = time.perf_counter()
    print("per-metric times ...", file=sys.stderr)
    metrics = bench_metrics()
    print("side by side ...", file=sys.stderr)
    peers = bench_peers(args.quick, args.score_x_10k)
    print("scaling ...", file=sys.stderr)
    scaling = bench_scaling()
    env["total_s"] = time.perf_counter() - t0
    env["load_avg_1m_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics_speed.json").write_text(
        json.dumps({"environment": env, "metrics": metrics, "peers": peers, "scaling": scaling}, indent=2) + "\n")
    md = markdown(env, metrics, peers, scaling)
    (out / "metrics_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
