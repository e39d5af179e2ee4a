"""python -m tests.mp.kill_resume {lightning,hf} OUT_DIR {full,kill,resume} [reweight]

full: 4 epochs uninterrupted; kill: SIGKILL itself at the start of epoch 3 (after epoch 2's
checkpoint); resume: continue from the last checkpoint to epoch 4. Writes OUT_DIR/<mode>.json.
With "reweight", the guard steers an AnchorMixSampler from alarming outputs, so the human
share changes every epoch and must resume where it was.
"""

import json
import os
import signal
import sys
from pathlib import Path

import torch

from collapseguard import ModelHooks, ReweightPolicy
from tests import tiny_runs as tr

KILL_AT_EPOCH = 2  # 0-based: killed when epoch index 2 starts, so epochs 0 and 1 are checkpointed
GUARD = {**tr.GUARD_KWARGS, "on_collapse": "warn"}


REWEIGHT = len(sys.argv) > 4 and sys.argv[4] == "reweight"


def _save(out: Path, mode: str, engine) -> None:
    state = engine.state_dict()
    if engine.anchor_sampler is not None:
        state["sampler_fraction"] = engine.anchor_sampler.min_human_fraction
    (out / f"{mode}.json").write_text(json.dumps(state))


def lightning(out: Path, mode: str) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from collapseguard.integrations.lightning import CollapseGuard

    class Killer(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if mode == "kill" and trainer.current_epoch == KILL_AT_EPOCH:
                os.kill(os.getpid(), signal.SIGKILL)  # a real kill: no exception, no cleanup

    ckpt = ModelCheckpoint(dirpath=out / "ckpt", save_top_k=-1, every_n_epochs=1)
    last = sorted((out / "ckpt").glob("*.ckpt"), key=os.path.getmtime)[-1] if mode == "resume" else None
    if REWEIGHT:
        from collapseguard.demos.tiny import lightning_module
        from collapseguard.integrations.lightning import AnchorMixDataModule

        data = AnchorMixDataModule(*tr.mixed_blocks(), batch_size=16, min_human_fraction=0.1)
        guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **{**GUARD, "on_collapse": ReweightPolicy(data.sampler)}, hooks=ModelHooks(generate=tr.alarming))
        trainer = tr.lightning_trainer(out / "logs", 4, [guard, ckpt, Killer()], enable_checkpointing=True,
                                       use_distributed_sampler=False)
        trainer.fit(lightning_module(tr.model(dropout=0.0)), datamodule=data, ckpt_path=str(last) if last else None)
    else:
        guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), **GUARD)
        tr.lightning_fit(out / "logs", "degenerate", 4, [guard, ckpt, Killer()], enable_checkpointing=True,
                         dropout=0.0, ckpt_path=str(last) if last else None)
    _save(out, mode, guard.engine)


def hf(out: Path, mode: str) -> None:
    from transformers import TrainerCallback

    from collapseguard.integrations.transformers import CollapseGuardCallback

    class Killer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            if mode == "kill" and round(state.epoch) == KILL_AT_EPOCH:
                os.kill(os.getpid(), signal.SIGKILL)

    if REWEIGHT:
        from transformers import TrainingArguments

        from collapseguard import AnchorMixSampler
        from collapseguard.integrations.transformers import AnchorMixTrainer

        dataset, labels = tr.mixed_blocks()
        sampler = AnchorMixSampler(labels, 16, 0.1, allow_repeat_anchors=True)  # HF needs fixed-length epochs
        guard = CollapseGuardCallback(tr.gold(), **{**GUARD, "on_collapse": ReweightPolicy(sampler)}, hooks=ModelHooks(generate=tr.alarming))
        args = TrainingArguments(output_dir=str(out / "hf"), num_train_epochs=4, learning_rate=3e-3, use_cpu=True,
                                 report_to=[], disable_tqdm=True, save_strategy="epoch", logging_strategy="epoch",
                                 restore_callback_states_from_checkpoint=True, seed=0)
        trainer = AnchorMixTrainer(model=tr.model(dropout=0.0), args=args, train_dataset=dataset,
                                   processing_class=tr.tokenizer(), callbacks=[guard, Killer()], anchor_sampler=sampler)
    else:
        guard = CollapseGuardCallback(tr.gold(), **GUARD)
        trainer = tr.hf_trainer(out / "hf", "degenerate", 4, [guard, Killer()], dropout=0.0, save_strategy="epoch",
                                restore_callback_states_from_checkpoint=True)
    last = None
    if mode == "resume":
        last = str(max((out / "hf").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])))
    trainer.train(resume_from_checkpoint=last)
    _save(out, mode, guard.engine)


if __name__ == "__main__":
    torch.set_num_threads(1)
    framework, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    {"lightning": lightning, "hf": hf}[framework](out, mode)
