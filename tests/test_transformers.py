"""CollapseGuardCallback in the real Hugging Face Trainer with a real tiny GPT-2 (no mocks)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from collapseguard import HaltPolicy, ModelHooks

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from collapseguard.integrations._hf import checkpoint_folder
from collapseguard.integrations.transformers import CollapseGuardCallback
from tests import tiny_runs as tr

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


def _guard_rows(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "collapseguard/health" in h]


@pytest.mark.slow
def test_varied_human_text_trains_without_critical_alert(tmp_path):
    guard = CollapseGuardCallback(tr.gold(), on_collapse="halt", **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 4, [guard])
    trainer.train()
    history = guard.engine.monitor.checks
    assert trainer.state.epoch == 4 and len(history) == 4
    assert "critical" not in tr.severities(history)
    rows = _guard_rows(trainer)
    assert len(rows) == 4 and [r["epoch"] for r in rows] == [1.0, 2.0, 3.0, 4.0]
    assert rows[0]["collapseguard/health"] == pytest.approx(history[0]["health"])


@pytest.mark.slow
def test_degenerate_corpus_is_flagged_critical_and_halted(tmp_path, caplog):
    guard = CollapseGuardCallback(tr.gold(), on_collapse=HaltPolicy(patience=2), **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "degenerate", 12, [guard])
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        trainer.train()
    history = guard.engine.monitor.checks
    assert trainer.state.epoch < 12, "the guard should have halted training"
    assert tr.severities(history)[-2:] == ["critical", "critical"]
    assert sum("halted training" in r.getMessage() for r in caplog.records) == 1
    assert _guard_rows(trainer)[-1]["collapseguard/severity"] == 2.0


@pytest.mark.slow
def test_warn_mode_trains_bit_for_bit_like_no_guard(tmp_path):
    plain = tr.hf_trainer(tmp_path / "a", "varied", 2, [])
    plain.train()
    guard = CollapseGuardCallback(tr.gold(), on_collapse="warn", **tr.GUARD_KWARGS)
    guarded = tr.hf_trainer(tmp_path / "b", "varied", 2, [guard])
    guarded.train()
    assert len(guard.engine.monitor.checks) == 2
    a, b = plain.model.state_dict(), guarded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_restores_guard_state(tmp_path):
    full_guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS)
    tr.hf_trainer(tmp_path / "full", "degenerate", 4, [full_guard], dropout=0.0).train()

    part_guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS)
    part = tr.hf_trainer(tmp_path / "part", "degenerate", 4, [part_guard], dropout=0.0, save_strategy="epoch",
                         restore_callback_states_from_checkpoint=True)
    part.train()
    ckpt = sorted((tmp_path / "part").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[1]
    # HF tells callbacks no checkpoint path: the guard derives it as the Trainer names it (fails if HF renames it)
    assert checkpoint_folder(part.args, int(ckpt.name.split("-")[1])) == str(ckpt)
    saved = json.loads((ckpt / "collapseguard_CollapseGuardCallback.json").read_text())
    assert saved["checks_done"] == 2
    assert "CollapseGuardCallback" not in json.loads((ckpt / "trainer_state.json").read_text())["stateful_callbacks"]

    resumed_guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS)  # a fresh object, as after a restart
    resumed = tr.hf_trainer(tmp_path / "part", "degenerate", 4, [resumed_guard], dropout=0.0, save_strategy="epoch",
                            restore_callback_states_from_checkpoint=True)
    resumed.train(resume_from_checkpoint=str(ckpt))
    want, got = full_guard.engine.state_dict(), resumed_guard.engine.state_dict()
    assert got["checks_done"] == want["checks_done"] == 4
    assert got["critical_streak"] == want["critical_streak"]
    assert [h["metrics"] for h in got["monitor"]["history"]] == [h["metrics"] for h in want["monitor"]["history"]]


def test_health_serves_as_metric_for_best_model(tmp_path):
    guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 2, [guard], eval_strategy="epoch", save_strategy="epoch",
                            metric_for_best_model="collapseguard/health", greater_is_better=True,
                            load_best_model_at_end=True, eval_dataset=tr.blocks("varied"))
    trainer.train()
    assert trainer.state.best_metric == pytest.approx(max(h["health"] for h in guard.engine.monitor.checks))


@pytest.mark.parametrize("attached", [False, True])
def test_metrics_reach_report_to_integrations_once_the_guard_is_attached(tmp_path, attached):
    """HF calls callbacks in list order, report_to integrations before the user's: an integration misses the guard's
    metrics unless guard.attach(trainer) puts the guard first. (If HF ever orders callbacks otherwise, the
    unattached case fails and run_before_reporters can go.)"""
    from transformers import TrainerCallback

    seen: list[dict] = []

    class Recorder(TrainerCallback):  # stands where report_to integrations stand: before user callbacks
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs or {}))

    guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 1, [])
    trainer.add_callback(Recorder())
    trainer.add_callback(guard)
    if attached:
        assert guard.attach(trainer) is guard
        assert trainer.callback_handler.callbacks[0] is guard
    trainer.train()
    assert any("collapseguard/health" in logs for logs in seen) is attached
    assert trainer.state.log_history and any("collapseguard/health" in h for h in trainer.state.log_history)


def test_failing_generation_is_an_alert_not_a_crash(tmp_path, caplog):
    def broken(model, prompts):
        raise RuntimeError("tokenizer service unavailable")

    guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS, hooks=ModelHooks(generate=broken))
    trainer = tr.hf_trainer(tmp_path, "varied", 1, [guard])
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        trainer.train()
    assert any("tokenizer service unavailable" in r.getMessage() for r in caplog.records)
    assert _guard_rows(trainer) == []
    assert trainer.state.log_history[0]["collapseguard/check_failed"] == 1.0
