"""Every core metric against an independent reference implementation or a hand-computed value.

References: nltk's ``sentence_bleu`` (Self-BLEU), the ``vendi_score`` package (Vendi),
scipy (entropy, linregress), gzip, numpy (var, svd) and plain-Python loops written from
the metric definitions. No value here is checked against the library itself.
"""

from __future__ import annotations

import gzip
import math
import random
import re
from collections import Counter

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy
from scipy.stats import linregress

from collapseguard import CollapseMonitor, GoldSet
from collapseguard.gold.tokenization import SimpleTokenizer, stable_token_id
from collapseguard.metrics import (
    CompressionRatio,
    DistinctN,
    DuplicateFraction,
    EmbeddingMoments,
    FrequencyBands,
    GoldLikelihood,
    GoldNLL,
    JSDivergence,
    LengthLimitFraction,
    LoopFraction,
    Metric,
    ModelStats,
    NGramEntropy,
    SelfBLEU,
    SeqRepN,
    TailCoverage,
    TailMass,
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
from collapseguard.metrics.embedding import GoldEllipsoid

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
vendi = pytest.importorskip("vendi_score.vendi")


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_blas():
    # multi-threaded OpenBLAS eigvalsh is erratic (0.1-0.5 s for 256 x 256) on 2 cores; values are unaffected
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        yield

UNICODE_TEXTS = [
    "Über café naïve — déjà vu!",
    "日本語 の テキスト 日本語",
    "emoji 🙂 🙂 ☃ snow ☃",
    "Über café naïve — déjà vu!",
    "",
    "Ωμέγα αλφα βήτα Ωμέγα",
]


# ------------------------------------------------------------------ helpers
def random_docs(rng: random.Random, m: int, vocab: int, max_len: int) -> list[list[int]]:
    return [[rng.randrange(vocab) for _ in range(rng.randint(0, max_len))] for _ in range(m)]


def grams(doc, n):
    return [tuple(doc[i : i + n]) for i in range(len(doc) - n + 1)]


def tokens_of(texts):
    """What SimpleTokenizer yields, as string tokens (for references working on strings)."""
    tok = SimpleTokenizer()
    return [tok.tokenize(t) for t in texts]


def ids_of(texts):
    tok = SimpleTokenizer()
    return [[stable_token_id(t) for t in tok.tokenize(text)] for text in texts]


def nltk_self_bleu(docs, max_n=4):
    if len(docs) < 2:
        return 0.0
    sm = nltk_bleu.SmoothingFunction().method1
    weights = (1.0 / max_n,) * max_n
    scores = [
        nltk_bleu.sentence_bleu(docs[:i] + docs[i + 1 :], d, weights=weights, smoothing_function=sm)
        for i, d in enumerate(docs)
    ]
    return sum(scores) / len(docs)


def naive_distinct(docs, n):
    all_grams = [g for d in docs for g in grams(d, n)]
    return len(set(all_grams)) / len(all_grams) if all_grams else 0.0


def naive_entropy_bits(docs, n):
    counts = Counter(g for d in docs for g in grams(d, n))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def naive_seq_rep(docs, n):
    if not docs:
        return 0.0
    vals = []
    for d in docs:
        g = grams(d, n)
        vals.append(1 - len(set(g)) / len(g) if g else 0.0)
    return sum(vals) / len(vals)


def naive_js_bits(p_counts: Counter, q_counts: Counter) -> float:
    tp, tq = sum(p_counts.values()), sum(q_counts.values())
    js = 0.0
    for k in set(p_counts) | set(q_counts):
        p, q = p_counts.get(k, 0) / tp, q_counts.get(k, 0) / tq
        m = (p + q) / 2
        if p > 0:
            js += 0.5 * p * math.log2(p / m)
        if q > 0:
            js += 0.5 * q * math.log2(q / m)
    return js


def naive_ends_in_loop(seq, min_repeats=3, max_period=16, min_tokens=8):
    """The docstring's definition, brute force: the last k*p tokens are one p-block repeated k times."""
    s = list(seq)
    for p in range(1, max_period + 1):
        for k in range(min_repeats, len(s) // p + 1):
            if k * p < min_tokens:
                continue
            tail = s[len(s) - k * p :]
            if tail == tail[:p] * k:
                return True
    return False


def naive_bands(gold_docs, head_mass=0.5, tail_mass=0.1):
    """Unigram bands from the FrequencyBands docstring: rank by count (ties by id), cumulate."""
    counts = Counter(t for d in gold_docs for t in d)
    total = sum(counts.values())
    bands, before = {}, 0
    for tok, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        frac = before / total
        bands[tok] = 0 if frac < head_mass else (1 if frac < 1 - tail_mass else 2)
        before += c
    return bands, counts


def gzip_ratio_reference(docs) -> float:
    """The documented serialisation: decimal ids space-separated, one output per line, lines sorted."""
    raw = b"\n".join(sorted(" ".join(str(t) for t in d).encode("ascii") for d in docs))
    if not raw:
        return 0.0
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))


# ================================================================ Self-BLEU
@pytest.mark.parametrize("seed", range(60))
def test_self_bleu_equals_nltk_on_random_token_lists(seed):
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(2, 12), rng.randint(1, 6), rng.choice([3, 8, 15]))
    assert self_bleu(docs) == pytest.approx(nltk_self_bleu(docs), abs=1e-9)


@pytest.mark.parametrize("max_n", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("seed", range(8))
def test_self_bleu_equals_nltk_with_other_max_n(seed, max_n):
    rng = random.Random(1000 + seed)
    docs = random_docs(rng, rng.randint(2, 10), rng.randint(2, 5), 12)
    assert self_bleu(docs, max_n=max_n) == pytest.approx(nltk_self_bleu(docs, max_n), abs=1e-9)
    metric = SelfBLEU(max_n)
    metric.update(docs)
    assert metric.compute() == pytest.approx(nltk_self_bleu(docs, max_n), abs=1e-9)


@pytest.mark.parametrize(
    "docs",
    [
        pytest.param([[1, 2, 3, 4, 5]] * 2, id="two-identical"),
        pytest.param([[7, 7, 7]] * 5, id="five-identical-short"),
        pytest.param([[], []], id="all-empty"),
        pytest.param([[], [1, 2, 3]], id="one-empty"),
        pytest.param([[], [1, 2], [1, 2, 3, 4]], id="empty-among-others"),
        pytest.param([[1], [1], [2]], id="single-tokens"),
        pytest.param([[1] * 30, [1] * 2, [2] * 7], id="length-gaps"),
        pytest.param([[1, 2, 3], [4, 5, 6]], id="disjoint"),
        pytest.param([[1, 2, 3, 4], [1, 2, 3, 4, 5], [1, 2, 3]], id="length-ties"),
        pytest.param([[1, 2, 1, 2, 1, 2], [1, 2], [2, 1, 2, 1]], id="clipping"),
    ],
)
def test_self_bleu_edge_cases_equal_nltk(docs):
    assert self_bleu(docs) == pytest.approx(nltk_self_bleu(docs), abs=1e-9)


def test_self_bleu_unicode_texts_equal_nltk_on_the_same_tokens():
    expected = nltk_self_bleu(tokens_of(UNICODE_TEXTS))
    assert self_bleu(UNICODE_TEXTS) == pytest.approx(expected, abs=1e-9)
    # string tokens and a character-level tokenizer
    assert self_bleu(tokens_of(UNICODE_TEXTS)) == pytest.approx(expected, abs=1e-9)
    chars = [list(t) for t in UNICODE_TEXTS]
    assert self_bleu(UNICODE_TEXTS, tokenizer=list) == pytest.approx(nltk_self_bleu(chars), abs=1e-9)


def test_self_bleu_identical_outputs_hand_values():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0, abs=1e-12)
    # two tokens, max_n=4: orders 3 and 4 have no n-gram, method1 gives them 0.1 each
    assert self_bleu([[1, 2], [1, 2]]) == pytest.approx(math.exp((2 * math.log(0.1)) / 4), abs=1e-12)


def test_self_bleu_fewer_than_two_outputs_is_zero():
    assert self_bleu([]) == 0.0
    assert self_bleu(["just one output here"]) == 0.0
    assert SelfBLEU().compute() == 0.0


# ================================================================== Vendi
def _vendi_cases():
    rng = np.random.default_rng(7)
    for d in (1, 2, 3, 5, 8, 13, 21, 34, 50):
        for n in (1, 2, 7, 40):
            x = rng.normal(size=(n, d))
            if rng.random() < 0.3:
                x = np.round(x)  # small integer vectors: exact duplicates and collinear rows
            if n >= 3:
                x[rng.integers(n)] = 0.0  # a zero row
                x[-1] = x[0]  # a duplicated row
            yield pytest.param(x, id=f"n{n}-d{d}")


@pytest.mark.parametrize("x", list(_vendi_cases()))
def test_vendi_equals_vendi_score_package(x):
    if not np.any(x):
        pytest.skip("all-zero input is covered by test_vendi_all_zero_rows")
    got = vendi_score(x)
    assert got == pytest.approx(vendi.score_dual(x, q=1, normalize=True), rel=1e-6, abs=1e-6)
    assert got == pytest.approx(vendi.score_X(x, q=1, normalize=True), rel=1e-6, abs=1e-6)


def test_vendi_hand_values():
    assert vendi_score(np.eye(4)) == pytest.approx(4.0, abs=1e-9)
    assert vendi_score(np.ones((10, 3))) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(3.0 * np.eye(5)[[0, 0, 1, 1]]) == pytest.approx(2.0, abs=1e-9)  # scale-free
    # orthogonal rows with weights 2/3, 1/3: exp(H(2/3, 1/3))
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert vendi_score(np.eye(2)[[0, 0, 1]]) == pytest.approx(math.exp(h), abs=1e-9)
    # 1-D input is one feature: every nonzero scalar row is the same unit vector
    assert vendi_score([1.0, -2.0, 3.0]) == pytest.approx(1.0, abs=1e-9)


def test_vendi_all_zero_rows():
    x = np.zeros((3, 4))
    assert vendi_score(x) == pytest.approx(vendi.score_dual(x, q=1, normalize=True))


def test_vendi_of_no_rows_is_zero():
    assert vendi_score(np.zeros((0, 3))) == 0.0


# ========================================================== distinct-n
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("seed", range(12))
def test_distinct_n_equals_naive(seed, n):
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(0, 12), rng.randint(1, 6), 10)
    assert distinct_n(docs, n) == pytest.approx(naive_distinct(docs, n), abs=1e-12)
    metric = DistinctN(n)
    metric.update(docs)
    assert metric.compute() == pytest.approx(naive_distinct(docs, n), abs=1e-12)


def test_distinct_n_hand_values_and_edges():
    assert distinct_n(["a b a b", "a b c"], n=2) == pytest.approx(3 / 5)
    assert distinct_n(["a b c", "a b d"], n=1) == pytest.approx(4 / 6)
    assert distinct_n([], n=2) == 0.0
    assert distinct_n([""], n=1) == 0.0
    assert distinct_n(["", ""], n=1) == 0.0
    assert distinct_n(["a b"], n=3) == 0.0  # shorter than n: no n-gram
    assert distinct_n(["same words here"] * 4, n=1) == pytest.approx(3 / 12)
    # n-grams never straddle two outputs: "a b" + "c d" has no bigram "b c"
    assert distinct_n(["a b", "c d"], n=2) == 1.0
    assert distinct_n(UNICODE_TEXTS, n=2) == pytest.approx(naive_distinct(tokens_of(UNICODE_TEXTS), 2))
    assert distinct_n(UNICODE_TEXTS, n=1, tokenizer=list) == pytest.approx(
        naive_distinct([list(t) for t in UNICODE_TEXTS], 1)
    )


def test_input_forms_agree():
    texts = ["a b c a", "b c d", ""]
    ids = ids_of(texts)
    arrays = [np.array(d, dtype=np.int64) for d in ids]
    expected = naive_distinct(ids, 2)
    for form in (texts, ids, arrays, tokens_of(texts), TokenBatch(arrays), tuple(texts)):
        assert distinct_n(form, 2) == pytest.approx(expected)
    # a 2-D integer array is a batch of equal-length token sequences
    grid = np.array([[1, 2, 3], [1, 2, 4]])
    assert distinct_n(grid, 2) == pytest.approx(naive_distinct(grid.tolist(), 2))
    assert distinct_n(texts, 1, tokenizer=str.split) == pytest.approx(
        naive_distinct([t.split() for t in texts], 1)
    )


# ======================================================== n-gram entropy
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("seed", range(10))
def test_ngram_entropy_equals_scipy_and_hand_formula(seed, n):
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(0, 10), rng.randint(1, 7), 12)
    counts = list(Counter(g for d in docs for g in grams(d, n)).values())
    expected = float(scipy_entropy(counts, base=2)) if counts else 0.0
    assert expected == pytest.approx(naive_entropy_bits(docs, n), abs=1e-12)
    assert ngram_entropy(docs, n) == pytest.approx(expected, abs=1e-12)
    metric = NGramEntropy(n)
    metric.update(docs)
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


def test_ngram_entropy_hand_values():
    assert ngram_entropy(["a b", "c d"], n=1) == pytest.approx(2.0)
    assert ngram_entropy(["a a a a"], n=1) == 0.0
    assert ngram_entropy(["a a b c"], n=1) == pytest.approx(1.5)
    assert ngram_entropy([], n=1) == 0.0
    assert ngram_entropy([""], n=2) == 0.0
    assert ngram_entropy(UNICODE_TEXTS, n=1) == pytest.approx(naive_entropy_bits(tokens_of(UNICODE_TEXTS), 1))


# ===================================================== compression ratio
@pytest.mark.parametrize("seed", range(10))
def test_compression_ratio_equals_gzip_of_documented_serialisation(seed):
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(1, 30), rng.randint(2, 50), 25)
    docs[0] = docs[0] or [rng.randrange(-5, 1000)]  # at least one token
    docs.append([-3, 10**12, 0])  # negative and large ids serialise as plain decimals
    expected = gzip_ratio_reference(docs)
    assert compression_ratio(docs) == pytest.approx(expected, abs=1e-12)
    metric = CompressionRatio()
    metric.update(docs)
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


def test_compression_ratio_texts_and_edges():
    assert compression_ratio(UNICODE_TEXTS) == pytest.approx(gzip_ratio_reference(ids_of(UNICODE_TEXTS)))
    assert compression_ratio([]) == 0.0
    assert compression_ratio([""]) == 0.0
    assert compression_ratio([[1, 2, 3]] * 50) > compression_ratio([[i, i + 1, i + 2] for i in range(50)])
    # order of outputs does not matter (lines are sorted)
    docs = [[3, 2, 1], [10, 11], [5]]
    assert compression_ratio(docs) == compression_ratio(docs[::-1])


def test_compression_ratio_of_several_empty_outputs_is_zero():
    assert compression_ratio(["", ""]) == 0.0


# =================================================== duplicate fraction
@pytest.mark.parametrize("seed", range(10))
def test_duplicate_fraction_equals_naive(seed):
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(1, 20), 2, 3)  # tiny vocab and length: many duplicates
    expected = 1 - len({tuple(d) for d in docs}) / len(docs)
    assert duplicate_fraction(docs) == pytest.approx(expected, abs=1e-12)
    metric = DuplicateFraction()
    metric.update(docs)
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


def test_duplicate_fraction_hand_values():
    assert duplicate_fraction(["same", "same", "same", "other"]) == pytest.approx(0.5)
    assert duplicate_fraction([]) == 0.0
    assert duplicate_fraction(["only"]) == 0.0
    assert duplicate_fraction(["", ""]) == pytest.approx(0.5)
    assert duplicate_fraction(["a b", "b a"]) == 0.0  # order inside an output matters
    assert duplicate_fraction(UNICODE_TEXTS) == pytest.approx(1 - 5 / 6)
    # [1, 2] vs [1, 2, 0]: a prefix is not a duplicate
    assert duplicate_fraction([[1, 2], [1, 2, 0], [0, 1, 2]]) == 0.0


# ===================================================== Zipf coefficient
@pytest.mark.parametrize("seed", range(10))
def test_zipf_equals_scipy_linregress(seed):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(2, 60))
    probs = 1.0 / np.arange(1, vocab + 1) ** rng.uniform(0.5, 2.0)
    tokens = rng.choice(vocab, size=int(rng.integers(20, 400)), p=probs / probs.sum())
    docs = [tokens[i : i + 17].tolist() for i in range(0, tokens.size, 17)]
    counts = sorted(Counter(tokens.tolist()).values(), reverse=True)
    ranks = np.arange(1, len(counts) + 1)
    expected = -linregress(np.log(ranks), np.log(counts)).slope if len(counts) >= 2 else 0.0
    assert zipf_coefficient(docs) == pytest.approx(expected, abs=1e-9)
    metric = ZipfCoefficient()
    metric.update(docs)
    assert metric.compute() == pytest.approx(expected, abs=1e-9)


def test_zipf_hand_values():
    # counts 6, 3, 2 = 6 / r exactly: slope -1
    assert zipf_coefficient(["a"] * 6 + ["b"] * 3 + ["c"] * 2) == pytest.approx(1.0, abs=1e-12)
    # counts 4, 1 = 4 / r^2
    assert zipf_coefficient([[1, 1, 1, 1, 2]]) == pytest.approx(2.0, abs=1e-12)
    assert zipf_coefficient(["a b c d"]) == pytest.approx(0.0, abs=1e-12)  # flat
    assert zipf_coefficient(["a a a"]) == 0.0  # one type
    assert zipf_coefficient([]) == 0.0
    assert zipf_coefficient([""]) == 0.0


# ============================================================ seq-rep-n
@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("seed", range(10))
def test_seq_rep_n_equals_naive(seed, n):
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(0, 12), rng.randint(1, 4), 14)
    assert seq_rep_n(docs, n) == pytest.approx(naive_seq_rep(docs, n), abs=1e-12)
    metric = SeqRepN(n)
    metric.update(docs)
    assert metric.compute() == pytest.approx(naive_seq_rep(docs, n), abs=1e-12)


def test_seq_rep_n_hand_values():
    # "a b a b a b": 5 bigrams, 2 unique -> 0.6; "a b c d": 0 -> mean 0.3
    assert seq_rep_n(["a b a b a b", "a b c d"], n=2) == pytest.approx(0.3)
    assert seq_rep_n(["a a a a"], n=1) == pytest.approx(0.75)
    assert seq_rep_n(["a b"], n=4) == 0.0  # shorter than n counts as 0
    assert seq_rep_n(["a b", "a a a a a"], n=4) == pytest.approx((0 + 0.5) / 2)
    assert seq_rep_n([], n=2) == 0.0
    assert seq_rep_n([""], n=1) == 0.0
    assert seq_rep_n(UNICODE_TEXTS, n=1) == pytest.approx(naive_seq_rep(tokens_of(UNICODE_TEXTS), 1))


# ================================================ loops and length limit
@pytest.mark.parametrize(
    ("seq", "loops"),
    [
        ([1, 2] * 6, True),  # period 2, 12 tokens
        (list(range(12)), False),
        ([7] * 8, True),  # period 1 over min_tokens=8
        ([7] * 7, False),  # 7 repeats but under min_tokens
        ([4, 4, 4], False),  # "very very very": a short natural echo
        ([1, 2, 3] * 3, True),  # period 3, 3 repeats = 9 tokens
        ([1, 2, 3, 4] * 3, True),  # period 4 needs 12 tokens
        ([1, 2, 3, 4] * 2, False),  # only 2 repeats
        ([9, 8, 7, 6] + [5, 6] * 4, True),  # loop after a normal start
        ([5, 6] * 4 + [9], False),  # the loop did not reach the end
        (list(range(16)) * 3, True),  # period 16 = max_period
        (list(range(17)) * 3, False),  # period 17 > max_period
        ([], False),
    ],
)
def test_ends_in_loop_hand_cases(seq, loops):
    assert ends_in_loop(np.array(seq, dtype=np.int64)) is loops
    assert naive_ends_in_loop(seq) is loops  # the hand cases also pin the brute-force reference


@pytest.mark.parametrize("seed", range(6))
def test_ends_in_loop_equals_brute_force_with_default_parameters(seed):
    rng = random.Random(seed)
    for _ in range(200):
        block = [rng.randrange(3) for _ in range(rng.randint(1, 6))]
        seq = [rng.randrange(3) for _ in range(rng.randint(0, 5))] + block * rng.randint(1, 5)
        seq += [rng.randrange(3) for _ in range(rng.choice([0, 0, 1]))]
        assert ends_in_loop(np.array(seq)) == naive_ends_in_loop(seq), seq


def test_ends_in_loop_custom_parameters_hand_cases():
    # min_repeats=2, max_period=4, min_tokens=4
    assert ends_in_loop(np.array([1, 2, 1, 2]), 2, 4, 4)
    assert not ends_in_loop(np.array([1, 2, 1, 2]), 3, 4, 4)
    assert not ends_in_loop(np.array([1, 2, 3, 4, 5] * 3), 3, 4, 4)  # period 5 > max_period


def test_ends_in_loop_equals_brute_force_with_custom_parameters():
    seq = [1, 2, 3, 4, 5] * 2  # period 5, 2 repeats, 10 tokens: a loop for (2, 16, 10)
    assert naive_ends_in_loop(seq, 2, 16, 10)
    # span(3) = 12 > 10 stops the search before period 5 (span 10) is tried
    assert ends_in_loop(np.array(seq), 2, 16, 10)


def test_loop_fraction_hand_values():
    assert loop_fraction([[1, 2] * 6, list(range(12))]) == pytest.approx(0.5)
    assert loop_fraction([]) == 0.0
    assert loop_fraction([""]) == 0.0
    assert loop_fraction(["la " * 10, "la la la", "a b c d e f g h i j"]) == pytest.approx(1 / 3)
    assert loop_fraction([[1, 2, 1, 2]], min_repeats=2, max_period=2, min_tokens=4) == 1.0
    metric = LoopFraction(min_repeats=2, max_period=2, min_tokens=4)
    metric.update([[1, 2, 1, 2], [1, 2, 3]])
    assert metric.compute() == pytest.approx(0.5)


def test_length_limit_fraction_hand_values():
    assert length_limit_fraction([True, False, False, True]) == pytest.approx(0.5)
    assert length_limit_fraction(np.array([True, True, True])) == 0.0
    assert length_limit_fraction([False]) == 1.0
    assert math.isnan(length_limit_fraction([]))  # no flags: nothing measured
    assert length_limit_fraction([1, 0, 0, 0]) == pytest.approx(0.75)
    metric = LengthLimitFraction()
    metric.update([True, False])
    metric.update([False])
    assert metric.compute() == pytest.approx(2 / 3)


# ====================================================== gold-relative metrics
def test_frequency_bands_hand_computed():
    # counts a=8, b=4, c=3, d=2, e=2, f=1 (20): cumulative share before each type in rank order
    # 0, .40 -> head; .60 -> mid; .75, .85, .95 -> tail (tail_mass .25: .75 is not < .75)
    a, b, c, d, e, f = 11, 12, 13, 14, 15, 16
    gold = [[a] * 8 + [b] * 4, [c] * 3 + [d, d, e, e, f]]
    bands = FrequencyBands.from_batch(TokenBatch(gold), n=1, head_mass=0.5, tail_mass=0.25)
    assert bands.keys.tolist() == [a, b, c, d, e, f]
    assert bands.counts.tolist() == [8, 4, 3, 2, 2, 1]
    assert bands.band.tolist() == [0, 0, 1, 2, 2, 2]
    assert bands.tail_keys.tolist() == [d, e]  # f is a gold hapax: left out
    lookup = bands.lookup(np.array([a, c, f, 999], dtype=np.uint64))
    assert lookup.tolist() == [0, 1, 2, 2]  # unseen -> tail
    empty = FrequencyBands.from_batch(TokenBatch([]))
    assert empty.lookup(np.array([1, 2], dtype=np.uint64)).tolist() == [2, 2]
    assert empty.tail_keys.size == 0


@pytest.mark.parametrize("seed", range(8))
def test_frequency_bands_equal_naive_ranking(seed):
    rng = random.Random(seed)
    gold = random_docs(rng, rng.randint(1, 15), rng.randint(2, 30), 20)
    head, tail = rng.choice([(0.5, 0.1), (0.3, 0.3), (0.8, 0.15)])
    bands = FrequencyBands.from_batch(TokenBatch(gold), n=1, head_mass=head, tail_mass=tail)
    expected, counts = naive_bands(gold, head, tail)
    assert dict(zip(bands.keys.tolist(), bands.band.tolist(), strict=True)) == expected
    assert dict(zip(bands.keys.tolist(), bands.counts.tolist(), strict=True)) == dict(counts)
    assert sorted(bands.tail_keys.tolist()) == sorted(k for k, b in expected.items() if b == 2 and counts[k] >= 2)


def test_tail_coverage_hand_values():
    # docstring case: a x14, b x2, c x2; tail_mass .25 -> tail {b, c}
    gold = ["a a a a a a a a a a a a a a b b c c"]
    assert tail_coverage(["a b"], gold=gold, tail_mass=0.25) == pytest.approx(0.5)
    assert tail_coverage(["b c"], gold=gold, tail_mass=0.25) == 1.0
    assert tail_coverage(["a a"], gold=gold, tail_mass=0.25) == 0.0
    assert tail_coverage([], gold=gold, tail_mass=0.25) == 0.0
    assert tail_coverage(["c", "", "b"], gold=gold, tail_mass=0.25) == 1.0
    # a gold set whose tail types are all hapaxes has no tail to cover
    assert tail_coverage(["a b"], gold=["a a a a b"], tail_mass=0.25) == 0.0


@pytest.mark.parametrize("seed", range(8))
def test_tail_coverage_equals_naive(seed):
    rng = random.Random(seed)
    gold = random_docs(rng, 12, rng.randint(5, 40), 25)
    outputs = random_docs(rng, rng.randint(0, 8), 40, 10)
    expected_bands, counts = naive_bands(gold, 0.5, 0.3)
    tail = {k for k, b in expected_bands.items() if b == 2 and counts[k] >= 2}
    seen = {t for d in outputs for t in d}
    expected = len(tail & seen) / len(tail) if tail else 0.0
    assert tail_coverage(outputs, gold=gold, tail_mass=0.3) == pytest.approx(expected, abs=1e-12)
    metric = TailCoverage(FrequencyBands.from_batch(TokenBatch(gold), n=1, tail_mass=0.3))
    metric.update(outputs)
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


def test_tail_coverage_bigrams_hand_values():
    # bigram counts: (1,1) x9, (2,3) x2, (3,2) x1 -> tail (tail_mass .25) holds (2,3) and (3,2); only (2,3) twice
    gold = [[1] * 10, [2, 3, 2, 3]]
    assert tail_coverage([[5, 2, 3]], gold=gold, n=2, tail_mass=0.25) == 1.0
    assert tail_coverage([[3, 2]], gold=gold, n=2, tail_mass=0.25) == 0.0
    assert tail_coverage([[2], [3]], gold=gold, n=2, tail_mass=0.25) == 0.0  # no bigram across outputs


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_js_divergence_equals_hand_formula(seed, n):
    rng = random.Random(seed)
    outputs = random_docs(rng, rng.randint(1, 8), rng.randint(1, 8), 10)
    gold = random_docs(rng, rng.randint(1, 8), rng.randint(1, 8), 10)
    p = Counter(g for d in outputs for g in grams(d, n))
    q = Counter(g for d in gold for g in grams(d, n))
    if not p and not q:
        expected = 0.0
    elif not p or not q:
        expected = 1.0
    else:
        expected = naive_js_bits(p, q)
    assert js_divergence(outputs, gold=gold, n=n) == pytest.approx(expected, abs=1e-9)
    metric = JSDivergence(as_batch_table(gold, n), n)
    metric.update(outputs)
    assert metric.compute() == pytest.approx(expected, abs=1e-9)


def as_batch_table(docs, n):
    """Gold count table built from a naive Counter of the library's own n-gram hashes."""
    hashes = TokenBatch([np.array(d, dtype=np.int64) for d in docs]).ngrams(n)[0]
    counts = Counter(hashes.tolist())
    keys = np.array(sorted(counts), dtype=np.uint64)
    return keys, np.array([counts[k] for k in keys.tolist()], dtype=np.int64)


def test_js_divergence_hand_values():
    assert js_divergence(["a"], gold=["b"]) == pytest.approx(1.0)
    assert js_divergence(["a b"], gold=["b a"]) == pytest.approx(0.0, abs=1e-12)
    # P = (1, 0), Q = (1/2, 1/2): M = (3/4, 1/4)
    expected = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert js_divergence(["a a"], gold=["a b"]) == pytest.approx(expected, abs=1e-12)
    assert js_divergence([], gold=["a"]) == 1.0
    assert js_divergence(["a"], gold=[""]) == 1.0
    assert js_divergence([""], gold=[""]) == 0.0
    uni_p = Counter(t for d in tokens_of(UNICODE_TEXTS[:3]) for t in d)
    uni_q = Counter(t for d in tokens_of(UNICODE_TEXTS[3:]) for t in d)
    assert js_divergence(UNICODE_TEXTS[:3], gold=UNICODE_TEXTS[3:]) == pytest.approx(naive_js_bits(uni_p, uni_q))


# ==================================================== embedding statistics
def naive_effective_rank(x):
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("seed", range(10))
def test_total_variance_and_effective_rank_equal_numpy(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 120)), int(rng.integers(1, 30))
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5.0, size=d) + rng.normal(size=d) * 3
    assert total_variance(x) == pytest.approx(float(np.var(x, axis=0).sum()), rel=1e-9)
    assert effective_rank(x) == pytest.approx(naive_effective_rank(x), rel=1e-6)


def test_total_variance_and_effective_rank_hand_values():
    assert total_variance([[0.0], [2.0]]) == pytest.approx(1.0)
    assert total_variance(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-12)
    assert total_variance(np.zeros((0, 3))) == 0.0
    assert effective_rank([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) == pytest.approx(2.0)
    assert effective_rank([[t, 2 * t] for t in range(6)]) == pytest.approx(1.0, abs=1e-6)  # a line
    assert effective_rank(np.ones((4, 3))) == 0.0  # no spread at all
    assert effective_rank(np.zeros((0, 3))) == 0.0
    # low-rank data embedded in d=8: rank-2 plane
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(50, 2)) @ rng.normal(size=(2, 8))
    assert effective_rank(plane) == pytest.approx(naive_effective_rank(plane), rel=1e-5)


def test_effective_rank_of_rank_one_data_is_one_to_1e9():
    x = np.outer(np.arange(50.0), np.random.default_rng(0).normal(size=8))
    assert naive_effective_rank(x) == pytest.approx(1.0, abs=1e-12)
    assert effective_rank(x) == pytest.approx(1.0, abs=1e-9)


def test_total_variance_with_a_moderate_offset_equals_numpy():
    x = np.random.default_rng(0).normal(size=(50, 3)) + 1e3
    assert total_variance(x) == pytest.approx(float(np.var(x, axis=0).sum()), rel=1e-6)
    assert effective_rank(x) == pytest.approx(naive_effective_rank(x), rel=1e-6)


def test_total_variance_with_a_large_offset_equals_numpy():
    x = np.random.default_rng(0).normal(size=(50, 3)) + 1e6
    assert total_variance(x) == pytest.approx(float(np.var(x, axis=0).sum()), rel=1e-6)


def test_embedding_moments_compute_all_equals_references():
    x = np.random.default_rng(3).normal(size=(60, 6))
    metric = EmbeddingMoments(6)
    metric.update(x)
    out = metric.compute_all()
    assert set(out) == {"vendi", "total_variance", "effective_rank"}
    assert out["vendi"] == pytest.approx(vendi.score_dual(x, q=1, normalize=True), rel=1e-6)
    assert out["total_variance"] == pytest.approx(float(np.var(x, axis=0).sum()), rel=1e-9)
    assert out["effective_rank"] == pytest.approx(naive_effective_rank(x), rel=1e-6)
    assert metric.compute() == out["vendi"]
    vendi_only = EmbeddingMoments(6, full=False)
    vendi_only.update(x)
    assert set(vendi_only.compute_all()) == {"vendi"}
    assert EmbeddingMoments(6).compute_all() == {"vendi": 0.0, "total_variance": 0.0, "effective_rank": 0.0}


def test_tail_mass_equals_hand_mahalanobis():
    rng = np.random.default_rng(5)
    gold = rng.normal(size=(200, 3)) * [1.0, 2.0, 0.5]
    outputs = rng.normal(size=(80, 3)) * 1.5
    mean = gold.mean(axis=0)
    prec = np.linalg.inv(np.cov(gold.T))
    dist = lambda z: np.sqrt(np.sum((z - mean) @ prec * (z - mean), axis=1))  # noqa: E731
    radius = np.quantile(dist(gold), 0.9)
    metric = TailMass(GoldEllipsoid(gold, tail_quantile=0.1))
    metric.update(outputs)
    assert metric.compute() == pytest.approx(np.mean(dist(outputs) > radius), abs=1e-12)
    on_gold = TailMass(GoldEllipsoid(gold, tail_quantile=0.1))
    on_gold.update(gold)
    assert on_gold.compute() == pytest.approx(0.1, abs=0.01)  # q of gold lies outside by construction
    assert TailMass(GoldEllipsoid(gold)).compute() == 0.0


def naive_hashed_features(docs, dim, orders):
    mult, mask = 0x9E3779B97F4A7C15, (1 << 64) - 1
    out = np.zeros((len(docs), dim))
    for i, d in enumerate(docs):
        for n in orders:
            for g in grams(d, n):
                h = g[0] & mask
                for t in g[1:]:
                    h = (h * mult + (t & mask)) & mask
                out[i, (((h * mult) & mask) >> 40) % dim] += 1
    return out


@pytest.mark.parametrize("dim", [1, 7, 256])
@pytest.mark.parametrize("orders", [(1,), (1, 2), (2, 3)])
def test_hashed_ngram_features_equal_naive_buckets(dim, orders):
    rng = random.Random(dim * 10 + len(orders))
    docs = [*random_docs(rng, 9, 6, 12), [], [2**40 + 3, -1]]
    feats = hashed_ngram_features(TokenBatch(docs), dim=dim, orders=orders)
    assert feats.shape == (len(docs), dim)
    np.testing.assert_array_equal(feats, naive_hashed_features(docs, dim, orders))
    expected_totals = [sum(max(len(d) - n + 1, 0) for n in orders) for d in docs]
    np.testing.assert_array_equal(feats.sum(axis=1), expected_totals)
    assert hashed_ngram_features(TokenBatch([]), dim=dim, orders=orders).shape == (0, dim)


# ===================================================== model-side statistics
def test_banded_perplexity_hand_computed():
    bands = FrequencyBands(
        keys=np.array([1, 2, 3], dtype=np.uint64), band=np.array([0, 1, 2], dtype=np.int8), counts=np.array([9, 3, 2])
    )
    stats = ModelStats(
        token_ids=[np.array([1, 1, 2]), np.array([3, 99, 2])],  # 99 unseen in gold -> tail
        nll=[np.array([0.5, 1.5, 2.0]), np.array([3.0, 5.0, np.nan])],  # NaN token skipped
        entropy=[np.array([1.0, 1.0, 2.0]), np.array([4.0, 2.0, 7.0])],
    )
    out = banded_perplexity(stats, bands)
    assert out["gold_ppl"] == pytest.approx(math.exp((0.5 + 1.5 + 2.0 + 3.0 + 5.0) / 5))
    assert out["gold_ppl_head"] == pytest.approx(math.exp(1.0))
    assert out["gold_ppl_mid"] == pytest.approx(math.exp(2.0))
    assert out["gold_ppl_tail"] == pytest.approx(math.exp(4.0))
    assert out["next_token_entropy"] == pytest.approx((1 + 1 + 2 + 4 + 2) / 5)
    # overconfidence: mean NLL minus mean entropy over the same (finite) tokens
    assert out["overconfidence"] == pytest.approx((0.5 + 1.5 + 2.0 + 3.0 + 5.0) / 5 - (1 + 1 + 2 + 4 + 2) / 5)
    metric = GoldLikelihood(bands)
    metric.update(stats)
    assert metric.compute_all() == pytest.approx(out)
    assert metric.compute() == out["gold_ppl"]


def test_banded_perplexity_empty_bands_are_nan():
    bands = FrequencyBands(np.array([1], dtype=np.uint64), np.array([0], dtype=np.int8), np.array([3]))
    out = banded_perplexity(ModelStats([np.array([1, 1])], [np.array([0.0, 2.0])], [np.array([1.0, 3.0])]), bands)
    assert out["gold_ppl"] == pytest.approx(math.e)
    assert out["gold_ppl_head"] == pytest.approx(math.e)
    assert math.isnan(out["gold_ppl_mid"]) and math.isnan(out["gold_ppl_tail"])
    none = banded_perplexity(ModelStats([], [], []), bands)
    assert all(math.isnan(v) for v in none.values())


def test_gold_nll_hand_values():
    metric = GoldNLL()
    assert math.isnan(metric.compute())
    metric.update([-1.0, -3.0, float("nan"), float("inf")])
    metric.update(np.array([-2.0]))
    assert metric.compute() == pytest.approx(2.0)


# ============================================================== base helpers
def test_merge_all_and_metric_protocol():
    a, b = DistinctN(1), DistinctN(1)
    a.update(["a b"])
    b.update(["b c"])
    merged = merge_all([a, b])
    assert merged.compute() == pytest.approx(3 / 4)
    assert a.compute() == 1.0  # merge_all copies the first metric, it does not mutate it
    a.reset()
    assert a.compute() == 0.0 and a.total == 0
    assert set(DistinctN(2).states()) == {"keys", "total"}
    with pytest.raises(ValueError, match="at least one metric"):
        merge_all([])
    with pytest.raises(TypeError, match="cannot merge"):
        DistinctN(1).merge(NGramEntropy(1))
    with pytest.raises(ValueError, match="reduction"):
        Metric().add_state("x", 0, "mean")  # type: ignore[arg-type]


# ============================================================== suites
GOLD_TEXTS = [
    " ".join(f"w{(i * 7 + j * j) % (9 + i % 13)}" for j in range(14 + i % 5)) + (" rare" if i % 6 == 0 else "")
    for i in range(40)
]
OUTPUT_TEXTS = [" ".join(f"w{(i + j) % (3 + i % 8)}" for j in range(4 + i % 17)) for i in range(30)] + [
    "",
    "la " * 20,
    "w1 w2 w3",
    "w1 w2 w3",
    "Über 日本語 🙂",
]


@pytest.fixture(scope="module")
def text_monitor():
    return CollapseMonitor(GoldSet.from_texts(GOLD_TEXTS), prompt_length=4, max_new_tokens=12)


def test_text_suite_equals_references(text_monitor):
    mon = text_monitor
    finished = [i % 3 != 0 for i in range(len(OUTPUT_TEXTS))]
    out = mon.measure(OUTPUT_TEXTS, finished=finished).compute()
    seqs = [s.tolist()[:12] for s in [np.array(x) for x in ids_of(OUTPUT_TEXTS)]]
    for n in (1, 2, 3, 4):
        assert out[f"distinct_{n}"] == pytest.approx(naive_distinct(seqs, n), abs=1e-12)
    for n in (1, 2):
        assert out[f"entropy_{n}"] == pytest.approx(naive_entropy_bits(seqs, n), abs=1e-12)
    assert out["self_bleu"] == pytest.approx(nltk_self_bleu(seqs), abs=1e-9)
    assert out["compression_ratio"] == pytest.approx(gzip_ratio_reference(seqs), abs=1e-12)
    assert out["duplicate_fraction"] == pytest.approx(1 - len({tuple(s) for s in seqs}) / len(seqs))
    counts = sorted(Counter(t for s in seqs for t in s).values(), reverse=True)
    zipf = -linregress(np.log(np.arange(1, len(counts) + 1)), np.log(counts)).slope
    assert out["zipf_coefficient"] == pytest.approx(zipf, abs=1e-9)
    assert out["seq_rep_4"] == pytest.approx(naive_seq_rep(seqs, 4), abs=1e-12)
    assert out["loop_fraction"] == pytest.approx(np.mean([naive_ends_in_loop(s) for s in seqs]))
    assert out["length_limit_fraction"] == pytest.approx(finished.count(False) / len(finished))
    gold_full = ids_of(list(mon.gold.texts))
    for n in (1, 2):
        p = Counter(g for s in seqs for g in grams(s, n))
        q = Counter(g for s in gold_full for g in grams(s, n))
        assert out[f"js_{n}"] == pytest.approx(naive_js_bits(p, q), abs=1e-9)
    # tail types come from the held-out (odd) half of the long-enough gold texts
    split = mon.gold.split(mon.tokenizer, 4, 12)
    tail_half = [gold_full[i] for i in split.indices[1::2]]
    bands, bc = naive_bands(tail_half, 0.5, 0.25)
    tail = {k for k, b in bands.items() if b == 2 and bc[k] >= 2}
    covered = {t for s in seqs for t in s} & tail
    assert out["tail_coverage"] == pytest.approx(len(covered) / len(tail) if tail else 0.0)
    feats = naive_hashed_features(seqs, 256, (1, 2))
    assert out["vendi"] == pytest.approx(vendi.score_dual(feats, q=1, normalize=True), rel=1e-6)
    assert out["mean_length"] == pytest.approx(np.mean([len(s) for s in seqs]))
    assert out["num_outputs"] == len(OUTPUT_TEXTS)
    assert not any(k.startswith("gold_ppl") for k in out)  # no model statistics given


def test_text_suite_without_finished_flags_and_with_model_stats(text_monitor):
    tokens = [np.array(s[:6], dtype=np.int64) for s in ids_of(GOLD_TEXTS[:4])]
    stats = ModelStats(tokens, [np.full(t.size, 1.0) for t in tokens], [np.full(t.size, 2.0) for t in tokens])
    out = text_monitor.measure(OUTPUT_TEXTS[:5], model_stats=stats).compute()
    assert math.isnan(out["length_limit_fraction"])
    assert out["gold_ppl"] == pytest.approx(math.e)
    assert out["next_token_entropy"] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def array_setup():
    rng = np.random.default_rng(11)
    gold = rng.normal(size=(120, 4))
    return CollapseMonitor(GoldSet.from_arrays(gold)), gold, rng.normal(size=(70, 4)) * 0.7


def test_array_suite_equals_references(array_setup):
    mon, gold, x = array_setup
    x = x.copy()
    x[5] = x[6] = x[7]  # two duplicates
    x[8] = 0.0
    loglik = [-1.0, -2.0, float("nan"), -6.0]
    out = mon.measure(x, gold_loglik=loglik).compute()
    assert out["vendi"] == pytest.approx(vendi.score_dual(x, q=1, normalize=True), rel=1e-6)
    assert out["total_variance"] == pytest.approx(float(np.var(x, axis=0).sum()), rel=1e-9)
    assert out["effective_rank"] == pytest.approx(naive_effective_rank(x), rel=1e-6)
    mean, prec = gold.mean(axis=0), np.linalg.inv(np.cov(gold.T))
    dist = lambda z: np.sqrt(np.sum((z - mean) @ prec * (z - mean), axis=1))  # noqa: E731
    assert out["tail_mass"] == pytest.approx(np.mean(dist(x) > np.quantile(dist(gold), 0.9)), abs=1e-12)
    assert out["duplicate_fraction"] == pytest.approx(2 / 70)
    assert out["gold_nll"] == pytest.approx(3.0 / x.shape[1])  # mean NLL per row (3 nats), judged per dimension
    assert out["num_outputs"] == 70
    assert "gold_nll" not in mon.measure(x).compute()


# ============================================================== bad input
TEXT_FUNCTIONS = [
    pytest.param(lambda o: distinct_n(o, 2), id="distinct_n"),
    pytest.param(lambda o: ngram_entropy(o, 1), id="ngram_entropy"),
    pytest.param(self_bleu, id="self_bleu"),
    pytest.param(compression_ratio, id="compression_ratio"),
    pytest.param(duplicate_fraction, id="duplicate_fraction"),
    pytest.param(zipf_coefficient, id="zipf_coefficient"),
    pytest.param(lambda o: seq_rep_n(o, 2), id="seq_rep_n"),
    pytest.param(loop_fraction, id="loop_fraction"),
    pytest.param(lambda o: js_divergence(o, gold=["a b"]), id="js_divergence"),
    pytest.param(lambda o: tail_coverage(o, gold=["a a b b"]), id="tail_coverage"),
]
ARRAY_FUNCTIONS = [
    pytest.param(vendi_score, id="vendi_score"),
    pytest.param(total_variance, id="total_variance"),
    pytest.param(effective_rank, id="effective_rank"),
    pytest.param(lambda x: EmbeddingMoments(2).update(x), id="EmbeddingMoments.update"),
    pytest.param(lambda x: TailMass(GoldEllipsoid(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))).update(x), id="TailMass.update"),
]


@pytest.mark.parametrize("fn", TEXT_FUNCTIONS)
def test_a_single_str_is_rejected(fn):
    with pytest.raises(TypeError, match="not a single str: wrap it in a list"):
        fn("one output, not a list")


@pytest.mark.parametrize("fn", TEXT_FUNCTIONS)
def test_text_metrics_reject_float_matrices_and_mixed_inputs(fn):
    with pytest.raises(TypeError, match="embedding batch"):
        fn(np.ones((3, 4)))
    with pytest.raises(TypeError, match="mixes texts with list"):
        fn(["text", [1, 2]])
    with pytest.raises(TypeError, match="flat sequence of ints"):
        fn([[object()]])


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda n: distinct_n(["a b"], n=n), id="distinct_n"),
        pytest.param(lambda n: ngram_entropy(["a b"], n=n), id="ngram_entropy"),
        pytest.param(lambda n: seq_rep_n(["a b"], n=n), id="seq_rep_n"),
        pytest.param(lambda n: js_divergence(["a"], gold=["a"], n=n), id="js_divergence"),
        pytest.param(lambda n: tail_coverage(["a"], gold=["a a"], n=n), id="tail_coverage"),
        pytest.param(DistinctN, id="DistinctN"),
        pytest.param(NGramEntropy, id="NGramEntropy"),
        pytest.param(SeqRepN, id="SeqRepN"),
        pytest.param(lambda n: JSDivergence(as_batch_table([[1]], 1), n), id="JSDivergence"),
    ],
)
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_bad_n_is_rejected(call, bad):
    with pytest.raises(ValueError, match=rf"n={re.escape(repr(bad))} is invalid: n must be an int >= 1"):
        call(bad)


@pytest.mark.parametrize("bad", [0, -2, 2.0, False, "4"])
def test_bad_max_n_is_rejected(bad):
    with pytest.raises(ValueError, match=rf"self_bleu: max_n={re.escape(repr(bad))} is invalid: max_n must be an int >= 1"):
        self_bleu(["a b", "a b"], max_n=bad)
    with pytest.raises(ValueError, match=r"SelfBLEU: max_n=.* is invalid: max_n must be an int >= 1"):
        SelfBLEU(bad)


def test_numpy_integer_n_is_accepted():
    assert distinct_n(["a b a b"], n=np.int64(2)) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        TokenBatch([np.array([1, 2])]).ngrams(0)


@pytest.mark.parametrize("fn", ARRAY_FUNCTIONS)
def test_array_metrics_reject_non_2d_and_non_finite_input(fn):
    with pytest.raises(ValueError, match=r"must have shape \(n, d\), got \(2, 2, 2\)"):
        fn(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"must have shape \(n, d\), got \(\)"):
        fn(3.0)
    with pytest.raises(ValueError, match="NaN or inf in 1 of 3 rows"):
        fn(np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="NaN or inf in 2 of 2 rows"):
        fn(np.array([[np.inf, 1.0], [1.0, -np.inf]]))


def test_other_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="must be 1-D"):
        distinct_n([np.ones((2, 2), dtype=np.int64)])
    with pytest.raises(TypeError, match="token ids must be integers"):
        distinct_n([np.array([1.5, 2.0])])
    with pytest.raises(TypeError, match="has no encode"):
        distinct_n(["a"], tokenizer=42)
    with pytest.raises(ValueError, match="head_mass"):
        FrequencyBands.from_batch(TokenBatch([[1, 2]]), head_mass=0.95, tail_mass=0.1)
    with pytest.raises(ValueError, match="one array per text"):
        ModelStats([np.array([1])], [], [])
    with pytest.raises(ValueError, match="align token for token"):
        ModelStats([np.array([1, 2])], [np.array([1.0])], [np.array([1.0, 2.0])])


def test_float_token_lists_are_rejected():
    with pytest.raises(TypeError):
        distinct_n([[1.5, 2.7]])


def test_suite_bad_inputs(text_monitor, array_setup):
    with pytest.raises(ValueError, match="finished has 1 flags for 2 outputs"):
        text_monitor.measure(["a b", "c d"], finished=[True])
    with pytest.raises(TypeError, match="gold set holds texts"):
        text_monitor.measure(np.ones((3, 4)))
    with pytest.raises(TypeError, match="single str"):
        text_monitor.measure("one text")
    mon, _, _ = array_setup
    with pytest.raises(ValueError, match="outputs have 3 features but the gold set has 4"):
        mon.measure(np.ones((5, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        mon.measure(np.full((2, 4), np.nan))
    with pytest.raises(TypeError, match="different metrics"):
        text_monitor.new_suite().merge(mon.new_suite())


def test_frechet_distance_equals_scipy_sqrtm_reference():
    from scipy.linalg import sqrtm

    from collapseguard.metrics.embedding import frechet_distance

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    g = rng.normal(size=(300, 5)) + 0.5
    cx, cg = np.cov(x, rowvar=False, bias=True), np.cov(g, rowvar=False, bias=True)
    ref = float(((x.mean(0) - g.mean(0)) ** 2).sum() + np.trace(cx + cg - 2 * sqrtm(cx @ cg).real))
    assert frechet_distance(x, g) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(g, g) == pytest.approx(0.0, abs=1e-9)


def test_array_suite_far_mass_and_frechet_against_hand_computed(array_setup):
    mon, gold, x = array_setup
    mean, prec = gold.mean(axis=0), np.linalg.inv(np.cov(gold.T))
    dist = lambda z: np.sqrt(np.sum((z - mean) @ prec * (z - mean), axis=1))  # noqa: E731
    far = x * 6.0  # most rows well outside the ellipsoid that holds 99% of gold
    out = mon.measure(far).compute()
    assert out["far_mass"] == pytest.approx(np.mean(dist(far) > np.quantile(dist(gold), 0.99)), abs=1e-12)
    assert out["far_mass"] > 0.5
    from collapseguard.metrics.embedding import frechet_distance
    assert out["frechet_distance"] == pytest.approx(frechet_distance(far, gold), rel=1e-6)


# ------------------------------------------------- float32 input (issue 23)
def _embedding_values(x: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    from collapseguard.metrics.embedding import EmbeddingMoments, TailMass, frechet_distance

    ellipsoid = GoldEllipsoid(gold)
    moments = EmbeddingMoments(x.shape[1], center=ellipsoid.mean, gold_cov_sqrt=ellipsoid.cov_sqrt)
    tail = TailMass(ellipsoid)
    half = x.shape[0] // 2
    for part in (x[:half], x[half:]):  # two updates: the states merge as before
        moments.update(part)
        tail.update(part)
    return {"vendi_fn": vendi_score(x), "total_variance_fn": total_variance(x), "effective_rank_fn": effective_rank(x),
            "frechet_fn": frechet_distance(x, gold), **moments.compute_all(), **tail.compute_all()}


@pytest.mark.parametrize("n", [37, 70_000, 140_001])  # within one block, and across several (a ragged last one)
def test_float32_input_gives_the_float64_values(n):
    """Embeddings come from torch as float32: measured block by block in float64, they give the values of the same
    numbers given as float64, to 1e-9 (and float64 input keeps giving what it gave)."""
    rng = np.random.default_rng(n)
    x32 = (rng.normal(size=(n, 24)) * rng.uniform(0.5, 3.0, size=24) + 5.0).astype(np.float32)
    x32[3] = 0.0  # a zero row: kept as zero by the cosine kernel
    gold = rng.normal(size=(400, 24)) + 5.0
    got, want = _embedding_values(x32, gold), _embedding_values(x32.astype(np.float64), gold)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert want["vendi_fn"] == pytest.approx(vendi.score_dual(x32.astype(np.float64)), rel=1e-9)


def test_float32_input_is_measured_without_a_full_float64_copy():
    import tracemalloc

    from collapseguard.metrics.embedding import EmbeddingMoments

    n, d = 400_000, 32  # 51 MB of float32; a float64 copy would take 102 MB
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    metric = EmbeddingMoments(d, center=np.zeros(d))
    tracemalloc.start()
    try:
        vendi_score(x)
        total_variance(x)
        effective_rank(x)
        metric.update(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.35 * n * d * 8, f"peak {peak / 1e6:.0f} MB against a float64 copy's {n * d * 8 / 1e6:.0f} MB"
    with pytest.raises(ValueError, match="holds NaN or inf in 1 of"):
        x[n - 5, 3] = np.inf  # found in the last block too
        vendi_score(x)
