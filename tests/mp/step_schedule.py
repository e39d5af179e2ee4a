"""A step-scheduled guard in 2 CPU processes (gloo), on a real tiny model trained on a degenerate corpus.

    torchrun --nproc_per_node 2 -m tests.mp.step_schedule hf OUT_DIR
    python -m tests.mp.step_schedule lightning OUT_DIR

``max_overhead`` is tiny and the ranks' clocks differ, so each rank alone would choose different steps: the
adapters must run rank 0's choice everywhere, check mid-epoch in step, and halt on the same step.
"""

import sys

from collapseguard import CheckSchedule
from tests import tiny_runs as tr
from tests.mp import exit_in_step
from tests.mp.scripted import dump

SCHEDULE = CheckSchedule(every_n_steps=4, sentinel_every_n_steps=2, max_overhead=0.3)


def hf(out: str) -> None:
    from transformers import TrainerCallback

    from collapseguard.integrations.transformers import CollapseGuardCallback

    guard = CollapseGuardCallback(tr.gold(), schedule=SCHEDULE, on_collapse="halt", **tr.GUARD_KWARGS)

    class Dump(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            dump(out, args.process_index, guard.engine)

    tr.hf_trainer(out, "degenerate", 4, [guard, Dump()], ddp_backend="gloo").train()


def lightning(out: str) -> None:
    import lightning.pytorch as pl
    import torch

    from collapseguard.demos.tiny import lightning_module
    from collapseguard.integrations.lightning import CollapseGuard

    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), schedule=SCHEDULE, on_collapse="halt",
                          **tr.GUARD_KWARGS)

    class Dump(pl.Callback):
        def on_fit_end(self, trainer, module):
            dump(out, trainer.global_rank, guard.engine)

    trainer = pl.Trainer(max_epochs=4, strategy="ddp", accelerator="cpu", devices=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[guard, Dump()])
    trainer.fit(lightning_module(tr.model()), torch.utils.data.DataLoader(tr.blocks("degenerate"), batch_size=16))


if __name__ == "__main__":
    {"hf": hf, "lightning": lightning}[sys.argv[1]](sys.argv[2])
    exit_in_step()
