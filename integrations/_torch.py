"""Torch-side helpers shared by the Lightning and Hugging Face adapters.

Generation and teacher-forced scoring for causal LMs, random-number isolation
(a check must not change what training samples next), and gathering each
process's measurement. No metric or detector logic lives here.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from collapseguard.guard.engine import GeneratedBatch, GuardEngine
from collapseguard.guard.options import adapter_arguments
from collapseguard.integrations.sharded import (
    agree_ready,
    detect_sharding,
    equalise,
    generation_context,
    generation_target,
)
from collapseguard.metrics import ModelStats


def build_engine(caller: str, arguments: dict[str, Any]) -> GuardEngine:
    """The engine behind a callback, from the callback's own arguments (its ``locals()``). The core resolves and
    checks them (:func:`~collapseguard.guard.options.adapter_arguments`); only loading a saved tokenizer, which
    needs ``tokenizers`` or ``transformers``, happens here."""
    gold, tokenizer, engine_args = adapter_arguments(caller, arguments)
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(tokenizer)
    return GuardEngine(gold, tokenizer=tokenizer, caller=caller, **engine_args)


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer from a local ``save_pretrained`` folder or a ``tokenizer.json`` file (never downloads)."""
    if Path(path).is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer={str(path)!r} is neither a tokenizer.json file nor a save_pretrained folder")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


@contextlib.contextmanager
def isolated_check(model: torch.nn.Module, seed: int) -> Iterator[None]:
    """Eval mode, no grad, and private RNG streams seeded with ``seed``; all restored afterwards.

    Restoring every generator (Python, numpy, torch CPU and the current CUDA
    device) is what makes a guarded run train bit-for-bit like an unguarded one.
    """
    was_training = model.training
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)
            random.setstate(py_state)
            np.random.set_state(np_state)


def model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def check_tokenizer_fits(model: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer whose ids the model cannot embed (the wrong tokenizer for this model)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    if vocab is not None and size is not None and size > vocab:
        raise ValueError(f"tokenizer has {size} tokens but the model's vocabulary has {vocab} "
                         f"(tokenizer={getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__!r}): "
                         "pass the tokenizer the model was trained with")


def special_ids(tokenizer: Any, model: Any) -> tuple[int | None, int | None]:
    """(eos_token_id, pad_token_id) from the tokenizer, else the model config."""
    config = getattr(model, "config", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        eos = getattr(config, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(config, "pad_token_id", None)
    if isinstance(eos, list | tuple):
        eos = eos[0] if eos else None
    return eos, (pad if pad is not None else eos)


def generate_continuations(generate: Callable[..., Any], prompts: Sequence[np.ndarray], *, device: torch.device,
                           max_new_tokens: int, eos_token_id: int | None, pad_token_id: int | None,
                           batch_size: int, generation_kwargs: dict[str, Any]) -> tuple[list[np.ndarray], list[bool]]:
    """Continue each prompt with a HF-style ``generate``; returns new tokens (cut at EOS) and EOS flags, in order.

    Prompts are batched by length, so batches need no padding (gold prompts cut from texts all have the same
    length: one run of batches, in order; chat prompts rendered with a template differ).
    """
    kwargs = dict(generation_kwargs)
    if not kwargs.get("do_sample", True):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_k", "top_p")}
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(int(np.asarray(p).size), []).append(i)
    sequences: list[np.ndarray] = [np.empty(0, np.int64)] * len(prompts)
    finished: list[bool] = [False] * len(prompts)
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = torch.as_tensor(np.stack([prompts[i] for i in chunk]), dtype=torch.long, device=device)
            out = generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=max_new_tokens,
                           min_new_tokens=0, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
            new = out[:, batch.shape[1]:].cpu().numpy()
            for i, row in zip(chunk, new, strict=True):
                hits = np.flatnonzero(row == eos_token_id) if eos_token_id is not None else np.empty(0, int)
                sequences[i] = row[: hits[0]] if hits.size else row
                finished[i] = bool(hits.size)
    return sequences, finished


def gold_model_stats(model: Callable[..., Any], prompts: Sequence[np.ndarray], continuations: Sequence[np.ndarray], *,
                     device: torch.device, batch_size: int) -> ModelStats:
    """Teacher-forced NLL and next-token entropy of every gold continuation token."""
    ids_out, nll_out, ent_out = [], [], []
    for start in range(0, len(prompts), batch_size):
        rows = [np.concatenate([p, c]) for p, c in zip(prompts[start:start + batch_size],
                                                        continuations[start:start + batch_size], strict=True)]
        width = max(r.size for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : r.size] = torch.as_tensor(r, device=device)
            mask[i, : r.size] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = ids[:, 1:]
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        ent = -(logp.exp() * logp).sum(-1)
        for i, r in enumerate(rows):
            p_len = prompts[start + i].size
            sl = slice(p_len - 1, r.size - 1)  # positions predicting continuation tokens
            ids_out.append(r[p_len:])
            nll_out.append(nll[i, sl].cpu().numpy())
            ent_out.append(ent[i, sl].cpu().numpy())
    return ModelStats(ids_out, nll_out, ent_out)


def produce_from_hf_model(engine: GuardEngine, model: Any, tokenizer: Any, rank: int = 0, world_size: int = 1,
                          holders: Sequence[Any] = ()) -> Callable[[], GeneratedBatch]:
    """A ``produce`` for the engine that drives a Hugging Face causal LM (``generate`` + forward).

    A sharded model (FSDP2, FSDP1, DeepSpeed ZeRO-3; see :mod:`collapseguard.integrations.sharded`)
    is run in step on every rank: the ranks first agree that each could prepare, then every rank
    runs as many generation and scoring batches (shorter shares padded with a gold prompt whose
    outputs are dropped) with ``synced_gpus`` where forwards are collectives. ``holders`` are what
    the framework keeps around the model (its wrapped model, the optimizer), where the sharding
    machinery may live.
    """

    def produce() -> GeneratedBatch:
        sharding = detect_sharding(model, holders, zero3_gather=engine.zero3_gather)
        try:
            prompts = engine.prompts(rank, world_size)  # each repeated samples_per_prompt times
            scored = engine.prompts(rank, world_size, repeat=False) if engine.score_gold else None
            continuations = engine.gold_continuations(rank, world_size) if engine.score_gold else None
            eos, pad = special_ids(tokenizer, model)
            kwargs = dict(engine.generation_kwargs)
            target, keep, keep_scored = model, len(prompts), len(scored or ())
            if sharding is not None:
                target = generation_target(model)
                if sharding.collective:  # every rank runs as many batches, as long as any rank generates
                    # rank 0 holds the largest share; shorter ones are padded with a gold prompt
                    prompts = equalise(prompts, len(engine.prompts(0, world_size)), engine.prompts(0, 1)[0])
                    if scored is not None and continuations is not None:
                        share = len(engine.prompts(0, world_size, repeat=False))
                        scored = equalise(scored, share, engine.prompts(0, 1, repeat=False)[0])
                        continuations = equalise(continuations, share, engine.gold_continuations(0, 1)[0])
                kwargs["synced_gpus"] = sharding.collective and world_size > 1
            device = model_device(model)
        except Exception:
            if sharding is not None:
                agree_ready(True, model)
            raise
        if sharding is not None:
            agree_ready(False, model)
        with isolated_check(model, engine.check_seed), (
                generation_context(sharding, rank) if sharding is not None else contextlib.nullcontext()):
            seqs, finished = generate_continuations(
                target.generate, prompts, device=device, max_new_tokens=engine.max_new_tokens, eos_token_id=eos,
                pad_token_id=pad, batch_size=engine.batch_size, generation_kwargs=kwargs)
            stats = None
            if scored is not None and continuations is not None:
                stats = gold_model_stats(target, scored, continuations, device=device, batch_size=engine.batch_size)
                stats = ModelStats(stats.token_ids[:keep_scored], stats.nll[:keep_scored],
                                   stats.entropy[:keep_scored])
        return GeneratedBatch(sequences=seqs[:keep], finished=finished[:keep], model_stats=stats)

    return produce


def _numpy(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def produce_from_callable(engine: GuardEngine, model: torch.nn.Module, fn: Callable[..., Any], kind: str,
                          rank: int = 0, world_size: int = 1,
                          score_fn: Callable[..., Any] | None = None) -> Callable[[], GeneratedBatch]:
    """A ``produce`` around a user's ``generate_fn(model, prompts)`` or ``sample_fn(model, n)``
    (with ``score_fn(model, gold_rows) -> log-likelihoods`` for the model-side statistic)."""

    def produce() -> GeneratedBatch:
        with isolated_check(model, engine.check_seed):
            if kind == "sample":
                n = len(range(rank, engine.num_samples, world_size))
                samples = _numpy(fn(model, n))
                loglik = None
                if score_fn is not None:
                    rows = torch.as_tensor(engine.gold_samples(rank, world_size), dtype=torch.float32,
                                           device=model_device(model))
                    loglik = _numpy(score_fn(model, rows)).reshape(-1)
                return GeneratedBatch(samples=samples, gold_loglik=loglik)
            out = fn(model, engine.prompts(rank, world_size))
        if isinstance(out, GeneratedBatch):
            return out
        seqs = [s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else s for s in out]
        return GeneratedBatch(sequences=list(seqs))

    return produce


def gather_measurements(local: Any) -> list[Any]:
    """Every process's measurement (suite or fault), in rank order; just ``[local]`` when not distributed."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [local]
    world = torch.distributed.get_world_size()
    if world == 1:
        return [local]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, local)
    return out
