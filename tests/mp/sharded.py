"""torchrun --nproc_per_node 2 -m tests.mp.sharded KIND OUT_DIR [midfail]: the guard on a sharded model.

KIND is ``fsdp2`` (``fully_shard`` on every block and the model), ``fsdp1`` (``FullyShardedDataParallel``
with GPT-2 blocks wrapped, on CPU through ``device_id=cpu``) or ``zero3`` (DeepSpeed ZeRO-3, every
parameter partitioned). A tiny GPT-2 trains by hand (forward, backward, step) and the Hugging Face
callback checks it through its own hooks with the arguments the Trainer passes (the model as the
Trainer holds it, the optimizer), so generation goes through the shared adapter path. 9 gold
prompts over 2 ranks and batches of 2: rank 0 holds 5 prompts (3 batches), rank 1 holds 4 (2).

check 0  greedy; each rank also generates and scores its prompts with an unsharded copy of the weights
check 1  sampling; rank 1 is forced to EOS after 2 tokens, rank 0 samples all 16
check 2  rank 1 cannot prepare its generation: a fault on both ranks, nobody generates
check 3  (zero3) ``zero3_gather=False``: DeepSpeed's own hooks fetch the parameters; rank 1 ends early again
check 4  (zero3) rank 1 fails in the middle of gathered generation: a fault on both ranks

``midfail``: rank 1 fails in the middle of generation at check 0, inside the sharded forwards;
the process must stop with UnrecoverableCheckError rather than leave rank 0 waiting.
Each rank writes OUT_DIR/rank{r}.json with what it measured at every check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, TrainerControl, TrainerState, TrainingArguments

from collapseguard import CheckSchedule, GenerationSettings
from collapseguard.integrations._torch import generate_continuations, gold_model_stats
from collapseguard.integrations.sharded import detect_sharding
from collapseguard.integrations.transformers import CollapseGuardCallback
from tests import tiny_runs as tr
from tests.mp import exit_in_step

GUARD = {"generation": GenerationSettings(num_samples=9, batch_size=2, prompt_length=16, max_new_tokens=16),
         "on_collapse": "warn", "schedule": CheckSchedule(check_on_train_start=False)}  # records are indexed by check


class ForceEOS(LogitsProcessor):
    """EOS once ``after`` tokens are generated; with ``fail=True`` raise there instead."""

    def __init__(self, eos: int, after: int, fail: bool = False) -> None:
        self.eos, self.after, self.fail = eos, after, fail

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] - GUARD["generation"].prompt_length < self.after:
            return scores
        if self.fail:
            raise RuntimeError("generation failed on purpose in the middle of a batch")
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.eos] = 0.0
        return forced


def spy_on_measure(engine, records: dict) -> None:
    """Record, per check, exactly what this rank's monitor measures (then measure it as usual)."""
    real_measure = engine.monitor.measure

    def measure(outputs, *, finished=None, model_stats=None, **kwargs):
        records[engine.checks_done] = {
            "sequences": [np.asarray(s).tolist() for s in outputs], "finished": list(finished),
            "model_stats": {name: [np.asarray(x).tolist() for x in getattr(model_stats, name)]
                            for name in ("token_ids", "nll", "entropy")}}
        return real_measure(outputs, finished=finished, model_stats=model_stats, **kwargs)

    engine.monitor.measure = measure


def without_deepspeed_shm() -> None:
    """Keep DeepSpeed from compiling its shared-memory all-reduce at start-up (a C++ build of about a
    minute, used only by DeepSpeed's inference all-reduce; ZeRO-3 training and the guard use gloo)."""
    import importlib

    # by module name: the package's namespace has ``torch`` the library under that attribute
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def shard(kind: str, model):
    """(model as a trainer holds it, optimizer as callbacks get it, one training step)."""
    if kind == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        return model, opt, _plain_step(model, opt)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        wrapped = FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({GPT2Block}),
                                           device_id=torch.device("cpu"), use_orig_params=True)
        opt = torch.optim.AdamW(wrapped.parameters(), lr=3e-3)
        return wrapped, opt, _plain_step(wrapped, opt)
    import deepspeed

    without_deepspeed_shm()
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
              "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)

    def step(batch):
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        return loss.item()

    return model, engine.optimizer, step


def _plain_step(model, opt):
    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    return step


def full_state(kind: str, model) -> dict[str, torch.Tensor]:
    """The full weights on every rank (a collective)."""
    if kind == "fsdp2":
        return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                for k, v in model.state_dict().items()}
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

        with FullyShardedDataParallel.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                                                      FullStateDictConfig(rank0_only=False)):
            return {k: v.detach().clone() for k, v in model.state_dict().items()}
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unsharded_outputs(kind: str, model, engine, rank: int, world: int):
    """This rank's greedy outputs and gold scores from a plain copy of the same weights."""
    plain = tr.model(dropout=0.0)
    missing, unexpected = plain.load_state_dict(full_state(kind, model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    plain.tie_weights()
    plain.eval()
    prompts = engine.prompts(rank, world)
    eos = tr.tokenizer().eos_token_id
    with torch.no_grad():
        seqs, _ = generate_continuations(plain.generate, prompts, device=torch.device("cpu"),
                                         max_new_tokens=GUARD["generation"].max_new_tokens, eos_token_id=eos,
                                         pad_token_id=eos, batch_size=GUARD["generation"].batch_size,
                                         generation_kwargs={"do_sample": False})
        stats = gold_model_stats(plain, prompts, engine.gold_continuations(rank, world), device=torch.device("cpu"),
                                 batch_size=GUARD["generation"].batch_size)
    return seqs, stats


def main() -> None:
    torch.set_num_threads(1)
    kind, out = sys.argv[1], Path(sys.argv[2])
    midfail = len(sys.argv) > 3 and sys.argv[3] == "midfail"
    args = TrainingArguments(output_dir=str(out / "args"), use_cpu=True, ddp_backend="gloo", report_to=[])
    rank, world = args.process_index, args.world_size  # (initialises the gloo process group)
    model, optimizer, train_step = shard(kind, tr.model(dropout=0.0))
    eos = tr.tokenizer().eos_token_id
    guard = CollapseGuardCallback(tr.gold(), tokenizer=tr.tokenizer(), **GUARD)
    engine = guard.engine
    state, control = TrainerState(), TrainerControl()
    guard.on_train_begin(args, state, control, processing_class=tr.tokenizer(), model=model)

    records: dict[int, dict] = {}
    spy_on_measure(engine, records)
    real_prompts = engine.prompts

    def prompts(r=0, w=1, **kwargs):  # check 2: rank 1 cannot prepare
        if engine.checks_done == 2 and r == 1 and w == world:
            raise RuntimeError("could not prepare on purpose")
        return real_prompts(r, w, **kwargs)

    engine.prompts = prompts
    blocks = tr.blocks("varied")
    steps, losses, faults, modes, report = 0, [], {}, {}, {"rank": rank}

    def train(n: int) -> None:
        nonlocal steps
        for _ in range(n):
            rows = [blocks[(steps * world + rank) * 4 + i] for i in range(4)]
            losses.append(train_step({k: torch.stack([r[k] for r in rows]) for k in rows[0]}))
            steps += 1

    checks = 5 if kind == "zero3" else 3
    for check in range(checks):
        train(1)
        kwargs = {"do_sample": False} if check == 0 else {}
        if rank == 1 and (check in (1, 3) or (check == 0 and midfail)):
            kwargs["logits_processor"] = LogitsProcessorList([ForceEOS(eos, 3 if midfail else 2, fail=midfail)])
        if rank == 1 and check == 4:
            kwargs["logits_processor"] = LogitsProcessorList([ForceEOS(eos, 3, fail=True)])
        engine.generation_kwargs = {**engine.generation_kwargs, **kwargs}
        engine.zero3_gather = check != 3
        state.global_step, state.epoch = steps, float(check + 1)
        guard.on_epoch_end(args, state, control, model=model, optimizer=optimizer)
        engine.generation_kwargs = {k: v for k, v in engine.generation_kwargs.items() if k not in kwargs}
        faults[check] = [f.message for f in engine.last_outcome.faults]
        modes[check] = detect_sharding(model, (optimizer,), zero3_gather=engine.zero3_gather).describe()
        if check == 0:
            seqs, stats = unsharded_outputs(kind, model, engine, rank, world)
            mine = records[0]
            report["unsharded_same_sequences"] = [s.tolist() for s in seqs] == mine["sequences"]
            report["unsharded_nll_max_diff"] = max(
                float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(stats.nll, mine["model_stats"]["nll"],
                                                                                      strict=True))
    train(1)  # the model still trains in step after the checks
    report.update(state=engine.state_dict(), records=records, faults=faults, losses=losses, modes=modes)
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
    exit_in_step()
