"""torchrun --nproc_per_node 2 -m tests.mp.hf_sharded KIND OUT_DIR [cpu|cuda]: the HF Trainer on a sharded model.

KIND ``zero3``: DeepSpeed ZeRO-3 through ``TrainingArguments(deepspeed=...)`` (runs on CPU over gloo),
every parameter partitioned; the callback finds DeepSpeed's coordinator through the optimizer the
Trainer passes and generates from gathered parameters. KIND ``fsdp2`` / ``fsdp1``: accelerate's FSDP
plugin (``fsdp="full_shard"``, ``fsdp_config={"fsdp_version": ...}``), which accelerate applies on
GPUs only. 9 gold prompts over 2 ranks (5 and 4) in batches of 2, 2 epochs of 2 steps. At the first
check rank 1 is forced to EOS after 2 tokens; at the second (zero3 only, where forwards are local
while generating) rank 1 fails in the middle of generation, which must be a fault on both ranks.
Each rank writes OUT_DIR/rank{r}.json with what it measured at every check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset
from transformers import LogitsProcessorList, Trainer, TrainerCallback, TrainingArguments

from collapseguard.integrations.sharded import detect_sharding
from collapseguard.integrations.transformers import CollapseGuardCallback
from tests import tiny_runs as tr
from tests.mp import exit_in_step
from tests.mp.sharded import GUARD, ForceEOS, spy_on_measure, without_deepspeed_shm

ZERO3 = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
         "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
         "optimizer": {"type": "AdamW", "params": {"lr": "auto", "torch_adam": True}}}


def main() -> None:
    torch.set_num_threads(1)
    kind, out = sys.argv[1], Path(sys.argv[2])
    cuda = len(sys.argv) > 3 and sys.argv[3] == "cuda"
    sharding: dict = {"deepspeed": ZERO3} if kind == "zero3" else {
        "fsdp": "full_shard", "fsdp_config": {"fsdp_version": 2 if kind == "fsdp2" else 1,
                                              "transformer_layer_cls_to_wrap": ["GPT2Block"]}}
    if kind == "zero3":
        without_deepspeed_shm()
    guard = CollapseGuardCallback(tr.gold(), tokenizer=tr.tokenizer(), **GUARD)
    guard.engine.setup(tr.tokenizer())  # the monitor exists before training, so its measure can be watched
    records: dict = {}
    spy_on_measure(guard.engine, records)
    faults: dict = {}

    class Steer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            epoch = round(state.epoch or 0)
            if args.process_index == 1:
                fail = epoch == 1 and kind == "zero3"
                guard.engine.generation_kwargs["logits_processor"] = LogitsProcessorList(
                    [ForceEOS(tr.tokenizer().eos_token_id, 2, fail=fail)])

        def on_epoch_end(self, args, state, control, **kwargs):  # runs after the guard's check
            faults[round(state.epoch or 0) - 1] = [f.message for f in guard.engine.last_outcome.faults]

        def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            report = {"state": guard.engine.state_dict(), "records": records, "faults": faults,
                      "sharding": detect_sharding(model, (optimizer,)).describe(),
                      "model": type(model).__name__}
            (out / f"rank{args.process_index}.json").write_text(json.dumps(report))

    args = TrainingArguments(output_dir=str(out / "hf"), num_train_epochs=2, per_device_train_batch_size=4,
                             learning_rate=3e-3, lr_scheduler_type="constant", logging_strategy="epoch",
                             save_strategy="no", report_to=[], disable_tqdm=True, seed=0, use_cpu=not cuda,
                             ddp_backend="nccl" if cuda else "gloo", **sharding)
    trainer = Trainer(model=tr.model(dropout=0.0), args=args, train_dataset=Subset(tr.blocks("varied"), range(16)),
                      processing_class=tr.tokenizer(), callbacks=[guard, Steer()])
    trainer.train()


if __name__ == "__main__":
    main()
    exit_in_step()
