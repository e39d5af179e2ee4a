"""Two CPU processes (gloo): Lightning ddp and ddp_spawn, HF Trainer under torchrun.

Each rank generates its share of the gold prompts; the merged result must equal a
single-process check on the same outputs, every rank must reach the same verdict,
and a rank whose generation raises must not hang the others.
"""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

from collapseguard import CollapseMonitor
from tests import tiny_runs as tr
from tests.mp import run_ranks as _run
from tests.mp.scripted import continuation_table, outputs_for

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")]


def _single_process_metrics(check: int) -> dict:
    monitor = CollapseMonitor(tr.gold(), tokenizer=tr.tokenizer(), prompt_length=16, max_new_tokens=32)
    table = continuation_table()
    prompts = monitor.split.prompts[: tr.GUARD_KWARGS["generation"].num_samples]
    for k in range(check + 1):
        result = monitor.check(outputs_for(prompts, k, table), step=k)
    return result.metrics


def _assert_same_verdicts_and_exact_merge(r0: dict, r1: dict, checks: int) -> None:
    assert r0["state"] == r1["state"]  # history, counters, every decision
    history = r0["state"]["monitor"]["history"]
    assert len(history) == checks
    for k, h in enumerate(history):
        assert h["metrics"] == pytest.approx(_single_process_metrics(k), rel=1e-9, nan_ok=True)
    assert [a["metric"] for a in history[-1]["alerts"] if a["severity"] == "critical"]  # check 2 loops


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_lightning_two_processes_merge_exactly(strategy, tmp_path):
    r0, r1 = _run([sys.executable, "-m", "tests.mp.lightning_ddp", strategy, str(tmp_path)], tmp_path)
    _assert_same_verdicts_and_exact_merge(r0, r1, checks=2)


def test_lightning_rank_failure_does_not_hang(tmp_path):
    r0, r1 = _run([sys.executable, "-m", "tests.mp.lightning_ddp", "ddp", str(tmp_path), "1", "1"], tmp_path)
    assert r0["state"] == r1["state"] and r0["state"]["checks_done"] == 2
    assert len(r0["state"]["monitor"]["history"]) == 1  # the failed check is a fault, not a verdict
    assert r0["faults"] == r1["faults"] and "on rank 1" in r0["faults"][0]


def test_hf_trainer_under_torchrun(tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tests.mp.hf_ddp",
            str(tmp_path)]
    r0, r1 = _run(args, tmp_path)
    _assert_same_verdicts_and_exact_merge(r0, r1, checks=2)
    r0, r1 = _run([*args, "0", "1"], tmp_path)  # rank 0 fails at the second check
    assert r0["state"] == r1["state"] and len(r0["state"]["monitor"]["history"]) == 1
    assert "on rank 0" in r1["faults"][0]
