"""Healthy-training benchmark: does the guard stay silent on ordinary runs, and still catch their collapsing twins?

Every run is an ordinary training run of a tiny GPT-2 through a real framework (Lightning's ``Trainer`` or the
Hugging Face ``Trainer``) with the guard's callback at its defaults (``on_collapse="halt"``, a check at the end
of every epoch), on real human text that installs offline (:mod:`collapseguard.demos.corpora`). The grid varies
what users vary: framework, corpus, gold set (50 to 1,000 texts, whole documents or sentences), training
from scratch or fine-tuning a checkpoint pre-trained on the other corpus, learning rate (a 10x range), model
size, batch size and schedule (constant or linearly decaying).

Each healthy configuration has a **collapsing twin**: the same settings, with the training data replaced by

- ``degenerate``: a handful of the corpus's sentences repeated (what a collapsed generator feeds back), or
- ``self``: the model's own samples, regenerated at the start of every epoch; for a run from scratch the
  switch happens mid-run (human text first, then its own samples: continued training on contaminated data).

Ground truth is the perplexity of held-out human documents of the same corpus (never trained on, never in
gold), measured at every check. Reported: false halts, false critical alerts and warns per check on the
healthy runs; on the twins, the check at which the guard halts.

    python benchmarks/healthy.py --out benchmarks/results                 # full size (~40 min on 2 cores)
    python benchmarks/healthy.py --smoke --out /tmp/healthy                # CI size
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # appended: a replay of the earlier rules puts their package first (PYTHONPATH)
    sys.path.append(str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _core(module: str) -> Any:
    """A core module by its path in this layout, or by its flat 0.1 path: the replay of the earlier rules runs
    this file against that version's package."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        return importlib.import_module("collapseguard." + module.rsplit(".", 1)[1])


json_safe = _core("collapseguard.reporting.alertlog").json_safe

SIZES = {"small": {"n_layer": 2, "n_embd": 64, "n_head": 2}, "base": {"n_layer": 4, "n_embd": 128, "n_head": 4}}
BLOCK = 64
VOCAB = 8192
SELF_TEMPERATURE, SELF_TOP_P = 0.8, 0.95  # how the self twins sample their own training data


@dataclass(frozen=True)
class RunConfig:
    """One training run. ``data``: ``human`` (healthy), ``degenerate`` or ``self`` (collapsing twins)."""

    framework: str = "lightning"
    corpus: str = "pydoc"
    gold_unit: str = "document"
    gold_size: int = 100
    init: str = "scratch"
    lr: float = 3e-3
    size: str = "small"
    batch_size: int = 16
    schedule: str = "constant"
    epochs: int = 5
    seed: int = 0
    data: str = "human"

    @property
    def name(self) -> str:
        return (f"{self.framework[:2]}-{self.corpus}-{self.gold_unit[:3]}{self.gold_size}-{self.init}-lr{self.lr:g}-"
                f"{self.size}-bs{self.batch_size}-{self.schedule[:3]}-s{self.seed}")

    def twin(self) -> RunConfig:
        """The collapsing twin: degenerate data for runs from scratch at even seeds, own samples otherwise."""
        kind = "self" if self.init == "finetune" or self.seed % 2 else "degenerate"
        return dataclasses.replace(self, data=kind)


# ---------------------------------------------------------------------------------------------- the grid
def grid(smoke: bool = False) -> list[RunConfig]:
    """The healthy configurations (each is also run as its collapsing twin)."""
    if smoke:
        return [RunConfig(epochs=2, gold_size=50), RunConfig(framework="transformers", epochs=2, gold_size=50,
                                                             init="finetune", lr=1e-3, seed=1)]
    base = RunConfig()
    runs: list[RunConfig] = []
    for framework in ("lightning", "transformers"):
        for seed in (0, 1, 2):
            runs.append(dataclasses.replace(base, framework=framework, seed=seed))
            runs.append(dataclasses.replace(base, framework=framework, seed=seed, corpus="news", gold_size=100))
        for lr in (1e-3, 1e-2):  # with 3e-3 above: a 10x range
            runs.append(dataclasses.replace(base, framework=framework, lr=lr))
            runs.append(dataclasses.replace(base, framework=framework, lr=lr, corpus="news"))
        runs.append(dataclasses.replace(base, framework=framework, size="base", lr=1e-3))
        runs.append(dataclasses.replace(base, framework=framework, size="base", lr=1e-3, corpus="news", seed=1))
        runs.append(dataclasses.replace(base, framework=framework, batch_size=32))
        runs.append(dataclasses.replace(base, framework=framework, batch_size=32, corpus="news", schedule="linear"))
        runs.append(dataclasses.replace(base, framework=framework, schedule="linear", lr=1e-2))
        runs.append(dataclasses.replace(base, framework=framework, gold_size=50))
        runs.append(dataclasses.replace(base, framework=framework, gold_size=200, seed=1))
        runs.append(dataclasses.replace(base, framework=framework, gold_unit="sentence", gold_size=300))
        runs.append(dataclasses.replace(base, framework=framework, corpus="news", gold_unit="sentence",
                                        gold_size=1000, seed=1))
        for lr, seed in ((3e-4, 0), (1e-3, 1), (3e-3, 2)):  # fine-tuning: a 10x range
            runs.append(dataclasses.replace(base, framework=framework, init="finetune", corpus="news", lr=lr,
                                            seed=seed))
        runs.append(dataclasses.replace(base, framework=framework, init="finetune", corpus="pydoc", lr=1e-3,
                                        schedule="linear"))
    return runs


# ---------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    """One byte-level BPE tokenizer for both corpora (the models' alphabet; EOS doubles as pad)."""
    from collapseguard.demos.corpora import CORPORA, corpus_split
    from collapseguard.demos.tiny import train_tokenizer

    texts = [t for c in CORPORA for part in dataclasses.astuple(corpus_split(c))[1:] for t in part]
    return train_tokenizer(texts, vocab_size=VOCAB)


def degenerate_texts(corpus: str, train: Sequence[str]) -> list[str]:
    """Four sentences of the training text repeated to the same length: a collapsed generator's output."""
    from collapseguard.demos.corpora import sentences

    picked = [s for doc in train[:8] for s in sentences(doc)][:4]
    words = sum(len(t.split()) for t in train)
    reps = max(1, words // max(1, sum(len(s.split()) for s in picked)))
    return [" ".join(picked)] * reps


class Blocks(torch.utils.data.Dataset):
    """Fixed-size ``(n, BLOCK)`` token blocks; :meth:`refresh` swaps them for the model's own samples in place,
    keeping their number, so a framework's epoch length never changes."""

    def __init__(self, texts: Sequence[str], tok: Any) -> None:
        from collapseguard.demos.tiny import TokenBlocks

        self.blocks = TokenBlocks(texts, tok, block_size=BLOCK).blocks.clone()
        self.starts = self.blocks[:, :4].clone()

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b = self.blocks[i]
        return {"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b}

    @torch.no_grad()
    def refresh(self, model: Any, seed: int) -> None:
        """Replace every block by a sample of ``model`` continuing a human block's first 4 tokens, drawn as synthetic
        data usually is (temperature 0.8, nucleus 0.95)."""
        was_training = model.training
        model.eval()
        new = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for b in range(0, len(self.starts), 256):
                prompt = self.starts[b:b + 256].to(next(model.parameters()).device)
                out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                     temperature=SELF_TEMPERATURE, top_k=0, top_p=SELF_TOP_P,
                                     max_new_tokens=BLOCK - 4, min_new_tokens=BLOCK - 4,
                                     pad_token_id=model.config.eos_token_id)
                new.append(out[:, :BLOCK].cpu())
        self.blocks = torch.cat(new)
        model.train(was_training)


def make_model(cfg: RunConfig, tok: Any) -> Any:
    from collapseguard.demos.tiny import tiny_gpt2

    model = tiny_gpt2(tok, seed=cfg.seed, **SIZES[cfg.size])
    if cfg.init == "finetune":
        model.load_state_dict(pretrained_state(cfg.size, other_corpus(cfg.corpus), cfg.seed))
    return model


def other_corpus(corpus: str) -> str:
    return "news" if corpus == "pydoc" else "pydoc"


_PRETRAINED: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}


def pretrained_state(size: str, corpus: str, seed: int, epochs: int = 8) -> dict[str, torch.Tensor]:
    """A checkpoint pre-trained (plain torch, AdamW 3e-3) on ``corpus``'s training documents, cached on disk."""
    key = (size, corpus, seed)
    if key in _PRETRAINED:
        return _PRETRAINED[key]
    from collapseguard.demos.corpora import corpus_split
    from collapseguard.demos.tiny import tiny_gpt2

    cache = Path(os.environ.get("COLLAPSEGUARD_BENCH_CACHE", "/tmp/collapseguard-bench")) / \
        f"pretrained-{size}-{corpus}-s{seed}-e{epochs}.pt"
    if cache.is_file():
        state = torch.load(cache)
    else:
        tok = tokenizer()
        model = tiny_gpt2(tok, seed=1000 + seed, **SIZES[size])
        data = Blocks(corpus_split(corpus).train, tok)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(data), generator=gen).split(16):
                loss = model(input_ids=data.blocks[idx], labels=data.blocks[idx]).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
        state = model.state_dict()
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, cache)
    _PRETRAINED[key] = state
    return state


@torch.no_grad()
def perplexity(model: Any, blocks: Blocks) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for idx in torch.arange(len(blocks)).split(64):
        total += float(model(input_ids=blocks.blocks[idx], labels=blocks.blocks[idx]).loss) * len(idx)
        count += len(idx)
    model.train(was_training)
    return math.exp(total / count)


# ---------------------------------------------------------------------------------------------- one run
@dataclass
class RunRecord:
    config: dict[str, Any]
    name: str
    kind: str = "text"
    checks: list[dict[str, Any]] = field(default_factory=list)  # per check: epoch, metrics, reference, alerts
    test_ppl: list[float] = field(default_factory=list)  # ground truth at each check
    halted_at: int | None = None  # the check (0-based) after which the guard halted training
    halt_reason: str | None = None
    seconds: float = 0.0
    prompts: int = 0


def _guard_kwargs(cfg: RunConfig) -> dict[str, Any]:
    return {"on_collapse": os.environ.get("COLLAPSEGUARD_BENCH_ON_COLLAPSE", "halt")}


def run(cfg: RunConfig) -> RunRecord:
    """Train one configuration with the guard's callback at its defaults; record every check."""
    from collapseguard import GoldSet
    from collapseguard.demos.corpora import corpus_split

    start = time.perf_counter()
    torch.set_num_threads(1)
    tok = tokenizer()
    split = corpus_split(cfg.corpus)
    gold = GoldSet.from_texts(split.gold(cfg.gold_size, cfg.gold_unit), name=f"{cfg.corpus}-{cfg.gold_unit}")
    texts = degenerate_texts(cfg.corpus, split.train) if cfg.data == "degenerate" else list(split.train)
    data = Blocks(texts, tok)
    test = Blocks(split.test, tok)
    model = make_model(cfg, tok)
    # from scratch the switch to own samples comes mid-run (after a third of the epochs); a fine-tuned
    # checkpoint trains on its own samples from the first epoch
    self_from = (0 if cfg.init == "finetune" else cfg.epochs // 3) if cfg.data == "self" else None
    record = RunRecord(dataclasses.asdict(cfg), cfg.name)
    with _quiet():
        if cfg.framework == "lightning":
            guard = _fit_lightning(cfg, model, data, test, gold, tok, self_from, record)
        else:
            guard = _fit_transformers(cfg, model, data, test, gold, tok, self_from, record)
    engine = guard.engine
    record.prompts = min(engine.num_samples, len(engine.monitor.split))
    for h in engine.monitor.history:
        record.checks.append({"step": h["step"], "baseline": bool(h.get("baseline")), "metrics": h["metrics"],
                              "alerts": h["alerts"], "anchor": h.get("anchor"),
                              "health": h["health"], "reference": engine.monitor.reference(
                                  int(h["metrics"].get("num_outputs", record.prompts)))})
    record.seconds = time.perf_counter() - start
    return record


def _on_epoch_start(data: Blocks, model: Any, epoch: int, cfg: RunConfig, self_from: int | None) -> None:
    if self_from is not None and epoch >= self_from:
        data.refresh(model, seed=cfg.seed * 1000 + epoch)


def _fit_lightning(cfg: RunConfig, model: Any, data: Blocks, test: Blocks, gold: Any, tok: Any,
                   self_from: int | None, record: RunRecord) -> Any:
    import lightning.pytorch as pl

    from collapseguard.integrations.lightning import CollapseGuard

    class Bench(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            _on_epoch_start(data, module.model, trainer.current_epoch, cfg, self_from)

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            record.test_ppl.append(perplexity(module.model, test))
            if trainer.should_stop and record.halted_at is None:
                record.halted_at = len(record.test_ppl) - 1
                record.halt_reason = guard.engine.last_outcome.reason if guard.engine.last_outcome else None

    pl.seed_everything(cfg.seed, verbose=False)
    guard = CollapseGuard(gold, tokenizer=tok, **_guard_kwargs(cfg))
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=True)
    trainer = pl.Trainer(max_epochs=cfg.epochs, callbacks=[guard, Bench()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(_BenchLM()(model, cfg.lr, cfg.schedule), loader)
    return guard


@functools.cache
def _BenchLM() -> type:
    import lightning.pytorch as pl

    class BenchLM(pl.LightningModule):
        def __init__(self, model: Any, lr: float, schedule: str) -> None:
            super().__init__()
            self.model, self.lr, self.schedule = model, lr, schedule

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.model(**batch).loss

        def configure_optimizers(self) -> Any:
            opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.0)
            if self.schedule == "constant":
                return opt
            total = max(1, int(self.trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return BenchLM


def _fit_transformers(cfg: RunConfig, model: Any, data: Blocks, test: Blocks, gold: Any, tok: Any,
                      self_from: int | None, record: RunRecord) -> Any:
    import tempfile

    from transformers import Trainer, TrainerCallback, TrainingArguments

    from collapseguard.integrations.transformers import CollapseGuardCallback

    class Bench(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            _on_epoch_start(data, model, round(state.epoch or 0), cfg, self_from)

        def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            record.test_ppl.append(perplexity(model, test))
            if control.should_training_stop and record.halted_at is None:
                record.halted_at = len(record.test_ppl) - 1
                record.halt_reason = guard.engine.last_outcome.reason if guard.engine.last_outcome else None

    guard = CollapseGuardCallback(gold, **_guard_kwargs(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(tmp, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
                                 learning_rate=cfg.lr, lr_scheduler_type=cfg.schedule, warmup_steps=0,
                                 weight_decay=0.0, save_strategy="no", logging_strategy="no", report_to=[],
                                 disable_tqdm=True, use_cpu=True, seed=cfg.seed, data_seed=cfg.seed)
        # the guard first: its on_epoch_end decides, then the bench callback reads the decision
        Trainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[guard, Bench()]).train()
    return guard


def _quiet() -> Any:
    """The demos' quiet training context (CollapseWarning, Lightning's chatter and the guard's log lines off)."""
    from collapseguard.demos.recursive_text import quiet_training

    return quiet_training()


# ---------------------------------------------------------------------------------------------- many runs
def run_any(cfg: Any) -> RunRecord:
    """A text run (:class:`RunConfig`) or an array run (``benchmarks.healthy_arrays.ArrayConfig``)."""
    if isinstance(cfg, RunConfig):
        return run(cfg)
    from benchmarks.healthy_arrays import run_array

    return run_array(cfg)


def run_all(configs: Sequence[Any], workers: int = 2, progress: Path | None = None) -> list[RunRecord]:
    """Run every configuration, ``workers`` processes at a time (one torch thread each); each finished run is
    appended to ``progress`` (JSON lines) as it completes. Records come back in the order of ``configs``."""
    done: list[RunRecord] = []

    def keep(record: RunRecord) -> None:
        done.append(record)
        if progress is not None:
            with open(progress, "a") as fh:
                fh.write(json.dumps(json_safe(dataclasses.asdict(record))) + "\n")

    if workers <= 1:
        for cfg in configs:
            keep(run_any(cfg))
    else:
        import multiprocessing as mp

        tokenizer()  # trained once here, inherited by the forked workers
        with mp.get_context("fork").Pool(workers, maxtasksperchild=4) as pool:
            for record in pool.imap_unordered(run_any, configs, chunksize=1):
                keep(record)
    order = {(type(c).__name__, c.name, c.data): i for i, c in enumerate(configs)}
    return sorted(done, key=lambda r: order[("RunConfig" if r.kind == "text" else "ArrayConfig", r.name,
                                             r.config["data"])])


# ---------------------------------------------------------------------------------------------- verdicts
MODEL_SIDE = ("gold_ppl", "gold_ppl_head", "gold_ppl_mid", "gold_ppl_tail", "next_token_entropy", "gold_nll",
              "overconfidence")
LEGACY_COMMIT = "8735ddf"
"""collapseguard before learning-aware judging (0.1.0 as it landed): its rules are replayed side by side."""


def _monitor_for(record: dict[str, Any]) -> Any:
    """A fresh monitor on the gold set of ``record``'s run, with the library that is imported (the replay of the
    earlier rules gets the gold set and the tokenizer with the record: that version has neither demos package)."""
    from collapseguard import CollapseMonitor, GoldSet

    if "replay_gold" in record:
        gold = record["replay_gold"]
        if record.get("kind", "text") == "array":
            return CollapseMonitor(GoldSet.from_arrays(np.asarray(gold["array"], dtype=gold["dtype"])))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(record["replay_tokenizer"], local_files_only=True)
        return CollapseMonitor(GoldSet.from_texts(gold), tokenizer=tok)
    cfg = record["config"]
    if record.get("kind", "text") == "array":
        from benchmarks.healthy_arrays import ArrayConfig, _data

        return CollapseMonitor(GoldSet.from_arrays(_data(ArrayConfig(**cfg))[1]))
    from collapseguard.demos.corpora import corpus_split

    gold = GoldSet.from_texts(corpus_split(cfg["corpus"]).gold(cfg["gold_size"], cfg["gold_unit"]))
    return CollapseMonitor(gold, tokenizer=tokenizer())


class _Measured:
    """Computed metrics in the shape ``CollapseMonitor.evaluate`` reads (for rules that predate ``judge``)."""

    def __init__(self, metrics: dict[str, float]) -> None:
        self.metrics = metrics
        self.num_outputs = int(metrics["num_outputs"])

    def compute(self) -> dict[str, float]:
        return dict(self.metrics)


def replay(record: dict[str, Any], bare: bool = False) -> list[dict[str, Any]]:
    """Judge a recorded run's checks again with the imported library: per judged check, its worst severity
    and alerts. ``bare``: as a ``CollapseMonitor`` without model statistics and without a check before training."""
    silenced_alerts = _core("collapseguard.detection.alerts").silenced_alerts

    monitor = _monitor_for(record)
    out = []
    with silenced_alerts():
        for check in record["checks"]:
            metrics = {k: math.nan if v is None else v for k, v in check["metrics"].items()}
            if bare:
                metrics = {k: v for k, v in metrics.items() if k not in MODEL_SIDE}
            if check.get("baseline"):
                if not bare and hasattr(monitor, "record_baseline"):
                    monitor.record_baseline(metrics, step=check.get("step"))
                continue
            judged = monitor.judge(metrics) if hasattr(monitor, "judge") else monitor.evaluate(_Measured(metrics))
            out.append({"severity": judged.severity, "alerts": [[a.metric, a.severity] for a in judged.alerts]})
    return out


def start_verdict(record: dict[str, Any]) -> str | None:
    """The worst severity the imported rules give the model *before training* (the run's baseline) judged as a
    first check: where rules flag the untrained model itself, their alarm on a twin says "not trained yet"."""
    silenced_alerts = _core("collapseguard.detection.alerts").silenced_alerts

    start = next((c for c in record["checks"] if c.get("baseline")), None)
    if start is None:
        return None
    monitor = _monitor_for(record)
    metrics = {k: math.nan if v is None else v for k, v in start["metrics"].items()}
    with silenced_alerts():
        judged = monitor.judge(metrics) if hasattr(monitor, "judge") else monitor.evaluate(_Measured(metrics))
    return judged.severity


def recorded(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdicts the real callbacks gave during the run."""
    rank = {"warn": 1, "critical": 2}
    out = []
    for check in record["checks"]:
        if check.get("baseline"):
            continue
        alerts = [[a["metric"], a["severity"]] for a in check["alerts"]]
        worst = max((s for _, s in alerts), key=rank.__getitem__, default=None)
        out.append({"severity": worst, "alerts": alerts})
    return out


def legacy_verdicts(records: list[dict[str, Any]], workdir: Path) -> dict[str, list[dict[str, Any]]] | None:
    """The same checks judged by the rules of :data:`LEGACY_COMMIT`, in a subprocess that imports that version's
    package from ``git archive`` (``None`` where git or the commit is not available, e.g. a shallow clone)."""
    import subprocess
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "legacy.tar"
        try:
            with open(archive, "wb") as fh:
                subprocess.run(["git", "-C", str(ROOT), "archive", LEGACY_COMMIT, "collapseguard"], stdout=fh,
                               check=True, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError):
            return None
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src, dst = workdir / "replay-in.json", workdir / "replay-legacy.json"
        tok = Path(tmp) / "tokenizer"
        tokenizer().save_pretrained(tok)
        with_gold = [{**r, "replay_gold": _gold_of(r), "replay_tokenizer": str(tok)} for r in records]
        src.write_text(json.dumps(json_safe(with_gold)))
        env = {**os.environ, "PYTHONPATH": tmp}
        subprocess.run([sys.executable, str(Path(__file__)), "--replay", str(src), "--out", str(dst)], env=env,
                       check=True)
        result = json.loads(dst.read_text())
        src.unlink()
        dst.unlink()
        return result


def _gold_of(record: dict[str, Any]) -> list[Any]:
    """The gold texts (or arrays) of ``record``'s run, as the monitor of :func:`_monitor_for` would build them."""
    gold = _monitor_for(record).gold
    return {"array": gold.array.tolist(), "dtype": str(gold.array.dtype)} if gold.kind == "array" else list(gold.texts)


def _key(record: dict[str, Any]) -> str:
    return f"{record['name']}|{record['config']['data']}"


# ---------------------------------------------------------------------------------------------- summary
RANK = {None: 0, "warn": 1, "critical": 2}
DEGRADED = 1.10
"""A twin has degraded once its held-out perplexity is this many times its own best so far (its healthy twin's
at the first check)."""


def onset(record: dict[str, Any]) -> int:
    """The first check at which a twin trains on collapsing data (0 for degenerate data and fine-tuned self twins)."""
    cfg = record["config"]
    if cfg["data"] == "self" and cfg.get("init", "scratch") == "scratch":
        return cfg["epochs"] // 3
    return 0


def degradation(test_ppl: Sequence[float], healthy_ppl: Sequence[float], start: int) -> int | None:
    """The first check from ``start`` on at which a twin's held-out perplexity is :data:`DEGRADED` times its own
    best before that check -- worse than it has been -- or, with no earlier check, times its healthy twin's."""
    for i in range(start, len(test_ppl)):
        ref = min(test_ppl[:i]) if i > 0 else (healthy_ppl[0] if healthy_ppl else math.nan)
        if test_ppl[i] >= DEGRADED * ref:
            return i
    return None


def _first(verdicts: list[dict[str, Any]], severity: str, start: int = 0) -> int | None:
    return next((i for i, v in enumerate(verdicts) if i >= start and RANK[v["severity"]] >= RANK[severity]), None)


def summarize(records: list[dict[str, Any]], judged: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Healthy runs: halts, critical and warn checks per rule set; twins: where each rule set halts them.

    ``judged`` maps a rule set's label to its verdicts per run (``_key``); a halt is the first critical check
    (the callbacks' default ``patience=1``).
    """
    healthy = {_key(r): r for r in records if r["config"]["data"] == "human"}
    out: dict[str, Any] = {"healthy": {}, "twins": []}
    starts = {label: verdicts.pop("#start", {}) for label, verdicts in judged.items()}
    for label, verdicts in judged.items():
        rows = [verdicts[k] for k in healthy if k in verdicts]
        checks = sum(len(v) for v in rows)
        signals: dict[str, int] = {}
        for v in rows:
            for check in v:
                for metric, severity in check["alerts"]:
                    signals[f"{metric} {severity}"] = signals.get(f"{metric} {severity}", 0) + 1
        out["healthy"][label] = {
            "runs": len(rows), "checks": checks,
            "halted_runs": sum(_first(v, "critical") is not None for v in rows),
            "critical_checks": sum(c["severity"] == "critical" for v in rows for c in v),
            "warn_checks": sum(c["severity"] == "warn" for v in rows for c in v),
            "warns_per_check": sum(c["severity"] == "warn" for v in rows for c in v) / max(checks, 1),
            "signals": dict(sorted(signals.items(), key=lambda kv: -kv[1])),
        }
    for record in records:
        if record["config"]["data"] == "human":
            continue
        twin_of = healthy.get(f"{record['name']}|human")
        start = onset(record)
        degraded = None
        if twin_of is not None:
            degraded = degradation(record["test_ppl"], twin_of["test_ppl"], start)
        row = {"name": record["name"], "kind": record.get("kind", "text"), "data": record["config"]["data"],
               "onset": start, "checks": len(record["test_ppl"]), "degraded": degraded}
        for label, verdicts in judged.items():
            v = verdicts.get(_key(record), [])
            mate = verdicts.get(f"{record['name']}|human", [])
            row[label] = {"warn": _first(v, "warn"), "halt": _first(v, "critical"), "judged": len(v),
                          "halts_healthy_twin": _first(mate, "critical"),
                          "halts_untrained_start": starts[label].get(_key(record)) == "critical"}
        out["twins"].append(row)
    return out


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The tables of docs/benchmarks.md's healthy-training section."""
    labels = list(summary["healthy"])
    lines = [f"Runs: {meta['healthy_runs']} healthy ({meta['text_runs']} text, {meta['array_runs']} array) and as "
             f"many collapsing twins, {meta['seconds'] / 60:.0f} min on {meta['workers']} worker process(es).", "",
             "| rules | healthy runs | checks | halted runs | critical checks | warn checks | warns per check |",
             "|---|---|---|---|---|---|---|"]
    for label in labels:
        h = summary["healthy"][label]
        lines.append(f"| {label} | {h['runs']} | {h['checks']} | {h['halted_runs']} | {h['critical_checks']} | "
                     f"{h['warn_checks']} | {h['warns_per_check']:.3f} |")
    lines += ["", "Alerts on healthy runs, by signal (checks):", ""]
    for label in labels:
        sig = summary["healthy"][label]["signals"]
        lines.append(f"- {label}: " + (", ".join(f"`{k}` {v}" for k, v in sig.items()) or "none"))
    twins = summary["twins"]
    lines += ["", "Collapsing twins (the check at which each rule set halts; `-` = not within the run; onset = the "
              "first check on collapsing data; degraded = the first check whose held-out perplexity is "
              f"{DEGRADED:.2f}x the twin's own best so far, or its healthy twin's at the first check):", "",
              "| rules | twins halted | halted at or before onset + 1 | median halt - onset | halted no later than "
              f"{labels[-1] if len(labels) > 1 else labels[0]} | halted before degradation |", "|---|---|---|---|---|---|"]
    base = labels[-1]
    for label in labels:
        halts = [(t[label]["halt"], t["onset"], t["degraded"], t[base]["halt"]) for t in twins]
        done = [h for h in halts if h[0] is not None]
        delays = sorted(h - o for h, o, _, _ in done)
        median = delays[len(delays) // 2] if delays else None
        same = sum(h[0] is not None and (h[3] is None or h[0] <= h[3]) for h in halts)
        early = sum(h is not None and (d is None or h <= d) for h, _, d, _ in halts)
        lines.append(f"| {label} | {len(done)}/{len(twins)} | {sum(h - o <= 1 for h, o, _, _ in done)} | "
                     f"{median if median is not None else '-'} | {same}/{len(twins)} | {early}/{len(twins)} |")
    later = [t for t in twins if t[labels[0]]["halt"] is not None and t[base]["halt"] is not None
             and t[labels[0]]["halt"] > t[base]["halt"]]
    if later and base != labels[0]:
        blind = [t for t in later if t[base]["halts_untrained_start"]
                 or (t[base]["halts_healthy_twin"] is not None and t[base]["halts_healthy_twin"] <= t[base]["halt"])]
        lines += ["", f"Where {labels[0]} halts a twin later than {base} ({len(later)} twins, at most "
                  f"{max(t[labels[0]]['halt'] - t[base]['halt'] for t in later)} check(s) later), {len(blind)} of "
                  f"those earlier halts fire on the healthy twin at or before the same check, or on the untrained "
                  "model before any training: alarms that do not tell collapse from an unfinished model."]
    lines += ["", "| twin | data | onset | degraded | " + " | ".join(f"{lb} warn / halt" for lb in labels) + " |",
              "|---|---|---|---|" + "---|" * len(labels)]
    for t in twins:
        cells = [f"{_dash(t[lb]['warn'])} / {_dash(t[lb]['halt'])}"
                 + (" (also the untrained model)" if t[lb]["halts_untrained_start"] else "")
                 + (f" (healthy twin: {t[lb]['halts_healthy_twin']})" if t[lb]["halts_healthy_twin"] is not None else "")
                 for lb in labels]
        lines.append(f"| {t['name']} | {t['data']} | {t['onset']} | {_dash(t['degraded'])} | " + " | ".join(cells) +
                     " |")
    return "\n".join(lines) + "\n"


def _dash(x: Any) -> str:
    return "-" if x is None else str(x)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N configurations (debugging)")
    parser.add_argument("--replay", metavar="RECORDS", help=argparse.SUPPRESS)  # internal: the legacy rules' pass
    parser.add_argument("--from-records", metavar="JSON", help="summarise recorded runs again instead of training")
    args = parser.parse_args(argv)
    if args.replay:  # run under PYTHONPATH=<an earlier version>: judge recorded checks with its rules
        records = json.loads(Path(args.replay).read_text())
        verdicts: dict[str, Any] = {_key(r): replay(r) for r in records}
        verdicts["#start"] = {_key(r): start_verdict(r) for r in records}
        Path(args.out).write_text(json.dumps(json_safe(verdicts)))
        return 0
    from benchmarks import healthy_arrays

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_records:
        payload = json.loads(Path(args.from_records).read_text())
    else:
        configs = [*grid(args.smoke), *healthy_arrays.grid(args.smoke)][: args.limit]
        every = [c for cfg in configs for c in (cfg, cfg.twin())]
        start = time.perf_counter()
        (out / "healthy.progress.jsonl").unlink(missing_ok=True)
        records = run_all(every, args.workers, out / "healthy.progress.jsonl")
        payload = {"seconds": time.perf_counter() - start, "workers": args.workers,
                   "runs": [dataclasses.asdict(r) for r in records]}
        (out / "healthy.progress.jsonl").unlink(missing_ok=True)
    runs = json.loads(json.dumps(json_safe(payload["runs"])))
    judged = {"collapseguard (callbacks)": {_key(r): recorded(r) for r in runs},
              "bare CollapseMonitor": {_key(r): replay(r, bare=True) for r in runs}}
    legacy = legacy_verdicts(runs, out)
    if legacy is not None:
        judged[f"rules of {LEGACY_COMMIT} (before)"] = legacy
    summary = summarize(runs, judged)
    meta = {"seconds": payload["seconds"], "workers": payload.get("workers", args.workers),
            "healthy_runs": sum(r["config"]["data"] == "human" for r in runs),
            "text_runs": sum(r["config"]["data"] == "human" and r.get("kind", "text") == "text" for r in runs),
            "array_runs": sum(r["config"]["data"] == "human" and r.get("kind") == "array" for r in runs)}
    (out / "healthy.json").write_text(json.dumps(json_safe({**payload, "summary": summary, "meta": meta}), indent=1))
    (out / "healthy.md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
