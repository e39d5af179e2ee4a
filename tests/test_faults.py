"""Faults during training: the run continues with a clear alert, or stops cleanly, per on_error / on_collapse."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import uuid

import numpy as np
import pytest

from collapseguard import HaltPolicy, ModelHooks

pytest.importorskip("lightning")
pytest.importorskip("transformers")

import lightning.pytorch as pl

from collapseguard import GoldSet
from collapseguard.integrations.lightning import CollapseGuard
from collapseguard.reporting.alertlog import read_alert_log
from tests import tiny_runs as tr

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


def _stuck(module, prompts):
    return [np.array([5, 6, 7, 8] * 8)] * len(prompts)


def test_tokenizer_without_pad_token_falls_back_to_eos(tmp_path):
    tok = copy.deepcopy(tr.tokenizer())
    tok.pad_token = None
    assert tok.pad_token_id is None
    guard = CollapseGuard(tr.gold(), tokenizer=tok, **tr.GUARD_KWARGS)
    tr.lightning_fit(tmp_path, "varied", 1, [guard])
    assert guard.engine.monitor.checks[0]["metrics"]["num_outputs"] == 32


def test_outputs_longer_than_expected_are_truncated_and_reported(tmp_path, caplog):
    def long_outputs(module, prompts):
        return [np.arange(100) % 50 + 3 for _ in prompts]

    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS, hooks=ModelHooks(generate=long_outputs))
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        tr.lightning_fit(tmp_path, "varied", 1, [guard])
    assert guard.engine.monitor.checks[0]["metrics"]["mean_length"] == 32
    assert any("32 of 32 outputs on rank 0 are longer than max_new_tokens=32" in r.getMessage() for r in caplog.records)


class EditGold(pl.Callback):
    """Changes the gold file on disk when the second epoch starts."""

    def __init__(self, path):
        self.path = path

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            self.path.write_text(self.path.read_text().replace("the", "THE", 1))


@pytest.mark.parametrize("on_collapse", ["warn", "halt"])
def test_gold_file_changed_mid_run(tmp_path, caplog, on_collapse):
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in tr.texts()[1]))
    gold = GoldSet.from_jsonl(path)
    guard = CollapseGuard(gold, tokenizer=tr.tokenizer(), on_collapse=on_collapse, **tr.GUARD_KWARGS)
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        trainer, _ = tr.lightning_fit(tmp_path, "varied", 3, [guard, EditGold(path)])
    assert guard.engine.checks_done == (2 if on_collapse == "halt" else 3)
    assert len(guard.engine.monitor.checks) == 1  # the checks after the edit are faults, never verdicts
    assert any("changed on disk" in r.getMessage() for r in caplog.records)
    assert trainer.current_epoch == (2 if on_collapse == "halt" else 3)


def test_gold_file_changed_mid_run_raises_under_on_error_raise(tmp_path):
    from collapseguard.gold.goldset import GoldSetModifiedError

    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in tr.texts()[1]))
    guard = CollapseGuard(GoldSet.from_jsonl(path), tokenizer=tr.tokenizer(), on_error="raise", **tr.GUARD_KWARGS)
    with pytest.raises(GoldSetModifiedError, match="changed on disk"):
        tr.lightning_fit(tmp_path, "varied", 3, [guard, EditGold(path)])
    assert len(guard.engine.monitor.checks) == 1  # the check after the edit raised instead of judging


def test_engine_calls_before_setup_are_refused_with_the_fix():
    from collapseguard.guard.engine import GuardEngine

    engine = GuardEngine(GoldSet.from_texts(tr.texts()[1]))
    with pytest.raises(RuntimeError, match=r"engine\.prompts\(\) was called before setup\(\)"):
        engine.prompts()


def test_alert_log_is_an_append_only_trail(tmp_path):
    log = tmp_path / "alerts.jsonl"
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), alert_log=log, on_collapse=HaltPolicy(patience=2), **tr.GUARD_KWARGS, hooks=ModelHooks(generate=_stuck))
    tr.lightning_fit(tmp_path, "varied", 4, [guard])
    records = read_alert_log(log)
    assert records[0]["type"] == "config" and records[0]["gold"]["fingerprint"] == tr.gold().fingerprint
    assert records[0]["guard"]["on_collapse"] == "halt" and records[0]["thresholds"]["alert_patience"] >= 1
    checks = [r for r in records if r["type"] == "check"]
    assert all(set(c["bounds"]) >= {"distinct_2", "seq_rep_4"} and c["reference"] for c in checks)
    assert [c["epoch"] for c in checks] == [0, 1] and all(c["rank"] == 0 for c in checks)
    alerts = [r for r in records if r["type"] == "alert"]
    assert alerts and {a["step"] for a in alerts} == {c["step"] for c in checks}
    assert records[-1]["type"] == "halt" and "patience=2" in records[-1]["reason"]
    # a second run appends
    guard2 = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), alert_log=log, **tr.GUARD_KWARGS)
    tr.lightning_fit(tmp_path / "again", "varied", 1, [guard2])
    assert [r["type"] for r in read_alert_log(log)[len(records):]] == ["config", "baseline", "check"]


def test_alert_log_on_a_full_disk_never_stops_training(tmp_path, caplog):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), alert_log="/dev/full", **tr.GUARD_KWARGS, hooks=ModelHooks(generate=_stuck))
    with caplog.at_level(logging.ERROR, logger="collapseguard"):
        trainer, _ = tr.lightning_fit(tmp_path, "varied", 2, [guard])
    assert trainer.current_epoch == 2 and len(guard.engine.monitor.checks) == 2
    errors = [r.getMessage() for r in caplog.records if "alert log" in r.getMessage()]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    raising = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), alert_log="/dev/full", on_error="raise", **tr.GUARD_KWARGS, hooks=ModelHooks(generate=_stuck))
    with pytest.raises(OSError, match="No space left"):
        tr.lightning_fit(tmp_path / "raise", "varied", 1, [raising])


@pytest.fixture()
def read_only_dir(tmp_path):
    path = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a read-only file system here (needs root)")
    yield path
    subprocess.run(["umount", str(path)], check=False)


def test_alert_log_on_a_read_only_disk_never_stops_training(tmp_path, read_only_dir, caplog):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), alert_log=read_only_dir / "alerts.jsonl",
                          **tr.GUARD_KWARGS)
    with caplog.at_level(logging.ERROR, logger="collapseguard"):
        trainer, _ = tr.lightning_fit(tmp_path, "varied", 1, [guard])
    assert trainer.current_epoch == 1
    assert any("Read-only file system" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("on_error", ["warn", "raise"])
def test_failure_inside_a_collective_is_never_turned_into_a_fault(on_error):
    """A rank that failed while the others wait in a collective of a sharded model must stop, not go
    on to gather faults: the others could never answer (tests/test_sharded.py runs the real case)."""
    from collapseguard.guard.engine import GuardEngine, UnrecoverableCheckError

    engine = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), on_error=on_error, **tr.GUARD_KWARGS)
    engine.setup()

    def produce():
        raise UnrecoverableCheckError("generation failed on rank 1 inside a collective")

    with pytest.raises(UnrecoverableCheckError):
        engine.run_check(produce, step=0, epoch=0)
    assert engine.checks_done == 0


@pytest.mark.parametrize("on_error", ["warn", "raise"])
def test_a_check_with_no_outputs_raises_under_on_error_raise(on_error):
    """docs/faults.md: "raise" re-raises a failing check, an empty one included (it was a fault alert before)."""
    from collapseguard.guard.engine import GeneratedBatch, GuardEngine

    engine = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), on_error=on_error, **tr.GUARD_KWARGS)
    engine.setup()
    empty = lambda: GeneratedBatch(sequences=[], finished=[])  # noqa: E731
    if on_error == "raise":
        with pytest.raises(RuntimeError, match=r"generation returned no outputs for this check \(on_error='raise'\)"):
            engine.run_check(empty, step=1, epoch=0)
    else:
        outcome = engine.run_check(empty, step=1, epoch=0)
        assert outcome.result is None and outcome.faults[0].phase == "fault"
