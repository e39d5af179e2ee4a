"""Every example runs, at small size, as a user runs it: a subprocess from a fresh working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collapseguard.reporting.alertlog import read_alert_log

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_example(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_lightning_halt_example_halts_and_reports(tmp_path):
    pytest.importorskip("lightning")
    proc = run_example([str(ROOT / "examples/lightning_halt.py"), "--epochs", "6", "--switch", "1"], tmp_path)
    trail = read_alert_log(tmp_path / "runs/lightning_halt/alerts.jsonl")
    halts = [r for r in trail if r["type"] == "halt"]
    assert len(halts) == 1 and "should_stop=True" in proc.stdout
    assert sum(r["type"] == "check" for r in trail) < 6  # stopped before max_epochs
    assert (tmp_path / "runs/lightning_halt/report.html").is_file()


def test_hf_reweight_example_raises_the_human_share(tmp_path):
    pytest.importorskip("transformers")
    run_example([str(ROOT / "examples/hf_reweight.py"), "--epochs", "3", "--base-epochs", "2"], tmp_path)
    state = json.loads((tmp_path / "runs/hf_reweight/trainer_state.json").read_text())
    targets = [h["collapseguard/human_fraction_target"] for h in state["log_history"]
               if "collapseguard/human_fraction_target" in h]
    assert len(targets) == 3 and targets[-1] > 0.0  # alerts raised the floor from zero
    assert (tmp_path / "runs/hf_reweight/report.html").is_file()


def test_audit_example_gates_each_candidate(tmp_path):
    proc = run_example([str(ROOT / "examples/audit_dataset.py"), "--generations", "4"], tmp_path)
    assert "human.jsonl -> 1, human_dedup.jsonl -> 0, trigram_gen4.jsonl -> 1" in proc.stdout


def test_lightning_cli_yaml_config_and_command_line(tmp_path):
    pytest.importorskip("jsonargparse")
    example = str(ROOT / "examples/lightning_cli.py")
    run_example([example, "fit", "--config", str(ROOT / "examples/lightning_cli.yaml"), "--trainer.max_epochs=1",
                 "--trainer.enable_progress_bar=false"], tmp_path)
    trail = read_alert_log(tmp_path / "runs/lightning_cli/alerts.jsonl")
    config = next(r for r in trail if r["type"] == "config")
    assert config["guard"]["on_collapse"] == "halt" and config["guard"]["num_samples"] == 32
    assert sum(r["type"] == "check" for r in trail) == 1
    saved = (tmp_path / "runs/lightning_cli/version_0/config.yaml").read_text()
    assert "collapseguard.integrations.lightning.CollapseGuard" in saved and "on_collapse: halt" in saved
    # the same guard added on the command line, with its init args; degenerate data -> halt
    run_example([example, "fit", "--trainer.max_epochs=8", "--trainer.enable_progress_bar=false",
                 "--trainer.logger=false", "--trainer.enable_checkpointing=false",
                 "--trainer.callbacks+=collapseguard.integrations.lightning.CollapseGuard",
                 "--trainer.callbacks.gold=runs/lightning_cli/gold.jsonl", "--trainer.callbacks.on_collapse=halt",
                 "--trainer.callbacks.thresholds=strict", "--trainer.callbacks.generation.num_samples=32",
                 "--trainer.callbacks.alert_log=runs/cli/alerts.jsonl", "--data.corpus=degenerate"], tmp_path)
    trail = read_alert_log(tmp_path / "runs/cli/alerts.jsonl")
    config = next(r for r in trail if r["type"] == "config")
    assert config["thresholds"]["diversity_warn"] == 0.85  # the strict preset arrived
    assert [r["type"] for r in trail].count("halt") == 1
    assert sum(r["type"] == "check" for r in trail) < 8


def test_lightning_cli_rejects_a_bad_init_arg_with_its_name(tmp_path):
    pytest.importorskip("jsonargparse")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples/lightning_cli.py"), "fit", "--trainer.max_epochs=1",
                           "--trainer.callbacks+=collapseguard.integrations.lightning.CollapseGuard",
                           "--trainer.callbacks.gold=runs/lightning_cli/gold.jsonl",
                           "--trainer.callbacks.on_collapse=explode"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "on_collapse" in proc.stderr and "explode" in proc.stderr
