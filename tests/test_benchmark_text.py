"""The detection / mitigation benchmark summaries on hand-made records, and both CLIs at smoke size."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collapseguard.demos.experiment import GenerationRecord

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    # benchmarks/ is a folder of scripts, not a package: load the files themselves
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


det = _load("detection")
mit = _load("mitigation")


def alert(severity: str, metric: str = "gold_ppl", phase: str = "mid") -> dict:
    return {"phase": phase, "severity": severity, "metric": metric, "value": 1.0, "reference": 1.0,
            "threshold": 1.25, "message": "", "detector": "d", "step": None}


def run(regime: str, quality: list[float], alerts: dict[int, list[dict]] | None = None,
        val_loss: list[float] | None = None, seed: int = 0, scenario: str = "toy", **metrics: list[float]):
    alerts = alerts or {}
    val_loss = val_loss or [1.0] * len(quality)
    out = []
    for g, q in enumerate(quality):
        mine = alerts.get(g, [])
        severity = max((a["severity"] for a in mine), key=det.SEVERITY_RANK.__getitem__, default=None)
        out.append(GenerationRecord(scenario, regime, seed, g, q, val_loss[g], 1.0, severity, mine,
                                    {k: v[g] for k, v in metrics.items()}))
    return out


def test_first_alerts_ignore_generation_0_and_faults():
    records = run("replace", [10, 10, 10, 10, 10], {0: [alert("critical")], 1: [alert("warn", phase="fault")],
                                                    2: [alert("warn")], 3: [alert("warn"), alert("critical")]})
    assert det.first_alert(records, "warn") == 2  # warn or worse
    assert det.first_alert(records, "critical") == 3
    assert det.first_alert(run("replace", [10, 10]), "warn") is None
    assert det.first_alert(run("replace", [10, 10, 10], {2: [alert("critical")]}), "warn") == 2


def test_degradation_is_the_first_generation_at_110_percent_of_generation_0():
    assert det.degradation_generation(run("replace", [10.0, 10.5, 10.99, 11.0, 9.0])) == 3  # exactly 1.10x counts
    assert det.degradation_generation(run("replace", [10.0, 10.5, 10.9])) is None
    assert det.degradation_generation(run("replace", [10.0, 10.5, 12.0]), factor=1.25) is None


def test_lead_time_early_late_and_censored():
    early = det.summarize_run(run("replace", [10, 10, 10.5, 11, 12], {1: [alert("warn")], 3: [alert("critical")]}))
    assert (early["first_warn"], early["first_critical"], early["degradation"]) == (1, 3, 3)
    assert early["lead_time"] == 2 and not early["lead_time_censored"] and early["detected"]
    late = det.summarize_run(run("replace", [10, 12, 13, 14], {3: [alert("warn")]}))
    assert late["degradation"] == 1 and late["lead_time"] == -2
    censored = det.summarize_run(run("replace", [10, 10, 10, 10, 10], {2: [alert("warn")]}))
    assert censored["degradation"] is None
    assert censored["lead_time"] == 3 and censored["lead_time_censored"]  # (4 + 1) - 2: a lower bound
    missed = det.summarize_run(run("replace", [10, 12, 13]))
    assert not missed["detected"] and missed["lead_time"] is None and missed["degradation"] == 1


@pytest.mark.parametrize(("losses", "patience", "stop"), [
    ([3.0, 2.9, 2.95, 2.8, 2.85], 1, 2),  # best 2.9 at gen 1; gen 2 does not improve: patience 1 spent
    ([3.0, 2.9, 2.8, 2.7], 1, None),  # improves every generation
    ([3.0, 3.0], 1, 1),  # equal is no improvement (min_delta 0, strict <)
    ([3.0, 3.1, 2.9, 3.0, 3.05], 2, 4),  # gen 1 waits, gen 2 resets, gens 3 and 4 wait: stop at 4
    ([3.0, float("nan"), 2.0], 1, 1),  # a non-finite loss stops at once (check_finite)
])
def test_early_stopping_generation_matches_a_hand_computation(losses, patience, stop):
    pytest.importorskip("lightning")
    assert det.early_stopping_generation(losses, patience=patience) == stop


def test_early_stopping_from_generation_1_skips_the_human_to_synthetic_step():
    pytest.importorskip("lightning")
    summary = det.summarize_run(run("replace", [10, 11, 12, 13], val_loss=[3.0, 4.0, 3.9, 3.8]))
    assert summary["early_stopping"] == 1 and summary["early_stopping_from_1"] is None
    summary = det.summarize_run(run("replace", [10, 11, 12, 13], val_loss=[3.0, 4.0, 3.9, 3.95]))
    assert summary["early_stopping_from_1"] == 3


def test_false_alerts_on_controls_are_counted_by_severity():
    pytest.importorskip("lightning")
    records = run("fresh", [10, 10, 9, 9], {0: [alert("critical")], 1: [alert("warn"), alert("warn", "tail")],
                                          2: [alert("critical")], 3: [alert("critical", phase="fault")]})
    s = det.summarize_run(records)
    assert s["control"] and (s["warn_alerts"], s["critical_alerts"], s["alerted_generations"]) == (2, 1, 2)
    assert s["detected"] and s["lead_time_censored"]  # an alert on a control: a false one


def test_summarize_aggregates_over_seeds_and_renders_markdown():
    pytest.importorskip("lightning")
    records = (run("replace", [10, 11, 12], {1: [alert("warn")]}, seed=0)
               + run("replace", [10, 10, 11], {2: [alert("critical")]}, seed=1)
               + run("fresh", [10, 10, 10], seed=0) + run("fresh", [10, 10, 10], {2: [alert("warn")]}, seed=1))
    summary = det.summarize(records)
    json.dumps(summary, allow_nan=False)
    replace, fresh = summary["table"]
    assert (replace["regime"], replace["detected"], replace["seeds"]) == ("replace", 2, 2)
    assert replace["first_warn"]["values"] == [1, 2] and replace["first_critical"]["values"] == [None, 2]
    assert replace["lead_time"]["values"] == [0, 0] and replace["degradation"]["median"] == 1.5
    assert (fresh["warn_alerts"], fresh["critical_alerts"], fresh["detected"]) == (1, 0, 1)
    text = det.markdown(summary)
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert len(tables) == 2 + 2 + 2 + 4  # two header rows each, 2 aggregate rows, 4 run rows
    widths = {line.count("|") for line in tables[:4]}
    assert len(widths) == 1
    assert "| toy | fresh (control) | 2 | 1/2 |" in text


def test_summarize_run_refuses_mixed_or_gapped_records():
    with pytest.raises(ValueError, match="several runs"):
        det.summarize_run(run("replace", [10, 11]) + run("fresh", [10, 11]))
    with pytest.raises(ValueError, match="without gaps"):
        det.summarize_run(run("replace", [10, 11, 12])[::2])


def test_jsonable_replaces_non_finite_numbers():
    assert det.jsonable({"a": [1.0, float("nan")], "b": (float("inf"), 2)}) == {"a": [1.0, None], "b": [None, 2]}


def test_mitigation_rows_are_ratios_to_each_seeds_generation_0():
    records = []
    for seed, scale in ((0, 1.0), (1, 2.0)):
        records += run("replace", [10 * scale, 12 * scale, 15 * scale], seed=seed,
                       distinct_2=[0.8, 0.72, 0.64], gold_ppl=[20 * scale, 22 * scale, 30 * scale])
        records += run("reweight-0.2", [10 * scale, 10 * scale, 10.5 * scale], {2: [alert("warn")]}, seed=seed,
                       distinct_2=[0.8, 0.8, 0.76], gold_ppl=[20, 20, 21], human_fraction_target=[0, 0.2, 0.3])
    rows = mit.per_generation(records, floors=(0.0, 0.2))
    at = {(r["floor"], r["generation"]): r for r in rows}
    assert at[(0.0, 2)]["quality_x"]["mean"] == pytest.approx(1.5)
    assert at[(0.0, 1)]["distinct_2_x"]["min"] == pytest.approx(0.9)
    assert at[(0.2, 2)]["gold_ppl_x"]["max"] == pytest.approx(1.05)
    assert at[(0.2, 2)]["warn_alerts"] == 2 and at[(0.2, 2)]["human_fraction_target"] == pytest.approx(0.3)
    assert mit.regime_of(0) == "replace" and mit.regime_of(0.5) == "reweight-0.5"
    text = mit.markdown(rows, seeds=2, generations=2)
    assert "×1.50 at a 0% floor" in text and "Bertrand et al." in text


def test_run_text_regime_names():
    from collapseguard.demos.recursive_text import parse_regime

    assert parse_regime("accumulate") == ("accumulate", None)
    assert parse_regime("reweight-0.2") == ("reweight", 0.2)
    assert parse_regime("reweight", floor=0.5) == ("reweight", 0.5)
    for bad in ("reweight-0", "reweight", "reweight-1.5", "mix"):
        with pytest.raises(ValueError):
            parse_regime(bad)


@pytest.mark.slow
def test_both_clis_at_smoke_size(tmp_path):
    pytest.importorskip("lightning")
    pytest.importorskip("matplotlib")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for script in ("detection", "mitigation"):
        done = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--smoke", "--out", str(tmp_path)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    detection = json.loads((tmp_path / "detection_text.json").read_text())
    assert detection["meta"]["smoke"] and detection["meta"]["seeds"] == 1
    assert [row["regime"] for row in detection["table"]] == ["replace", "fresh", "accumulate"]
    records = detection["records"]
    assert len(records) == 3 * 3 and {r["scenario"] for r in records} == {"text-gpt2"}
    assert all(math.isfinite(r["quality"]) and math.isfinite(r["val_loss"]) for r in records)
    assert "| text-gpt2 | fresh (control) |" in (tmp_path / "detection_text.md").read_text()
    mitigation = json.loads((tmp_path / "mitigation_text.json").read_text())
    assert {row["regime"] for row in mitigation["rows"]} == {"replace", "reweight-0.1", "reweight-0.2",
                                                            "reweight-0.5"}
    assert len(mitigation["records"]) == 4 * 3
    assert "Bertrand et al." in (tmp_path / "mitigation_text.md").read_text()
    assert (tmp_path / "mitigation_text.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
