"""Configure the guard from LightningCLI: on the command line or in a YAML config.

    python examples/lightning_cli.py fit --config examples/lightning_cli.yaml
    python examples/lightning_cli.py fit --trainer.max_epochs=2 \\
        --trainer.callbacks+=collapseguard.integrations.lightning.CollapseGuard \\
        --trainer.callbacks.gold=runs/lightning_cli/gold.jsonl --trainer.callbacks.on_collapse=halt

A tiny GPT-2 learns CPython's documentation paragraphs (built in, nothing downloaded); the module
carries its tokenizer, which the guard picks up. ``--data.corpus=degenerate`` trains on two
sentences repeated, which the guard halts. The held-out gold paragraphs are written to
``runs/lightning_cli/gold.jsonl`` first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LightningCLI

from collapseguard.demos.data import train_gold_split
from collapseguard.demos.tiny import TokenBlocks, tiny_gpt2, train_tokenizer

GOLD = Path("runs/lightning_cli/gold.jsonl")
DEGENERATE = ["The function returns the value of the attribute.", "This object is not callable."] * 300


class PydocLM(pl.LightningModule):
    """A tiny GPT-2 and its BPE tokenizer, both built from the human training paragraphs."""

    def __init__(self, n_layer: int = 2, n_embd: int = 64, lr: float = 3e-3, vocab_size: int = 512) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = train_tokenizer(train_gold_split()[0], vocab_size)
        self.model = tiny_gpt2(self.tokenizer, n_layer=n_layer, n_embd=n_embd)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


class PydocData(pl.LightningDataModule):
    """Token blocks of the human training paragraphs (``corpus="human"``) or of two repeated sentences."""

    def __init__(self, corpus: str = "human", batch_size: int = 16) -> None:
        super().__init__()
        if corpus not in ("human", "degenerate"):
            raise ValueError(f"corpus={corpus!r} must be 'human' or 'degenerate'")
        self.corpus, self.batch_size = corpus, batch_size

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        texts = train_gold_split()[0] if self.corpus == "human" else DEGENERATE
        blocks = TokenBlocks(texts, self.trainer.lightning_module.tokenizer)
        return torch.utils.data.DataLoader(blocks, batch_size=self.batch_size, shuffle=True)


def write_gold(path: Path = GOLD) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in train_gold_split()[1]), encoding="utf-8")
    return path


if __name__ == "__main__":
    write_gold()
    LightningCLI(PydocLM, PydocData, trainer_defaults={"accelerator": "cpu", "devices": 1})
