"""A recursive-training demo on real human text that needs nothing but numpy.

Generation 0 is a word trigram model fit (maximum likelihood) on human
paragraphs from CPython's documentation. Every later generation is fit only on
text sampled from the generation before -- the "replace" regime of Shumailov
et al. A second track keeps a floor of human "anchor" text in every
generation's training data -- a floor the guard raises when it alerts
(``on_collapse="reweight"``). At each generation the guard judges continuations
of the gold prompts; the CLI prints what it sees and writes an HTML report.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collapseguard import GenerationSettings, ReweightPolicy
from collapseguard.demos.data import train_gold_split
from collapseguard.detection.alerts import silenced_alerts
from collapseguard.detection.monitor import CheckResult
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.tokenization import SimpleTokenizer, stable_token_id
from collapseguard.guard.engine import GeneratedBatch, GuardEngine
from collapseguard.guard.sampling import AnchorMixSampler


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
    human_fraction: float


TRACKS = ("replace", "reweight")


def run_demo(generations: int = 8, *, floor: float = 0.1, samples_per_generation: int = 400, num_prompts: int = 64,
             seed: int = 0, thresholds: str = "balanced", out_dir: str | Path | None = None,
             on_row: Callable[[DemoRow], None] | None = None) -> list[DemoRow]:
    """Run both tracks for ``generations`` generations after generation 0; return every check.

    ``replace``: each generation is fit only on samples of the one before, the guard only warns.
    ``reweight``: each generation's data is an :class:`AnchorMixSampler` epoch over those samples and
    a fresh draw of human paragraphs, as many as the guard's human share asks (``floor`` to start); a
    :class:`GuardEngine` with ``on_collapse="reweight"`` raises the share on alerts. With
    ``out_dir``, each track writes its alert trail there (``<track>/alerts.jsonl``, which
    ``collapseguard report`` reads), its final training data (``<track>/train_gen<N>.jsonl``,
    with provenance) and the gold set (``gold.jsonl``). ``on_row`` sees each check as it lands.
    """
    rng = np.random.default_rng(seed)
    train_texts, gold_texts = train_gold_split()
    tok = SimpleTokenizer()
    gold = GoldSet.from_texts(gold_texts, name="pydoc-gold")
    human = [np.asarray(tok.encode(t), dtype=np.int64) for t in train_texts]
    vocab = {stable_token_id(w): w for t in train_texts for w in tok.tokenize(t)}
    out = Path(out_dir) if out_dir is not None else None
    engines: dict[str, GuardEngine] = {}
    for track in TRACKS:
        trail = None
        if out is not None:
            (out / track).mkdir(parents=True, exist_ok=True)
            trail = out / track / "alerts.jsonl"
            trail.unlink(missing_ok=True)  # a fresh demo, not an appended one
        reweight = track == "reweight"
        engines[track] = GuardEngine(
            gold, tokenizer=tok, thresholds=thresholds, score_gold=False, alert_log=trail,
            generation=GenerationSettings(num_samples=num_prompts, prompt_length=16, max_new_tokens=32),
            on_collapse=ReweightPolicy(AnchorMixSampler(["synthetic", "human"], 16, floor)) if reweight else "warn")
    if out is not None:
        _write_jsonl(out / "gold.jsonl", [{"text": t} for t in gold_texts])
    corpora = {track: human for track in TRACKS}
    provenance = {track: ["human"] * len(human) for track in TRACKS}
    rows: list[DemoRow] = []
    with silenced_alerts():  # the table shows them
        for gen in range(generations + 1):
            for track, engine in engines.items():
                engine.setup()
                model = TrigramLM(corpora[track])
                prompts = engine.prompts()
                outcome = engine.run_check(lambda m=model, p=prompts: GeneratedBatch(
                    sequences=[m.sample(x, 32, rng) for x in p], finished=[False] * len(p)), step=gen, epoch=gen)
                synthetic = _sample_corpus(model, human, samples_per_generation, rng)
                share = 0.0
                if engine.anchor_sampler is not None:
                    # the guard's human share decides the next generation's mix: a fresh draw of
                    # human paragraphs, batched by a sampler that holds the share as a floor
                    engine.anchor_sampler = _mix_sampler(engine.human_fraction, samples_per_generation, len(human),
                                                  seed + gen)
                    labels = engine.anchor_sampler.labels.tolist()
                    anchors = [human[i] for i in rng.choice(len(human), size=labels.count("human"), replace=False)]
                    pool = synthetic[:labels.count("synthetic")] + anchors
                    drawn = [i for batch in engine.anchor_sampler for i in batch]
                    corpora[track] = [pool[i] for i in drawn]
                    provenance[track] = [labels[i] for i in drawn]
                    share = float(engine.anchor_sampler.realized_human_fraction or 0.0)
                else:
                    corpora[track], provenance[track] = synthetic, ["synthetic"] * len(synthetic)
                row = DemoRow(gen, track, outcome.result, share)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    if out is not None:
        for track in TRACKS:
            records = [{"text": " ".join(vocab.get(int(i), "?") for i in seq), "provenance": label}
                       for seq, label in zip(corpora[track], provenance[track], strict=True)]
            _write_jsonl(out / track / f"train_gen{generations + 1}.jsonl", records)
    return rows


def _mix_sampler(share: float, budget: int, human_available: int, seed: int) -> AnchorMixSampler:
    """A sampler over ``budget`` slots, ``share`` of them human (as many as there are), with the largest
    per-batch human floor every batch can meet."""
    n_human = min(round(share * budget), human_available)
    per_batch = math.floor(n_human / budget * 16) / 16
    return AnchorMixSampler(["synthetic"] * (budget - n_human) + ["human"] * n_human, 16, per_batch, seed=seed)


def _sample_corpus(model: TrigramLM, human: list[np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` texts of 40 words sampled from the model, each started from a human paragraph's first two words."""
    return [model.sample(human[i][:2], 40, rng) for i in rng.choice(len(human), size=n)]


def _write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def format_header() -> str:
    return (f"{'gen':>3}  {'track':<9} {'human':>5}  {'health':>6}  {'distinct-2':>10}  {'tail cov':>8}  "
            f"{'self-BLEU':>9}  {'seq-rep-4':>9}  alerts")


def format_row(row: DemoRow) -> str:
    r = row.result
    m, ref = r.metrics, r.reference
    alerts = ", ".join(sorted({f"{a.severity}:{a.phase}({a.metric})" for a in r.alerts})) or "-"
    share = f"{row.human_fraction:>5.0%}" if row.track == "reweight" else f"{'0%':>5}"
    return (f"{row.generation:>3}  {row.track:<9} {share}  {r.health:>6.2f}  {m['distinct_2'] / ref['distinct_2']:>9.0%}g  "
            f"{m['tail_coverage'] / max(ref['tail_coverage'], 1e-12):>7.0%}g  {m['self_bleu']:>9.3f}  "
            f"{m['seq_rep_4']:>9.3f}  {alerts}")


def collapsed_corpus(generations: int = 8, n: int = 600, seed: int = 0) -> list[str]:
    """Texts sampled from the trigram model after ``generations`` rounds of training on its own samples.

    Real model-generated text for examples and tests: generation 0 is fit on the human training
    paragraphs, each later one on ``n`` samples of the one before (the replace regime).
    """
    rng = np.random.default_rng(seed)
    train_texts, _ = train_gold_split()
    tok = SimpleTokenizer()
    human = [np.asarray(tok.encode(t), dtype=np.int64) for t in train_texts]
    vocab = {stable_token_id(w): w for t in train_texts for w in tok.tokenize(t)}
    corpus = human
    for _ in range(generations + 1):
        corpus = _sample_corpus(TrigramLM(corpus), human, n, rng)
    return [" ".join(vocab[int(i)] for i in seq) for seq in corpus]
