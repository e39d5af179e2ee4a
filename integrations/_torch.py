"""Torch-side helpers shared by the Lightning and Hugging Face adapters.

Generation and teacher-forced scoring for causal LMs, random-number isolation
(a check must not change what training samples next), and gathering each
process's measurement. No metric or detector logic lives here.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import random
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from collapseguard.guard.engine import ENGINE_OPTIONS, GeneratedBatch, GuardEngine
from collapseguard.guard.generation import ModelHooks
from collapseguard.guard.options import resolve_gold, resolve_hooks
from collapseguard.integrations.sharded import (
    agree_ready,
    detect_sharding,
    equalise,
    generation_context,
    generation_target,
)
from collapseguard.metrics import ModelStats


def build_engine(caller: str, arguments: dict[str, Any]) -> tuple[GuardEngine, ModelHooks]:
    """The engine behind a callback and its model hooks, from the callback's own arguments (its ``locals()``). The
    core resolves and checks them (:mod:`collapseguard.guard.options`); only loading a saved tokenizer, which needs
    ``tokenizers`` or ``transformers``, happens here."""
    gold = resolve_gold(caller, arguments["gold"])
    hooks = resolve_hooks(caller, arguments["hooks"], gold)
    tokenizer = arguments["tokenizer"]
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(tokenizer)
    engine_args = {name: arguments[name] for name in ENGINE_OPTIONS}
    return GuardEngine(gold, tokenizer=tokenizer, caller=caller, **engine_args), hooks


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


# Out-of-memory messages that a smaller batch can cure: torch.OutOfMemoryError's (CUDA, HIP, XPU), and those
# accelerate's ``should_reduce_batch_size`` recognises for other backends, plus torch's own CPU allocator wording.
_OOM_MESSAGES = (" out of memory.", "MPS backend out of memory", "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",
                 "DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory",
                 "FATAL ERROR :: MODULE:PT_DEVMEM Allocation failed")

# The batch size a model fell back to after running out of memory, per pass ("generate", "score"): a later
# check starts at the size that fitted instead of failing again first. Weak keys: dropping a model drops it.
_fitted_batch: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()

# Scoring upcasts a [positions, vocabulary] float32 block of at most this many bytes at a time: the float32
# copies (log-softmax, its exp) stay bounded however large batch x length x vocabulary (49k tokens for SmolLM2,
# 150k for Qwen); only the model's own logits, in its dtype and over the continuation positions, scale with it.
_SCORE_CHUNK_BYTES = 32 * 2**20


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = exc.args[0] if isinstance(exc, RuntimeError) and exc.args else None
    return isinstance(message, str) and any(s in message for s in _OOM_MESSAGES)


def _free_device_memory() -> None:
    gc.collect()  # the failed batch's tensors are only garbage once its frames are gone
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    elif hasattr(torch, "xpu") and torch.xpu.is_available():
        torch.xpu.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()


class _AdaptiveBatch:
    """The batch size of one pass over one model, halved on out-of-memory down to 1 (the pattern of accelerate's
    ``find_executable_batch_size``) and remembered for the model's later checks.

    Only the batch that ran out is redone; finished batches keep their outputs. ``retry=False`` (forwards that
    are collectives of a sharded model: a rank alone cannot change how many it runs) raises at once.
    """

    def __init__(self, owner: Any, phase: str, requested: int, retry: bool) -> None:
        self.owner, self.phase, self.retry, self.requested = owner, phase, retry, int(requested)
        try:
            fitted = _fitted_batch.get(owner, {}).get(phase)
        except TypeError:  # an owner that cannot be weakly referenced: nothing remembered
            fitted = None
        self.size = min(self.requested, fitted) if fitted else self.requested
        self.start_size = self.size

    def run(self, indices: Sequence[int], step: Callable[[list[int]], None]) -> None:
        """``step(chunk)`` over consecutive chunks of ``indices`` of the current size."""
        start = 0
        while start < len(indices):
            chunk = list(indices[start:start + self.size])
            try:
                step(chunk)
            except Exception as exc:
                if not (self.retry and self.size > 1 and _is_oom(exc)):
                    raise
                failed = True
            else:
                failed = False
            if failed:  # outside the except block, so the traceback and the batch's tensors can be freed
                _free_device_memory()
                self.size = max(1, self.size // 2)
                continue
            start += len(chunk)

    def finish(self, what: str) -> None:
        """Remember a reduced size for later checks and say so once."""
        if self.size >= self.start_size:
            return
        with contextlib.suppress(TypeError):
            _fitted_batch.setdefault(self.owner, {})[self.phase] = self.size
        logging.getLogger("collapseguard").warning(
            "%s ran out of memory at batch size %d; continuing with batch size %d, kept for later checks "
            "(set batch_size=%d to start there)", what, self.start_size, self.size, self.size)


def _accepted_kwargs(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """(named parameters, takes **kwargs) of ``fn``; nothing known when it has no signature."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), False
    return {p.name for p in params}, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _forward_options(model: Any) -> dict[str, Any]:
    """Keyword arguments that make a teacher-forced forward cheaper, where ``model``'s forward takes them.

    Looks through wrappers whose forward passes ``**kwargs`` on (PEFT's ``PeftModel``, a ``.module`` wrapper)
    to the causal LM's own forward. ``logits_to_keep`` (``num_logits_to_keep`` in older transformers) is
    filled in per batch; ``use_cache=False``: scoring has no next step, so building a KV cache is waste.
    """
    inner, seen = model, 0
    while inner is not None and seen < 4:
        names, var_kw = _accepted_kwargs(getattr(inner, "forward", inner))
        keep = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in names), None)
        if keep is not None:
            return {"keep": keep, "use_cache": "use_cache" in names}
        if not var_kw:
            return {}
        base = inner.get_base_model() if hasattr(inner, "get_base_model") else getattr(inner, "module", None)
        inner, seen = (base if isinstance(base, torch.nn.Module) and base is not inner else None), seen + 1
    return {}


def _sharded_collective(model: Any) -> bool:
    """Whether ``model``'s forwards may be collectives of a sharded model across several processes (then a
    rank must not retry a batch alone). Errs towards True: without its holders a gathered ZeRO-3 model
    counts as collective."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return False
    sharding = detect_sharding(model) if isinstance(model, torch.nn.Module) else None
    return sharding is not None and sharding.collective


def generate_continuations(generate: Callable[..., Any], prompts: Sequence[np.ndarray], *, device: torch.device,
                           max_new_tokens: int, eos_token_id: int | None, pad_token_id: int | None,
                           batch_size: int, generation_kwargs: dict[str, Any],
                           retry_oom: bool | None = None) -> tuple[list[np.ndarray], list[bool]]:
    """Continue each prompt with a HF-style ``generate``; returns new tokens (cut at EOS) and EOS flags, in order.

    Prompts are batched by length, so batches need no padding (gold prompts cut from texts all have the same
    length: one run of batches, in order; chat prompts rendered with a template differ).

    ``generate`` is asked for its KV cache (``use_cache=True``, unless ``generation_kwargs`` says otherwise):
    a model trained with gradient checkpointing has ``config.use_cache=False``, and generating without the
    cache re-runs the whole sequence at every new token. With ``eos_token_id`` set, a batch stops once every
    row has ended. A batch that runs out of memory is halved and redone, down to 1 (the smaller size is kept
    for later checks and logged once); ``retry_oom`` None: unless ``synced_gpus`` (forwards are collectives).
    """
    kwargs = dict(generation_kwargs)
    if not kwargs.get("do_sample", True):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_k", "top_p")}
    names, var_kw = _accepted_kwargs(generate)
    if "use_cache" not in kwargs and (var_kw or "use_cache" in names):  # a hand-written generate may not take it
        kwargs["use_cache"] = True
    if retry_oom is None:
        retry_oom = not kwargs.get("synced_gpus", False)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(int(np.asarray(p).size), []).append(i)
    sequences: list[np.ndarray] = [np.empty(0, np.int64)] * len(prompts)
    finished: list[bool] = [False] * len(prompts)

    def step(chunk: list[int]) -> None:
        batch = torch.as_tensor(np.stack([prompts[i] for i in chunk]), dtype=torch.long, device=device)
        out = generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=max_new_tokens,
                       min_new_tokens=0, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        new = out[:, batch.shape[1]:].cpu().numpy()
        for i, row in zip(chunk, new, strict=True):
            hits = np.flatnonzero(row == eos_token_id) if eos_token_id is not None else np.empty(0, int)
            sequences[i] = row[: hits[0]] if hits.size else row
            finished[i] = bool(hits.size)

    sizer = _AdaptiveBatch(getattr(generate, "__self__", generate), "generate", batch_size, retry_oom)
    for indices in by_length.values():
        sizer.run(indices, step)
    sizer.finish("generation")
    return sequences, finished


def gold_model_stats(model: Callable[..., Any], prompts: Sequence[np.ndarray], continuations: Sequence[np.ndarray], *,
                     device: torch.device, batch_size: int, retry_oom: bool | None = None,
                     chunk_positions: int | None = None) -> ModelStats:
    """Teacher-forced NLL and next-token entropy of every gold continuation token.

    Only the continuation tokens are scored: where the model's forward takes ``logits_to_keep`` (Hugging Face
    causal LMs), the vocabulary projection runs only over the positions from the first continuation on, else
    the full logits are sliced. Log-softmax and entropy run in float32 (bf16 / fp16 logits upcast) over
    ``chunk_positions`` positions at a time (default: 32 MiB of float32 logits), so memory stays bounded
    with a large vocabulary. Out-of-memory halves the batch as in :func:`generate_continuations`;
    ``retry_oom`` None: unless ``model`` is sharded with collective forwards across processes.
    """
    options = _forward_options(model)
    if retry_oom is None:
        retry_oom = not _sharded_collective(model)
    n = len(prompts)
    ids_out: list[np.ndarray] = [np.empty(0, np.int64)] * n
    nll_out: list[np.ndarray] = [np.empty(0, np.float32)] * n
    ent_out: list[np.ndarray] = [np.empty(0, np.float32)] * n

    def step(chunk: list[int]) -> None:
        rows = [np.concatenate([prompts[i], continuations[i]]) for i in chunk]
        width = max(r.size for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, : r.size] = torch.as_tensor(r, device=device)
            mask[j, : r.size] = 1
        # logits at positions first - 1 .. width - 2 predict every continuation token (right padding)
        first = min(int(prompts[i].size) for i in chunk)
        keep = width - first + 1
        extra: dict[str, Any] = {}
        if options:
            extra[options["keep"]] = keep
            if options["use_cache"]:
                extra["use_cache"] = False
        logits = model(input_ids=ids, attention_mask=mask, **extra).logits
        logits = logits[:, logits.shape[1] - keep:]  # the last `keep` positions, whether or not the model cut
        offset = width - keep  # full position = kept position + offset
        row_of, pos_of = [], []
        for j, (i, r) in enumerate(zip(chunk, rows, strict=True)):
            p_len = int(prompts[i].size)
            positions = torch.arange(p_len - 1, r.size - 1)
            row_of.append(torch.full_like(positions, j))
            pos_of.append(positions)
        # the logits may sit on another device than the ids (a model split across devices ends on its last)
        row_cpu, pos_cpu = torch.cat(row_of), torch.cat(pos_of)
        targets = ids[row_cpu.to(ids.device), (pos_cpu + 1).to(ids.device)].to(logits.device)
        row_idx, pos_idx = row_cpu.to(logits.device), pos_cpu.to(logits.device)
        step_n = chunk_positions or max(1, _SCORE_CHUNK_BYTES // (4 * logits.shape[-1]))
        nll = torch.empty(row_idx.numel(), dtype=torch.float32, device=logits.device)
        ent = torch.empty_like(nll)
        for s in range(0, row_idx.numel(), step_n):
            sl = slice(s, s + step_n)
            logp = torch.log_softmax(logits[row_idx[sl], pos_idx[sl] - offset].float(), dim=-1)
            nll[sl] = -logp.gather(-1, targets[sl].unsqueeze(-1)).squeeze(-1)
            ent[sl] = -(logp.exp() * logp).sum(-1)
            del logp
        nll_np, ent_np = nll.cpu().numpy(), ent.cpu().numpy()
        at = 0
        for i, r in zip(chunk, rows, strict=True):
            p_len = int(prompts[i].size)
            length = r.size - p_len
            ids_out[i] = r[p_len:]
            nll_out[i], ent_out[i] = nll_np[at:at + length], ent_np[at:at + length]
            at += length

    sizer = _AdaptiveBatch(model, "score", batch_size, retry_oom)
    sizer.run(range(n), step)
    sizer.finish("scoring the gold continuations")
    return ModelStats(ids_out, nll_out, ent_out)


def produce_from_hf_model(engine: GuardEngine, model: Any, tokenizer: Any, rank: int = 0, world_size: int = 1,
                          holders: Sequence[Any] = (), tier: str = "full") -> Callable[[], GeneratedBatch]:
    """A ``produce`` for the engine that drives a Hugging Face causal LM (``generate`` + forward).

    A sharded model (FSDP2, FSDP1, DeepSpeed ZeRO-3; see :mod:`collapseguard.integrations.sharded`)
    is run in step on every rank: the ranks first agree that each could prepare, then every rank
    runs as many generation and scoring batches (shorter shares padded with a gold prompt whose
    outputs are dropped) with ``synced_gpus`` where forwards are collectives. ``holders`` are what
    the framework keeps around the model (its wrapped model, the optimizer), where the sharding
    machinery may live. ``tier="sentinel"``: no generation, only the sentinel's gold subset scored teacher-forced.
    """
    sentinel = tier == "sentinel"

    def produce() -> GeneratedBatch:
        sharding = detect_sharding(model, holders, zero3_gather=engine.zero3_gather)
        try:
            if sentinel:
                prompts, scored = [], engine.sentinel_prompts(rank, world_size)
                continuations = engine.sentinel_continuations(rank, world_size)
            else:
                prompts = engine.prompts(rank, world_size)  # each repeated samples_per_prompt times
                scored = engine.prompts(rank, world_size, repeat=False) if engine.score_gold else None
                continuations = engine.gold_continuations(rank, world_size) if engine.score_gold else None
            eos, pad = special_ids(tokenizer, model)
            kwargs = dict(engine.generation_kwargs)
            target, keep, keep_scored = model, len(prompts), len(scored or ())
            if sharding is not None:
                target = generation_target(model)
                if sharding.collective and sentinel:  # every rank runs as many scoring batches
                    share = len(engine.sentinel_prompts(0, world_size))
                    scored = equalise(scored, share, engine.sentinel_prompts(0, 1)[0])
                    continuations = equalise(continuations, share, engine.sentinel_continuations(0, 1)[0])
                elif sharding.collective:  # every rank runs as many batches, as long as any rank generates
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
                pad_token_id=pad, batch_size=engine.batch_size, generation_kwargs=kwargs) if prompts else ([], [])
            stats = None
            if scored is not None and continuations is not None:
                # a collective forward cannot be retried on one rank alone: every rank must run as many
                stats = gold_model_stats(target, scored, continuations, device=device, batch_size=engine.batch_size,
                                         retry_oom=not (sharding is not None and sharding.collective and world_size > 1))
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


def agree_with_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every process (just ``value`` when not distributed): schedule decisions read wall
    clocks, which differ between processes, and every rank must run the same checks or the collectives hang."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    if torch.distributed.get_world_size() == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


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
