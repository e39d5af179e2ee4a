"""Metric speed: each metric on 1,000 outputs x 64 tokens, and side by side with nltk and vendi-score.

Outputs are 64-token windows of CPython's documentation paragraphs (real text,
tokenized by the built-in tokenizer). Times are the median of 5 runs on this
machine. The peers run on the same inputs and their values are checked equal.

    python benchmarks/bench_speed.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from collapseguard import CollapseMonitor, CollapseWarning, GoldSet
from collapseguard.data import train_gold_split
from collapseguard.metrics import (
    compression_ratio,
    distinct_n,
    duplicate_fraction,
    hashed_ngram_features,
    js_divergence,
    loop_fraction,
    ngram_entropy,
    self_bleu,
    seq_rep_n,
    tail_coverage,
    vendi_score,
    zipf_coefficient,
)
from collapseguard.metrics._batch import TokenBatch
from collapseguard.tokenize import SimpleTokenizer

DEFINITIONS = {
    "distinct_1..4": "unique n-grams / all n-grams, over all outputs",
    "entropy_2": "Shannon entropy (bits) of the bigram distribution",
    "self_bleu": "mean BLEU-4 (nltk method1) of each output against all others",
    "compression_ratio": "raw bytes / gzip bytes of all outputs joined",
    "duplicate_fraction": "1 - unique outputs / outputs",
    "zipf_coefficient": "minus the slope of log count on log rank",
    "seq_rep_4": "mean share of repeated 4-grams within an output",
    "loop_fraction": "share of outputs ending in a span repeated >= 3 times",
    "tail_coverage": "share of gold tail types that the outputs contain",
    "js_1": "Jensen-Shannon divergence of unigram distributions vs gold",
    "vendi": "Vendi score (cosine) of hashed uni+bigram bags",
    "whole check": "CollapseMonitor.check: every metric, detectors, health",
}


def timed(fn: Callable[[], object], repeats: int = 5) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def outputs(n: int, length: int = 64) -> list[np.ndarray]:
    tok = SimpleTokenizer()
    stream = np.concatenate([np.asarray(tok.encode(t)) for t in train_gold_split()[0]])
    starts = np.random.default_rng(0).integers(0, stream.size - length, n)
    return [stream[s:s + length] for s in starts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller peer comparisons")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    logging.getLogger("collapseguard").setLevel(logging.CRITICAL)  # random windows raise alerts; only speed counts
    warnings.simplefilter("ignore", CollapseWarning)
    gold = GoldSet.from_texts(train_gold_split()[1])
    monitor = CollapseMonitor(gold, prompt_length=16, max_new_tokens=64)
    gold_seqs = list(monitor.split.full)
    outs = outputs(1000)
    batch = lambda: TokenBatch(outs)  # noqa: E731 - fresh batch: no cached n-grams between runs
    suite = {
        "distinct_1..4": lambda: [distinct_n(batch(), n) for n in (1, 2, 3, 4)],
        "entropy_2": lambda: ngram_entropy(batch(), 2),
        "self_bleu": lambda: self_bleu(batch()),
        "compression_ratio": lambda: compression_ratio(batch()),
        "duplicate_fraction": lambda: duplicate_fraction(batch()),
        "zipf_coefficient": lambda: zipf_coefficient(batch()),
        "seq_rep_4": lambda: seq_rep_n(batch(), 4),
        "loop_fraction": lambda: loop_fraction(batch()),
        "tail_coverage": lambda: tail_coverage(batch(), gold=gold_seqs, tail_mass=0.25),
        "js_1": lambda: js_divergence(batch(), gold=gold_seqs),
        "vendi": lambda: vendi_score(hashed_ngram_features(batch(), 256)),
        "whole check": lambda: monitor.check(outs, step=0),
    }
    monitor.reference(1000)  # the gold reference is computed once per run and cached
    rows = [{"metric": k, "definition": DEFINITIONS[k], "ms_1000x64": 1e3 * timed(fn)[0]} for k, fn in suite.items()]

    peers = []
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    sm = SmoothingFunction().method1
    for n in ((100, 300) if args.quick else (100, 1000)):
        docs = [o.tolist() for o in outputs(n)]
        t_nltk, v_nltk = timed(lambda docs=docs: sum(sentence_bleu(docs[:i] + docs[i + 1:], d, smoothing_function=sm)
                                                      for i, d in enumerate(docs)) / len(docs), repeats=1)
        t_ours, v_ours = timed(lambda docs=docs: self_bleu(docs))
        assert abs(v_nltk - v_ours) < 1e-9, (v_nltk, v_ours)
        peers.append({"what": f"self-BLEU, n={n}", "peer": "nltk", "peer_s": t_nltk, "ours_s": t_ours})
    from vendi_score import vendi

    rng = np.random.default_rng(0)
    for n in ((500,) if args.quick else (500, 2000)):
        x = rng.normal(size=(n, 384))
        t_peer, v_peer = timed(lambda x=x: vendi.score_X(x, q=1, normalize=True), repeats=1)
        t_ours, v_ours = timed(lambda x=x: vendi_score(x))
        assert abs(v_peer - v_ours) < 1e-6, (v_peer, v_ours)
        peers.append({"what": f"Vendi, n={n}, d=384", "peer": "vendi-score score_X", "peer_s": t_peer,
                      "ours_s": t_ours})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps({"metrics": rows, "peers": peers}, indent=2))
    lines = ["| metric | definition | ms for 1,000 outputs x 64 tokens |", "|---|---|---|"]
    lines += [f"| {r['metric']} | {r['definition']} | {r['ms_1000x64']:.1f} |" for r in rows]
    lines += ["", "| comparison (values equal) | peer | peer (s) | collapseguard (s) | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {p['what']} | {p['peer']} | {p['peer_s']:.3f} | {p['ours_s']:.4f} | {p['peer_s'] / p['ours_s']:.0f}x |"
              for p in peers]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
