"""Learning-aware judging: output-side deficits of a model that is still getting closer to the human data
hold; once it moves away, what it lost since its best point is judged (collapseguard.detection.trajectory)."""

from __future__ import annotations

import numpy as np
import pytest

from collapseguard import CollapseMonitor, GoldSet
from collapseguard.demos.data import train_gold_split
from collapseguard.detection.trajectory import find_anchor
from collapseguard.gold.tokenization import SimpleTokenizer

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


@pytest.fixture(scope="module")
def gold():
    return GoldSet.from_texts(train_gold_split()[1])


def make_monitor(gold, **kwargs):
    return CollapseMonitor(gold, tokenizer=SimpleTokenizer(), prompt_length=16, max_new_tokens=32, **kwargs)


def tailless(monitor, keep_rare: float = 0.0, seed: int = 0):
    """Gold continuations with (all but ``keep_rare`` of) gold's tail tokens removed: human-like text that lost its
    rare words, as a model that has learned the frequent words first writes."""
    rng = np.random.default_rng(seed)
    tail = set(monitor.measurer.context.tail_bands.tail_keys.tolist())
    return [np.asarray([t for t in seq.tolist() if t not in tail or rng.random() < keep_rare], dtype=np.int64)
            for seq in monitor.split.continuations[:64]]


def metrics_of(monitor, outputs, gold_ppl):
    metrics = monitor.measure(outputs).compute()
    metrics["gold_ppl"] = gold_ppl
    return metrics


def early(result):
    return [a for a in result.alerts if a.phase == "early"]


def test_tail_deficit_of_a_model_still_learning_holds(gold):
    """Tail coverage at 0% of gold while gold perplexity keeps falling: an unfinished model, not collapse."""
    monitor = make_monitor(gold)
    outputs = tailless(monitor)
    for step, ppl in enumerate((300.0, 200.0, 150.0)):
        result = monitor.judge(metrics_of(monitor, outputs, ppl), step=step)
        assert result.metrics["tail_coverage"] == 0.0
        assert step == 0 or result.learning  # the first check has nothing to compare with
    assert early(result) == [] and result.anchor["source"] == "current"
    # a bare monitor that saw a healthy check first judges the same outputs critical
    bare = make_monitor(gold)
    bare.check(list(bare.split.continuations[:64]), step=0)
    assert [a.severity for a in early(bare.check(outputs, step=1))] == ["critical"]
    assert early(make_monitor(gold).check(outputs, step=0)) == []  # its first check compares with nothing


def test_a_model_moving_away_is_judged_from_its_best_point(gold):
    """Once gold perplexity rises, what the outputs lost since the best check alerts, naming that check."""
    monitor = make_monitor(gold)
    healthy = list(monitor.split.continuations[:64])
    monitor.judge(metrics_of(monitor, healthy, 100.0), step=10)
    result = monitor.judge(metrics_of(monitor, tailless(monitor), 110.0), step=20)
    assert not result.learning and result.anchor == {"source": "check", "step": 10, "distance": "gold_ppl",
                                                     "value": 100.0}
    alert, = early(result)
    assert alert.severity == "critical" and alert.metric == "tail_coverage"
    assert "gold reference" in alert.message  # the best check matched gold: gold is the less demanding reference


def test_a_small_model_is_judged_against_its_own_best_level(gold):
    """A model whose best outputs sit below gold is judged on what it loses from there, not on the gap."""
    monitor = make_monitor(gold)
    monitor.record_baseline(metrics_of(monitor, list(monitor.split.continuations[:64]), 1000.0))  # untrained
    weak = tailless(monitor, keep_rare=0.5, seed=1)
    first = monitor.judge(metrics_of(monitor, weak, 100.0), step=0)
    ratio = first.metrics["tail_coverage"] / first.reference["tail_coverage"]
    assert 0.4 < ratio < 0.65 and first.learning and early(first) == []  # below gold's warn bound, learning
    # a bare monitor's first check has nothing to compare with: it stays silent on output-side signals
    assert early(make_monitor(gold).check(weak, step=0)) == []
    same = monitor.judge(metrics_of(monitor, tailless(monitor, keep_rare=0.5, seed=2), 101.0), step=1)
    assert early(same) == []  # the same level, a little further from gold: judged against its own best
    lost = monitor.judge(metrics_of(monitor, tailless(monitor), 102.0), step=2)
    assert [a.severity for a in early(lost)] == ["critical"] and "best check (step 0" in early(lost)[0].message


def test_a_run_collapsed_at_its_best_point_keeps_alerting(gold):
    """A signal that alerted at the run's best point is not relaxed to that point's level."""
    monitor = make_monitor(gold)
    stuck = ["the same words again and again"] * 64
    first = monitor.check(stuck, step=0)
    second = monitor.check(stuck, step=1)
    assert {a.metric for a in second.alerts} == {a.metric for a in first.alerts}
    assert second.anchor["source"] == "check"


def test_the_baseline_before_training_is_a_starting_point(gold):
    """A model that is worse than before training is judged from the first check: against the baseline's
    level where that is less demanding than gold, never against its own current level."""
    monitor = make_monitor(gold)
    healthy = list(monitor.split.continuations[:64])
    monitor.record_baseline(metrics_of(monitor, healthy, 50.0), step=0)
    assert monitor.checks == [] and monitor.history[0]["baseline"]
    result = monitor.judge(metrics_of(monitor, tailless(monitor), 60.0), step=1)
    assert result.anchor["source"] == "baseline" and [a.severity for a in early(result)] == ["critical"]
    assert monitor.profile().metrics["gold_ppl"] == 60.0  # a profile is of a judged check, never the baseline


def test_the_tail_rise_is_not_measured_from_an_untrained_baseline(gold):
    """Before training every band is near-uniform: a tail-band rise from there is how learning looks."""
    monitor = make_monitor(gold)
    healthy = list(monitor.split.continuations[:64])
    base = metrics_of(monitor, healthy, 1000.0)
    base.update(gold_ppl_head=1000.0, gold_ppl_tail=1000.0)
    monitor.record_baseline(base)
    now = metrics_of(monitor, healthy, 300.0)
    now.update(gold_ppl_head=100.0, gold_ppl_tail=2000.0)
    assert early(monitor.judge(now, step=1)) == []


def test_find_anchor_prefers_earlier_points_on_ties_and_needs_a_comparison():
    m = {"gold_ppl": 5.0}
    assert find_anchor(m, [], None, None, "text") is None  # nothing to compare with
    checks = [{"metrics": {"gold_ppl": 5.0}, "step": 3, "raw": {"TailLoss/tail_coverage": "warn"}}]
    anchor = find_anchor(m, checks, None, None, "text")
    assert anchor.source == "check" and anchor.step == 3 and anchor.path[0][1] == frozenset({"tail_coverage"})
    assert anchor.level("tail_coverage", higher_is_worse=False) != anchor.level("tail_coverage", False)  # NaN
    assert find_anchor({"gold_ppl": 4.0}, checks, None, None, "text").source == "current"
    assert find_anchor({"js_2": 0.5}, [{"metrics": {"js_2": 0.4}, "step": 1}], None, None, "text").distance == "js_2"
    assert find_anchor({"gold_nll": 1.0}, [], {"gold_nll": 0.9}, None, "array").source == "baseline"
    assert find_anchor({"gold_nll": 1.0}, [], None, {"gold_nll": 0.8}, "array").source == "profile"


def test_a_level_reached_while_still_learning_is_no_loss(gold):
    """The reference is the least demanding level on the way to the best point: a dip the run already went
    through while improving does not alert when it comes back after the best point."""
    monitor = make_monitor(gold)
    monitor.record_baseline(metrics_of(monitor, list(monitor.split.continuations[:64]), 1000.0))
    weak, full = tailless(monitor, keep_rare=0.5, seed=3), list(monitor.split.continuations[:64])
    monitor.judge(metrics_of(monitor, weak, 300.0), step=0)  # learning, tail half gone
    monitor.judge(metrics_of(monitor, full, 200.0), step=1)  # learning: the best point, tail back
    again = monitor.judge(metrics_of(monitor, weak, 210.0), step=2)
    assert again.anchor["source"] == "check" and early(again) == []
    assert [a.severity for a in early(monitor.judge(metrics_of(monitor, tailless(monitor), 220.0), step=3))] \
        == ["critical"]


def test_several_signals_warning_at_once_are_critical(gold):
    """Corroboration: three signals at their warn level together make a critical check (0 switches it off)."""
    def run(thresholds=None):
        monitor = make_monitor(gold, thresholds=thresholds)
        healthy = list(monitor.split.continuations[:64])
        # the run's measured start of overconfidence (gold's 0 is a definition, not a reference)
        monitor.judge({**metrics_of(monitor, healthy, 100.0), "overconfidence": 0.0}, step=0)
        # gold ppl x1.2 (warn), about 60% of the tail kept (tail coverage warn), overconfidence +1.2 nats (warn)
        metrics = metrics_of(monitor, tailless(monitor, keep_rare=0.35, seed=5), 120.0)
        metrics["overconfidence"] = 1.2
        return monitor.judge(metrics, step=1)

    warned = {a.metric: a.severity for a in run(thresholds={"corroboration": 0}).alerts}
    assert {"gold_ppl", "tail_coverage", "overconfidence"} <= set(warned) and set(warned.values()) == {"warn"}
    escalated = run()
    assert {a.severity for a in escalated.alerts} == {"critical"}
    assert all("signals warn at once" in a.message for a in escalated.alerts)


def test_a_steady_fall_counts_only_while_the_model_moves_away(gold):
    """The trend rule (a 20% fall over 3 checks, short of the bound) needs gold perplexity rising too: on a
    plateau, three noisy checks in a row can fall by chance."""
    def falling(ppls):
        monitor = make_monitor(gold)
        base = metrics_of(monitor, list(monitor.split.continuations[:64]), 100.0)
        monitor.judge(base, step=0)
        result = None
        for step, (share, ppl) in enumerate(zip((0.98, 0.88, 0.77), ppls, strict=True), start=1):
            # distinct-2 falls at every check to 77% of gold: a 21% fall, still above the 75% warn bound
            metrics = {**base, "gold_ppl": ppl, "distinct_2": base["distinct_2"] * share}
            result = monitor.judge(metrics, step=step)
        return result

    assert not falling((101.0, 100.5, 101.0)).alerts  # plateau noise
    trend, = falling((102.0, 104.0, 106.0)).alerts  # drifting away from gold
    assert trend.metric == "distinct_2" and "over the last 3 checks" in trend.message


def test_tail_coverage_needs_enough_rare_types_to_be_judged():
    """Gold continuations that cover few rare types: tail coverage is measured and logged, not judged."""
    texts = train_gold_split()[1][:24]
    monitor = CollapseMonitor(GoldSet.from_texts(texts), tokenizer=SimpleTokenizer(), prompt_length=16,
                              max_new_tokens=32)
    assert monitor.reference(12)["tail_types_covered"] < 10
    result = monitor.check(["the same words again and again"] * 12, step=0)
    assert "tail_coverage" in result.metrics and "tail_coverage" not in {a.metric for a in result.alerts}
    assert result.alerts  # the rest still judges it
