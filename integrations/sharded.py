"""Generating from a sharded model: FSDP2, FSDP1 and DeepSpeed ZeRO-3.

When the parameters are sharded across processes, a forward pass is a collective: every rank
must run it, as many times as the others, or the job hangs. This module finds how a model is
sharded and gives the two things a check needs to run in step on every rank:

* :func:`generation_context`, which makes the full parameters usable for ``generate`` and the
  teacher-forced scoring and restores the training setup afterwards, and
* the :class:`Sharding` it detected, which says whether forwards stay collective while
  generating (``collective``): then ``generate`` needs ``synced_gpus=True`` (a rank whose
  samples end early keeps stepping until all are done) and every rank must run as many batches.

=========  ==========================================  =============================================
engine     during the check                            forwards while generating
=========  ==========================================  =============================================
FSDP2      ``fully_shard`` hooks all-gather per module  collective (``synced_gpus``, equal batches)
FSDP1      root ``summon_full_params``, no writeback   collective (nested units all-gather per forward)
ZeRO-3     ``GatheredParameters`` + hooks removed       local (needs the engine or its optimizer)
ZeRO-3     ``zero3_gather=False`` or no engine known    collective (``synced_gpus``, equal batches)
=========  ==========================================  =============================================

Failures: :func:`agree_ready` runs before anything collective, so a rank that cannot prepare
turns into a fault on every rank. A rank that fails *inside* a collective leaves the others
waiting in it; no rank can be released, so the failure is raised as
:class:`~collapseguard.guard.engine.UnrecoverableCheckError` (never turned into a fault): that process
stops and the launcher ends the others (torchrun, Lightning), else the process group timeout does.
Gradient checkpointing needs no switching off: checks run in eval mode without grad, where
Hugging Face models skip it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from collapseguard.guard.engine import UnrecoverableCheckError


@dataclass(frozen=True)
class Sharding:
    """How a model's parameters are sharded, as far as a check needs to know.

    Attributes:
        kind: ``"fsdp2"``, ``"fsdp1"`` or ``"zero3"``.
        collective: forwards run collectives while generating, so every rank must run as many.
        root: FSDP1: the outermost ``FullyShardedDataParallel`` to summon; ZeRO-3: DeepSpeed's
            parameter coordinator (``DeepSpeedZeRoOffload``) when known, else None.
    """

    kind: str
    collective: bool
    root: Any = None

    def describe(self) -> str:
        how = "forwards are collectives (synced_gpus, equal batches)" if self.collective else "parameters gathered once"
        return f"{self.kind}: {how}"


def _fsdp2_class() -> type | None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6 has it under _composable
        try:
            from torch.distributed._composable.fsdp import FSDPModule
        except ImportError:
            return None
    return FSDPModule


def _fsdp1_class() -> type | None:
    if not torch.distributed.is_available():
        return None
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel


def _zero3_coordinator(holders: Sequence[Any]) -> Any | None:
    """DeepSpeed's ZeRO-3 parameter coordinator from a ``DeepSpeedEngine``, its optimizer, or the
    optimizer wrapper accelerate hands to callbacks (``DeepSpeedOptimizerWrapper``)."""
    for holder in holders:
        optimizer = getattr(holder, "optimizer", None)
        for candidate in (holder, optimizer, getattr(optimizer, "optimizer", None)):
            offload = getattr(candidate, "parameter_offload", None)
            if offload is not None and hasattr(offload, "forward_hooks"):
                return offload
    return None


def detect_sharding(model: torch.nn.Module, holders: Sequence[Any] = (), *, zero3_gather: bool = True) -> Sharding | None:
    """How ``model`` is sharded, or None when every rank holds its full parameters (DDP, ZeRO-1/2).

    ``holders`` are objects a framework keeps around the model that may own the sharding: the
    strategy's wrapped model (an FSDP1 root around a LightningModule, a ``DeepSpeedEngine``) or
    the optimizer (DeepSpeed's, which reaches its parameter coordinator). ZeRO-3 parameters are
    gathered once when ``zero3_gather`` and the coordinator is found, else fetched per module.
    """
    modules = list(model.modules())
    fsdp2 = _fsdp2_class()
    if fsdp2 is not None and any(isinstance(m, fsdp2) for m in modules):
        return Sharding("fsdp2", collective=True)
    fsdp1 = _fsdp1_class()
    if fsdp1 is not None:
        outer = [h for h in holders if isinstance(h, fsdp1)]
        if outer or any(isinstance(m, fsdp1) for m in modules):
            return Sharding("fsdp1", collective=True, root=outer[0] if outer else model)
    if any(hasattr(p, "ds_id") and hasattr(p, "ds_status") for p in model.parameters()):
        offload = _zero3_coordinator(holders) if zero3_gather else None
        return Sharding("zero3", collective=offload is None, root=offload)
    return None


def collective_device(model: torch.nn.Module) -> torch.device:
    """Where tensors for the default process group live: CPU for gloo, else the model's device."""
    if torch.distributed.get_backend() == "gloo":
        return torch.device("cpu")
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def agree_ready(failed: bool, model: torch.nn.Module) -> None:
    """Every rank says whether it could prepare its generation; raise on a ready rank when another could not.

    Runs before any collective of the check, so no rank is left waiting: the rank that failed
    raises its own error, the others raise this one, and each becomes a fault on every rank.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flags = torch.zeros(dist.get_world_size(), dtype=torch.int32, device=collective_device(model))
    flags[dist.get_rank()] = int(failed)
    dist.all_reduce(flags)
    others = [r for r in torch.nonzero(flags).flatten().tolist() if r != dist.get_rank()]
    if others and not failed:
        raise RuntimeError(f"rank(s) {others} could not prepare generation from the sharded model, so no rank "
                           "generated (their fault says why)")


def equalise(items: list[Any], count: int, filler: Any) -> list[Any]:
    """``items`` padded with ``filler`` to ``count``, so that every rank runs as many batches."""
    return items + [filler] * (count - len(items))


def generation_target(model: torch.nn.Module) -> torch.nn.Module:
    """The module to call ``generate`` and forward on: an FSDP1 wrapper's inner module, else the model."""
    fsdp1 = _fsdp1_class()
    return model.module if fsdp1 is not None and isinstance(model, fsdp1) else model


@contextlib.contextmanager
def _zero3_gathered(offload: Any) -> Iterator[None]:
    """Full ZeRO-3 parameters on every rank with DeepSpeed's fetch/release hooks removed, so that
    forwards run no collectives; hooks are registered again afterwards even if generation fails."""
    import deepspeed

    params = list(offload.module.parameters())
    with deepspeed.zero.GatheredParameters(params):
        for hook in [*offload.forward_hooks, *offload.backward_hooks]:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            coordinator = getattr(offload, "param_coordinator", None)
            if coordinator is not None and not coordinator.is_invalid_trace():
                coordinator._invalidate_trace()  # the recorded fetch order no longer holds
            if hasattr(offload, "_register_deepspeed_module"):
                offload._register_deepspeed_module(offload.module)
            else:  # deepspeed < 0.16.4
                offload._register_hooks_recursively(offload.module)


@contextlib.contextmanager
def generation_context(sharding: Sharding, rank: int) -> Iterator[None]:
    """Full parameters for generation and scoring while inside; the training setup restored on exit.

    Entering is itself a collective (FSDP1 and gathered ZeRO-3 all-gather here). A failure
    while entering, or anywhere inside when ``sharding.collective``, is raised as
    :class:`~collapseguard.guard.engine.UnrecoverableCheckError`.
    """
    stack = contextlib.ExitStack()
    try:
        if sharding.kind == "fsdp1":
            # the root's own parameters only: nested units gather theirs in their forwards, as in training
            stack.enter_context(_fsdp1_class().summon_full_params(sharding.root, recurse=False, writeback=False))
        elif sharding.kind == "zero3" and sharding.root is not None:
            stack.enter_context(_zero3_gathered(sharding.root))
    except Exception as exc:
        raise _out_of_step(sharding, rank, "gathering the parameters", exc) from exc
    try:
        yield
    except Exception as exc:
        if sharding.collective:
            stack.pop_all()  # this process stops: no clean-up that could block or hide the error
            raise _out_of_step(sharding, rank, "generation", exc) from exc
        stack.close()
        raise  # forwards were local: every rank is in step, and the engine makes this a fault
    stack.close()


def _out_of_step(sharding: Sharding, rank: int, stage: str, exc: BaseException) -> UnrecoverableCheckError:
    return UnrecoverableCheckError(
        f"{stage} failed on rank {rank} inside a collective of the sharded model ({sharding.describe()}) "
        f"with {type(exc).__name__}: {exc}. The other ranks wait in that collective and cannot be released, "
        "so this process stops: the launcher ends the others (torchrun, Lightning), else the process group "
        "timeout does. collapseguard cannot turn this into a fault.")
