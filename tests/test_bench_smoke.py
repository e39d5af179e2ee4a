"""Both speed benchmarks at smoke size: every value check passes and the reports are written.

They run as subprocesses: the scripts set process-wide state (torch threads, warning filters, log levels)
that must not leak into the other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_bench_metrics_smoke_checks_every_value(tmp_path):
    pytest.importorskip("nltk")
    pytest.importorskip("vendi_score")
    _run("bench_metrics.py", tmp_path, timeout=300)
    result = json.loads((tmp_path / "metrics_speed.json").read_text())
    assert result["environment"]["mode"] == "smoke"
    for key in ("date_utc", "cpu_count", "platform", "python", "load_avg_1m_at_start", "load_avg_1m_at_end"):
        assert key in result["environment"]
    assert result["environment"]["versions"]["numpy"]
    peers = result["peers"]
    compared = [p for p in peers if p["abs_diff"] is not None]
    assert compared and all(p["abs_diff"] < 1e-9 for p in compared)
    whats = {p["what"] for p in peers}
    assert {"self-BLEU-4", "Vendi, d=384", "distinct-2", "text suite (16 metrics)"} <= whats
    # nltk above nltk_full_max runs on a subset: labelled an estimate, its values still checked
    estimate = next(p for p in peers if p["what"] == "self-BLEU-4" and p["peer_estimated"])
    assert estimate["abs_diff"] is not None and "estimate" in estimate["note"]
    assert all(s["impl"] and len(s["n"]) >= 2 for s in result["peer_slopes"])
    assert {s["what"] for s in result["scaling"]} >= {"self_bleu", "distinct_2"}
    md = (tmp_path / "metrics_speed.md").read_text()
    assert md.startswith("**Smoke run: correctness only")


@pytest.mark.slow
def test_bench_overhead_smoke_guard_does_not_change_training(tmp_path):
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    _run("bench_overhead.py", tmp_path, timeout=600)
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert result["environment"]["mode"] == "smoke"
    assert [r["framework"] for r in result["runs"]] == ["lightning", "transformers"]
    for row in result["runs"]:
        assert row["guarded_weights_equal_unguarded"] is True
        assert row["checks"] == 2
        assert row["check_generation_s"] > 0 and row["check_metrics_warm_s"] > 0
        assert 0 < row["metric_share_of_warm_check"] < 1
    assert result["realistic"]["checks"] == 2
    assert (tmp_path / "overhead.md").read_text().startswith("**Smoke run: correctness only")
