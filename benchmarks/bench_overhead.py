"""The guard's cost inside real training runs, as a share of epoch time, and what a check is made of.

1. Reference runs: trains the tiny GPT-2 (2 layers, 64 dims, in-memory BPE
   tokenizer) on CPython's documentation paragraphs with Lightning and with the HF
   Trainer, once with and once without the guard (default settings: 64 prompts x
   32 new tokens, model-side statistics on), and reports per epoch: training time,
   check time split into generation (sampling plus the teacher-forced pass over the
   gold continuations: model compute) and metrics (measuring, merging, the metric
   values, detectors and health: the guard's own work), and the check's share of
   the guarded epoch. The first check of a run also computes the gold reference
   (the metrics of gold itself, once per run), so its metric time is reported
   apart from the later, "warm" checks.
2. A realistic generation cost: a tiny model generates 64 x 32 tokens in about
   0.1 s, which no real model does, so "metrics <= 5% of a check" is also
   measured with a 6-layer, 256-dim GPT-2 (about 5M parameters; still small).
   It is not trained (an epoch would take minutes on 2 CPUs): the guard's check
   runs on it as the callbacks run it (``produce_from_hf_model``), several times.

    python benchmarks/bench_overhead.py [--epochs 3] [--out benchmarks/results]
    python benchmarks/bench_overhead.py --smoke --out /tmp/smoke   # seconds: correctness only, no timing claims

The smoke mode trains on a few paragraphs for 2 epochs and asserts what must hold
whatever the machine: one timed check per epoch, and a guarded run whose final
weights equal the unguarded run's bit for bit (the check must not change training).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from collapseguard import CollapseWarning, GoldSet
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.tiny import TokenBlocks, lightning_module, tiny_gpt2, train_tokenizer
from collapseguard.guard.engine import GuardEngine

TINY = {"n_layer": 2, "n_embd": 64, "n_head": 2}
REALISTIC = {"n_layer": 6, "n_embd": 256, "n_head": 4}
METRIC_SHARE_FLOOR = 0.05


def _describe(model_kwargs: dict[str, int], model: torch.nn.Module) -> str:
    params = sum(p.numel() for p in model.parameters())
    return f"GPT-2 {model_kwargs['n_layer']}x{model_kwargs['n_embd']} ({params / 1e6:.2f}M params)"


def _lightning(train: list[str], tok: Any, gold: GoldSet, epochs: int, guarded: bool, device: str = "cpu",
               model_kwargs: dict[str, int] = TINY) -> tuple[list[float], list[dict[str, float]], Any]:
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
    model = tiny_gpt2(tok, **model_kwargs)
    trainer.fit(lightning_module(model), loader)
    return times, guard.engine.timing_history if guard else [], model


def _hf(train: list[str], tok: Any, gold: GoldSet, epochs: int, guarded: bool, out_dir: Path, device: str = "cpu",
        model_kwargs: dict[str, int] = TINY) -> tuple[list[float], list[dict[str, float]], Any]:
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
    model = tiny_gpt2(tok, **model_kwargs)
    trainer = Trainer(model=model, args=args, train_dataset=TokenBlocks(train, tok), processing_class=tok,
                      callbacks=[c for c in (guard, EpochTimer()) if c])
    trainer.train()
    return times, guard.engine.timing_history if guard else [], model


def split_checks(checks: list[dict[str, float]]) -> dict[str, float]:
    """Mean generation and metric seconds; metrics of the first check (with the gold reference) apart from the rest."""
    gen = statistics.fmean(c["generation"] for c in checks)
    warm = [c["metrics"] for c in checks[1:]] or [checks[0]["metrics"]]
    met_warm = statistics.fmean(warm)
    met_all = statistics.fmean(c["metrics"] for c in checks)
    return {"checks": len(checks), "check_generation_s": gen, "check_metrics_s": met_all,
            "check_metrics_warm_s": met_warm, "first_check_metrics_s": checks[0]["metrics"],
            "metric_share_of_check": met_all / (gen + met_all), "metric_share_of_warm_check": met_warm / (gen + met_warm)}


def _assert_checks(checks: list[dict[str, float]], expected: int, where: str) -> None:
    assert len(checks) == expected, f"{where}: {len(checks)} timed checks, expected {expected}"
    for c in checks:
        assert {"generation", "metrics", "total"} <= c.keys(), f"{where}: timing keys {sorted(c)}"
        assert all(v > 0 for v in c.values()), f"{where}: non-positive timing {c}"


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def training_runs(train: list[str], tok: Any, gold: GoldSet, epochs: int, out: Path, device: str,
                  smoke: bool) -> list[dict[str, Any]]:
    rows = []
    for framework in ("lightning", "transformers"):
        runs = {}
        for guarded in (False, True):
            if framework == "lightning":
                runs[guarded] = _lightning(train, tok, gold, epochs, guarded, device)
            else:
                runs[guarded] = _hf(train, tok, gold, epochs, guarded, out / "hf_tmp", device)
        checks = runs[True][1]
        _assert_checks(checks, epochs, framework)
        same = _same_weights(runs[False][2], runs[True][2])
        if smoke:
            assert same, f"{framework}: the guarded run trained differently from the unguarded one"
        plain = sum(runs[False][0]) / epochs
        guarded_epoch = sum(runs[True][0]) / epochs
        split = split_checks(checks)
        rows.append({"framework": framework, "model": _describe(TINY, runs[True][2]), "epochs": epochs,
                     "epoch_s_without_guard": plain, "epoch_s_with_guard": guarded_epoch, **split,
                     "check_share_of_epoch": (split["check_generation_s"] + split["check_metrics_s"]) / guarded_epoch,
                     "guarded_weights_equal_unguarded": same})
        print(f"  {framework}: generation {split['check_generation_s']:.3f} s, metrics warm "
              f"{split['check_metrics_warm_s']:.4f} s / first {split['first_check_metrics_s']:.4f} s",
              file=sys.stderr, flush=True)
    return rows


def realistic_checks(tok: Any, gold: GoldSet, model_kwargs: dict[str, int], checks: int,
                     device: str) -> dict[str, Any]:
    """The guard's check, as the callbacks run it, on an untrained model of a realistic generation cost."""
    from collapseguard.integrations._torch import produce_from_hf_model

    model = tiny_gpt2(tok, **model_kwargs).to(device)
    engine = GuardEngine(gold, tokenizer=tok)  # the callbacks' defaults: 64 prompts x 32 tokens, model stats on
    engine.setup(tok)
    produce = produce_from_hf_model(engine, model, tok)
    for k in range(checks):
        engine.run_check(produce, step=k, epoch=k)
    _assert_checks(engine.timing_history, checks, "realistic")
    return {"model": _describe(model_kwargs, model), **split_checks(engine.timing_history)}


def environment(mode: str, device: str) -> dict[str, Any]:
    return {"mode": mode, "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "device": device, "torch_threads": torch.get_num_threads(),
            "load_avg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "versions": {p: version(p) for p in ("collapseguard", "numpy", "scipy", "torch", "lightning",
                                                 "transformers")},
            "command": "python " + " ".join(sys.argv)}


def markdown(env: dict[str, Any], rows: list[dict[str, Any]], realistic: dict[str, Any] | None) -> str:
    lines = []
    if env["mode"] == "smoke":
        lines += ["**Smoke run: correctness only (one timed check per epoch; guarded weights equal unguarded); the "
                  "times are not evidence of anything.**", ""]
    lines += [f"Guard overhead ({env['mode']} run, {env['date_utc']}, {env['cpu_count']} CPUs, {env['platform']}, "
              f"Python {env['python']}, torch {env['versions']['torch']} ({env['torch_threads']} threads, "
              f"{env['device']}), load {env['load_avg_1m_at_start']:.2f} at start and "
              f"{env['load_avg_1m_at_end']:.2f} at end, {env['total_s']:.0f} s in all). Checks: 64 prompts x 32 new "
              "tokens, model-side statistics on. Generation = sampling + teacher-forced gold pass (model compute); "
              "metrics = measuring, metric values, detectors (the guard's own work). Warm = every check after "
              "the first, which also computes the gold reference once per run.", "",
              "| framework | model | epoch without guard (s) | epoch with guard (s) | check: generation (s) | "
              "check: metrics, warm (s) | first check: metrics (s) | metric share of a warm check | "
              "metric share, all checks | check share of epoch |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['framework']} | {r['model']} | {r['epoch_s_without_guard']:.2f} | {r['epoch_s_with_guard']:.2f} | "
              f"{r['check_generation_s']:.3f} | {r['check_metrics_warm_s']:.4f} | {r['first_check_metrics_s']:.4f} | "
              f"{r['metric_share_of_warm_check']:.1%} | {r['metric_share_of_check']:.1%} | "
              f"{r['check_share_of_epoch']:.1%} |" for r in rows]
    if realistic is not None:
        r = realistic
        lines += ["", f"Realistic generation cost (untrained, {r['checks']} checks as the callbacks run them; "
                  f"floor: metrics <= {METRIC_SHARE_FLOOR:.0%} of a check):", "",
                  "| model | check: generation (s) | check: metrics, warm (s) | first check: metrics (s) | "
                  "metric share of a warm check | metric share, all checks |", "|---|---:|---:|---:|---:|---:|",
                  f"| {r['model']} | {r['check_generation_s']:.3f} | {r['check_metrics_warm_s']:.4f} | "
                  f"{r['first_check_metrics_s']:.4f} | {r['metric_share_of_warm_check']:.1%} | "
                  f"{r['metric_share_of_check']:.1%} |"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--realistic-checks", type=int, default=4, help="checks on the 6x256 model (0: skip)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few paragraphs, 2 epochs, a small 'realistic' model: correctness only, in seconds")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.getLogger("collapseguard").setLevel(logging.CRITICAL)
    for name in ("lightning", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.device == "cpu":
        # smoke: one thread, so that a busy machine cannot stall torch's thread barriers (correctness only)
        torch.set_num_threads(1 if args.smoke else 2)
    mode = "smoke" if args.smoke else "full"
    env = environment(mode, args.device)
    t0 = time.perf_counter()
    train, gold_texts = train_gold_split()
    tok = train_tokenizer(train + gold_texts)
    gold = GoldSet.from_texts(gold_texts)
    epochs = 2 if args.smoke else args.epochs
    if args.smoke:
        train = train[:32]  # a few batches per epoch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        print("training runs ...", file=sys.stderr)
        rows = training_runs(train, tok, gold, epochs, out, args.device, args.smoke)
        realistic = None
        if args.realistic_checks:
            print("checks on a realistic model ...", file=sys.stderr)
            realistic = realistic_checks(tok, gold, TINY if args.smoke else REALISTIC,
                                         2 if args.smoke else args.realistic_checks, args.device)
    env["total_s"] = time.perf_counter() - t0
    env["load_avg_1m_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    suffix = "" if args.device == "cpu" else f"_{args.device}"
    (out / f"overhead{suffix}.json").write_text(
        json.dumps({"environment": env, "runs": rows, "realistic": realistic}, indent=2) + "\n")
    md = markdown(env, rows, realistic)
    (out / f"overhead{suffix}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
