"""The one-command benchmark suite runs end to end at smoke size (correctness, not timing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_all_smoke_writes_every_part_and_the_floors(tmp_path):
    pytest.importorskip("lightning")
    pytest.importorskip("sklearn")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    docs = tmp_path / "benchmarks.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/run_all.py"), "--smoke", "--out", str(tmp_path),
                           "--docs", str(docs)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = docs.read_text()
    for part in ("## Floors", "## 1. Healthy training", "## 2. Closed form", "### gaussian", "### gmm", "### vae",
                 "### text", "## 4. Mitigation", "## 5. Speed", "## 6. Overhead", "## 7. Post-training", "(a) GRPO",
                 "(b) SFT", "## 11. RL with verifiable rewards", "(a) A tiny model on an arithmetic task",
                 "(c) Overhead with correctness on", "healthy runs: no false halt", "every collapsing twin halted", "bare CollapseMonitor"):
        assert part in page, part
    for name in ("closed_form.png", "mitigation_text.png", "detection_gaussian.json", "detection_vae.json",
                 "detection_text.json", "metrics_speed.json", "overhead.json", "posttraining.json", "healthy.json",
                 "healthy.md", "rlvr.json"):
        assert (tmp_path / name).is_file(), name
    # the healthy part judged the same recorded checks three ways: the callbacks, a bare monitor, the rules before
    import json

    summary = json.loads((tmp_path / "healthy.json").read_text())["summary"]
    assert {"collapseguard (callbacks)", "bare CollapseMonitor"} <= set(summary["healthy"])
    assert summary["twins"] and all(t["collapseguard (callbacks)"]["judged"] > 0 for t in summary["twins"])
