"""torchrun --nproc_per_node 2 -m tests.mp.hf_ddp OUT_DIR [FAIL_RANK FAIL_CHECK]: HF Trainer on CPU (gloo)."""

import sys

from transformers import TrainerCallback

from collapseguard import CheckSchedule, ModelHooks
from collapseguard.integrations.transformers import CollapseGuardCallback
from tests import tiny_runs as tr
from tests.mp import exit_in_step
from tests.mp.scripted import Scripted, dump


def main() -> None:
    out = sys.argv[1]
    fail_rank, fail_check = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (-1, -1)
    scripted = Scripted(fail_rank, fail_check)
    # scripted outputs are indexed by check: no check before training
    guard = CollapseGuardCallback(tr.gold(), **tr.GUARD_KWARGS, hooks=ModelHooks(generate=scripted), schedule=CheckSchedule(check_on_train_start=False))

    class Dump(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            dump(out, args.process_index, guard.engine)

    trainer = tr.hf_trainer(out, "varied", 2, [guard, Dump()], ddp_backend="gloo")
    trainer.train()


if __name__ == "__main__":
    main()
    exit_in_step()
