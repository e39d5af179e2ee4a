"""Lightning: a tiny GPT-2 fine-tuned on collapsed, repetitive data; the guard halts it and the run gets a report.

Epochs 1..k train on human paragraphs from CPython's documentation; from ``--switch`` on, the data is
replaced by two sentences repeated (what a collapsed generator emits). The guard checks every epoch
against held-out human paragraphs and, with ``on_collapse="halt"``, stops training at the first critical
check. The run folder gets the guard's trail, Lightning's CSV log and an HTML report.

    python examples/lightning_halt.py [--epochs 8] [--switch 2] [--out runs/lightning_halt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from collapseguard import GenerationSettings, GoldSet
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.tiny import TokenBlocks, lightning_module, tiny_gpt2, train_tokenizer
from collapseguard.integrations.lightning import CollapseGuard
from collapseguard.reporting.report import write_report

DEGENERATE = ["The function returns the value of the attribute.", "This object is not callable."] * 300


class SwitchingData(pl.LightningDataModule):
    """Human blocks before epoch ``switch``, the repeated sentences from then on (reloaded every epoch)."""

    def __init__(self, human: TokenBlocks, collapsed: TokenBlocks, switch: int) -> None:
        super().__init__()
        self.human, self.collapsed, self.switch = human, collapsed, switch

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        data = self.human if self.trainer.current_epoch < self.switch else self.collapsed
        return torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--switch", type=int, default=2, help="first epoch trained on the collapsed data")
    parser.add_argument("--out", default="runs/lightning_halt")
    args = parser.parse_args()
    out = Path(args.out)
    (out / "alerts.jsonl").unlink(missing_ok=True)
    pl.seed_everything(0, verbose=False)
    train, gold_texts = train_gold_split()
    tok = train_tokenizer(train)
    guard = CollapseGuard(GoldSet.from_texts(gold_texts), tokenizer=tok, on_collapse="halt", alert_log=out / "alerts.jsonl", generation=GenerationSettings(num_samples=32))
    trainer = pl.Trainer(max_epochs=args.epochs, callbacks=[guard], logger=CSVLogger(out, name="", version=""),
                         reload_dataloaders_every_n_epochs=1, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    data = SwitchingData(TokenBlocks(train, tok), TokenBlocks(DEGENERATE, tok), args.switch)
    trainer.fit(lightning_module(tiny_gpt2(tok)), datamodule=data)
    print(f"\nstopped after epoch {trainer.current_epoch} of {args.epochs} (should_stop={trainer.should_stop})")
    for h in guard.engine.monitor.checks:
        alerts = ", ".join(f"{a['severity']}:{a['metric']}" for a in h["alerts"]) or "-"
        print(f"step {h['step']:>4}  health {h['health']:.2f}  {alerts}")
    print(f"report: {write_report(out)}")


if __name__ == "__main__":
    main()
