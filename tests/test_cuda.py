"""The callbacks on a CUDA device (bf16 generation included); skipped cleanly where there is no GPU."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("transformers")

from collapseguard.demos.tiny import lightning_module
from collapseguard.integrations.lightning import CollapseGuard
from collapseguard.integrations.transformers import CollapseGuardCallback
from tests import tiny_runs as tr

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
              pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")]


def test_lightning_guard_on_cuda_keeps_every_rng_stream(tmp_path):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS)
    module = lightning_module(tr.model())
    trainer = tr.lightning_trainer(tmp_path, 2, [guard], accelerator="gpu", deterministic=False)
    trainer.fit(module, torch.utils.data.DataLoader(tr.blocks("varied"), batch_size=16))
    history = guard.engine.monitor.checks
    assert len(history) == 2 and all(math.isfinite(h["metrics"]["gold_ppl"]) for h in history)
    # the check itself leaves the CPU and CUDA generators where it found them
    from collapseguard.integrations._torch import produce_from_hf_model

    model = module.model.cuda().train()
    cpu, cuda = torch.get_rng_state(), torch.cuda.get_rng_state()
    gen = produce_from_hf_model(guard.engine, model, tr.tokenizer())()
    assert torch.equal(cpu, torch.get_rng_state()) and torch.equal(cuda, torch.cuda.get_rng_state())
    assert model.training and len(gen.sequences) == tr.GUARD_KWARGS["generation"].num_samples


def test_bf16_generation_and_scoring_on_cuda():
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS)
    guard.engine.setup()
    from collapseguard.integrations._torch import produce_from_hf_model

    model = tr.model().to("cuda", dtype=torch.bfloat16)
    outcome = guard.engine.conclude([guard.engine.measure(produce_from_hf_model(guard.engine, model, tr.tokenizer()))],
                                    step=0, epoch=0)
    assert outcome.result is not None, [f.message for f in outcome.faults]
    assert math.isfinite(outcome.result.metrics["gold_ppl_tail"]) and outcome.result.metrics["num_outputs"] == 32


def test_hf_trainer_guard_on_cuda_bf16(tmp_path):
    guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 2, [guard], bf16=True, use_cpu=False)
    trainer.train()
    rows = [h for h in trainer.state.log_history if "collapseguard/health" in h]
    assert len(rows) == 2 and next(trainer.model.parameters()).is_cuda
