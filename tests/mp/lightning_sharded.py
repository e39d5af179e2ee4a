"""python -m tests.mp.lightning_sharded STRATEGY OUT_DIR [cpu|cuda]: Lightning on a sharded model, 2 processes.

STRATEGY ``model_parallel``: ``ModelParallelStrategy`` (FSDP2), whose ``configure_model`` applies
``fully_shard`` to every GPT-2 block and to the model, as Lightning's FSDP2 guide does. ``fsdp``:
``FSDPStrategy`` (FSDP1, GPT-2 blocks wrapped; Lightning refuses it on CPU). ``deepspeed``:
``DeepSpeedStrategy(stage=3)`` with every parameter partitioned. The callback generates with the
real model (no ``generate_fn``). 9 gold prompts over 2 ranks (5 and 4) in batches of 2; at the
second check rank 1 is forced to EOS after 2 tokens. Each rank writes OUT_DIR/rank{r}.json with
what it measured at every check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.fsdp import fully_shard
from transformers import LogitsProcessorList

from collapseguard.demos.tiny import _tiny_lm_class
from collapseguard.integrations.lightning import CollapseGuard
from collapseguard.integrations.sharded import detect_sharding
from tests import tiny_runs as tr
from tests.mp import exit_in_step
from tests.mp.sharded import GUARD, ForceEOS, spy_on_measure, without_deepspeed_shm


class ShardedLM(_tiny_lm_class()):
    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for block in self.model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)


class Steer(pl.Callback):
    """Rank 1 ends its samples early at the second check."""

    def __init__(self, guard: CollapseGuard) -> None:
        self.guard = guard

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_rank == 1 and trainer.current_epoch == 1:
            eos = tr.tokenizer().eos_token_id
            self.guard.engine.generation_kwargs["logits_processor"] = LogitsProcessorList([ForceEOS(eos, 2)])


class Dump(pl.Callback):
    def __init__(self, guard: CollapseGuard, out: Path, records: dict) -> None:
        self.guard, self.out, self.records = guard, out, records

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        engine = self.guard.engine
        report = {"state": engine.state_dict(), "records": self.records,
                  "sharding": detect_sharding(module.model, (trainer.strategy.model,)).describe(),
                  "faults": [f.message for f in engine.last_outcome.faults]}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def strategy_and_module(name: str) -> tuple:
    if name == "model_parallel":
        return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1), ShardedLM(tr.model(dropout=0.0), 3e-3)
    module = _tiny_lm_class()(tr.model(dropout=0.0), 3e-3)
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        return FSDPStrategy(auto_wrap_policy={GPT2Block}), module
    from lightning.pytorch.strategies import DeepSpeedStrategy

    without_deepspeed_shm()
    config = {"train_micro_batch_size_per_gpu": 4, "zero_allow_untested_optimizer": True,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
    return DeepSpeedStrategy(config=config), module


def main() -> None:
    torch.set_num_threads(1)
    name, out = sys.argv[1], Path(sys.argv[2])
    accelerator = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    strategy, module = strategy_and_module(name)
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **GUARD)
    records: dict = {}
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, accelerator=accelerator, devices=2,
                         strategy=strategy,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Steer(guard), guard, Dump(guard, out, records)])
    guard.engine.setup(tr.tokenizer())  # the monitor exists before fit, so its measure can be watched
    spy_on_measure(guard.engine, records)
    trainer.fit(module, torch.utils.data.DataLoader(tr.blocks("varied"), batch_size=4))


if __name__ == "__main__":
    main()
    exit_in_step()
