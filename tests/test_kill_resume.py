"""A run killed with SIGKILL mid-training resumes from its last checkpoint with the guard's state intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(framework: str, out: Path, mode: str, variant: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tests.mp.kill_resume", framework, str(out), mode, variant],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("variant", ["warn", "reweight"])
@pytest.mark.parametrize("framework", ["lightning", "hf"])
def test_guard_state_survives_a_real_kill(framework, variant, tmp_path):
    full = _run(framework, tmp_path / "a", "full", variant)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run(framework, tmp_path / "b", "kill", variant)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "b" / "kill.json").exists()
    resumed = _run(framework, tmp_path / "b", "resume", variant)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = json.loads((tmp_path / "a" / "full.json").read_text())
    got = json.loads((tmp_path / "b" / "resume.json").read_text())
    assert got["checks_done"] == want["checks_done"] == 4
    assert got["critical_streak"] == want["critical_streak"]
    assert got["monitor"]["history"] == want["monitor"]["history"]  # metrics, alerts, patience inputs
    if variant == "reweight":  # the anchor share continues where it was: 0.1 -> 0.3 -> 0.5 -> 0.7 -> 0.8
        assert got["human_fraction"] == want["human_fraction"] == got["sampler_fraction"] == 0.8
