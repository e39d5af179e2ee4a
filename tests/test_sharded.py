"""The guard on sharded models: FSDP2, FSDP1 and DeepSpeed ZeRO-3, two real processes.

On CPU over gloo (torch 2.13): raw FSDP2 and FSDP1 and raw DeepSpeed ZeRO-3 checked through the HF
callback's hooks, Lightning's ModelParallelStrategy (FSDP2), and the HF Trainer with DeepSpeed
ZeRO-3. Lightning's FSDPStrategy and DeepSpeedStrategy and accelerate's FSDP plugin run on GPUs
only: their tests need 2 CUDA devices and skip without them. In every run the ranks hold unequal
shares of the gold prompts (5 and 4, in batches of 2), one rank ends its samples with EOS early,
and the merged metrics must equal a single-process check on the outputs the ranks measured.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from collapseguard import CollapseMonitor, ModelStats
from tests import tiny_runs as tr
from tests.mp import launch, run_ranks
from tests.mp.sharded import GUARD

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")


def _merged_order(r0: dict, r1: dict, check: str) -> tuple[list, list, ModelStats]:
    """The two ranks' measurements in gold-prompt order (prompt i went to rank i % 2)."""
    parts = [r0["records"][check], r1["records"][check]]
    n = sum(len(p["sequences"]) for p in parts)
    where = [(i % 2, i // 2) for i in range(n)]
    seqs = [np.asarray(parts[r]["sequences"][j], dtype=np.int64) for r, j in where]
    finished = [parts[r]["finished"][j] for r, j in where]
    stats = ModelStats(*([np.asarray(parts[r]["model_stats"][name][j]) for r, j in where]
                         for name in ("token_ids", "nll", "entropy")))
    return seqs, finished, stats


def assert_merged_equals_single_process(r0: dict, r1: dict) -> None:
    """Same verdicts on both ranks, and every check's merged metrics equal one process measuring
    the same outputs (to 1e-9)."""
    assert r0["state"] == r1["state"]
    history = r0["state"]["monitor"]["history"]
    checks = sorted(set(r0["records"]) & set(r1["records"]), key=int)  # where no rank faulted
    assert len(checks) == len(history) >= 1
    monitor = CollapseMonitor(tr.gold(), tokenizer=tr.tokenizer(), prompt_length=GUARD["generation"].prompt_length,
                              max_new_tokens=GUARD["generation"].max_new_tokens)
    for check, entry in zip(checks, history, strict=True):
        seqs, finished, stats = _merged_order(r0, r1, check)
        assert len(seqs) == GUARD["generation"].num_samples
        result = monitor.evaluate(monitor.measure(seqs, finished=finished, model_stats=stats), step=entry["step"])
        assert entry["metrics"] == pytest.approx(result.metrics, rel=1e-9, nan_ok=True)
        assert entry["health"] == pytest.approx(result.health, rel=1e-9)


def assert_rank1_ended_early(r0: dict, r1: dict, check: str) -> None:
    """Rank 1 was forced to EOS after 2 tokens while rank 0 sampled on: both finished, no hang."""
    assert [len(s) for s in r1["records"][check]["sequences"]] == [2] * 4 and all(r1["records"][check]["finished"])
    assert max(len(s) for s in r0["records"][check]["sequences"]) > 2


@pytest.mark.parametrize("kind", ["fsdp2", "fsdp1", "zero3"])
def test_raw_sharded_training_checked_through_the_hf_callback(kind, tmp_path):
    if kind == "zero3":
        pytest.importorskip("deepspeed")
    r0, r1 = run_ranks([*TORCHRUN, "-m", "tests.mp.sharded", kind, str(tmp_path)], tmp_path)
    assert r0["modes"] == r1["modes"]
    assert all(mode.startswith(kind) for mode in r0["modes"].values())
    assert ("gathered" in r0["modes"]["0"]) == (kind == "zero3")
    assert_merged_equals_single_process(r0, r1)
    # unequal shares: rank 0 continued 5 prompts in 3 batches, rank 1 4 prompts in 2 (padded to 3)
    assert [len(r["records"]["0"]["sequences"]) for r in (r0, r1)] == [5, 4]
    # sharded generation and scoring are those of the unsharded weights
    for r in (r0, r1):
        assert r["unsharded_same_sequences"] and r["unsharded_nll_max_diff"] < 1e-5
    assert_rank1_ended_early(r0, r1, "1")
    # rank 1 could not prepare: a fault on both ranks, and nobody entered a collective
    for r in (r0, r1):
        assert any("could not prepare on purpose on rank 1" in f for f in r["faults"]["2"])
        assert any("rank(s) [1] could not prepare" in f for f in r["faults"]["2"])
    if kind == "zero3":
        assert_rank1_ended_early(r0, r1, "3")  # zero3_gather=False: DeepSpeed's hooks fetch, synced_gpus
        assert "collectives" in r0["modes"]["3"]
        for r in (r0, r1):  # forwards were local in gathered generation: a mid-generation failure is a fault
            assert any("failed on purpose in the middle of a batch on rank 1" in f for f in r["faults"]["4"])
    checks = 5 if kind == "zero3" else 3
    assert r0["state"]["checks_done"] == checks and len(r0["losses"]) == checks + 1  # trains on after the checks
    assert all(np.isfinite(r0["losses"])) and r0["losses"][-1] < r0["losses"][0]


def test_rank_failing_inside_sharded_generation_stops_the_job(tmp_path):
    start = time.monotonic()
    done = launch([*TORCHRUN, "-m", "tests.mp.sharded", "fsdp2", str(tmp_path), "midfail"], timeout=240)
    assert done.returncode != 0 and time.monotonic() - start < 200
    assert "UnrecoverableCheckError: generation failed on rank 1 inside a collective" in done.stderr
    assert not list(tmp_path.glob("rank*.json"))


def _lightning(strategy: str, out, accelerator: str = "cpu") -> dict:
    r0, r1 = run_ranks([sys.executable, "-m", "tests.mp.lightning_sharded", strategy, str(out), accelerator], out)
    assert_merged_equals_single_process(r0, r1)
    assert r0["state"]["checks_done"] == 2 and not r0["faults"]
    assert_rank1_ended_early(r0, r1, "1")
    return r0


def test_lightning_model_parallel_strategy_fsdp2(tmp_path):
    pytest.importorskip("lightning")
    assert _lightning("model_parallel", tmp_path)["sharding"].startswith("fsdp2")


def _hf_trainer(kind: str, out, accelerator: str = "cpu") -> tuple[dict, dict]:
    r0, r1 = run_ranks([*TORCHRUN, "-m", "tests.mp.hf_sharded", kind, str(out), accelerator], out)
    assert_merged_equals_single_process(r0, r1)
    assert_rank1_ended_early(r0, r1, "0")
    assert r0["sharding"].startswith(kind)
    return r0, r1


def test_hf_trainer_deepspeed_zero3(tmp_path):
    pytest.importorskip("deepspeed")
    r0, r1 = _hf_trainer("zero3", tmp_path)
    assert r0["sharding"] == "zero3: parameters gathered once"  # found through the optimizer the Trainer passes
    for r in (r0, r1):  # rank 1 failed inside gathered generation: a fault on both, training went on
        assert any("failed on purpose in the middle of a batch on rank 1" in f for f in r["faults"]["1"])
    assert r0["state"]["checks_done"] == 2 and len(r0["state"]["monitor"]["history"]) == 1


# ---------------------------------------------------------------- GPUs only (skipped without 2 CUDA devices)
@two_gpus
@pytest.mark.parametrize("strategy", ["model_parallel", "fsdp", "deepspeed"])
def test_lightning_sharded_on_cuda(strategy, tmp_path):
    pytest.importorskip("lightning")
    if strategy == "deepspeed":
        pytest.importorskip("deepspeed")
    _lightning(strategy, tmp_path, "cuda")


@two_gpus
@pytest.mark.parametrize("kind", ["fsdp2", "fsdp1", "zero3"])
def test_hf_trainer_sharded_on_cuda(kind, tmp_path):
    if kind == "zero3":
        pytest.importorskip("deepspeed")
    _hf_trainer(kind, tmp_path, "cuda")
