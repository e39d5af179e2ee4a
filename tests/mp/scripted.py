"""Deterministic "generation" for multi-process tests: each prompt's own gold continuation,
with a repetition loop from the second check on, so merged results can be compared exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tests import tiny_runs as tr


def continuation_table(prompt_length: int = 16, max_new_tokens: int = 32) -> dict[tuple, np.ndarray]:
    split = tr.gold().split(tr.tokenizer(), prompt_length, max_new_tokens).halves()[0]
    return {tuple(p.tolist()): c for p, c in zip(split.prompts, split.continuations, strict=True)}


def outputs_for(prompts, check: int, table) -> list[np.ndarray]:
    outs = [table[tuple(np.asarray(p).tolist())] for p in prompts]
    return outs if check == 0 else [np.concatenate([o[:8], np.tile(o[:4], 6)]) for o in outs]


def current_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class Scripted:
    """generate_fn(model, prompts); raises on ``fail_rank`` at check ``fail_check`` (picklable for spawn)."""

    def __init__(self, fail_rank: int = -1, fail_check: int = -1) -> None:
        self.table = continuation_table()
        self.fail_rank, self.fail_check = fail_rank, fail_check
        self.calls = 0

    def __call__(self, model, prompts):
        check, self.calls = self.calls, self.calls + 1
        if current_rank() == self.fail_rank and check == self.fail_check:
            raise RuntimeError(f"generation failed on purpose at check {check}")
        return outputs_for(prompts, check, self.table)


def dump(out: str, rank: int, engine) -> None:
    state = engine.state_dict()
    faults = [f.message for f in (engine.last_outcome.faults if engine.last_outcome else [])]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"state": state, "faults": faults, "pid": os.getpid(),
                                                         "timing": engine.timing}))
