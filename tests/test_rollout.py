"""The framework-neutral rollout guard (issue 22): observe groups, observe statistics, check -- driven exactly as the
verl and OpenRLHF recipes in docs/rl.md drive it."""

from __future__ import annotations

import logging
import random

import pytest

from collapseguard.guard.rollout import RolloutGuard
from collapseguard.metrics.correctness import pass_at_k

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")

ANSWERS = ["42", "the answer is 42", "forty two", "41", "it is 7", "maybe 6", "I think 42", "no idea at all"]


def rollout(rng: random.Random, prompts: int, k: int, p_right: float) -> tuple[list[str], list[str], list[bool]]:
    """One batch: ``prompts`` questions, ``k`` sampled answers each, every answer right with chance ``p_right``."""
    qs, answers, right = [], [], []
    for q in range(prompts):
        for _ in range(k):
            ok = rng.random() < p_right
            qs.append(f"question {q}: what is 6 x 7?")
            answers.append(rng.choice(ANSWERS[:3]) if ok else rng.choice(ANSWERS[3:]))
            right.append(ok)
    return qs, answers, right


def test_verl_recipe_groups_by_uid_and_reads_rewards_against_a_threshold():
    """verl's reward manager sees a batch whose responses carry a ``uid`` per prompt, not necessarily in a row."""
    rng = random.Random(0)
    guard = RolloutGuard(4)
    qs, answers, right = rollout(rng, 16, 4, 0.4)
    order = list(range(len(qs)))
    rng.shuffle(order)  # responses of one uid scattered through the batch
    uids = [f"uid-{i // 4}" for i in order]
    guard.observe_groups([qs[i] for i in order], [answers[i] for i in order],
                         rewards=[float(right[i]) for i in order], correct_above=1.0, group_ids=uids)
    guard.observe_stats(entropy=1.7)  # verl's actor/entropy, as its Tracking logger sees it
    outcome = guard.check(step=1)
    m = outcome.result.metrics
    groups = [right[i:i + 4] for i in range(0, len(right), 4)]
    counts = [sum(g) for g in groups]
    assert m["pass_at_1"] == pytest.approx(sum(pass_at_k(4, c, 1) for c in counts) / 16)
    assert m["pass_at_k"] == pytest.approx(sum(pass_at_k(4, c, 4) for c in counts) / 16)
    assert m["frac_all_wrong"] == counts.count(0) / 16 and m["frac_all_correct"] == counts.count(4) / 16
    assert m["policy_entropy"] == 1.7 and m["num_outputs"] == 64
    assert outcome.log_metrics["collapseguard/pass_at_k"] == m["pass_at_k"]


def test_openrlhf_recipe_passes_correctness_in_prompt_order_and_checks_every_few_steps():
    """OpenRLHF's reward function is called per micro-batch, in prompt order (n_samples_per_prompt in a row), so a
    group can be cut between two calls: the guard joins it once its other part arrives."""
    rng = random.Random(1)
    guard = RolloutGuard(8, on_collapse="halt")
    for step in range(1, 7):
        qs, answers, right = rollout(rng, 8, 8, 0.5)
        for i in range(0, len(qs), 12):  # micro-batches of 12: groups of 8 cut in two
            guard.observe_groups(qs[i:i + 12], answers[i:i + 12], correct=right[i:i + 12])
        if step % 2 == 0:
            outcome = guard.check(step)
            assert not outcome.should_stop and outcome.result.metrics["num_groups"] == 16  # two batches of 8 prompts
    assert [h["step"] for h in guard.engine.monitor.checks] == [2, 4, 6]
    assert guard.pending_groups == 0


def test_without_correctness_no_pass_at_k_is_measured_or_claimed():
    guard = RolloutGuard(4)
    qs, answers, _ = rollout(random.Random(2), 16, 4, 0.5)
    guard.observe_groups(qs, answers)
    metrics = guard.check(step=1).result.metrics
    assert "pass_at_1" not in metrics and "num_groups" not in metrics and metrics["distinct_k"] > 1


def test_groups_that_are_not_whole_are_skipped_and_said_once(caplog):
    guard = RolloutGuard(4)
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        guard.observe_groups(["a"] * 4 + ["b", "b", "c", "c"], ["x"] * 8)
        guard.observe_groups(["d", "e", "d", "d"], ["y"] * 4)
    said = [r.getMessage() for r in caplog.records if "are skipped" in r.getMessage()]
    assert len(said) == 1 and "pass group_ids=" in said[0]
    assert guard.pending_groups == 1


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"correct": [True] * 3}, "3 correctness values for 4 completions"),
    ({"rewards": [1.0] * 4}, "rewards= needs correct_above="),
    ({"correct_above": 1.0}, "correct_above= reads rewards="),
    ({"correct": [True] * 4, "rewards": [1.0] * 4, "correct_above": 1.0}, "not both"),
    ({"group_ids": [1, 2]}, "2 group_ids for 4 completions"),
])
def test_bad_observations_are_refused_with_the_fix(kwargs, words):
    with pytest.raises(ValueError, match=rf"RolloutGuard.observe_groups: .*{words}"):
        RolloutGuard(4).observe_groups(["q"] * 4, ["a"] * 4, **kwargs)


def test_correctness_for_some_batches_only_is_refused():
    guard = RolloutGuard(2)
    guard.observe_groups(["q", "q"], ["a", "b"], correct=[True, False])
    with pytest.raises(ValueError, match="for earlier batches but not this one: pass correct="):
        guard.observe_groups(["q", "q"], ["a", "b"])


def test_bad_arguments_name_the_guard():
    with pytest.raises(ValueError, match=r"RolloutGuard: group_size=1 is invalid.*num_generations"):
        RolloutGuard(1)
    with pytest.raises(ValueError, match=r"RolloutGuard: on_collapse='reweight' is invalid"):
        RolloutGuard(4, on_collapse="reweight")
    with pytest.raises(ValueError, match=r"observe_stats: \['loss'\] are not known"):
        RolloutGuard(4).observe_stats(loss=1.0)


def test_state_round_trip_keeps_the_history():
    rng = random.Random(3)
    guard = RolloutGuard(4)
    for step in (1, 2):
        qs, answers, right = rollout(rng, 8, 4, 0.5)
        guard.observe_groups(qs, answers, correct=right)
        guard.check(step)
    fresh = RolloutGuard(4)
    fresh.load_state_dict(guard.state_dict())
    assert [h["step"] for h in fresh.engine.monitor.checks] == [1, 2]


# ------------------------------------------------------------------ the narrowing detector (PolicyNarrowing)
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]


def simulate(seed: int, phases: list, checks_per_phase: int = 10) -> list[tuple[int, list[tuple[str, str]]]]:
    """A GRPO-like run: each check 16 prompts x 8 samples; ``phases`` give each prompt's chance that a sample is
    right (a function of the prompt). Answers are random words, so the word-overlap signals stay quiet and only
    correctness moves. Returns (step, alerts) per check."""
    rng = random.Random(seed)
    guard = RolloutGuard(8)
    out, step = [], 0
    for chance in phases:
        for _ in range(checks_per_phase):
            step += 1
            qs, answers, right = [], [], []
            for _ in range(16):
                prompt = rng.randrange(10**6)
                for _ in range(8):
                    qs.append(f"prompt {prompt}")
                    answers.append(" ".join(rng.choice(WORDS) for _ in range(6)))
                    right.append(rng.random() < chance(prompt))
            guard.observe_groups(qs, answers, correct=right)
            out.append((step, [(a.metric, a.severity) for a in guard.check(step).result.alerts]))
    return out


def explores(prompt):
    return 0.3  # every prompt right 30% of the time: pass@1 0.3, pass@8 0.94


def narrowed(prompt):
    return 1.0 if prompt % 10 < 4 else 0.0  # always right on 40% of prompts, never on the rest: pass@1 0.4 = pass@8


def test_narrowing_is_flagged_within_two_points_while_pass_at_1_rises():
    for seed in range(3):
        alerts = {step: a for step, a in simulate(seed, [explores, narrowed]) if a}
        first = min(alerts)
        assert 11 <= first <= 14  # the policy narrows from step 11; a point pools two checks of 16 groups
        assert {("pass_at_k", "critical"), ("frac_mixed", "critical")} <= set(alerts[15])


@pytest.mark.parametrize(("name", "phases"), [
    ("steady exploration", [explores] * 3),
    ("learning: pass@1 and pass@k rise", [explores, lambda p: 0.6]),
    ("getting worse everywhere: pass@1 falls too", [explores, lambda p: 0.1]),
])
def test_no_narrowing_alert_where_the_policy_does_not_narrow(name, phases):
    for seed in range(4):
        assert [a for _, a in simulate(seed, phases) if a] == [], (name, seed)


def simulate_converging(seed: int, later) -> list[tuple[int, list[tuple[str, str]]]]:
    """Like :func:`simulate`, but in the second phase every prompt the policy always gets right (``later(p) == 1``)
    or always wrong (0) is answered with one answer by all 8 samples, and the logged entropy falls 2.0 -> 0.4: the
    groups converge. Whether that is learning or narrowing is for pass@k to say."""
    rng = random.Random(seed)
    guard = RolloutGuard(8)
    out, step = [], 0
    for phase in (0, 1):
        for _ in range(10):
            step += 1
            qs, answers, right = [], [], []
            for _ in range(16):
                prompt = rng.randrange(10**6)
                chance = 0.3 if phase == 0 else later(prompt)
                fixed = " ".join(rng.choice(WORDS) for _ in range(6)) if chance in (0.0, 1.0) and phase else None
                for _ in range(8):
                    qs.append(f"prompt {prompt}")
                    answers.append(fixed or " ".join(rng.choice(WORDS) for _ in range(6)))
                    right.append(rng.random() < chance)
            guard.observe_groups(qs, answers, correct=right)
            guard.observe_stats(entropy=2.0 if phase == 0 else 0.4)
            out.append((step, [(a.metric, a.severity) for a in guard.check(step).result.alerts]))
    return out


def test_groups_that_converge_on_right_answers_are_learning_not_collapse():
    # 80% of prompts learned for good (one right answer per group), the rest still explored: pass@8 holds, pass@1
    # rises; distinct_k and entropy fall hard, which alone would be critical
    for seed in range(3):
        alerts = [a for _, a in simulate_converging(seed, lambda p: 1.0 if p % 10 < 8 else 0.3) if a]
        assert alerts == [], seed


def test_groups_that_converge_while_pass_at_k_falls_are_flagged_with_their_corroboration():
    for seed in range(3):
        alerts = {m for _, a in simulate_converging(seed, narrowed) for m, _ in a}
        assert {"pass_at_k", "distinct_k", "policy_entropy"} <= alerts, seed


def test_mixed_groups_thinning_as_a_policy_learns_is_silent():
    # explored at 15% (a quarter of the groups all wrong), then 70% of prompts learned: mixed groups thin out and
    # all-correct ones pile up, but all-wrong ones empty too -- learning, not the polarised groups of a narrowing
    for seed in range(4):
        alerts = [a for _, a in simulate(seed, [lambda p: 0.15, lambda p: 1.0 if p % 10 < 7 else 0.15]) if a]
        assert alerts == [], seed
