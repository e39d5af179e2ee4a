"""Both adapters drive one engine: the same outputs give the same metrics, alerts and decisions."""

from __future__ import annotations

import pytest
import torch

from collapseguard import HaltPolicy, ModelHooks

pytest.importorskip("lightning")
pytest.importorskip("transformers")

from collapseguard.demos.tiny import lightning_module
from collapseguard.integrations.lightning import CollapseGuard
from collapseguard.integrations.transformers import CollapseGuardCallback
from tests import tiny_runs as tr

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


def scripted_outputs():
    """Healthy gold continuations before training and for two checks, then one repeated sentence for every prompt."""
    calls = {"n": 0}
    tok = tr.tokenizer()
    stuck = tok.encode(" The object is returned. The object is returned. The object is returned.")

    def generate_fn(model, prompts):
        calls["n"] += 1
        if calls["n"] <= 3:  # the check before training and checks 0 and 1
            split = tr.gold().split(tok, 16, 32).halves()[0]  # the monitor's own prompt half
            return [split.continuations[i] for i in range(len(prompts))]
        return [stuck for _ in prompts]

    return generate_fn


def _histories(guard_engine) -> list[tuple]:
    return [(h["metrics"], h["alerts"], h["health"]) for h in guard_engine.monitor.checks]


@pytest.mark.slow
def test_same_outputs_same_metrics_alerts_and_halt(tmp_path):
    kwargs = {**tr.GUARD_KWARGS, "on_collapse": HaltPolicy(patience=2)}  # each guard keeps its own copy
    pl_guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **kwargs, hooks=ModelHooks(generate=scripted_outputs()))
    pl_trainer, _ = tr.lightning_fit(tmp_path / "pl", "varied", 8, [pl_guard])
    hf_guard = CollapseGuardCallback(tr.gold(), **kwargs, hooks=ModelHooks(generate=scripted_outputs()))
    hf_trainer = tr.hf_trainer(tmp_path / "hf", "varied", 8, [hf_guard])
    hf_trainer.train()

    assert len(pl_guard.engine.monitor.checks) == len(hf_guard.engine.monitor.checks) == 4
    assert pl_trainer.current_epoch == round(hf_trainer.state.epoch) == 4  # both halted after check 4
    pl_hist, hf_hist = _histories(pl_guard.engine), _histories(hf_guard.engine)
    for (m1, a1, h1), (m2, a2, h2) in zip(pl_hist, hf_hist, strict=True):
        assert m1 == pytest.approx(m2, nan_ok=True)
        assert [(a["metric"], a["severity"]) for a in a1] == [(a["metric"], a["severity"]) for a in a2]
        assert h1 == h2
    assert pl_guard.engine.last_outcome.reason.split(";")[0] == hf_guard.engine.last_outcome.reason.split(";")[0]


def test_same_model_same_generations_in_both_frameworks(tmp_path):
    """With learning rate 0 the model is the same in both runs, so the real generations must agree."""
    pl_guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS)
    module = lightning_module(tr.model(), lr=0.0)
    trainer = tr.lightning_trainer(tmp_path / "pl", 1, [pl_guard])
    trainer.fit(module, torch.utils.data.DataLoader(tr.blocks("varied"), batch_size=16))

    hf_guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS)
    hf = tr.hf_trainer(tmp_path / "hf", "varied", 1, [hf_guard], learning_rate=0.0)
    hf.train()
    (m1, a1, h1), = _histories(pl_guard.engine)
    (m2, a2, h2), = _histories(hf_guard.engine)
    assert m1 == m2 and a1 == a2 and h1 == h2
