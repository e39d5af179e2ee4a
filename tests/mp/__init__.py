"""Scripts that the multi-process tests launch (torchrun, Lightning's launcher), and how they launch them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def launch(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a multi-process job from the repository root, one thread per process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def run_ranks(args: list[str], out: Path, timeout: float = 300) -> tuple[dict, dict]:
    """Run a 2-process job that must succeed; the JSON each rank wrote to ``out/rank{r}.json``."""
    done = launch(args, timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return tuple(json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))


def exit_in_step() -> None:
    """End a rank of a test job: wait for every rank, then leave without tearing gloo down, whose
    teardown at interpreter exit can abort a process whose peer has already gone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
