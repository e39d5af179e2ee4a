"""Mergeable states and properties of the core metrics and of the text/array suites.

Merges: update(A) merged with update(B) must compute what update(A + B) computes, for
every class-form metric and for the suites a CollapseMonitor builds. Properties (with
hypothesis): bounds, permutation invariance, duplication monotonicity and shard merges.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collapseguard import CollapseMonitor, GoldSet
from collapseguard.gold.tokenization import SimpleTokenizer
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
    ModelStats,
    NGramEntropy,
    SelfBLEU,
    SeqRepN,
    TailCoverage,
    TailMass,
    ZipfCoefficient,
    compression_ratio,
    distinct_n,
    duplicate_fraction,
    effective_rank,
    js_divergence,
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
from collapseguard.metrics.base import count_table
from collapseguard.metrics.embedding import GoldEllipsoid

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
vendi = pytest.importorskip("vendi_score.vendi")

PROPS = settings(max_examples=50, deadline=None)


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_blas():
    # On a 2-core machine a multi-threaded OpenBLAS eigvalsh of the suites' 256 x 256 Vendi matrix
    # often takes 0.1-0.5 s instead of ~1 ms; one thread keeps these tests fast. Values are unaffected.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        yield

# ------------------------------------------------------------------ helpers
GOLD_DOCS = [[1, 1, 1, 2, 3, 4, 4, 5], [1, 2, 2, 6, 7, 7, 8], [1, 1, 3, 9, 9, 5, 0], [2, 4, 6, 8, 0]]
GOLD_BATCH = TokenBatch([np.array(d) for d in GOLD_DOCS])
BANDS = FrequencyBands.from_batch(GOLD_BATCH, n=1, tail_mass=0.3)
TABLES = {n: count_table(GOLD_BATCH.ngrams(n)[0]) for n in (1, 2)}
ELLIPSOID = GoldEllipsoid(np.random.default_rng(0).normal(size=(60, 3)))


# Effective rank takes square roots of eigenvalues; for rank-deficient data the round-off in the zero
# eigenvalues (~1e-16) becomes ~1e-8 singular values, so two exact-in-state merges agree to ~1e-7 only.
# (That is a numerical weakness, reported and pinned in test_metrics_reference.py.)
LOOSE = {"effective_rank": 1e-6}


def assert_same(got, expected, tol=1e-12, what=""):
    """Equal up to tol (relative for large values); NaN equals NaN; dicts key by key."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), what
        for k in expected:
            assert_same(got[k], expected[k], LOOSE.get(k, tol), f"{what}[{k}]")
        return
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), what
        return
    assert abs(got - expected) <= tol * max(1.0, abs(expected)), f"{what}: {got!r} != {expected!r}"


def value(metric):
    return metric.compute_all() if hasattr(metric, "compute_all") else metric.compute()


def fresh(metric):
    out = copy.deepcopy(metric)
    out.reset()
    return out


def random_docs(rng, m, vocab=6, max_len=12):
    return [[rng.randrange(vocab) for _ in range(rng.randint(0, max_len))] for _ in range(m)]


def random_stats(rng, m):
    ids = [np.array([rng.randrange(11) for _ in range(rng.randint(0, 6))], dtype=np.int64) for _ in range(m)]
    nll = [np.array([rng.choice([rng.uniform(0, 5), float("nan")]) for _ in t]) for t in ids]
    ent = [np.array([rng.uniform(0, 3) for _ in t]) for t in ids]
    return ModelStats(ids, nll, ent)


def concat_stats(a, b):
    return ModelStats([*a.token_ids, *b.token_ids], [*a.nll, *b.nll], [*a.entropy, *b.entropy])


# metric factory, random batch maker (rng, m) -> batch, concatenation of two batches
TEXT = (lambda rng, m: random_docs(rng, m), lambda a, b: a + b)
FLAGS = (lambda rng, m: [rng.random() < 0.5 for _ in range(m)], lambda a, b: a + b)
ARRAY = (lambda rng, m: np.random.default_rng(rng.randrange(10**6)).normal(size=(m, 3)) * rng.uniform(0.5, 2),
         lambda a, b: np.vstack([a, b]))
STATS = (random_stats, concat_stats)

CLASS_METRICS = [
    pytest.param(lambda: DistinctN(1), TEXT, id="DistinctN-1"),
    pytest.param(lambda: DistinctN(3), TEXT, id="DistinctN-3"),
    pytest.param(lambda: NGramEntropy(1), TEXT, id="NGramEntropy-1"),
    pytest.param(lambda: NGramEntropy(2), TEXT, id="NGramEntropy-2"),
    pytest.param(SelfBLEU, TEXT, id="SelfBLEU-4"),
    pytest.param(lambda: SelfBLEU(2), TEXT, id="SelfBLEU-2"),
    pytest.param(CompressionRatio, TEXT, id="CompressionRatio"),
    pytest.param(DuplicateFraction, TEXT, id="DuplicateFraction"),
    pytest.param(ZipfCoefficient, TEXT, id="ZipfCoefficient"),
    pytest.param(lambda: SeqRepN(2), TEXT, id="SeqRepN-2"),
    pytest.param(lambda: SeqRepN(4), TEXT, id="SeqRepN-4"),
    pytest.param(LoopFraction, TEXT, id="LoopFraction"),
    pytest.param(lambda: LoopFraction(2, 3, 4), TEXT, id="LoopFraction-custom"),
    pytest.param(LengthLimitFraction, FLAGS, id="LengthLimitFraction"),
    pytest.param(lambda: TailCoverage(BANDS), TEXT, id="TailCoverage"),
    pytest.param(lambda: JSDivergence(TABLES[1], 1), TEXT, id="JSDivergence-1"),
    pytest.param(lambda: JSDivergence(TABLES[2], 2), TEXT, id="JSDivergence-2"),
    pytest.param(lambda: EmbeddingMoments(3), ARRAY, id="EmbeddingMoments"),
    pytest.param(lambda: EmbeddingMoments(3, full=False), ARRAY, id="EmbeddingMoments-vendi"),
    pytest.param(lambda: TailMass(ELLIPSOID), ARRAY, id="TailMass"),
    pytest.param(lambda: GoldLikelihood(BANDS), STATS, id="GoldLikelihood"),
    pytest.param(GoldNLL, (lambda rng, m: [rng.choice([-rng.uniform(0, 9), float("nan")]) for _ in range(m)],
                           lambda a, b: a + b), id="GoldNLL"),
]


# ========================================================== class-form merges
@pytest.mark.parametrize(("factory", "data"), CLASS_METRICS)
@pytest.mark.parametrize("sizes", [(7, 9), (0, 5), (5, 0), (1, 1), (0, 0), (12, 3)])
def test_merge_of_two_updates_equals_one_update_of_both(factory, data, sizes):
    make, cat = data
    rng = random.Random(sum(sizes) * 31 + sizes[0])
    a_data, b_data = make(rng, sizes[0]), make(rng, sizes[1])
    whole = factory()
    whole.update(cat(a_data, b_data))
    a, b = factory(), factory()
    a.update(a_data)
    b.update(b_data)
    b_copy = copy.deepcopy(b)
    assert_same(value(a.merge(b)), value(whole), what="a.merge(b)")
    # b is left as it was, and the other merge order gives the same value
    assert_same(value(b), value(b_copy))
    a2 = factory()
    a2.update(a_data)
    assert_same(value(b.merge(a2)), value(whole), what="b.merge(a)")


@pytest.mark.parametrize(("factory", "data"), CLASS_METRICS)
def test_sequential_updates_and_merge_all_equal_one_update(factory, data):
    make, cat = data
    rng = random.Random(5)
    parts = [make(rng, k) for k in (4, 0, 6, 3)]
    whole_data = functools.reduce(cat, parts)
    whole = factory()
    whole.update(whole_data)
    sequential = factory()
    shards = []
    for part in parts:
        sequential.update(part)
        shard = factory()
        shard.update(part)
        shards.append(shard)
    assert_same(value(sequential), value(whole), what="sequential")
    assert_same(value(merge_all(shards)), value(whole), what="merge_all")
    # reset brings a metric back to its fresh value
    assert_same(value(fresh(whole)), value(factory()), what="reset")


@pytest.mark.parametrize(("factory", "data"), CLASS_METRICS)
def test_merge_with_an_empty_metric_changes_nothing(factory, data):
    make, _ = data
    metric = factory()
    metric.update(make(random.Random(9), 8))
    before = value(metric)
    assert_same(value(metric.merge(factory())), before)
    assert_same(value(factory().merge(metric)), before)


def test_merging_metrics_with_different_settings_is_rejected():
    a, b = DistinctN(2), DistinctN(1)
    a.update(["a b c"])
    b.update(["a b c"])
    with pytest.raises((TypeError, ValueError)):
        a.merge(b)


# ================================================================ suites
GOLD_TEXTS = [
    " ".join(f"t{(i * 5 + j * 3) % (7 + i % 11)}" for j in range(12 + i % 6)) + (" zz" if i % 5 == 0 else "")
    for i in range(36)
]


@functools.cache
def text_monitor():
    return CollapseMonitor(GoldSet.from_texts(GOLD_TEXTS), prompt_length=3, max_new_tokens=10)


@functools.cache
def array_monitor():
    return CollapseMonitor(GoldSet.from_arrays(np.random.default_rng(1).normal(size=(80, 3))))


def random_texts(rng, m):
    words = ["t1", "t2", "t3", "zz", "Über", "日本", "🙂", "la"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 14))) for _ in range(m)]


def text_model_stats(rng, m):
    ids = [np.array(SimpleTokenizer().encode(t)[:5], dtype=np.int64) for t in rng.sample(GOLD_TEXTS, m)]
    return ModelStats(ids, [np.array([rng.uniform(0, 4) for _ in t]) for t in ids],
                      [np.array([rng.uniform(0, 2) for _ in t]) for t in ids])


@pytest.mark.parametrize("split", [0, 1, 6, 13, 20])
@pytest.mark.parametrize("extras", [False, True])
def test_text_suite_merge_equals_whole(split, extras):
    mon = text_monitor()
    rng = random.Random(split)
    texts = random_texts(rng, 20)
    texts[3] = texts[4]  # a duplicate
    texts[5] = "la " * 15  # a loop
    flags = [rng.random() < 0.7 for _ in texts] if extras else None
    stats = text_model_stats(rng, 6) if extras else None
    st_a = ModelStats(stats.token_ids[:2], stats.nll[:2], stats.entropy[:2]) if extras else None
    st_b = ModelStats(stats.token_ids[2:], stats.nll[2:], stats.entropy[2:]) if extras else None
    whole = mon.measure(texts, finished=flags, model_stats=stats)
    a = mon.measure(texts[:split], finished=flags[:split] if extras else None, model_stats=st_a)
    b = mon.measure(texts[split:], finished=flags[split:] if extras else None, model_stats=st_b)
    merged = a.copy().merge(b)
    assert_same(merged.compute(), whole.compute())
    assert merged.num_outputs == whole.num_outputs == 20
    assert a.num_outputs == split  # copy() left a untouched
    # merging into a fresh suite from new_suite() gives the same again
    assert_same(mon.new_suite().merge(a).merge(b).compute(), whole.compute())


@pytest.mark.parametrize("split", [0, 1, 17, 40])
def test_array_suite_merge_equals_whole(split):
    mon = array_monitor()
    rng = np.random.default_rng(split)
    x = rng.normal(size=(40, 3))
    x[10] = x[11]
    loglik = rng.normal(size=9) - 3
    whole = mon.measure(x, gold_loglik=loglik)
    a = mon.measure(x[:split], gold_loglik=loglik[:4])
    b = mon.measure(x[split:], gold_loglik=loglik[4:])
    assert_same(a.copy().merge(b).compute(), whole.compute())
    assert_same(b.copy().merge(a).compute(), whole.compute())
    no_nll = mon.measure(x[:split]).merge(mon.measure(x[split:])).compute()
    assert "gold_nll" not in no_nll
    assert_same(no_nll, {k: v for k, v in whole.compute().items() if k != "gold_nll"})


@PROPS
@given(st.lists(st.sampled_from(["t1 t2", "zz zz zz", "", "Über 🙂", "t3 la la la la la la la la la"]), max_size=14),
       st.data())
def test_text_suite_shards_merge_to_whole(texts, data):
    mon = text_monitor()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(texts)), min_size=1, max_size=3)))
    bounds = [0, *cuts, len(texts)]
    shards = [mon.measure(texts[i:j]) for i, j in itertools.pairwise(bounds)]
    merged = shards[0].copy()
    for s in shards[1:]:
        merged.merge(s)
    assert_same(merged.compute(), mon.measure(texts).compute())


# ====================================================== hypothesis strategies
token_docs = st.lists(st.lists(st.integers(0, 5), max_size=10), max_size=12)
nonempty_docs = st.lists(st.lists(st.integers(0, 5), max_size=10), min_size=1, max_size=12)
unicode_texts = st.lists(st.text(st.characters(codec="utf-8"), max_size=24), max_size=8)
matrices = st.integers(1, 25).flatmap(
    lambda n: st.integers(1, 6).flatmap(
        lambda d: st.lists(
            st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, -3.0]), min_size=d, max_size=d), min_size=n, max_size=n
        )
    )
).map(lambda rows: np.array(rows, dtype=np.float64))


def nltk_self_bleu(docs, max_n=4):
    if len(docs) < 2:
        return 0.0
    sm = nltk_bleu.SmoothingFunction().method1
    w = (1.0 / max_n,) * max_n
    return sum(nltk_bleu.sentence_bleu(docs[:i] + docs[i + 1 :], d, weights=w, smoothing_function=sm)
               for i, d in enumerate(docs)) / len(docs)


def within01(x):
    return -1e-12 <= x <= 1 + 1e-12


# ================================================================= bounds
@PROPS
@given(token_docs)
def test_unit_interval_bounds(docs):
    for name, v in {
        "distinct_1": distinct_n(docs, 1), "distinct_3": distinct_n(docs, 3), "self_bleu": self_bleu(docs),
        "self_bleu_2": self_bleu(docs, max_n=2), "duplicate": duplicate_fraction(docs),
        "seq_rep": seq_rep_n(docs, 2), "loop": loop_fraction(docs), "js": js_divergence(docs, gold=GOLD_DOCS),
        "js_2": js_divergence(docs, gold=GOLD_DOCS, n=2), "tail": tail_coverage(docs, gold=GOLD_DOCS, tail_mass=0.3),
    }.items():
        assert within01(v), (name, v)


@PROPS
@given(token_docs)
def test_entropy_zipf_and_compression_bounds(docs):
    for n in (1, 2):
        total = sum(max(len(d) - n + 1, 0) for d in docs)
        h = ngram_entropy(docs, n)
        assert -1e-12 <= h <= (math.log2(total) if total else 0.0) + 1e-9
    assert math.isfinite(zipf_coefficient(docs))
    cr = compression_ratio(docs)
    assert cr >= 0.0
    assert (cr > 0.0) if any(docs) else cr == 0.0  # no tokens at all: 0.0


@PROPS
@given(matrices)
def test_vendi_bounds_and_reference(x):
    v = vendi_score(x)
    nonzero = x[np.any(x != 0, axis=1)]
    if nonzero.size:
        assert v == pytest.approx(vendi.score_dual(x, q=1, normalize=True), rel=1e-6, abs=1e-6)
        distinct = len({tuple(r) for r in nonzero})
        assert v >= 1.0 - 1e-9
        if nonzero.shape[0] == x.shape[0]:
            # without zero rows the kernel's eigenvalues sum to 1; a zero row leaves them summing to
            # less and (as in the reference package) can push the score above the distinct-row count
            assert v <= min(distinct, x.shape[1]) + 1e-6
    else:
        assert v == 1.0  # all-zero rows: like the reference package
    assert total_variance(x) >= 0.0
    assert 0.0 <= effective_rank(x) <= x.shape[1] + 1e-6


@PROPS
@given(unicode_texts)
def test_unicode_texts_equal_references(texts):
    tokens = [SimpleTokenizer().tokenize(t) for t in texts]
    assert self_bleu(texts) == pytest.approx(nltk_self_bleu(tokens), abs=1e-9)
    grams = [tuple(d[i : i + 2]) for d in tokens for i in range(len(d) - 1)]
    assert distinct_n(texts, 2) == pytest.approx(len(set(grams)) / len(grams) if grams else 0.0, abs=1e-12)
    assert duplicate_fraction(texts) == pytest.approx(
        1 - len({tuple(d) for d in tokens}) / len(texts) if texts else 0.0, abs=1e-12
    )


# ==================================================== permutation invariance
SET_LEVEL = {
    "distinct_2": lambda d: distinct_n(d, 2),
    "entropy_2": lambda d: ngram_entropy(d, 2),
    "self_bleu": self_bleu,
    "compression_ratio": compression_ratio,
    "duplicate_fraction": duplicate_fraction,
    "zipf": zipf_coefficient,
    "seq_rep_2": lambda d: seq_rep_n(d, 2),
    "loop_fraction": lambda d: loop_fraction(d, 2, 3, 4),
    "js_1": lambda d: js_divergence(d, gold=GOLD_DOCS),
    "tail_coverage": lambda d: tail_coverage(d, gold=GOLD_DOCS, tail_mass=0.3),
}


@PROPS
@given(token_docs, st.randoms(use_true_random=False))
def test_text_metrics_are_permutation_invariant(docs, rnd):
    shuffled = list(docs)
    rnd.shuffle(shuffled)
    for name, fn in SET_LEVEL.items():
        assert_same(fn(shuffled), fn(docs), what=name)


@PROPS
@given(matrices, st.randoms(use_true_random=False))
def test_array_metrics_are_row_permutation_invariant(x, rnd):
    perm = list(range(x.shape[0]))
    rnd.shuffle(perm)
    y = x[perm]
    assert_same(vendi_score(y), vendi_score(x), tol=1e-9, what="vendi")
    assert_same(total_variance(y), total_variance(x), tol=1e-9, what="total_variance")
    assert effective_rank(y) == pytest.approx(effective_rank(x), rel=1e-6, abs=1e-6)


@PROPS
@given(token_docs, token_docs)
def test_js_divergence_is_symmetric(a, b):
    assert_same(js_divergence(a, gold=b), js_divergence(b, gold=a), tol=1e-12)
    if any(len(d) for d in a):
        assert js_divergence(a, gold=a) == pytest.approx(0.0, abs=1e-12)


# =================================================== duplication monotonicity
@PROPS
@given(nonempty_docs, st.data())
def test_appending_a_copy_never_adds_diversity(docs, data):
    more = [*docs, docs[data.draw(st.integers(0, len(docs) - 1))]]
    for n in (1, 2, 3):
        assert distinct_n(more, n) <= distinct_n(docs, n) + 1e-12
    assert duplicate_fraction(more) >= duplicate_fraction(docs) - 1e-12


@PROPS
@given(nonempty_docs, st.data())
def test_appending_a_copy_of_a_long_enough_output_never_lowers_self_bleu(docs, data):
    # With method1 smoothing, an output shorter than max_n scores < 1 even against its own copy,
    # so the property only holds for copies of outputs with at least max_n tokens
    # (see test_self_bleu_copy_of_a_short_output_can_lower_it_as_in_nltk).
    max_n = data.draw(st.integers(1, 4))
    candidates = [d for d in docs if len(d) >= max_n]
    if not candidates:
        candidates = [[0] * max_n]
        docs = [*docs, candidates[0]]
    more = [*docs, data.draw(st.sampled_from(candidates))]
    assert self_bleu(more, max_n=max_n) >= self_bleu(docs, max_n=max_n) - 1e-12


def test_self_bleu_copy_of_a_short_output_can_lower_it_as_in_nltk():
    docs = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [8, 9]]
    more = [*docs, [8, 9]]
    assert self_bleu(more) < self_bleu(docs)
    assert self_bleu(docs) == pytest.approx(nltk_self_bleu(docs), abs=1e-12)
    assert self_bleu(more) == pytest.approx(nltk_self_bleu(more), abs=1e-12)


def test_vendi_copy_of_an_under_represented_row_can_raise_it_as_in_the_reference():
    # two orthogonal directions weighted 2:1 -> exp(H(2/3, 1/3)) ~ 1.89; a copy of the minority evens them to 2
    x = np.eye(2)[[0, 0, 1]]
    more = np.eye(2)[[0, 0, 1, 1]]
    assert vendi_score(more) > vendi_score(x)
    assert vendi_score(x) == pytest.approx(vendi.score_dual(x, q=1, normalize=True), abs=1e-9)
    assert vendi_score(more) == pytest.approx(vendi.score_dual(more, q=1, normalize=True), abs=1e-9)


@PROPS
@given(matrices, st.data())
def test_vendi_under_duplication(x, data):
    # copying every row once changes nothing; copying one row never exceeds the number of distinct rows
    assert vendi_score(np.vstack([x, x])) == pytest.approx(vendi_score(x), rel=1e-9, abs=1e-9)
    i = data.draw(st.integers(0, x.shape[0] - 1))
    more = np.vstack([x, x[i : i + 1]])
    if np.all(np.any(x != 0, axis=1)):
        assert vendi_score(more) <= len({tuple(r) for r in x}) + 1e-6


@PROPS
@given(st.lists(st.integers(0, 6), min_size=1, max_size=8))
def test_vendi_of_orthogonal_rows_falls_when_the_most_frequent_row_is_copied(counts):
    # one-hot rows, counts[k] copies of direction k: Vendi = exp(H(counts / sum)); a copy of the
    # majority direction moves mass toward the max, so it can only lower the entropy
    if not any(counts):
        counts = [*counts, 1]
    rows = np.repeat(np.eye(len(counts)), counts, axis=0)
    p = np.array([c for c in counts if c]) / sum(counts)
    assert vendi_score(rows) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    top = np.eye(len(counts))[[int(np.argmax(counts))]]
    assert vendi_score(np.vstack([rows, top])) <= vendi_score(rows) + 1e-9


# ========================================================== shard merges
@PROPS
@given(token_docs, st.data())
def test_text_metric_shards_merge_to_whole(docs, data):
    cut = data.draw(st.integers(0, len(docs)))
    for factory in (lambda: DistinctN(2), lambda: NGramEntropy(1), SelfBLEU, CompressionRatio, DuplicateFraction,
                    ZipfCoefficient, lambda: SeqRepN(2), LoopFraction, lambda: TailCoverage(BANDS),
                    lambda: JSDivergence(TABLES[2], 2)):
        a, b, whole = factory(), factory(), factory()
        a.update(docs[:cut])
        b.update(docs[cut:])
        whole.update(docs)
        assert_same(a.merge(b).compute(), whole.compute(), what=type(whole).__name__)


@PROPS
@given(matrices, st.data())
def test_array_metric_shards_merge_to_whole(x, data):
    cut = data.draw(st.integers(0, x.shape[0]))
    d = x.shape[1]
    for factory in (lambda: EmbeddingMoments(d), lambda: EmbeddingMoments(d, full=False)):
        a, b, whole = factory(), factory(), factory()
        a.update(x[:cut])
        b.update(x[cut:])
        whole.update(x)
        got, expected = a.merge(b).compute_all(), whole.compute_all()
        assert got["vendi"] == pytest.approx(expected["vendi"], rel=1e-9, abs=1e-9)
        if "total_variance" in expected:
            assert got["total_variance"] == pytest.approx(expected["total_variance"], rel=1e-9, abs=1e-12)
            # sqrt of clipped eigenvalues: rank-deficient data amplifies round-off to ~1e-8
            assert got["effective_rank"] == pytest.approx(expected["effective_rank"], rel=1e-6, abs=1e-6)
