"""python -m tests.mp.lightning_ddp STRATEGY OUT_DIR [FAIL_RANK FAIL_CHECK]: 2 CPU processes (gloo).

CG_REAL=1 generates with the real model (64 prompts) instead of scripted outputs; CG_DEVICES sets the
process count (1 = the single-process baseline).
"""

import os
import sys

import lightning.pytorch as pl
import torch

from collapseguard import CheckSchedule, GenerationSettings, ModelHooks
from collapseguard.demos.tiny import lightning_module
from collapseguard.integrations.lightning import CollapseGuard
from tests import tiny_runs as tr
from tests.mp import exit_in_step
from tests.mp.scripted import Scripted, dump


class Dump(pl.Callback):
    def __init__(self, guard, out):
        self.guard, self.out = guard, out

    def on_fit_end(self, trainer, module):
        dump(self.out, trainer.global_rank, self.guard.engine)


def main() -> None:
    strategy, out = sys.argv[1], sys.argv[2]
    fail_rank, fail_check = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (-1, -1)
    real = os.environ.get("CG_REAL") == "1"
    # scripted outputs are indexed by check: no check before training there
    kwargs = {"generation": GenerationSettings(num_samples=64, max_new_tokens=32, prompt_length=16)} if real else \
        {**tr.GUARD_KWARGS, "hooks": ModelHooks(generate=Scripted(fail_rank, fail_check)),
         "schedule": CheckSchedule(check_on_train_start=False)}
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), on_collapse="warn", **kwargs)
    devices = int(os.environ.get("CG_DEVICES", "2"))
    trainer = pl.Trainer(max_epochs=2, strategy=strategy if devices > 1 else "auto", accelerator="cpu", devices=devices,
                         logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[guard, Dump(guard, out)])
    loader = torch.utils.data.DataLoader(tr.blocks("varied"), batch_size=16)
    trainer.fit(lightning_module(tr.model()), loader)


if __name__ == "__main__":
    main()
    exit_in_step()
