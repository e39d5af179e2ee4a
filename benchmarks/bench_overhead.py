"""The guard's cost inside real training runs, as a share of epoch time.

Trains the tiny GPT-2 (2 layers, 64 dims, in-memory BPE tokenizer) on CPython's
documentation paragraphs with Lightning and with the HF Trainer, once with and
once without the guard (default settings: 64 prompts x 32 new tokens, model-side
statistics on), and reports per epoch: training time, check time split into
generation (with teacher-forced gold scoring) and metrics, and the check's
share of the guarded epoch.

    python benchmarks/bench_overhead.py [--epochs 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import torch

from collapseguard import CollapseWarning, GoldSet
from collapseguard.data import train_gold_split
from collapseguard.integrations.tiny import TokenBlocks, lightning_module, tiny_gpt2, train_tokenizer


def _lightning(train, tok, gold, epochs, guarded, device="cpu"):
    import lightning.pytorch as pl

    from collapseguard.integrations.lightning import CollapseGuard

    times: list[float] = []

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):  # runs after the guard (registered after it)
            times.append(time.perf_counter() - self.t0)

    guard = CollapseGuard(gold, tokenizer=tok) if guarded else None
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[c for c in (guard, EpochTimer()) if c], logger=False,
                         accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(TokenBlocks(train, tok), batch_size=16, shuffle=True)
    trainer.fit(lightning_module(tiny_gpt2(tok)), loader)
    return times, guard.engine.timing_history if guard else []


def _hf(train, tok, gold, epochs, guarded, out_dir, device="cpu"):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from collapseguard.integrations.transformers import CollapseGuardCallback

    times: list[float] = []

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    guard = CollapseGuardCallback(gold) if guarded else None
    args = TrainingArguments(output_dir=str(out_dir), num_train_epochs=epochs, per_device_train_batch_size=16,
                             learning_rate=3e-3, report_to=[], disable_tqdm=True, use_cpu=device == "cpu", save_strategy="no",
                             logging_strategy="epoch")
    trainer = Trainer(model=tiny_gpt2(tok), args=args, train_dataset=TokenBlocks(train, tok), processing_class=tok,
                      callbacks=[c for c in (guard, EpochTimer()) if c])
    trainer.train()
    return times, guard.engine.timing_history if guard else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("collapseguard").setLevel(logging.CRITICAL)
    for name in ("lightning", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.device == "cpu":
        torch.set_num_threads(2)
    train, gold_texts = train_gold_split()
    tok = train_tokenizer(train + gold_texts)
    gold = GoldSet.from_texts(gold_texts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        for framework in ("lightning", "transformers"):
            runs = {}
            for guarded in (False, True):
                if framework == "lightning":
                    runs[guarded] = _lightning(train, tok, gold, args.epochs, guarded, args.device)
                else:
                    runs[guarded] = _hf(train, tok, gold, args.epochs, guarded, out / "hf_tmp", args.device)
            plain = sum(runs[False][0]) / args.epochs
            guarded_epoch = sum(runs[True][0]) / args.epochs
            checks = runs[True][1]
            gen = sum(c["generation"] for c in checks) / len(checks)
            met = sum(c["metrics"] for c in checks) / len(checks)
            rows.append({"framework": framework, "epoch_s_without_guard": plain, "epoch_s_with_guard": guarded_epoch,
                         "check_generation_s": gen, "check_metrics_s": met,
                         "check_share_of_epoch": (gen + met) / guarded_epoch})
    suffix = "" if args.device == "cpu" else f"_{args.device}"
    (out / f"overhead{suffix}.json").write_text(json.dumps(rows, indent=2))
    lines = ["| framework | epoch without guard (s) | epoch with guard (s) | check: generation (s) | "
             "check: metrics (s) | check share of epoch |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['framework']} | {r['epoch_s_without_guard']:.2f} | {r['epoch_s_with_guard']:.2f} | "
              f"{r['check_generation_s']:.3f} | {r['check_metrics_s']:.3f} | {r['check_share_of_epoch']:.1%} |"
              for r in rows]
    (out / f"overhead{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
