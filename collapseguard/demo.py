"""A recursive-training demo on real human text that needs nothing but numpy.

Generation 0 is a word trigram model fit (maximum likelihood) on human
paragraphs from CPython's documentation. Every later generation is fit only on
text sampled from the generation before -- the "replace" regime of Shumailov
et al. A second track keeps a floor of human "anchor" text in every
generation's training data. At each generation a :class:`CollapseMonitor`
judges continuations of the gold prompts, and the demo prints what it sees.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from collapseguard.alerts import CollapseWarning
from collapseguard.data import train_gold_split
from collapseguard.goldset import GoldSet
from collapseguard.monitor import CheckResult, CollapseMonitor
from collapseguard.tokenize import SimpleTokenizer


class TrigramLM:
    """Maximum-likelihood word trigram model with backoff to bigram and unigram contexts."""

    def __init__(self, corpus: Sequence[np.ndarray]) -> None:
        tables: list[defaultdict[tuple[int, ...], Counter[int]]] = [defaultdict(Counter) for _ in range(3)]
        for seq in corpus:
            s = seq.tolist()
            for i, tok in enumerate(s):
                for order in range(3):
                    if i >= order:
                        tables[order][tuple(s[i - order:i])][tok] += 1
        self._dist: list[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]] = []
        for table in tables:
            dist = {}
            for ctx, counter in table.items():
                toks = np.fromiter(counter.keys(), dtype=np.int64, count=len(counter))
                cum = np.cumsum(np.fromiter(counter.values(), dtype=np.float64, count=len(counter)))
                dist[ctx] = (toks, cum / cum[-1])
            self._dist.append(dist)

    def sample(self, prompt: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        out = list(prompt.tolist())
        for u in rng.random(length):
            for order in (2, 1, 0):
                ctx = tuple(out[len(out) - order:]) if order else ()
                if len(out) >= order and ctx in self._dist[order]:
                    toks, cum = self._dist[order][ctx]
                    out.append(int(toks[min(np.searchsorted(cum, u), toks.size - 1)]))
                    break
        return np.asarray(out[len(prompt):], dtype=np.int64)


@dataclass
class DemoRow:
    generation: int
    track: str
    result: CheckResult


def run_demo(generations: int = 8, anchor_fraction: float = 0.2, samples_per_generation: int = 600,
             num_prompts: int = 64, seed: int = 0, thresholds: str = "balanced", echo: bool = True) -> list[DemoRow]:
    """Run both tracks and return every check; prints a table as it goes when ``echo``."""
    rng = np.random.default_rng(seed)
    train_texts, gold_texts = train_gold_split()
    tok = SimpleTokenizer()
    gold = GoldSet.from_texts(gold_texts, name="pydoc-gold")
    human = [np.asarray(tok.encode(t), dtype=np.int64) for t in train_texts]
    prompt_len, new_tokens = 16, 32
    tracks = {"replace": 0.0, f"anchor {anchor_fraction:.0%}": anchor_fraction}
    monitors = {name: CollapseMonitor(gold, thresholds, tokenizer=tok, prompt_length=prompt_len,
                                      max_new_tokens=new_tokens) for name in tracks}
    prompts = monitors["replace"].split.prompts[:num_prompts]
    corpora = {name: human for name in tracks}
    rows: list[DemoRow] = []
    if echo:
        print(f"collapseguard demo: word trigram LM, recursive training on {len(train_texts)} human paragraphs "
              f"(CPython docs); gold: {len(gold)} held-out paragraphs, {len(prompts)} prompts")
        print(f"{'gen':>3}  {'track':<11} {'health':>6}  {'distinct-2':>10}  {'tail cov':>8}  {'self-BLEU':>9}  "
              f"{'seq-rep-4':>9}  alerts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)  # the table shows them
        logging.getLogger("collapseguard").setLevel(logging.CRITICAL + 1)
        for gen in range(generations + 1):
            for name, floor in tracks.items():
                model = TrigramLM(corpora[name])
                outputs = [model.sample(p, new_tokens, rng) for p in prompts]
                result = monitors[name].check(outputs, step=gen)
                rows.append(DemoRow(gen, name, result))
                if echo:
                    print(_format_row(gen, name, result))
                corpora[name] = _next_corpus(model, human, floor, samples_per_generation, rng)
        logging.getLogger("collapseguard").setLevel(logging.NOTSET)
    return rows


def _next_corpus(model: TrigramLM, human: list[np.ndarray], floor: float, n: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
    n_human = round(floor * n)
    starts = rng.choice(len(human), size=n - n_human)
    synthetic = [model.sample(human[i][:2], 40, rng) for i in starts]
    anchors = [human[i] for i in rng.choice(len(human), size=n_human, replace=False)]
    return synthetic + anchors


def _format_row(gen: int, name: str, r: CheckResult) -> str:
    m, ref = r.metrics, r.reference
    alerts = ", ".join(sorted({f"{a.severity}:{a.phase}({a.metric})" for a in r.alerts})) or "-"
    return (f"{gen:>3}  {name:<11} {r.health:>6.2f}  {m['distinct_2'] / ref['distinct_2']:>9.0%}g  "
            f"{m['tail_coverage'] / max(ref['tail_coverage'], 1e-12):>7.0%}g  {m['self_bleu']:>9.3f}  "
            f"{m['seq_rep_4']:>9.3f}  {alerts}")
