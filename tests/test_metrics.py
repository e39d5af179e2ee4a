"""Every metric against a reference implementation or a hand-computed value; merges; properties."""

from __future__ import annotations

import gzip
import math
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy as scipy_entropy
from scipy.stats import linregress

from collapseguard.metrics import (
    CompressionRatio,
    DistinctN,
    DuplicateFraction,
    EmbeddingMoments,
    FrequencyBands,
    GoldLikelihood,
    JSDivergence,
    LengthLimitFraction,
    LoopFraction,
    ModelStats,
    NGramEntropy,
    SelfBLEU,
    SeqRepN,
    TailCoverage,
    ZipfCoefficient,
    banded_perplexity,
    compression_ratio,
    distinct_n,
    duplicate_fraction,
    effective_rank,
    ends_in_loop,
    hashed_ngram_features,
    js_divergence,
    length_limit_fraction,
    loop_fraction,
    merge_all,
    ngram_entropy,
    self_bleu,
    seq_rep_n,
    tail_coverage,
    total_variance,
    vendi_score,
    zipf_coefficient,
)
from collapseguard.metrics._batch import TokenBatch

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
vendi = pytest.importorskip("vendi_score.vendi")


def random_docs(rng: random.Random, m: int, vocab: int, max_len: int) -> list[list[str]]:
    return [[f"w{rng.randrange(vocab)}" for _ in range(rng.randint(0, max_len))] for _ in range(m)]


def ngrams(doc, n):
    return [tuple(doc[i:i + n]) for i in range(len(doc) - n + 1)]


# --------------------------------------------------------------- self-BLEU
def nltk_self_bleu(docs, max_n=4):
    sm = nltk_bleu.SmoothingFunction().method1
    weights = (1.0 / max_n,) * max_n
    return sum(nltk_bleu.sentence_bleu(docs[:i] + docs[i + 1:], d, weights=weights, smoothing_function=sm)
               for i, d in enumerate(docs)) / len(docs)


@pytest.mark.parametrize("seed", range(40))
def test_self_bleu_equals_nltk(seed):
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(2, 15), rng.randint(2, 9), 12)
    max_n = 4 if seed % 3 else rng.randint(1, 5)
    assert self_bleu(docs, max_n=max_n) == pytest.approx(nltk_self_bleu(docs, max_n), abs=1e-9)


@pytest.mark.parametrize("docs", [
    [["a", "b", "c"], ["a", "b", "c"]],                  # identical outputs
    [[], ["a", "b"], ["a", "b", "c", "d"]],             # an empty output
    [["ünï", "cödé", "🙂"], ["ünï", "🙂"], ["x"]],      # unicode tokens
    [["a"] * 30, ["a"] * 2, ["b"] * 7],                   # repeats, length gaps
])
def test_self_bleu_edge_cases_equal_nltk(docs):
    assert self_bleu(docs) == pytest.approx(nltk_self_bleu(docs), abs=1e-9)


def test_self_bleu_needs_two_outputs():
    assert self_bleu([]) == 0.0 and self_bleu([["a", "b"]]) == 0.0


# ---------------------------------------------------------------- Vendi
@pytest.mark.parametrize(("n", "d"), [(5, 1), (30, 4), (80, 50), (200, 16)])
def test_vendi_equals_vendi_score_package(n, d):
    rng = np.random.default_rng(n * d)
    x = rng.normal(size=(n, d))
    x[0] = 0.0           # a zero row
    x[1] = x[2]          # a duplicated row
    assert vendi_score(x) == pytest.approx(vendi.score_dual(x, q=1, normalize=True), abs=1e-6)
    assert vendi_score(x) == pytest.approx(vendi.score_X(x, q=1, normalize=True), abs=1e-6)


def test_vendi_hand_values():
    assert vendi_score(np.eye(4)) == pytest.approx(4.0)
    assert vendi_score(np.ones((10, 3))) == pytest.approx(1.0)


# ----------------------------------------------------- lexical, by hand / naive
def naive_distinct(docs, n):
    grams = [g for d in docs for g in ngrams(d, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_distinct_n_equals_naive(seed, n):
    docs = random_docs(random.Random(seed), 20, 6, 10)
    assert distinct_n(docs, n=n) == pytest.approx(naive_distinct(docs, n))


def test_distinct_edge_cases():
    assert distinct_n([], n=2) == 0.0
    assert distinct_n([""], n=1) == 0.0
    assert distinct_n(["a a a a"], n=1) == 0.25
    assert distinct_n(["héllo wörld", "héllo wörld"], n=2) == 0.5


@pytest.mark.parametrize("n", [1, 2])
def test_ngram_entropy_equals_scipy(n):
    docs = random_docs(random.Random(n), 30, 8, 10)
    counts = list(Counter(g for d in docs for g in ngrams(d, n)).values())
    assert ngram_entropy(docs, n=n) == pytest.approx(scipy_entropy(counts, base=2))
    assert ngram_entropy([], n=n) == 0.0


def test_compression_ratio_equals_gzip_of_documented_serialisation():
    docs = [[3, 1, 4, 1, 5], [9, 2, 6], []]
    raw = b"\n3 1 4 1 5\n9 2 6"  # lines sorted: the empty output first
    assert compression_ratio(docs) == pytest.approx(len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0)))
    assert compression_ratio([]) == 0.0


def test_duplicate_fraction_by_hand():
    assert duplicate_fraction([[1, 2], [1, 2], [2, 1], [1, 2]]) == 0.5
    assert duplicate_fraction([]) == 0.0
    assert duplicate_fraction([[]] * 4) == 0.75


def test_zipf_equals_linregress():
    docs = random_docs(random.Random(3), 40, 30, 15)
    counts = np.array(sorted(Counter(t for d in docs for t in d).values(), reverse=True), dtype=float)
    fit = linregress(np.log(np.arange(1, counts.size + 1)), np.log(counts))
    assert zipf_coefficient(docs) == pytest.approx(-fit.slope)
    assert zipf_coefficient([["a", "a"]]) == 0.0


# ------------------------------------------------------------------ repetition
def naive_seq_rep(docs, n):
    vals = []
    for d in docs:
        g = ngrams(d, n)
        vals.append(1 - len(set(g)) / len(g) if g else 0.0)
    return sum(vals) / len(vals) if vals else 0.0


@pytest.mark.parametrize("n", [1, 2, 4])
def test_seq_rep_equals_naive(n):
    docs = random_docs(random.Random(n), 25, 4, 14)
    assert seq_rep_n(docs, n=n) == pytest.approx(naive_seq_rep(docs, n))


@pytest.mark.parametrize(("seq", "loops"), [
    ([1, 2, 3] * 4, True),                 # period 3, 4 repeats
    (list(range(20)) + [7] * 8, True),     # ends in a run of one token
    (list(range(20)) + [7] * 7, False),    # too short a run (min_tokens=8)
    ([1, 2] * 3 + [5, 6, 7, 8], False),    # the loop is not at the end
    ([], False),
])
def test_ends_in_loop_by_hand(seq, loops):
    assert ends_in_loop(np.array(seq)) is loops


def test_loop_and_length_limit_fractions():
    assert loop_fraction([[1, 2] * 8, list(range(16)), [4] * 9, [1]]) == 0.5
    assert length_limit_fraction([True, False, False, False]) == 0.75
    assert math.isnan(LengthLimitFraction().compute())


# ----------------------------------------------------------------- gold-relative
def test_frequency_bands_and_tail_coverage_by_hand():
    gold = TokenBatch([np.array([1] * 10 + [2] * 6 + [3] * 2 + [4] * 2)])  # 20 tokens
    bands = FrequencyBands.from_batch(gold, head_mass=0.5, tail_mass=0.25)
    # rank 1 (count 10) starts at 0% -> head; rank 2 (6) at 50% -> mid; ranks 3, 4 at 80%, 90% -> tail
    assert dict(zip(bands.keys.tolist(), bands.band.tolist(), strict=True)) == {1: 0, 2: 1, 3: 2, 4: 2}
    assert bands.lookup(np.array([1, 2, 3, 99], dtype=np.uint64)).tolist() == [0, 1, 2, 2]
    assert tail_coverage([[3, 1, 1]], gold=[[1] * 10 + [2] * 6 + [3] * 2 + [4] * 2], tail_mass=0.25) == 0.5


def test_js_divergence_equals_hand_formula():
    out, gold = ["a a b"], ["a b b c"]
    p = {"a": 2 / 3, "b": 1 / 3, "c": 0.0}
    q = {"a": 1 / 4, "b": 2 / 4, "c": 1 / 4}

    def kl(x, y):
        return sum(x[k] * math.log2(x[k] / y[k]) for k in x if x[k] > 0)

    mix = {k: (p[k] + q[k]) / 2 for k in p}
    assert js_divergence(out, gold=gold) == pytest.approx(0.5 * kl(p, mix) + 0.5 * kl(q, mix))
    assert js_divergence(["x"], gold=["x"]) == pytest.approx(0.0)


# ------------------------------------------------------------------- embeddings
def test_total_variance_and_effective_rank_equal_numpy():
    x = np.random.default_rng(1).normal(size=(50, 6)) * np.arange(1, 7)
    assert total_variance(x) == pytest.approx(x.var(axis=0).sum())
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_hashed_features_count_ngrams():
    batch = TokenBatch([np.array([1, 2, 3]), np.array([])])
    f = hashed_ngram_features(batch, dim=64, orders=(1, 2))
    assert f.shape == (2, 64) and f[0].sum() == 5 and f[1].sum() == 0


def test_banded_perplexity_by_hand():
    bands = FrequencyBands(keys=np.array([1, 2], dtype=np.uint64), band=np.array([0, 2], dtype=np.int8),
                           counts=np.array([5, 2]))
    stats = ModelStats([np.array([1, 2, 1])], [np.array([1.0, 3.0, 2.0])], [np.array([0.5, 1.0, 1.5])])
    out = banded_perplexity(stats, bands)
    assert out["gold_ppl"] == pytest.approx(math.exp(2.0))
    assert out["gold_ppl_head"] == pytest.approx(math.exp(1.5))
    assert out["gold_ppl_tail"] == pytest.approx(math.exp(3.0))
    assert math.isnan(out["gold_ppl_mid"]) and out["next_token_entropy"] == pytest.approx(1.0)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: distinct_n(["a"], n=0), ValueError, "n must be a positive int"),
    (lambda: self_bleu(["a"], max_n=0), ValueError, "max_n must be"),
    (lambda: vendi_score(np.zeros((2, 2, 2))), ValueError, r"shape \(n, d\)"),
    (lambda: vendi_score(np.array([[np.nan, 1.0]])), ValueError, "NaN or inf in 1 of 1 rows"),
    (lambda: distinct_n("one string"), TypeError, "not a single str"),
    (lambda: distinct_n(np.zeros((3, 2))), TypeError, "embedding batch"),
    (lambda: distinct_n(["text", [1, 2]]), TypeError, "mixes texts"),
])
def test_bad_input_is_rejected_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------ mergeable states
def _class_metrics(gold_batch):
    bands = FrequencyBands.from_batch(gold_batch)
    table = (np.unique(gold_batch.ngrams(1)[0]), np.unique(gold_batch.ngrams(1)[0], return_counts=True)[1])
    return [DistinctN(2), NGramEntropy(2), SelfBLEU(), CompressionRatio(), DuplicateFraction(), ZipfCoefficient(),
            SeqRepN(2), LoopFraction(), TailCoverage(bands), JSDivergence(table, 1)]


@pytest.mark.parametrize("seed", range(5))
def test_merge_of_shards_equals_whole(seed):
    rng = random.Random(seed)
    docs = [TokenBatch([np.array([rng.randrange(8) for _ in range(rng.randint(0, 12))]) for _ in range(k)])
            for k in (7, 5, 9)]
    whole = TokenBatch([s for b in docs for s in b.sequences])
    gold = TokenBatch([np.arange(8)] * 3 + [np.array([1, 1, 2])])
    for proto in _class_metrics(gold):
        shards = []
        for b in docs:
            m = _fresh(proto)
            m.update(b)
            shards.append(m)
        single = _fresh(proto)
        single.update(whole)
        assert merge_all(shards).compute() == pytest.approx(single.compute()), type(proto).__name__


def _fresh(metric):
    import copy

    m = copy.deepcopy(metric)
    m.reset()
    return m


def test_embedding_and_model_side_merges_are_exact():
    x = np.random.default_rng(0).normal(size=(40, 5))
    a, b, w = EmbeddingMoments(5), EmbeddingMoments(5), EmbeddingMoments(5)
    a.update(x[:15]), b.update(x[15:]), w.update(x)
    assert a.merge(b).compute_all() == pytest.approx(w.compute_all())
    bands = FrequencyBands(np.array([1], dtype=np.uint64), np.array([0], dtype=np.int8), np.array([3]))
    s1 = ModelStats([np.array([1, 5])], [np.array([1.0, 2.0])], [np.array([1.0, 1.0])])
    s2 = ModelStats([np.array([5])], [np.array([4.0])], [np.array([2.0])])
    g1, g2, gw = GoldLikelihood(bands), GoldLikelihood(bands), GoldLikelihood(bands)
    g1.update(s1), g2.update(s2), gw.update(ModelStats([*s1.token_ids, *s2.token_ids], [*s1.nll, *s2.nll],
                                                        [*s1.entropy, *s2.entropy]))
    assert g1.merge(g2).compute_all() == pytest.approx(gw.compute_all(), nan_ok=True)


# ---------------------------------------------------------------- properties
token_docs = st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=10), min_size=2, max_size=12)


@settings(max_examples=60, deadline=None)
@given(token_docs)
def test_bounds(docs):
    for value in (distinct_n(docs, 2), self_bleu(docs), duplicate_fraction(docs), seq_rep_n(docs, 2),
                  js_divergence(docs, gold=[[0, 1, 2, 3]])):
        assert -1e-12 <= value <= 1 + 1e-12


@settings(max_examples=40, deadline=None)
@given(token_docs, st.randoms(use_true_random=False))
def test_permutation_invariance(docs, rnd):
    shuffled = list(docs)
    rnd.shuffle(shuffled)
    for fn in (lambda d: distinct_n(d, 2), self_bleu, duplicate_fraction, lambda d: ngram_entropy(d, 2)):
        assert fn(shuffled) == pytest.approx(fn(docs), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(token_docs, st.data())
def test_duplication_never_adds_diversity(docs, data):
    copy = docs[data.draw(st.integers(0, len(docs) - 1))]
    more = [*docs, copy]
    assert distinct_n(more, 2) <= distinct_n(docs, 2) + 1e-12 or not any(len(d) >= 2 for d in docs)
    assert duplicate_fraction(more) >= duplicate_fraction(docs) - 1e-12
    # (not asserted for Vendi: a copy of an under-represented output can even the spectrum and raise it)
