"""The step schedule (issue 20): checks every N optimizer steps, a sentinel tier, an overhead budget.

Unit tests pin the schedule's parsing, validation and budget arithmetic (with a fake clock); the rest train real
tiny GPT-2 models through the real Hugging Face ``Trainer`` and Lightning ``Trainer`` (and 2 real processes).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from collapseguard import CheckSchedule, ModelHooks

pytest.importorskip("transformers")
pytest.importorskip("lightning")

from collapseguard.guard.engine import GuardEngine
from collapseguard.guard.schedule import OverheadBudget
from collapseguard.integrations.lightning import CollapseGuard
from collapseguard.integrations.transformers import CollapseGuardCallback
from collapseguard.reporting.alertlog import read_alert_log
from tests import tiny_runs as tr
from tests.mp import run_ranks

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


# ------------------------------------------------------------------ the schedule object
def test_presets_and_shorthand():
    assert CheckSchedule.coerce(None) == CheckSchedule()
    assert CheckSchedule.coerce("epoch").epochs() == 1  # by default, every epoch end
    steps = CheckSchedule.coerce("steps")
    assert (steps.every_n_steps, steps.sentinel_every_n_steps, steps.max_overhead) == (100, 10, 0.05)
    assert steps.epochs() == 0  # a step schedule checks on steps, not at epoch ends, unless asked
    custom = CheckSchedule.coerce("steps=200, sentinel=20, overhead=0.02, epochs=1")
    assert custom == CheckSchedule(every_n_epochs=1, every_n_steps=200, sentinel_every_n_steps=20, max_overhead=0.02)
    assert CheckSchedule.coerce("overhead=none,steps=5").max_overhead is None
    assert CheckSchedule.coerce({"every_n_steps": 7}).every_n_steps == 7


@pytest.mark.parametrize(("value", "error", "words"), [
    ("sometimes", ValueError, "neither a preset"),
    ("stepz=3", ValueError, "key=value"),
    ({"every_n_step": 3}, TypeError, "unknown field"),
    (3, TypeError, "a CheckSchedule, a preset name"),
])
def test_bad_schedule_names_the_callback(value, error, words):
    with pytest.raises(error, match=words) as info:
        CollapseGuardCallback(tr.gold(), schedule=value)
    assert str(info.value).startswith("CollapseGuardCallback")


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"every_n_steps": 0}, "every_n_steps must be an int >= 1 or None"),
    ({"sentinel_every_n_steps": 20, "every_n_steps": 10}, "at most every_n_steps=10"),
    ({"max_overhead": 0.0}, "max_overhead must be a number in"),
    ({"sentinel_samples": 1}, "sentinel_samples must be an int >= 2"),
])
def test_schedule_validates_in_init(kwargs, words):
    with pytest.raises(ValueError, match=words):
        CheckSchedule(**kwargs)


def test_every_n_epochs_given_twice_is_refused():
    with pytest.raises(ValueError, match="were both given"), pytest.warns(DeprecationWarning):
        CollapseGuard(tr.gold(), schedule=CheckSchedule(every_n_epochs=2), every_n_epochs=3)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_share_and_admission():
    clock = FakeClock()
    budget = OverheadBudget(0.05, clock)
    assert budget.allows(10.0)  # not started: nothing to compare with
    budget.start()
    clock.now = 100.0
    assert budget.allows(5.0) and not budget.allows(5.5)  # 5 / 105 <= 5% < 5.5 / 105.5
    budget.add(4.0)
    assert budget.share == pytest.approx(0.04)
    assert budget.allows(None)  # an unmeasured tier runs once, so its cost becomes known
    assert OverheadBudget(None, clock).allows(1e9)


def _engine(schedule: CheckSchedule) -> tuple[GuardEngine, FakeClock]:
    engine = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), schedule=schedule, **tr.GUARD_KWARGS)
    engine.setup()
    clock = FakeClock()
    engine.budget.clock = clock
    engine.start_training(0)
    return engine, clock


def test_due_checks_follow_steps_and_wait_for_budget():
    engine, clock = _engine(CheckSchedule(every_n_steps=10, sentinel_every_n_steps=2, max_overhead=0.1))
    engine.costs.update(full=20.0, sentinel=1.0)
    clock.now = 19.0  # 1 s of sentinel fits 10% of 20 s of training
    assert engine.due(1) is None
    assert engine.due(2) == "sentinel"
    engine.last_checked["sentinel"] = 2
    engine.budget.add(1.0)
    clock.now = 100.0
    assert engine.due(10) == "sentinel"  # the full check is due but would take 21% of the time so far
    clock.now = 1000.0
    assert engine.due(11) == "full"  # it waited, and runs at the first step the budget allows
    engine.last_checked["full"] = 11
    assert engine.due(12) is None  # a full check scored gold too: the sentinel counts from it


def test_a_check_the_budget_keeps_waiting_is_reported_once(caplog):
    engine, clock = _engine(CheckSchedule(every_n_steps=10, sentinel_every_n_steps=2, max_overhead=0.05))
    engine.costs.update(full=1000.0, sentinel=1000.0)  # far more than 5% of any time this run will have
    clock.now = 60.0
    with caplog.at_level("WARNING", logger="collapseguard"):
        assert [engine.due(step) for step in range(1, 40)] == [None] * 39
    waits = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert len(waits) == 2 and "the sentinel check, due every 2 steps, has waited 4 steps" in waits[0]
    assert "raise max_overhead" in waits[0] and "the full check, due every 10 steps, has waited 20" in waits[1]


def test_sentinel_escalates_once_per_warning_spell_within_budget():
    engine, clock = _engine(CheckSchedule(every_n_steps=100, sentinel_every_n_steps=2, max_overhead=0.05))
    engine.costs.update(full=50.0)
    clock.now = 10.0
    warn = type("R", (), {"severity": "warn"})()
    critical = type("R", (), {"severity": "critical"})()
    assert engine._escalate(warn)  # the first warn: the full check decides at once
    assert not engine._escalate(warn)  # still warning: only within budget
    assert engine._escalate(critical)  # a critical always
    assert not engine._escalate(None)  # clean: the next warn escalates again
    assert engine._escalate(warn)


@pytest.mark.parametrize("sentinel_samples", [None, 8])
def test_tiers_on_the_same_texts_share_one_model_side_trajectory(sentinel_samples):
    """The recursive twin on the real model: the sentinel saw the run's best gold perplexity between full checks (a
    full check every 100 steps); the full check that its warn triggered judged against its own check before training
    only, and did not confirm (1.496x, under the 1.5 bound). On the same gold texts, one trajectory: the full check
    sees the sentinel's best point. On a smaller subset the values are not comparable, and each tier keeps its own."""
    import numpy as np

    from collapseguard.guard.engine import GeneratedBatch
    from collapseguard.metrics import ModelStats

    engine = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), **{
        **tr.GUARD_KWARGS, "schedule": CheckSchedule(every_n_steps=100, sentinel_every_n_steps=10,
                                                     sentinel_samples=sentinel_samples, max_overhead=None,
                                                     check_on_train_start=True)})
    engine.setup()
    assert engine.tiers_share_texts is (sentinel_samples is None)

    def produce(nll: float, tier: str):
        seqs = [np.asarray(c) for c in (engine.sentinel_continuations() if tier == "sentinel"
                                        else engine.gold_continuations())]
        stats = ModelStats(seqs, [np.full(s.size, nll) for s in seqs], [np.full(s.size, nll - 0.5) for s in seqs])
        return lambda: GeneratedBatch(sequences=seqs, finished=[True] * len(seqs), model_stats=stats)

    for tier in ("full", "sentinel"):
        engine.run_baseline(produce(3.4, tier), step=0, tier=tier)
    engine.start_training(0)
    for step in (10, 20):  # the model first fits gold better (learning), then its gold perplexity climbs back
        assert engine.run_check(produce(3.0, "sentinel"), step=step, epoch=0, tier="sentinel").result.alerts == []
    full = engine.run_check(produce(3.4, "full"), step=30, epoch=0).result
    rises = [a for a in full.alerts if a.metric == "gold_ppl"]
    if sentinel_samples is None:
        assert rises and rises[0].reference == pytest.approx(np.exp(3.0), rel=1e-6)
        assert rises[0].value == pytest.approx(np.exp(3.4), rel=1e-6)
        # and back: the full check's point is in the sentinel's trajectory
        assert [p["step"] for p in engine.sentinel.model_side] == [30]
    else:
        assert rises == [] and engine.monitor.model_side == [] and engine.sentinel.model_side == []
    state = engine.state_dict()
    fresh = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), **{**tr.GUARD_KWARGS, "schedule": engine.schedule})
    fresh.setup()
    fresh.load_state_dict(state)
    assert fresh.monitor.model_side == engine.monitor.model_side  # a resumed run keeps the whole trajectory


# ------------------------------------------------------------------ Hugging Face Trainer
def _steps(trail: list[dict], tier: str) -> list[int]:
    return [r["step"] for r in trail if r["type"] == "check" and r.get("tier") == tier]


@pytest.mark.slow
def test_hf_halts_mid_epoch(tmp_path):
    guard = CollapseGuardCallback(tr.gold(), hooks=ModelHooks(generate=tr.alarming), on_collapse="halt",
                                  schedule=CheckSchedule(every_n_steps=3, check_on_train_start=False),
                                  alert_log=tmp_path / "trail.jsonl",
                                  **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 2, [guard])
    steps_per_epoch = len(trainer.get_train_dataloader())
    assert steps_per_epoch > 3
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.state.epoch < 1  # stopped inside the first epoch
    trail = read_alert_log(tmp_path / "trail.jsonl")
    assert _steps(trail, "full") == [3] and [r["step"] for r in trail if r["type"] == "halt"] == [3]


class _Stream(torch.utils.data.IterableDataset):
    """A stream with no length, as `datasets` streaming gives: the Trainer needs max_steps."""

    def __init__(self) -> None:
        self.blocks = tr.blocks("varied")

    def __iter__(self):
        while True:
            yield from (self.blocks[i] for i in range(len(self.blocks)))


@pytest.mark.slow
def test_hf_streaming_max_steps_run_is_checked(tmp_path):
    guard = CollapseGuardCallback(tr.gold(), schedule="steps=4,sentinel=2,overhead=none", **tr.GUARD_KWARGS)
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(str(tmp_path), max_steps=8, per_device_train_batch_size=8, use_cpu=True, report_to=[],
                             save_strategy="no", disable_tqdm=True, learning_rate=1e-3)
    Trainer(model=tr.model(), args=args, train_dataset=_Stream(), processing_class=tr.tokenizer(),
            callbacks=[guard]).train()
    assert [h["step"] for h in guard.engine.monitor.checks] == [4, 8]
    assert [h["step"] for h in guard.engine.sentinel.checks] == [2, 6]  # a full check scores gold too


@pytest.mark.slow
def test_hf_gradient_accumulation_counts_optimizer_steps(tmp_path):
    guard = CollapseGuardCallback(tr.gold(), schedule=CheckSchedule(every_n_steps=2, max_overhead=None),
                                  **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 1, [guard], gradient_accumulation_steps=2)
    trainer.train()
    last = trainer.state.global_step
    assert [h["step"] for h in guard.engine.monitor.checks] == list(range(2, last + 1, 2))


@pytest.mark.slow
def test_hf_resume_keeps_the_schedule(tmp_path):
    schedule = CheckSchedule(every_n_steps=3, sentinel_every_n_steps=1, max_overhead=None)
    whole = CollapseGuardCallback(tr.gold(), schedule=schedule, **tr.GUARD_KWARGS)
    tr.hf_trainer(tmp_path / "whole", "varied", 1, [whole], max_steps=9, dropout=0.0).train()

    kwargs = {"max_steps": 9, "dropout": 0.0, "save_strategy": "steps", "save_steps": 4,
              "restore_callback_states_from_checkpoint": True}
    first = CollapseGuardCallback(tr.gold(), schedule=schedule, **tr.GUARD_KWARGS)
    tr.hf_trainer(tmp_path / "part", "varied", 1, [first], **kwargs).train()
    state = json.loads((tmp_path / "part" / "checkpoint-4" / "collapseguard_CollapseGuardCallback.json").read_text())
    assert state["schedule"]["last_checked"] == {"full": 3, "sentinel": 4}

    resumed = CollapseGuardCallback(tr.gold(), schedule=schedule, **tr.GUARD_KWARGS)  # as after a restart
    tr.hf_trainer(tmp_path / "part", "varied", 1, [resumed], **kwargs).train(
        resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-4"))
    assert [h["step"] for h in resumed.engine.monitor.checks] == [h["step"] for h in whole.engine.monitor.checks] \
        == [3, 6, 9]
    assert [h["step"] for h in resumed.engine.sentinel.checks] == [h["step"] for h in whole.engine.sentinel.checks]


@pytest.mark.slow
def test_hf_metric_for_best_model_with_step_evaluation(tmp_path):
    guard = CollapseGuardCallback(tr.gold(), schedule=CheckSchedule(every_n_steps=100), **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 1, [guard], max_steps=6, eval_dataset=tr.blocks("varied"),
                            eval_strategy="steps", eval_steps=3, save_strategy="steps", save_steps=3,
                            load_best_model_at_end=True, metric_for_best_model="collapseguard/health",
                            greater_is_better=True, per_device_eval_batch_size=64)
    trainer.train()  # raised KeyError 'eval_collapseguard/health' before: no check had run at the first evaluation
    assert [h["step"] for h in guard.engine.monitor.checks] == [3, 6]  # each evaluation judged its own step
    assert trainer.state.best_metric is not None and trainer.state.best_model_checkpoint is not None


@pytest.mark.slow
def test_hf_sentinel_warn_runs_the_full_check_at_once(tmp_path):
    guard = CollapseGuardCallback(tr.gold(), on_collapse="halt", alert_log=tmp_path / "trail.jsonl",
                                  schedule=CheckSchedule(every_n_steps=1000, sentinel_every_n_steps=2,
                                                         max_overhead=None), **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "degenerate", 4, [guard])
    trainer.train()
    trail = read_alert_log(tmp_path / "trail.jsonl")
    warned = [r["step"] for r in trail if r["type"] == "check" and r["tier"] == "sentinel" and r["severity"]]
    assert warned and _steps(trail, "full") and set(_steps(trail, "full")) <= set(warned)
    assert _steps(trail, "full")[0] == warned[0]  # no waiting for the 1000th step
    rows = [h for h in trainer.state.log_history if "collapseguard/sentinel/gold_ppl" in h]
    assert rows and all("collapseguard/overhead" in h for h in rows)
    sentinel_alerts = [r for r in trail if r["type"] == "alert" and r["tier"] == "sentinel"]
    assert sentinel_alerts and all(r["detector"].startswith("sentinel ") for r in sentinel_alerts)
    pytest.importorskip("matplotlib")
    from collapseguard.reporting.report import write_report

    html = write_report(tmp_path).read_text()
    assert "guard&#x27;s share of training time" in html and "Sentinel tier" in html and "Guard overhead" in html


@pytest.mark.slow
def test_hf_run_that_ends_between_scheduled_checks_gets_a_final_check(tmp_path):
    """Training ends before the next full check is due (or the budget kept it waiting): the model the run hands over
    is judged once more, after training, outside the budget; before, its last verdict was an earlier model's."""
    guard = CollapseGuardCallback(tr.gold(), schedule=CheckSchedule(every_n_steps=4, max_overhead=None),
                                  alert_log=tmp_path / "t.jsonl",
                                  **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 1, [guard], max_steps=6)
    trainer.train()
    assert [h["step"] for h in guard.engine.monitor.checks] == [4, 6]
    assert _steps(read_alert_log(tmp_path / "t.jsonl"), "full") == [4, 6]
    assert trainer.state.log_history[-1]["step"] == 6 and "collapseguard/health" in trainer.state.log_history[-1]


@pytest.mark.slow
def test_a_halt_points_at_the_last_good_checkpoint(tmp_path):
    """Issue 22: the halt message, the halt line and every check line of the trail say where to roll back to: the
    step with the best health, and the checkpoint folder the Trainer saved there."""
    calls = {"n": 0}

    def turns_bad(model, prompts):
        calls["n"] += 1  # the check before training and the step checks at 2 and 4 write like gold, then a loop
        good = [np.asarray(c) for c in guard.engine.gold_continuations()][: len(prompts)]
        return tr.alarming(model, prompts) if calls["n"] > 3 else good

    guard = CollapseGuardCallback(tr.gold(), on_collapse="halt", alert_log=tmp_path / "t.jsonl", schedule=CheckSchedule(every_n_steps=2, max_overhead=None), **tr.GUARD_KWARGS, hooks=ModelHooks(generate=turns_bad))
    trainer = tr.hf_trainer(tmp_path, "varied", 2, [guard], save_strategy="steps", save_steps=2)
    trainer.train()
    trail = read_alert_log(tmp_path / "t.jsonl")
    halt = next(r for r in trail if r["type"] == "halt")
    folder = str(tmp_path / "checkpoint-4")
    assert halt["step"] == 6 and halt["last_good"] == {"step": 4, "health": 1.0, "checkpoint": folder}
    assert f"last good checkpoint: step 4 (health 1.00), checkpoint {folder}" in halt["reason"]
    assert (tmp_path / "checkpoint-4").is_dir()
    assert [r["last_good"]["step"] for r in trail if r["type"] == "check" and "last_good" in r] == [2, 4, 4]
    pytest.importorskip("matplotlib")
    from collapseguard.reporting.report import write_report

    assert f"step 4 (health 1.00): {folder}" in write_report(tmp_path).read_text()


# ------------------------------------------------------------------ Lightning
@pytest.mark.slow
def test_lightning_run_that_ends_between_scheduled_checks_gets_a_final_check(tmp_path):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), schedule=CheckSchedule(every_n_steps=1000),
                          **tr.GUARD_KWARGS)
    trainer, _ = tr.lightning_fit(tmp_path, "varied", 1, [guard])
    assert [h["step"] for h in guard.engine.monitor.checks] == [trainer.global_step]
    assert any(r.get("collapseguard/health") for r in tr_csv(trainer))


@pytest.mark.slow
def test_lightning_halts_mid_epoch(tmp_path):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), hooks=ModelHooks(generate=tr.alarming),
                          on_collapse="halt", schedule=CheckSchedule(every_n_steps=3, check_on_train_start=False),
                          **tr.GUARD_KWARGS)
    trainer, _ = tr.lightning_fit(tmp_path, "varied", 2, [guard])
    # stopped after 3 optimizer steps of the first epoch (Lightning counts the cut epoch as ended)
    assert trainer.global_step == 3 < trainer.num_training_batches
    assert [h["step"] for h in guard.engine.monitor.checks] == [3]


@pytest.mark.slow
def test_lightning_gradient_accumulation_counts_optimizer_steps(tmp_path):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), schedule="steps=2,sentinel=1,overhead=none",
                          **tr.GUARD_KWARGS)
    trainer, _ = tr.lightning_fit(tmp_path, "varied", 1, [guard], accumulate_grad_batches=2)
    last = trainer.global_step
    assert [h["step"] for h in guard.engine.monitor.checks] == list(range(2, last + 1, 2))
    assert [h["step"] for h in guard.engine.sentinel.checks] == list(range(1, last + 1, 2))
    rows = tr_csv(trainer)
    assert any(r.get("collapseguard/sentinel/gold_ppl") for r in rows)


def tr_csv(trainer) -> list[dict]:
    import csv
    from pathlib import Path

    with open(Path(trainer.logger.log_dir) / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ two processes
@pytest.mark.slow
@pytest.mark.parametrize("framework", ["hf", "lightning"])
def test_two_processes_check_and_halt_in_step(framework, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"] if framework == "hf" \
        else [sys.executable]
    r0, r1 = run_ranks([*launcher, "-m", "tests.mp.step_schedule", framework, str(tmp_path)], tmp_path)
    assert r0["state"] == r1["state"]  # the same checks at the same steps, the same verdicts
    history = r0["state"]["monitor"]["history"]
    steps = [h["step"] for h in history if not h.get("baseline")]
    sentinel = [h["step"] for h in r0["state"]["sentinel"]["history"] if not h.get("baseline")]
    assert steps and sentinel
