"""Post-training benchmark: the guard on TRL's GRPOTrainer and SFTTrainer, real runs of a tiny GPT-2 on CPU.

(a) **GRPO collapse vs a healthy twin.** A 2-layer GPT-2 is first pre-trained on CPython's documentation
    paragraphs (human text, so that rewards vary inside a group: from random initialisation every reward is 0 and
    nothing moves), then trained with GRPO on prompts cut from the same paragraphs, rewarded for one frequent
    word (``the``) -- a reward that pays one answer only, so the policy collapses onto it. The healthy twin is the
    same run with TRL's entropy bonus (``GRPOConfig(entropy_coef=...)``). The :class:`GRPOCollapseGuard` judges
    the groups TRL generated and its logged ``entropy`` / ``frac_reward_zero_std`` at every step. Reported per
    seed: the step where within-group distinct answers first reach 1 (all ``num_generations`` completions of
    every prompt one answer, ``distinct_k <= 1.05``), the guard's first warn and first critical, and whether the
    twin raised anything.
(b) **SFT healthy vs narrowed.** ``SFTTrainer`` on chat-formatted instruction pairs (a question per
    documentation topic, its paragraphs as answers) with :class:`CollapseGuardCallback`, a chat gold set of
    held-out topics (``GoldSet.from_pairs``, several human answers per prompt) and ``GenerationSettings(samples_per_prompt=4)``;
    the narrowed twin answers every instruction with one of a handful of templated answers.
(c) **Overhead**: the seconds the GRPO guard spends per step (receiving the groups + its checks) as a share of
    the step, from the collapse runs of (a).

    python benchmarks/bench_grpo.py --out benchmarks/results            # full: 5 seeds, ~15 min on 2 cores
    python benchmarks/bench_grpo.py --smoke --out /tmp/grpo             # CI size: every part runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collapseguard import GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import torch  # noqa: E402

from collapseguard.reporting.alertlog import json_safe  # noqa: E402

WORD = "the"  # the one frequent word the collapsing reward pays for
COLLAPSED = 1.05  # distinct_k at or below this: (almost) every group of completions is one answer
FULL = {"seeds": 5, "steps": 120, "pretrain_epochs": 4, "sft_epochs": 4}
SMOKE = {"seeds": 1, "steps": 6, "pretrain_epochs": 1, "sft_epochs": 1}
# regime -> GRPOConfig overrides ("diverse": the diversity-preserving reward instead of the plain one)
REGIMES: dict[str, dict[str, Any]] = {"collapse": {}, "entropy_bonus": {"entropy_coef": 0.1}}
PROMPTS_PER_STEP, GENERATIONS, CHECK_EVERY = 4, 4, 5


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the libraries' progress and deprecation chatter (the guard's own records are kept)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    levels = {name: logging.getLogger(name).level for name in ("transformers", "trl", "collapseguard", "accelerate")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def texts() -> tuple[list[str], list[str]]:
    from collapseguard.demos.data import train_gold_split

    return train_gold_split()


def pretrained(seed: int, epochs: int, tok: Any) -> Any:
    """A 2-layer GPT-2 trained ``epochs`` epochs on the human paragraphs (HF Trainer, CPU)."""
    from transformers import Trainer, TrainingArguments

    from collapseguard.demos.tiny import TokenBlocks, tiny_gpt2

    model = tiny_gpt2(tok, seed=seed, dropout=0.0)
    args = TrainingArguments(f"/tmp/collapseguard-bench-grpo/pre{seed}", num_train_epochs=epochs,
                             learning_rate=3e-3, per_device_train_batch_size=16, use_cpu=True, report_to=[],
                             save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=seed)
    Trainer(model=model, args=args, train_dataset=TokenBlocks(texts()[0], tok)).train()
    return model


def reward_word(completions: list[str], **kwargs: Any) -> list[float]:
    """Pays for the word ``the``: the share of a completion's words that are it (one answer maximises it)."""
    out = []
    for c in completions:
        words = c.lower().split()
        out.append(sum(w.strip(".,;:()") == WORD for w in words) / max(len(words), 1))
    return out


def reward_word_diverse(completions: list[str], **kwargs: Any) -> list[float]:
    """The same pay, scaled by how unlike its group mates a completion is (1 - its largest word-set Jaccard
    similarity to another completion of the same prompt): a diversity-preserving reward."""
    pay, out = reward_word(completions), []
    words = [set(c.lower().split()) for c in completions]
    for i in range(len(completions)):
        g = i - i % GENERATIONS
        mates = [words[j] for j in range(g, g + GENERATIONS) if j != i]
        sim = max((len(words[i] & m) / max(len(words[i] | m), 1) for m in mates), default=0.0)
        out.append(pay[i] * (1.0 - sim))
    return out


class _Timed:
    """Wraps the guard's reward function to time it (the guard's per-step cost besides its checks)."""

    __name__ = "collapseguard"

    def __init__(self, fn: Any) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> list[float]:
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def grpo_run(seed: int, regime: str, steps: int, pretrain_epochs: int, tok: Any,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from collapseguard.integrations.trl import GRPOCollapseGuard

    train = texts()[0]
    prompts = Dataset.from_list([{"prompt": " ".join(t.split()[:8])} for t in train])
    model = pretrained(seed, pretrain_epochs, tok)
    guard = GRPOCollapseGuard(on_collapse="warn", every_n_steps=CHECK_EVERY)
    tap = _Timed(guard.reward_func)
    step_times: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step_times.append(time.perf_counter() - self.start)

    overrides = dict(REGIMES[regime] if overrides is None else overrides)
    reward = reward_word_diverse if overrides.pop("diverse", False) else reward_word
    args = GRPOConfig(f"/tmp/collapseguard-bench-grpo/{regime}{seed}", max_steps=steps,
                      per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS, num_generations=GENERATIONS, max_completion_length=16, learning_rate=2e-3, beta=0.0,
                      use_cpu=True, report_to=[], logging_steps=1,
                      save_strategy="no", disable_tqdm=True, seed=seed, reward_weights=[1.0, 0.0],
                      temperature=1.0, top_k=0, top_p=1.0, **overrides)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward, tap], args=args, train_dataset=prompts,
                          processing_class=tok, callbacks=[guard, StepClock()])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    rows = [h for h in trainer.state.log_history if "collapseguard/health" in h]
    checks = guard.engine.monitor.checks
    severities = [max((a["severity"] for a in c["alerts"]), key=["warn", "critical"].index, default=None)
                  for c in checks]
    series = {key: [r.get(f"collapseguard/{key}") for r in rows] for key in
              ("distinct_k", "within_distinct_2", "within_similarity", "policy_entropy", "frac_reward_zero_std")}
    series["reward"] = [r.get(f"rewards/{reward.__name__}/mean") for r in rows]
    steps_of = [r["step"] for r in rows]
    collapsed = next((s for s, d in zip(steps_of, series["distinct_k"], strict=True) if d is not None
                      and d <= COLLAPSED), None)
    first = {sev: next((s for s, v in zip(steps_of, severities, strict=True)
                        if v == sev or (sev == "warn" and v == "critical")), None) for sev in ("warn", "critical")}
    alerts = sorted({a["metric"] for c in checks for a in c["alerts"]})
    guard_seconds = tap.seconds + sum(t.get("total", 0.0) for t in guard.engine.timing_history)
    return {"seed": seed, "regime": regime, "steps": steps_of, "series": series, "severities": severities,
            "collapsed_at": collapsed, "first_warn": first["warn"], "first_critical": first["critical"],
            "alerts": alerts, "seconds": seconds, "guard_seconds": guard_seconds,
            "mean_step_seconds": sum(step_times) / max(len(step_times), 1),
            "guard_share": guard_seconds / max(sum(step_times), 1e-9)}


def sft_run(seed: int, regime: str, epochs: int, tok: Any) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from collapseguard import GoldSet
    from collapseguard.demos.data import pydoc_instructions
    from collapseguard.demos.tiny import tiny_gpt2
    from collapseguard.integrations.trl import CollapseGuardCallback

    pairs = pydoc_instructions()
    held, train = pairs[::3], [p for i, p in enumerate(pairs) if i % 3]
    gold = GoldSet.from_pairs([p for p, _ in held], [rs for _, rs in held], name="pydoc-instructions")
    if regime == "narrowed":  # every instruction answered with one of a handful of templates
        templates = ["This topic is described in the Python documentation.",
                     "See the Python documentation for this topic.",
                     "The Python documentation explains this topic in detail."]
        train = [(p, [templates[(i + j) % len(templates)] for j in range(len(rs))]) for i, (p, rs) in enumerate(train)]
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
            for p, rs in train for r in rs]
    guard = CollapseGuardCallback(gold, on_collapse="warn", generation=GenerationSettings(samples_per_prompt=4, num_samples=16, max_new_tokens=32, seed=seed))
    args = SFTConfig(f"/tmp/collapseguard-bench-grpo/sft-{regime}{seed}", num_train_epochs=epochs, learning_rate=3e-3,
                     per_device_train_batch_size=16, max_length=128, use_cpu=True, report_to=[],
                     logging_strategy="epoch", save_strategy="no", disable_tqdm=True, seed=seed)
    trainer = SFTTrainer(model=tiny_gpt2(tok, seed=seed), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, callbacks=[guard])
    trainer.train()
    checks = guard.engine.monitor.checks
    return {"seed": seed, "regime": regime,
            "checks": [{"step": c["step"], "severity": max((a["severity"] for a in c["alerts"]),
                                                             key=["warn", "critical"].index, default=None),
                        "alerts": sorted({a["metric"] for a in c["alerts"]}),
                        **{k: c["metrics"].get(k) for k in ("distinct_k", "within_distinct_2", "distinct_2",
                                                            "gold_ppl")}} for c in checks],
            "gold_distinct_k": guard.engine.monitor.reference(int(checks[-1]["metrics"]["num_outputs"])).get(
                "distinct_k") if checks else None}


def summarize(grpo: list[dict[str, Any]], sft: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def fmt(x: Any) -> str:
        return "–" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)

    lines = [f"`{meta['command']}` — {meta['seconds'] / 60:.1f} min; trl {meta['trl']}, torch {meta['torch']}.", "",
             "### (a) GRPO: one-word reward (collapse) vs the same run with an entropy bonus", "",
             f"GPT-2 2×64 pre-trained {meta['pretrain_epochs']} epochs on CPython's documentation, then GRPO for "
             f"{meta['steps']} steps: {PROMPTS_PER_STEP} prompts × {GENERATIONS} completions of 16 tokens a step, reward = share of the words "
             f"that are `{WORD}`; healthy twin: the same with TRL's entropy bonus, "
             f"`{', '.join(f'{k}={v}' for k, v in REGIMES['entropy_bonus'].items())}`. Guard: "
             f"`GRPOCollapseGuard(every_n_steps={CHECK_EVERY})` at balanced thresholds.", "",
             "| seed | collapse: distinct answers reach 1 at step | first warn | first critical | flagged before | "
             "entropy start → end | entropy bonus: alerts | its distinct_k end | its entropy end |",
             "|---|---|---|---|---|---|---|---|---|"]
    by = {(r["seed"], r["regime"]): r for r in grpo}
    for seed in sorted({r["seed"] for r in grpo}):
        c, h = by.get((seed, "collapse")), by.get((seed, "entropy_bonus"))
        if c is None or h is None:
            continue
        ent = [e for e in c["series"]["policy_entropy"] if e is not None]
        before = (c["first_critical"] is not None and (c["collapsed_at"] is None or c["first_critical"] < c["collapsed_at"]))
        h_alerts = sum(s is not None for s in h["severities"])
        h_end = [d for d in h["series"]["distinct_k"] if d is not None]
        h_ent = [e for e in h["series"]["policy_entropy"] if e is not None]
        lines.append(f"| {seed} | {fmt(c['collapsed_at'])} | {fmt(c['first_warn'])} | {fmt(c['first_critical'])} | "
                     f"{'yes' if before else 'no'} | {fmt(ent[0] if ent else None)} → {fmt(ent[-1] if ent else None)} | "
                     f"{h_alerts} in {len(h['severities'])} checks | {fmt(h_end[-1] if h_end else None)} | "
                     f"{fmt(h_ent[-1] if h_ent else None)} |")
    if sft:
        lines += ["", "### (b) SFT: healthy instruction pairs vs a narrowed set", "",
                  "`SFTTrainer` on chat-formatted pairs (a question per CPython documentation topic, each of its "
                  "paragraphs an answer), chat gold of held-out topics (`GoldSet.from_pairs`, several human answers "
                  "per prompt), `CollapseGuardCallback(gold, generation={\"samples_per_prompt\": 4})`, a check per epoch; narrowed: "
                  "every answer one of 3 templates.", "",
                  "| seed | regime | severity per epoch | alerts | distinct_k per epoch (gold) |", "|---|---|---|---|---|"]
        for r in sft:
            sev = ", ".join(c["severity"] or "ok" for c in r["checks"])
            alerts = sorted({m for c in r["checks"] for m in c["alerts"]})
            dk = ", ".join(fmt(c["distinct_k"]) for c in r["checks"])
            lines.append(f"| {r['seed']} | {r['regime']} | {sev} | {', '.join(alerts) or '–'} | {dk} "
                         f"({fmt(r['gold_distinct_k'])}) |")
    collapse = [r for r in grpo if r["regime"] == "collapse"]
    if collapse:
        shares = [r["guard_share"] for r in collapse]
        lines += ["", "### (c) Overhead of the GRPO guard", "",
                  f"Seconds the guard spends per step (receiving every group through its reward function, plus its "
                  f"check) over the step's seconds, collapse runs: mean {sum(shares) / len(shares):.2%}, max "
                  f"{max(shares):.2%}; mean step {sum(r['mean_step_seconds'] for r in collapse) / len(collapse):.2f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI size: one seed, a few steps")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: grpo,sft")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    size = dict(SMOKE if args.smoke else FULL)
    size.update({k: v for k, v in (("seeds", args.seeds), ("steps", args.steps)) if v is not None})
    skip = set(filter(None, args.skip.split(",")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    from importlib.metadata import version

    from collapseguard.demos.tiny import train_tokenizer

    grpo, sft = [], []
    with quiet():
        train, gold = texts()
        tok = train_tokenizer(train + gold, vocab_size=512)
        if "grpo" not in skip:
            for seed in range(size["seeds"]):
                for regime in REGIMES:
                    grpo.append(grpo_run(seed, regime, size["steps"], size["pretrain_epochs"], tok))
                    r = grpo[-1]
                    print(f"grpo seed {seed} {regime}: distinct_k 1 at {r['collapsed_at']}, first warn "
                          f"{r['first_warn']}, critical {r['first_critical']}, alerts {r['alerts']}, "
                          f"{r['seconds']:.0f} s, guard {r['guard_share']:.2%}", file=sys.stderr)
        if "sft" not in skip:
            from collapseguard.demos.data import pydoc_instructions

            chat_tok = train_tokenizer([r for _, rs in pydoc_instructions() for r in rs] + train, vocab_size=512,
                                       chat=True)
            for seed in range(min(size["seeds"], 2)):
                for regime in ("healthy", "narrowed"):
                    sft.append(sft_run(seed, regime, size["sft_epochs"], chat_tok))
                    print(f"sft seed {seed} {regime}: {[c['severity'] for c in sft[-1]['checks']]}", file=sys.stderr)
    argv = " ".join(sys.argv[1:]).replace(str(out), os.path.relpath(out, ROOT) if out.is_relative_to(ROOT) else
                                          str(out))
    meta = {"command": f"python benchmarks/bench_grpo.py {argv}".strip(), "seconds": time.perf_counter() - start,
            "trl": version("trl"), "torch": torch.__version__, **size}
    (out / "posttraining.json").write_text(json.dumps(json_safe({"meta": meta, "grpo": grpo, "sft": sft}), indent=1))
    (out / "posttraining.md").write_text(summarize(grpo, sft, meta), encoding="utf-8")
    print(f"wrote {out / 'posttraining.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
