"""CollapseMonitor and the three detectors on constructed healthy and collapsed output sets."""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest

from collapseguard import CollapseMonitor, CollapseWarning, GoldSet, Thresholds
from collapseguard.demos.data import train_gold_split
from collapseguard.detection.alerts import alert_warnings
from collapseguard.detection.detectors import Signal
from collapseguard.gold.tokenization import SimpleTokenizer
from collapseguard.metrics import ModelStats

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


@pytest.fixture(scope="module")
def corpus():
    train, gold = train_gold_split()
    return train, GoldSet.from_texts(gold)


@pytest.fixture()
def monitor(corpus):
    return CollapseMonitor(corpus[1], tokenizer=SimpleTokenizer(), prompt_length=16, max_new_tokens=32)


def continuations(texts, start=16, length=32):
    tok = SimpleTokenizer()
    return [" ".join(tok.tokenize(t)[start:start + length]) for t in texts]


def test_gold_reproducing_model_is_healthy(monitor):
    # a model that reproduces gold: it continues each gold prompt with the gold continuation itself
    outputs = list(monitor.split.continuations[:64])
    result = monitor.check(outputs, step=0)
    assert result.alerts == []
    assert result.health == pytest.approx(1.0)


def test_fresh_human_text_is_healthy(monitor, corpus):
    result = monitor.check(continuations(corpus[0][:64]), step=0)
    assert not result.critical
    assert result.health > 0.75


def test_random_init_model_is_healthy(monitor):
    # a random-init model emits uniformly random tokens of the vocabulary
    vocab = np.unique(np.concatenate(monitor.split.full))
    rng = np.random.default_rng(0)
    outputs = [rng.choice(vocab, 32) for _ in range(64)]
    result = monitor.check(outputs, step=0)
    assert result.alerts == []
    assert result.health > 0.95


def test_few_repeated_sentences_are_critical_in_every_phase(monitor):
    sentences = ["The value is returned.", "This is not allowed here."]
    outputs = [" ".join([sentences[i % 2]] * 6) for i in range(64)]
    first = monitor.check(outputs, step=0)
    # a bare monitor's first check has nothing to compare with: only the late phase (never healthy) judges it
    assert {a.phase for a in first.alerts} == {"late"} and first.critical
    monitor.history.clear()
    monitor.check(list(monitor.split.continuations[:64]), step=0)  # a healthy check first: now it compares
    result = monitor.check(outputs, step=1)
    assert result.critical
    assert {a.phase for a in result.alerts if a.severity == "critical"} == {"early", "mid", "late"}
    assert result.health < 0.1
    loop = next(a for a in result.alerts if a.metric == "loop_fraction")
    assert loop.value == 1.0 and loop.reference == 0.0 and loop.threshold == 0.35
    assert "loop_fraction is 1" in loop.message and "roll back" in loop.message


def test_same_output_for_every_prompt_is_late_phase(monitor, corpus):
    one = continuations(corpus[0][:1])[0]
    result = monitor.check([one] * 64, step=0)
    dup = next(a for a in result.alerts if a.metric == "duplicate_fraction")
    assert dup.phase == "late" and dup.severity == "critical"
    assert dup.value == pytest.approx(63 / 64)


def test_length_limit_hint_separates_setup_fault_from_collapse(corpus):
    """The EOS/padding hint needs outputs that run to the limit where gold texts themselves end within it."""
    from collapseguard.demos.corpora import sentences

    short = GoldSet.from_texts([s for p in corpus[0] for s in sentences(p)][:400])  # sentences end early
    monitor = CollapseMonitor(short, tokenizer=SimpleTokenizer(), prompt_length=8, max_new_tokens=32)
    assert monitor.reference(64)["length_limit_fraction"] < 0.5
    outputs = [[7, 8] * 16 for _ in range(64)]
    result = monitor.check(outputs, step=0, finished=[False] * 64)
    late = [a for a in result.alerts if a.phase == "late"]
    assert late and all("EOS masked out of the loss" in a.message for a in late)
    result = monitor.check(outputs, step=1, finished=[True] * 64)
    assert all("EOS masked" not in a.message for a in result.alerts)


def test_length_limit_hint_is_silent_where_gold_runs_past_the_limit(corpus):
    """Gold paragraphs longer than prompt + max_new_tokens run to the limit too: outputs that do so are healthy."""
    monitor = CollapseMonitor(corpus[1], tokenizer=SimpleTokenizer(), prompt_length=16, max_new_tokens=12)
    assert monitor.reference(64)["length_limit_fraction"] > 0.8
    result = monitor.check([[7, 8] * 6 for _ in range(64)], step=0, finished=[False] * 64)
    late = [a for a in result.alerts if a.phase == "late"]
    assert late and all("EOS masked" not in a.message for a in late)


def test_tail_loss_is_seen_when_only_rare_tokens_vanish(monitor, corpus):
    """Outputs of human text with every gold-tail token removed: an early-phase alert alone."""
    bands = monitor.measurer.context.tail_bands
    tail = set(bands.tail_keys.tolist())
    clean = []
    for seq in monitor.split.continuations[:64]:
        kept = [t for t in seq.tolist() if t not in tail]
        clean.append(np.asarray(kept, dtype=np.int64))
    monitor.check(list(monitor.split.continuations[:64]), step=0)  # the run's healthy start
    result = monitor.check(clean, step=1)
    assert result.metrics["tail_coverage"] == 0.0
    assert [a.phase for a in result.alerts] == ["early"]


def test_variance_shrinkage_on_embeddings():
    rng = np.random.default_rng(0)
    gold = GoldSet.from_arrays(rng.normal(size=(500, 8)))
    monitor = CollapseMonitor(gold)
    healthy = monitor.check(rng.normal(size=(200, 8)), step=0)
    assert healthy.alerts == [] and healthy.health > 0.85
    narrow = monitor.check(0.5 * rng.normal(size=(200, 8)), step=1)
    phases = {(a.phase, a.metric, a.severity) for a in narrow.alerts}
    assert ("mid", "total_variance", "critical") in phases  # variance 0.25 of gold
    assert ("early", "tail_mass", "critical") in phases  # no sample reaches the gold tail


def test_model_side_tail_rise_with_head_held_is_early_phase(monitor):
    seqs = list(monitor.split.continuations[:64])
    bands = monitor.measurer.context.bands

    def stats(tail_nll):
        ids = seqs
        nll = [np.where(bands.lookup(s.astype(np.uint64)) == 2, tail_nll, 2.0) for s in ids]
        return ModelStats(ids, nll, [np.full(s.size, 2.0) for s in ids])  # about as sure as it is right

    first = monitor.check(seqs, step=0, model_stats=stats(4.0))
    assert first.alerts == []
    later = monitor.check(seqs, step=1, model_stats=stats(4.0 + math.log(1.5)))  # tail ppl x1.5
    alert = next(a for a in later.alerts if a.metric == "gold_ppl_tail")
    assert alert.phase == "early" and alert.severity == "warn"
    assert alert.value == pytest.approx(1.5 * math.exp(4.0))
    assert alert.reference == pytest.approx(math.exp(4.0))
    assert "specific to rare tokens" in alert.message


def test_patience_delays_alerts(corpus):
    monitor = CollapseMonitor(corpus[1], Thresholds(alert_patience=2), prompt_length=16, max_new_tokens=32)
    bad = ["same words again and again"] * 64
    assert monitor.check(bad, step=0).alerts == []
    assert monitor.check(bad, step=1).critical


def test_trend_warns_before_the_bound(monitor):
    full = list(monitor.split.continuations[:64])
    # successively cut outputs to a shrinking vocabulary: distinct-2 falls at every check
    for step, keep in enumerate((64, 57, 50)):  # distinct-2 at about 100%, 89%, 78% of gold
        pool = full[:keep]
        outputs = [pool[i % keep] for i in range(64)]
        result = monitor.check(outputs, step=step)
    assert any("over the last 3 checks" in a.message for a in result.alerts)


def test_one_console_line_per_alert_by_default(monitor, caplog):
    """An alert prints once: the collapseguard log line, with no CollapseWarning beside it unless asked for."""
    bad = ["same words again and again"] * 64
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, "collapseguard"):
        warnings.simplefilter("always")
        result = monitor.check(bad, step=0)
    assert result.alerts and not [w for w in caught if issubclass(w.category, CollapseWarning)]
    assert len([r for r in caplog.records if "[collapseguard" in r.getMessage()]) == len(result.alerts)


def test_warnings_once_per_new_alert_and_every_alert_logged(monitor, caplog):
    bad = ["same words again and again"] * 64
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, "collapseguard"), \
            alert_warnings():
        warnings.simplefilter("always")
        first = monitor.check(bad, step=0)
        n_first = len([w for w in caught if issubclass(w.category, CollapseWarning)])
        monitor.check(bad, step=1)
        n_second = len([w for w in caught if issubclass(w.category, CollapseWarning)])
    assert n_first == len(first.alerts) > 0
    assert n_second == n_first  # persisting alerts do not warn again
    logged = [r for r in caplog.records if r.name == "collapseguard"]
    assert len(logged) == 2 * len(first.alerts)  # but every alert reaches the log, at every check
    assert {r.levelno for r in logged} == {logging.ERROR}


def test_too_few_outputs_are_reported_not_judged(monitor):
    result = monitor.check(["a b c"] * 3, step=0)
    assert not result.judged and result.alerts == []


def test_state_dict_round_trip_and_gold_mismatch(monitor, corpus):
    monitor.check(["same words again and again"] * 64, step=0)
    state = monitor.state_dict()
    again = CollapseMonitor(corpus[1], tokenizer=SimpleTokenizer(), prompt_length=16, max_new_tokens=32)
    again.load_state_dict(state)
    assert again.history == monitor.history
    other = CollapseMonitor(GoldSet.from_texts(corpus[0][:50]), prompt_length=16, max_new_tokens=32)
    with pytest.raises(ValueError, match="another gold set"):
        other.load_state_dict(state)


def _monitor_logs(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "collapseguard" and r.levelno >= logging.WARNING]


def test_resume_with_the_same_thresholds_is_silent(monitor, corpus, caplog):
    monitor.check(["same words again and again"] * 64, step=0)
    # through JSON, as a trail or a checkpoint's JSON side-car stores it: ints and floats compare equal after it
    state = json.loads(json.dumps(monitor.state_dict()))
    again = CollapseMonitor(corpus[1], thresholds="balanced", tokenizer=SimpleTokenizer(), prompt_length=16,
                            max_new_tokens=32)
    caplog.clear()  # the check's own alert lines
    with caplog.at_level(logging.WARNING, "collapseguard"):
        again.load_state_dict(state)
    assert _monitor_logs(caplog) == []
    assert json.dumps(again.history) == json.dumps(monitor.history)  # (NaN metrics: compare their JSON)


def test_resume_with_other_thresholds_names_each_change_and_keeps_the_current(monitor, corpus, caplog):
    monitor.check(["same words again and again"] * 64, step=0)
    state = monitor.state_dict()
    mine = CollapseMonitor(corpus[1], thresholds={"ppl_rise_warn": 1.3, "alert_patience": 2}, tokenizer=SimpleTokenizer(),
                           prompt_length=16, max_new_tokens=32)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "collapseguard"):
        mine.load_state_dict(state)
    (message,) = _monitor_logs(caplog)
    assert "ppl_rise_warn 1.15 (saved) -> 1.3 (current)" in message
    assert "patience 1 (saved) -> 2 (current)" in message
    assert "current thresholds are used" in message
    assert "diversity_warn" not in message  # unchanged fields are not listed
    # the user's configuration wins; the history is restored all the same
    assert (mine.thresholds.ppl_rise_warn, mine.thresholds.alert_patience) == (1.3, 2)
    assert mine.history == monitor.history


def test_resume_from_a_state_with_other_threshold_fields_names_them(monitor, corpus, caplog):
    """A state from another version may lack a field or carry one this version does not know."""
    state = monitor.state_dict()
    del state["thresholds"]["overconfidence_warn"]
    state["thresholds"]["retired_bound"] = 0.3
    with caplog.at_level(logging.WARNING, "collapseguard"):
        monitor.load_state_dict(state)
    (message,) = _monitor_logs(caplog)
    assert "overconfidence_warn (none) (saved) -> 1.0 (current)" in message
    assert "retired_bound 0.3 (saved) -> (none) (current)" in message


def test_merged_shards_give_the_single_process_result(monitor, corpus):
    outputs = continuations(corpus[0][:64])
    whole = monitor.measure(outputs).compute()
    merged = monitor.measure(outputs[:20]).merge(monitor.measure(outputs[20:])).compute()
    assert merged == pytest.approx(whole, nan_ok=True)


def test_text_gold_rejects_array_outputs(monitor):
    with pytest.raises(TypeError, match=r"GoldSet\.from_arrays"):
        monitor.check(np.zeros((10, 4)), step=0)


@pytest.mark.parametrize(
    ("kind", "score", "health"),
    [("ratio", 1.2, 1.0), ("ratio", 0.5, 0.5), ("ratio", 0.75, 0.75), ("ratio", 0.0, 0.0),
     ("excess", -0.1, 1.0), ("excess", 0.35, 0.5), ("rise", 2.0, 0.5), ("rise", 4.0, 0.25)],
)
def test_signal_health_mapping(kind, score, health):
    sig = Signal("m", kind, warn=0.75 if kind == "ratio" else (0.15 if kind == "excess" else 1.25),
                 critical=0.5 if kind == "ratio" else (0.35 if kind == "excess" else 2.0))
    assert sig.health(score, reference=0.0) == pytest.approx(health)


def test_a_gold_sample_the_model_deems_impossible_is_critical_not_ignored():
    # a fit whose variance collapsed to zero gives held-out gold a log-likelihood of -inf
    rng = np.random.default_rng(0)
    monitor = CollapseMonitor(GoldSet.from_arrays(rng.normal(size=(300, 1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        monitor.check(rng.normal(size=(300, 1)), gold_loglik=np.full(300, -1.4))
        result = monitor.check(rng.normal(size=(300, 1)), gold_loglik=np.r_[np.full(299, -1.4), -np.inf])
    assert result.metrics["gold_nll"] == float("inf")
    nll = [a for a in result.alerts if a.metric == "gold_nll"]
    assert nll and nll[0].severity == "critical" and result.phase_health["mid"] == 0.0


def test_a_warning_names_the_callers_line_not_the_library(monitor):
    """The CollapseWarning points at the user's call (this file), once per new alert; the log keeps every line."""
    with warnings.catch_warnings(record=True) as caught, alert_warnings():
        warnings.simplefilter("always")
        monitor.check(["same words again and again"] * 64, step=0)
    ours = [w for w in caught if issubclass(w.category, CollapseWarning)]
    assert ours and {w.filename for w in ours} == {__file__}


def test_array_samples_far_outside_gold_are_late_phase_garbage_in_array_words():
    """tail_mass of 1.0 (every sample outside gold's ellipsoid) is not healthy: far_mass turns critical, and the
    message speaks of samples, not text."""
    rng = np.random.default_rng(0)
    monitor = CollapseMonitor(GoldSet.from_arrays(rng.normal(size=(300, 4))))
    result = monitor.check(rng.normal(size=(64, 4)) * 8.0, step=0)
    assert result.metrics["tail_mass"] == 1.0
    far = next(a for a in result.alerts if a.metric == "far_mass")
    assert far.phase == "late" and far.severity == "critical"
    assert all("text" not in a.message and "token" not in a.message for a in result.alerts)
    assert "samples" in far.message
