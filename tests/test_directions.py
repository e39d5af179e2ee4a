"""Each metric declares its direction (``higher_is_better``, as in torchmetrics) and its typed states; the
detectors judge by the declarations (issue 13).

The reference below is what the code held before the directions moved to the metrics, copied by hand, so the
move is shown to change no judgement.
"""

from __future__ import annotations

import numpy as np
import pytest

from collapseguard._validation import ArgumentTypeError, Satisfies, validate
from collapseguard.detection.calibration import _FIELDS
from collapseguard.detection.detectors import DEFAULT_DETECTORS, KINDS, Signal, TailLoss
from collapseguard.detection.thresholds import Thresholds
from collapseguard.detection.trajectory import DISTANCES
from collapseguard.metrics import Metric, ModelStats, ReportedMean, declared_directions, direction
from collapseguard.metrics.base import _STATE_TYPES, declaring_class
from collapseguard.metrics.embedding import GoldEllipsoid
from collapseguard.metrics.suite import REPORTED, ArraySuite, GroupSuite, MetricSuite, TextGoldContext, TextSuite
from collapseguard.metrics.within_prompt import DistinctK, WithinDistinctN, WithinSimilarity

# Before issue 13 the direction of a metric lived in five places. True: a higher value is healthier.
OLD_DIRECTIONS = {
    # detectors.py: the kind of each signal (ratio: higher is better; inverse_ratio, excess, rise, log_rise: lower)
    "tail_mass": True, "tail_coverage": True, "gold_ppl_tail": False,
    "gold_ppl_head": False,  # TailLoss._head_rise judges it as a rise
    "vendi": True, "total_variance": True, "effective_rank": True, "gold_nll": False,
    "gold_ppl": False, "overconfidence": False, "distinct_2": True, "compression_ratio": False,
    "self_bleu": False, "seq_rep_4": False, "loop_fraction": False, "duplicate_fraction": False, "far_mass": False,
    "distinct_k": True, "within_distinct_2": True, "within_similarity": False, "policy_entropy": True,
    # suite.REPORTED
    "frac_reward_zero_std": False,
    # trajectory.DISTANCES: the anchor is the point with the smallest distance to gold
    "js_2": False, "frechet_distance": False,
}
OLD_KINDS = {  # detectors.py: metric -> kind of every signal of DEFAULT_DETECTORS (and TailLoss's head-band rise)
    "tail_coverage": "ratio", "tail_mass": "ratio", "gold_ppl_tail": "rise", "gold_ppl_head": "rise",
    "vendi": "ratio", "total_variance": "ratio", "effective_rank": "ratio", "gold_nll": "log_rise",
    "gold_ppl": "rise", "overconfidence": "excess", "distinct_2": "ratio", "compression_ratio": "inverse_ratio",
    "self_bleu": "excess", "seq_rep_4": "excess", "loop_fraction": "excess", "duplicate_fraction": "excess",
    "far_mass": "excess", "distinct_k": "ratio", "within_distinct_2": "ratio", "within_similarity": "excess",
    "policy_entropy": "ratio",
    "pass_at_k": "ratio", "frac_mixed": "ratio",  # RL with correctness (issue 22): new, judged as falls
}
OLD_REPORTED = {"policy_entropy": "higher_is_better", "frac_reward_zero_std": "lower_is_better"}
OLD_GROUP_DIRECTIONS = {WithinDistinctN: "higher_is_better", DistinctK: "higher_is_better",
                        WithinSimilarity: "lower_is_better"}
# metrics nothing judged before: declared now, by what they measure (pass@k and the group split: issue 22)
NEW_DIRECTIONS = {"distinct_1": True, "distinct_3": True, "distinct_4": True, "entropy_1": True, "entropy_2": True,
                  "zipf_coefficient": False, "length_limit_fraction": False, "js_1": False, "gold_ppl_mid": False,
                  "next_token_entropy": True, "mean_length": None, "num_outputs": None}


def _suites() -> dict[str, MetricSuite]:
    """One suite of each kind, updated with every optional input given."""
    rng = np.random.default_rng(0)
    gold = [rng.integers(0, 40, size=20) for _ in range(30)]
    text = TextSuite(TextGoldContext(gold), samples_per_prompt=2)
    outputs = [rng.integers(0, 30, size=12) for _ in range(16)]
    stats = ModelStats([g[:6] for g in gold[:5]], [np.full(6, 2.0)] * 5, [np.full(6, 1.5)] * 5)
    answers = [rng.integers(0, 9, size=5) for _ in range(16)]
    text.update(outputs, finished=[True, False] * 8, model_stats=stats, answers=answers)
    group = GroupSuite(4).update(answers, reported={name: [0.5, 0.25] for name in REPORTED},
                                 correct=[bool(i % 3) for i in range(16)])
    gold_x = rng.normal(size=(60, 3))
    array = ArraySuite(GoldEllipsoid(gold_x), 3).update(rng.normal(size=(20, 3)), gold_loglik=rng.normal(size=10))
    return {"text": text, "groups": group, "array": array}


@pytest.fixture(scope="module")
def suites() -> dict[str, MetricSuite]:
    return _suites()


@pytest.fixture(scope="module")
def suite_outputs(suites) -> dict[str, set[str]]:
    return {kind: set(suite.compute()) for kind, suite in suites.items()}


def test_every_name_a_suite_computes_declares_a_direction(suite_outputs):
    for kind, names in suite_outputs.items():
        undeclared = []
        for name in sorted(names):
            try:
                direction(name)
            except KeyError:
                undeclared.append(name)
        assert not undeclared, f"{kind} suite computes {undeclared} without a declared direction"


def test_every_declared_name_is_computed_by_some_suite(suite_outputs):
    computed = set().union(*suite_outputs.values())
    exact = {name for name in declared_directions() if "{" not in name}
    assert exact <= computed, f"declared but never computed: {sorted(exact - computed)}"


def test_declared_directions_match_the_old_tables_exactly():
    assert {name: direction(name) for name in OLD_DIRECTIONS} == OLD_DIRECTIONS
    assert {name: direction(name) for name in NEW_DIRECTIONS} == NEW_DIRECTIONS
    assert REPORTED == OLD_REPORTED
    assert {cls: cls.direction for cls in OLD_GROUP_DIRECTIONS} == OLD_GROUP_DIRECTIONS
    assert all(direction(d) is False for names in DISTANCES.values() for d in names)  # smaller is closer to gold


def test_the_whole_direction_table():
    """Every declaration at once (templates for the parameterised names): a change here is a change in judging."""
    assert declared_directions() == {
        "compression_ratio": False, "distinct_k": True, "distinct_{n}": True, "duplicate_fraction": False,
        "effective_rank": True, "entropy_{n}": True, "far_mass": False, "frac_reward_zero_std": False,
        "frac_all_correct": None, "frac_all_wrong": False, "frac_mixed": True,
        "frechet_distance": False, "gold_nll": False, "gold_ppl": False, "gold_ppl_head": False,
        "gold_ppl_mid": False, "gold_ppl_tail": False, "js_{n}": False, "length_limit_fraction": False,
        "loop_fraction": False, "mean_length": None, "next_token_entropy": True, "num_groups": None,
        "num_outputs": None, "overconfidence": False, "pass_at_k": True, "pass_at_{k}": True, "policy_entropy": True, "self_bleu": False, "seq_rep_{n}": False,
        "tail_coverage": True, "tail_mass": True, "total_variance": True, "vendi": True,
        "within_distinct_{n}": True, "within_similarity": False, "zipf_coefficient": False,
    }


def _signals() -> list[Signal]:
    th = Thresholds()
    sigs = [s for d in DEFAULT_DETECTORS for kind in ("text", "array") for s in d().signals(th, kind, {})]
    return [*sigs, Signal("gold_ppl_head", "rise", 0, 0, anchored=True)]  # TailLoss._head_rise


def test_detectors_read_the_declared_direction_and_judge_as_before():
    signals = _signals()
    assert {s.metric: s.kind for s in signals} == OLD_KINDS
    for sig in signals:
        # before: every place that needed the direction read sig.kind == "ratio"
        assert sig.higher_is_better is (sig.kind == "ratio") is direction(sig.metric), sig.metric
        assert KINDS[sig.kind] is sig.higher_is_better
    assert any(isinstance(d(), TailLoss) for d in DEFAULT_DETECTORS)


def test_a_signal_whose_kind_contradicts_the_declaration_is_refused():
    with pytest.raises(ValueError, match=r"Signal: kind='excess' is invalid: kind must be one of 'ratio'\. DistinctN "
                                         r"declares distinct_2 with higher_is_better=True"):
        Signal("distinct_2", "excess", 0.1, 0.2)
    with pytest.raises(ValueError, match="kind must be one of 'inverse_ratio', 'excess', 'rise', 'log_rise'"):
        Signal("self_bleu", "ratio", 0.7, 0.5)
    with pytest.raises(ValueError, match=r"metric='mean_length' is invalid.*higher_is_better=None"):
        Signal("mean_length", "ratio", 0.7, 0.5)
    with pytest.raises(ValueError, match="kind='drop' is invalid"):
        Signal("distinct_2", "drop", 0.7, 0.5)  # type: ignore[arg-type]
    # a custom detector's own metric: its kind says which way is healthy
    assert Signal("my_metric", "ratio", 0.7, 0.5).higher_is_better is True
    assert Signal("my_metric", "excess", 0.1, 0.2).higher_is_better is False


def test_bounds_direction_names_the_side_where_the_bad_values_lie():
    """``Finding.bounds()["direction"]`` (written to every check line of the trail) says on which side of the
    bounds a value is bad: ``"high"`` for compression_ratio (an inverse_ratio: more compressible is worse), whose
    bounds lie above gold. Checked against the judging itself: just beyond each bound on that side the severity is
    that bound's, just short of it the severity is the milder one."""
    from collapseguard.detection.detectors import Finding

    for sig in _signals():
        if sig.warn == sig.critical:  # TailLoss._head_rise: a helper signal without bounds of its own
            continue
        ref = 100.0 if sig.kind in ("rise", "log_rise") else 0.5
        at_ref = Finding("D", "mid", sig, ref, ref, sig.score(ref, ref), None, 1.0, "")
        b = at_ref.bounds()
        assert b["direction"] == ("low" if sig.higher_is_better else "high"), sig.metric
        worse = 1.0 if b["direction"] == "high" else -1.0
        for level, milder in (("warn", None), ("critical", "warn")):
            eps = 1e-6 * max(abs(b[level]), 1.0)
            beyond, short = b[level] + worse * eps, b[level] - worse * eps
            assert sig.severity(sig.score(beyond, ref)) == level, (sig.metric, level, b)
            assert sig.severity(sig.score(short, ref)) == milder, (sig.metric, level, b)
    cr = next(s for s in _signals() if s.metric == "compression_ratio")
    b = Finding("D", "mid", cr, 0.5, 0.5, 1.0, None, 1.0, "").bounds()
    assert b["direction"] == "high" and b["warn"] > 0.5 and b["critical"] > b["warn"]


def test_calibration_inverts_exactly_the_ratios_of_lower_is_better_metrics():
    assert [m for m, (_, kind) in _FIELDS.items() if kind == "ratio" and not direction(m)] == ["compression_ratio"]


def test_parameterised_and_unknown_names():
    assert direction("distinct_7") is True and direction("seq_rep_2") is False and direction("js_3") is False
    assert direction("within_distinct_3") is True and declaring_class("within_distinct_3") is WithinDistinctN
    with pytest.raises(KeyError, match="no metric declares a direction for 'distinct_x'"):
        direction("distinct_x")
    assert direction("my_metric", default=None) is None


def test_one_name_has_one_direction():
    with pytest.raises(TypeError, match="declares self_bleu with higher_is_better=True, but SelfBLEU declares it with "
                                        "higher_is_better=False: one name, one direction"):
        class _Inverted(Metric):
            name = "self_bleu"
            higher_is_better = True
    assert direction("self_bleu") is False


def test_reported_statistics_default_to_their_declared_direction():
    assert ReportedMean("frac_reward_zero_std").direction == "lower_is_better"
    assert ReportedMean("policy_entropy").higher_is_better is True
    assert ReportedMean("kl", "lower_is_better").higher_is_better is False  # one the trainer reports, not declared
    with pytest.raises(ValueError, match="declared lower_is_better"):
        ReportedMean("frac_reward_zero_std", "higher_is_better")


def _concrete_metric_classes() -> list[type[Metric]]:
    found, todo = [], list(Metric.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("collapseguard.") and cls.__name__ != "_GroupMetric":  # abstract
            found.append(cls)
    return found


def test_every_metric_class_declares_its_own_direction():
    classes = _concrete_metric_classes()
    assert len(classes) >= 20
    assert not [c.__name__ for c in classes if "higher_is_better" not in vars(c)]


def test_states_are_declared_typed_and_keep_their_type(suites):
    for name, metric in [(f"{kind}/{name}", m) for kind, s in suites.items() for name, m in s.metrics.items()]:
        states = metric.declared_states()
        assert states and list(states) == list(metric.states()), name
        for state in states.values():
            assert _STATE_TYPES[state.reduction].accepts(state.default), (name, state)
            assert _STATE_TYPES[state.reduction].accepts(getattr(metric, state.name)), (name, state.name)
            assert isinstance(getattr(metric, state.name), state.type), (name, state.name)


def test_a_state_must_be_declared_with_a_default_its_reduction_merges():
    with pytest.raises(TypeError, match=r"Metric\.add_state: default=\[\] is invalid: default must be a number or a "
                                        r"numeric array \(added\), got list"):
        Metric().add_state("x", [], "sum")
    with pytest.raises(TypeError, match="default must be a 1-D uint64 array"):
        Metric().add_state("keys", np.empty(0, np.int64), "union")
    with pytest.raises(ValueError, match=r"reduction='mean' is invalid: reduction must be one of 'sum', 'cat'"):
        Metric().add_state("x", 0, "mean")  # type: ignore[arg-type]


def test_a_wrong_type_is_a_type_error_that_old_except_value_error_still_catches():
    with pytest.raises(ArgumentTypeError) as info:
        validate("f", "n", "2", Satisfies(lambda v: v > 0, "a positive number", types=(int,)),
                 type_error=ArgumentTypeError)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match=r"f: n=-1 is invalid: n must be a positive number\.$") as plain:
        validate("f", "n", -1, Satisfies(lambda v: v > 0, "a positive number", types=(int,)))
    assert not isinstance(plain.value, TypeError)
