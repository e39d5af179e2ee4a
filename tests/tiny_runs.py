"""Shared builders for the framework tests: real tiny GPT-2 runs on real human text."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from collapseguard import GenerationSettings, GoldSet
from collapseguard.demos.data import train_gold_split

# A handful of sentences repeated: the degenerate corpus a collapsed generator feeds back.
DEGENERATE = ["The function returns the value of the attribute.", "This object is not callable."] * 300
GUARD_KWARGS = {"generation": GenerationSettings(num_samples=32, max_new_tokens=32, prompt_length=16)}


@functools.lru_cache(maxsize=1)
def texts() -> tuple[list[str], list[str]]:
    train, gold = train_gold_split()
    return train, gold


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    from collapseguard.demos.tiny import train_tokenizer

    train, gold = texts()
    return train_tokenizer(train + gold, vocab_size=512)


@functools.lru_cache(maxsize=1)
def gold() -> GoldSet:
    return GoldSet.from_texts(texts()[1], name="pydoc-gold")


def corpus(kind: str) -> list[str]:
    return texts()[0] if kind == "varied" else DEGENERATE


def blocks(kind: str) -> torch.utils.data.Dataset:
    from collapseguard.demos.tiny import TokenBlocks

    return TokenBlocks(corpus(kind), tokenizer(), block_size=64)


def model(seed: int = 0, dropout: float = 0.1) -> Any:
    from collapseguard.demos.tiny import tiny_gpt2

    return tiny_gpt2(tokenizer(), seed=seed, dropout=dropout)


def lightning_trainer(tmp: Path, max_epochs: int, callbacks: list, accelerator: str = "cpu", **kwargs: Any) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    kwargs.setdefault("logger", CSVLogger(str(tmp), name="run"))
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("deterministic", True)
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, enable_progress_bar=False,
                      enable_model_summary=False, accelerator=accelerator, devices=1, **kwargs)


def lightning_fit(tmp: Path, kind: str, max_epochs: int, callbacks: list, seed: int = 0,
                  ckpt_path: str | None = None, dropout: float = 0.1, **trainer_kwargs: Any) -> tuple[Any, Any]:
    from collapseguard.demos.tiny import lightning_module

    module = lightning_module(model(seed, dropout))
    loader = torch.utils.data.DataLoader(blocks(kind), batch_size=16, shuffle=False)
    trainer = lightning_trainer(tmp, max_epochs, callbacks, **trainer_kwargs)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer, module


def hf_trainer(tmp: Path, kind: str, epochs: int, callbacks: list, seed: int = 0, dropout: float = 0.1,
               eval_dataset: Any = None, **arg_kwargs: Any) -> Any:
    from transformers import Trainer, TrainingArguments

    arg_kwargs.setdefault("save_strategy", "no")
    arg_kwargs.setdefault("learning_rate", 3e-3)
    arg_kwargs.setdefault("use_cpu", True)
    args = TrainingArguments(
        output_dir=str(tmp), num_train_epochs=epochs, per_device_train_batch_size=16,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, logging_strategy="epoch", report_to=[],
        disable_tqdm=True, seed=seed, data_seed=seed, **arg_kwargs)
    return Trainer(model=model(seed, dropout), args=args, train_dataset=blocks(kind), processing_class=tokenizer(),
                   eval_dataset=eval_dataset, callbacks=callbacks)


def severities(history: list[dict]) -> list[str | None]:
    """The worst alert severity at each check of a monitor history."""
    rank = {None: 0, "warn": 1, "critical": 2}
    return [max((a["severity"] for a in h["alerts"]), key=rank.__getitem__, default=None) for h in history]


def mixed_blocks() -> tuple[Any, list[str]]:
    """A small human pool among many synthetic blocks, with one provenance label per index."""
    from torch.utils.data import ConcatDataset, Subset

    human, synthetic = Subset(blocks("varied"), range(40)), blocks("degenerate")
    return ConcatDataset([human, synthetic]), ["human"] * len(human) + ["synthetic"] * len(synthetic)


def alarming(module: Any, prompts: Any) -> list:
    """A generate_fn whose outputs are one loop for every prompt: critical at every check."""
    import numpy as np

    return [np.array([5, 6, 7, 8] * 8)] * len(prompts)
