"""CollapseGuard in the real Lightning Trainer with a real tiny GPT-2 (no mocks)."""

from __future__ import annotations

import csv
import logging
import warnings

import numpy as np
import pytest
import torch

from collapseguard import GenerationSettings, HaltPolicy, ModelHooks

pytest.importorskip("lightning")
pytest.importorskip("transformers")

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from collapseguard import CollapseWarning, GoldSet
from collapseguard.integrations.lightning import CollapseGuard
from tests import tiny_runs as tr

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


def _csv_rows(trainer: pl.Trainer) -> list[dict[str, str]]:
    with open(f"{trainer.logger.log_dir}/metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_varied_human_text_trains_without_critical_alert(tmp_path):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), on_collapse="halt", **tr.GUARD_KWARGS)
    trainer, _ = tr.lightning_fit(tmp_path, "varied", 4, [guard])
    history = guard.engine.monitor.checks
    assert trainer.current_epoch == 4 and len(history) == 4  # never halted, one check per epoch
    assert "critical" not in tr.severities(history)
    assert min(h["health"] for h in history) > 0.7
    rows = [r for r in _csv_rows(trainer) if r.get("collapseguard/health")]
    assert len(rows) == 4
    assert {"collapseguard/distinct_2", "collapseguard/self_bleu", "collapseguard/gold_ppl_tail"} <= set(rows[0])


@pytest.mark.slow
def test_degenerate_corpus_is_flagged_critical_and_halted(tmp_path, caplog):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), on_collapse=HaltPolicy(patience=2), **tr.GUARD_KWARGS)
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        trainer, _ = tr.lightning_fit(tmp_path, "degenerate", 12, [guard])
    history = guard.engine.monitor.checks
    assert trainer.current_epoch < 12, "the guard should have halted training"
    assert tr.severities(history)[-2:] == ["critical", "critical"]
    halt_lines = [r.getMessage() for r in caplog.records if "halted training" in r.getMessage()]
    assert len(halt_lines) == 1 and "gold reference" in halt_lines[0] and "\n" not in halt_lines[0]
    rows = [r for r in _csv_rows(trainer) if r.get("collapseguard/health")]
    assert len(rows) == len(history)
    assert float(rows[-1]["collapseguard/severity"]) == 2.0


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_warn_mode_trains_bit_for_bit_like_no_guard(tmp_path):
    _, plain = tr.lightning_fit(tmp_path / "a", "varied", 2, [])
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), on_collapse="warn", **tr.GUARD_KWARGS)
    _, guarded = tr.lightning_fit(tmp_path / "b", "varied", 2, [guard])
    assert len(guard.engine.monitor.checks) == 2
    a, b = _weights(plain), _weights(guarded)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert guarded.training  # train mode restored


@pytest.mark.slow
def test_resume_restores_guard_state(tmp_path):
    # dropout off: Lightning does not restore the global RNG, so with dropout the weights
    # themselves would differ after resume, whatever the guard does
    full = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS)
    tr.lightning_fit(tmp_path / "full", "degenerate", 4, [full], dropout=0.0)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    first = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS)
    tr.lightning_fit(tmp_path / "part", "degenerate", 2, [first, ckpt], enable_checkpointing=True, dropout=0.0)
    path = sorted((tmp_path / "ckpt").glob("epoch=1*.ckpt"))[0]

    resumed = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS)
    tr.lightning_fit(tmp_path / "resume", "degenerate", 4, [resumed], ckpt_path=str(path), dropout=0.0)
    want, got = full.engine.state_dict(), resumed.engine.state_dict()
    assert got["checks_done"] == want["checks_done"] == 4
    assert got["critical_streak"] == want["critical_streak"]
    assert [h["metrics"] for h in got["monitor"]["history"]] == [h["metrics"] for h in want["monitor"]["history"]]
    assert [h["alerts"] for h in got["monitor"]["history"]] == [h["alerts"] for h in want["monitor"]["history"]]


def test_model_checkpoint_can_monitor_health(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "best", monitor="collapseguard/health", mode="max", save_top_k=1)
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS)
    tr.lightning_fit(tmp_path, "varied", 2, [guard, ckpt], enable_checkpointing=True)
    assert ckpt.best_model_score is not None
    assert float(ckpt.best_model_score) == pytest.approx(max(h["health"] for h in guard.engine.monitor.checks))


def test_two_guards_keep_separate_state_keys():
    a = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), generation=GenerationSettings(num_samples=16))
    b = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), generation=GenerationSettings(num_samples=32))
    assert a.state_key != b.state_key


def test_failing_generation_is_an_alert_not_a_crash(tmp_path, caplog):
    def broken(module, prompts):
        raise RuntimeError("generation server fell over")

    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS, hooks=ModelHooks(generate=broken))
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        trainer, _ = tr.lightning_fit(tmp_path, "varied", 2, [guard])
    assert trainer.current_epoch == 2
    messages = [r.getMessage() for r in caplog.records if "generation server fell over" in r.getMessage()]
    assert len(messages) == 3 and "the check before training failed" in messages[0]  # then both checks' faults
    logged = guard.engine.last_outcome.log_metrics  # the failure, and the time the guard spent on it
    assert logged.keys() == {"collapseguard/check_failed", "collapseguard/overhead"}
    assert logged["collapseguard/check_failed"] == 1.0

    raising = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), on_error="raise", **tr.GUARD_KWARGS, hooks=ModelHooks(generate=broken))
    with pytest.raises(RuntimeError, match="fell over"):
        tr.lightning_fit(tmp_path / "raise", "varied", 1, [raising])


def test_module_with_own_generate_method(tmp_path):
    from collapseguard.demos.tiny import lightning_module

    class Wrapper(torch.nn.Module):  # hides the PreTrainedModel one level down
        def __init__(self, hf):
            super().__init__()
            self.inner = hf

    class WithGenerate(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Wrapper(tr.model())
            self.calls = 0

        def generate(self, **kwargs):
            self.calls += 1
            return self.net.inner.generate(**kwargs)

        def training_step(self, batch, batch_idx):
            return self.net.inner(**batch).loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    assert lightning_module  # the tiny helper is importable alongside
    module = WithGenerate()
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **tr.GUARD_KWARGS)
    trainer = tr.lightning_trainer(tmp_path, 1, [guard])
    trainer.fit(module, torch.utils.data.DataLoader(tr.blocks("varied"), batch_size=16))
    assert module.calls >= 1
    assert guard.engine.monitor.checks[0]["metrics"]["num_outputs"] == 32


def test_sample_fn_for_array_gold(tmp_path):
    rng = np.random.default_rng(0)
    gold = GoldSet.from_arrays(rng.normal(size=(256, 4)))

    class Gaussian(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(4))

        def training_step(self, batch, batch_idx):
            return ((self.scale - 0.05) ** 2).sum()  # drives the scale toward collapse

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.03)

    def sample(module, n):
        return torch.randn(n, 4) * module.scale

    guard = CollapseGuard(gold, hooks=ModelHooks(sample=sample), generation=GenerationSettings(num_samples=128))
    loader = torch.utils.data.DataLoader(torch.zeros(8, 1), batch_size=4)
    trainer = tr.lightning_trainer(tmp_path, 6, [guard])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        trainer.fit(Gaussian(), loader)
    history = guard.engine.monitor.checks
    assert history[0]["health"] > 0.6 and tr.severities(history)[0] is None
    assert tr.severities(history)[-1] == "critical"
    assert history[-1]["metrics"]["total_variance"] < 0.5 * history[0]["metrics"]["total_variance"]


def test_halt_respects_min_epochs(tmp_path, caplog):
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), on_collapse="halt", **tr.GUARD_KWARGS, hooks=ModelHooks(generate=_stuck))
    with caplog.at_level(logging.ERROR, logger="collapseguard"):
        trainer, _ = tr.lightning_fit(tmp_path, "degenerate", 6, [guard], min_epochs=3)
    assert trainer.current_epoch == 3  # asked to stop after the first check, held to min_epochs
    assert any("keeps training until min_epochs=3" in r.getMessage() for r in caplog.records)


def _stuck(module, prompts):
    return [np.array([5, 6, 7, 8] * 8)] * len(prompts)
