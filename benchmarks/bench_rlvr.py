"""RL with verifiable rewards: does the GRPO guard see a policy narrow (pass@1 up, pass@4 down), and does steering help?

(a) **A tiny model on an arithmetic task.** A 2-layer GPT-2 is pre-trained on noisy solved examples of ``a*b``
    (a in 11..25, b in 2..9; 96 examples per problem). Each example takes one of two styles, half the time each:
    a *short* answer (``23*7=161``: right 97% of the time, except on a random 30% of the problems where it is
    systematically wrong, one fixed wrong product) and a *careful* one (``23*7=so 161``: right 40% of the time on
    every problem, otherwise a near miss). So the model's samples are sometimes right everywhere, and only the
    careful style ever solves the hard problems. Then GRPO (TRL, 16 prompts x 4 completions a step) in four regimes:

    - ``exact``: the reward is the exact answer alone (1 or 0) -- RL that learns;
    - ``shaped``: the exact answer plus 0.8 for a short answer, a length term of the kind RL recipes add -- it makes
      the short style pay more than the careful one even where only the careful one is right, so the policy
      narrows onto it: pass@1 rises (the easy problems), pass@4 falls (the hard ones are lost);
    - ``shaped+bonus``: the same with TRL's entropy bonus (``entropy_coef``);
    - ``shaped+steer``: the same under TRL's adaptive entropy control, started at TRL's default target, with
      ``GRPOCollapseGuard(on_collapse="steer")`` raising the target while the policy narrows.

    The guard (``correct=("exact", 1.0)``: the exact-answer reward's own output, no extra generation) checks every
    5 steps. Its pass@k comes from the training groups; the *measured* pass@1 / pass@4 come from an independent
    evaluation every 10 steps: 16 samples of every problem, the unbiased estimator. Reported per seed: the step at
    which measured pass@4 first lies 10% below its start, the guard's first warn and critical, and pass@4 at the end.
(b) **The same on SmolLM2-135M-Instruct**, the real pretrained model (prepared offline, see ``real_model.py``):
    few-shot two-digit addition prompts, exact-answer reward, GRPO with the guard.
(c) **Overhead**: the guard's seconds per step (receiving the groups and their correctness, plus its checks) as a
    share of the step.

    python benchmarks/bench_rlvr.py --out benchmarks/results              # (a) and (c): 5 seeds, ~11 min on 2 cores
    python benchmarks/bench_rlvr.py --part smollm2 --model-dir DIR --seeds 1 --steps 20 --prompts 16 --threads 2
                                                                          # (b) on CPU: 1 seed, ~10 min
    python benchmarks/bench_rlvr.py --part smollm2 --model-dir DIR --device cuda --seeds 4 --steps 100   # (b) GPU
    python benchmarks/bench_rlvr.py --smoke --out /tmp/rlvr               # CI size: every part of (a) runs
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_grpo import _Timed, quiet  # noqa: E402
from collapseguard.metrics.correctness import pass_at_k  # noqa: E402
from collapseguard.reporting.alertlog import json_safe  # noqa: E402

FULL = {"seeds": 5, "steps": 100, "pretrain_epochs": 25}
SMOKE = {"seeds": 1, "steps": 10, "pretrain_epochs": 1}
PROMPTS, GENERATIONS, CHECK_EVERY, EVAL_EVERY, EVAL_SAMPLES = 16, 4, 5, 10, 16
FALL = 0.10  # the stated amount: measured pass@4 10% below its start
SHORT_BONUS = 0.8
REGIMES: dict[str, dict[str, Any]] = {
    "exact": {},
    "shaped": {"shaped": True},
    "shaped+bonus": {"shaped": True, "entropy_coef": 0.3},
    "shaped+steer": {"shaped": True, "steer": True, "use_adaptive_entropy": True, "entropy_coef": 0.0,
                     "entropy_coef_delta": 0.05},
}


# ---------------------------------------------------------------------------------------------- the task
def task(hard_share: float = 0.3, examples: int = 96) -> tuple[list[tuple[int, int]], set[tuple[int, int]], list[str]]:
    """The problems, the hard ones, and the noisy solved examples (fixed: the same task for every seed)."""
    rng = random.Random(1234)
    problems = [(a, b) for a in range(11, 26) for b in range(2, 10)]
    hard = {p for p in problems if rng.random() < hard_share}
    lines = []
    for a, b in problems:
        wrong = a * b + rng.choice([-b, b, -1, 1, 10, -10])  # the short style's fixed mistake on a hard problem
        for _ in range(examples):
            near = a * b + rng.choice([-b, b, -1, 1, 10, -10, 2 * b, -2 * b])
            if rng.random() < 0.5:
                right = rng.random() < 0.97
                short = (wrong if rng.random() < 0.95 else near) if (a, b) in hard else (a * b if right else near)
                lines.append(f"{a}*{b}={short}")
            else:
                lines.append(f"{a}*{b}=so {a * b if rng.random() < 0.4 else near}")
    return problems, hard, lines


def number_in(text: str) -> str | None:
    """The number a completion gives (its first one), or None."""
    found = re.findall(r"-?\d+", text)
    return found[0] if found else None


def exact(completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """1 for the exact answer (the dataset's ``answer`` column, which TRL passes to reward functions), else 0."""
    return [1.0 if number_in(c) == t else 0.0 for c, t in zip(completions, answer, strict=True)]


def short_style(completions: list[str], **kwargs: Any) -> list[float]:
    """The length term: 1 for a short answer (no ``so``), else 0 (weighted by ``SHORT_BONUS``)."""
    return [0.0 if "so" in c else 1.0 for c in completions]


def pretrained(seed: int, epochs: int, tok: Any, lines: list[str]) -> Any:
    from transformers import Trainer, TrainingArguments

    from collapseguard.demos.tiny import TokenBlocks, tiny_gpt2

    model = tiny_gpt2(tok, seed=seed, dropout=0.0)
    shuffled = lines[:]
    random.Random(seed).shuffle(shuffled)
    args = TrainingArguments(f"/tmp/collapseguard-bench-rlvr/pre{seed}", num_train_epochs=epochs, learning_rate=3e-3,
                             per_device_train_batch_size=16, use_cpu=True, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=seed)
    Trainer(model=model, args=args, train_dataset=TokenBlocks(shuffled, tok, block_size=32)).train()
    return model


@torch.no_grad()
def measure(model: Any, tok: Any, prompts: list[str], truths: list[str], hard: list[bool], n: int = EVAL_SAMPLES,
            max_new_tokens: int = 8, batch: int = 64) -> dict[str, float]:
    """Measured pass@1 / pass@4 (unbiased, ``n`` samples of every prompt), overall and on the hard problems, and
    the careful style's share of samples."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    counts, careful = [], 0
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True, padding_side="left").to(device)
        out = model.generate(**enc, do_sample=True, max_new_tokens=max_new_tokens, num_return_sequences=n,
                             pad_token_id=tok.pad_token_id, top_k=0, top_p=1.0, temperature=1.0)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, truth in enumerate(truths[i:i + batch]):
            group = texts[j * n:(j + 1) * n]
            counts.append(sum(number_in(t) == truth for t in group))
            careful += sum("so" in t for t in group)
    model.train(was)
    res = {"pass_at_1": sum(pass_at_k(n, c, 1) for c in counts) / len(counts),
           "pass_at_4": sum(pass_at_k(n, c, 4) for c in counts) / len(counts),
           "careful_share": careful / (n * len(counts))}
    hard_counts = [c for c, h in zip(counts, hard, strict=True) if h]
    if hard_counts:
        res["hard_pass_at_4"] = sum(pass_at_k(n, c, 4) for c in hard_counts) / len(hard_counts)
    return {k: round(v, 4) for k, v in res.items()}


# ---------------------------------------------------------------------------------------------- one GRPO run
def grpo_run(model: Any, tok: Any, rows: list[dict[str, Any]], hard: list[bool], seed: int, regime: str, steps: int,
             *, device: str = "cpu", max_completion_length: int = 8, learning_rate: float = 3e-4,
             prompts_per_step: int = PROMPTS, eval_every: int = EVAL_EVERY) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from collapseguard.integrations.trl import GRPOCollapseGuard

    spec = dict(REGIMES[regime])
    shaped, steer = spec.pop("shaped", False), spec.pop("steer", False)
    guard = GRPOCollapseGuard(on_collapse="steer" if steer else "warn", every_n_steps=CHECK_EVERY,
                              correct=("exact", 1.0))
    funcs = guard.reward_funcs([exact, short_style] if shaped else [exact])
    tap = _Timed(funcs[-1])
    funcs[-1] = tap
    weights = [1.0, SHORT_BONUS, 0.0] if shaped else [1.0, 0.0]
    prompts, truths = [r["prompt"] for r in rows], [r["answer"] for r in rows]
    curve: list[dict[str, Any]] = []
    step_times: list[float] = []

    class Probe(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            step_times.append(time.perf_counter() - self.start)
            if state.global_step % eval_every == 0:
                curve.append({"step": state.global_step, **measure(model, tok, prompts, truths, hard)})

    start_point = {"step": 0, **measure(model, tok, prompts, truths, hard)}
    data = Dataset.from_list([rows[i] for i in _order(len(rows), steps * prompts_per_step, seed)])
    args = GRPOConfig(f"/tmp/collapseguard-bench-rlvr/{type(model).__name__}-{regime}{seed}", max_steps=steps,
                      per_device_train_batch_size=prompts_per_step * GENERATIONS, num_generations=GENERATIONS,
                      max_completion_length=max_completion_length, learning_rate=learning_rate, beta=0.0,
                      use_cpu=device == "cpu", report_to=[], logging_steps=1, save_strategy="no", disable_tqdm=True,
                      seed=seed, reward_weights=weights, temperature=1.0, top_k=0, top_p=1.0,
                      shuffle_dataset=False, **spec)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[guard, Probe()])
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts (the guard's own log lines stay)
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    curve.insert(0, start_point)
    checks = guard.engine.monitor.checks
    severities = [max((a["severity"] for a in c["alerts"]), key=["warn", "critical"].index, default=None)
                  for c in checks]
    first = {sev: next((c["step"] for c, v in zip(checks, severities, strict=True)
                        if v == sev or (sev == "warn" and v == "critical")), None) for sev in ("warn", "critical")}
    p4_start = curve[0]["pass_at_4"]
    fell = next((p["step"] for p in curve if p["pass_at_4"] <= (1 - FALL) * p4_start), None)
    guard_seconds = tap.seconds + sum(t.get("total", 0.0) for t in guard.engine.timing_history)
    rows_logged = [h for h in trainer.state.log_history if "collapseguard/health" in h]
    return {"seed": seed, "regime": regime, "curve": curve, "severities": severities,
            "first_warn": first["warn"], "first_critical": first["critical"], "fell_at": fell,
            "alerts": sorted({f"{a['metric']}:{a['severity']}" for c in checks for a in c["alerts"]}),
            "guard": [{"step": r["step"], **{k: r.get(f"collapseguard/{k}") for k in
                                               ("pass_at_1", "pass_at_k", "frac_mixed", "frac_all_correct",
                                                "policy_entropy", "steer/entropy_target")}} for r in rows_logged],
            "steer_changes": guard.steering.changes if guard.steering is not None else [],
            "seconds": seconds, "mean_step_seconds": sum(step_times) / max(len(step_times), 1),
            "guard_share": guard_seconds / max(sum(step_times), 1e-9)}


def _order(n: int, total: int, seed: int) -> list[int]:
    """Epochs of the problems, each shuffled by the seed: every problem once before any repeats."""
    rng, out = random.Random(seed), []
    while len(out) < total:
        block = list(range(n))
        rng.shuffle(block)
        out += block
    return out[:total]


# ---------------------------------------------------------------------------------------------- (b) SmolLM2
def smollm2_rows(count: int = 64) -> list[dict[str, Any]]:
    """Few-shot two-digit addition prompts for a pretrained model (plain text, no chat template)."""
    rng = random.Random(7)
    shots = "12 + 7 = 19\n31 + 45 = 76\n8 + 66 = 74\n"
    pairs = [(rng.randrange(10, 100), rng.randrange(10, 100)) for _ in range(count)]
    return [{"prompt": f"{shots}{a} + {b} =", "answer": str(a + b)} for a, b in pairs]


def smollm2_run(model_dir: str, seed: int, steps: int, device: str, learning_rate: float,
                prompts: int = 64) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    rows = smollm2_rows(prompts)
    return grpo_run(model, tok, rows, [False] * len(rows), seed, "exact", steps, device=device,
                    max_completion_length=6, learning_rate=learning_rate, prompts_per_step=8, eval_every=10)


# ---------------------------------------------------------------------------------------------- report
def summarize(runs: list[dict[str, Any]], meta: dict[str, Any], smol: list[dict[str, Any]]) -> str:
    def fmt(x: Any) -> str:
        return "–" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)

    lines = [f"`{meta['command']}` — {meta['seconds'] / 60:.1f} min; trl {meta['trl']}, torch {meta['torch']}.", ""]
    if runs:
        lines += ["### (a) A tiny model on an arithmetic task", "",
                  f"GPT-2 2×64 pre-trained {meta['pretrain_epochs']} epochs on noisy solved examples of `a*b` "
                  "(short answers right 97% except on a random 30% of problems, where they are one fixed wrong "
                  "product; careful answers right 40% everywhere), then GRPO for "
                  f"{meta['steps']} steps: {PROMPTS} prompts × {GENERATIONS} completions a step, learning rate 3e-4, "
                  f"`GRPOCollapseGuard(every_n_steps={CHECK_EVERY}, correct=('exact', 1.0))`. *Measured*: pass@k "
                  f"from {EVAL_SAMPLES} samples of each of the 120 problems every {EVAL_EVERY} steps. *pass@4 fell*: "
                  f"the first step it lies {FALL:.0%} below its start.", "",
                  "| seed | regime | measured pass@1 start → end | pass@4 start → lowest → end | hard problems' pass@4 "
                  "start → end | careful share end | pass@4 fell at | guard first warn | first critical | alerts |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            c = r["curve"]
            low = min(p["pass_at_4"] for p in c)
            lines.append(
                f"| {r['seed']} | {r['regime']} | {fmt(c[0]['pass_at_1'])} → {fmt(c[-1]['pass_at_1'])} | "
                f"{fmt(c[0]['pass_at_4'])} → {fmt(low)} → {fmt(c[-1]['pass_at_4'])} | "
                f"{fmt(c[0].get('hard_pass_at_4'))} → {fmt(c[-1].get('hard_pass_at_4'))} | "
                f"{fmt(c[-1]['careful_share'])} | {fmt(r['fell_at'])} | {fmt(r['first_warn'])} | "
                f"{fmt(r['first_critical'])} | {', '.join(r['alerts']) or '–'} |")
        lines += ["", "Per regime, over the seeds:", "",
                  f"| regime | runs whose pass@4 fell | flagged (warn or critical) | flagged within {EVAL_EVERY} steps of the fall | "
                  "mean pass@4 end | mean pass@1 end |", "|---|---|---|---|---|---|"]
        for regime in REGIMES:
            rs = [r for r in runs if r["regime"] == regime]
            if not rs:
                continue
            fell = [r for r in rs if r["fell_at"] is not None]
            flagged = [r for r in rs if r["first_warn"] is not None]
            early = [r for r in fell if r["first_warn"] is not None and r["first_warn"] <= r["fell_at"] + EVAL_EVERY]
            lines.append(f"| {regime} | {len(fell)}/{len(rs)} | {len(flagged)}/{len(rs)} | {len(early)}/{len(fell)} | "
                         f"{sum(r['curve'][-1]['pass_at_4'] for r in rs) / len(rs):.3f} | "
                         f"{sum(r['curve'][-1]['pass_at_1'] for r in rs) / len(rs):.3f} |")
        shares = [r["guard_share"] for r in runs]
        lines += ["", "### (c) Overhead with correctness on", "",
                  f"The guard's seconds per step (receiving every group with its correctness through its reward "
                  f"function, plus its checks) over the step's seconds, all runs: mean {sum(shares) / len(shares):.2%}, "
                  f"max {max(shares):.2%}; mean step "
                  f"{sum(r['mean_step_seconds'] for r in runs) / len(runs):.2f} s."]
    if smol:
        lines += ["", "### (b) SmolLM2-135M-Instruct, few-shot two-digit addition", "",
                  f"GRPO with the exact-answer reward, 8 prompts × 4 completions a step, learning rate {meta.get('lr')}; "
                  f"measured over the {meta.get('prompts', 64)} prompts.", "",
                  "| seed | device | measured pass@1 start → end | pass@4 start → lowest → end | pass@4 fell at | "
                  "guard first warn | first critical | alerts | guard share of a step |", "|---|---|---|---|---|---|---|---|---|"]
        for r in smol:
            c = r["curve"]
            lines.append(f"| {r['seed']} | {r.get('device', 'cpu')} | {fmt(c[0]['pass_at_1'])} → {fmt(c[-1]['pass_at_1'])} | "
                         f"{fmt(c[0]['pass_at_4'])} → {fmt(min(p['pass_at_4'] for p in c))} → "
                         f"{fmt(c[-1]['pass_at_4'])} | {fmt(r['fell_at'])} | {fmt(r['first_warn'])} | "
                         f"{fmt(r['first_critical'])} | {', '.join(r['alerts']) or '–'} | {r['guard_share']:.2%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI size: one seed, a few steps")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--part", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--model-dir", default=None, help="(b): the prepared SmolLM2 folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps the 2-core timings comparable)")
    parser.add_argument("--lr", type=float, default=1e-5, help="(b): the learning rate")
    parser.add_argument("--prompts", type=int, default=64, help="(b): how many addition prompts (trained and measured)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    size = dict(SMOKE if args.smoke else FULL)
    size.update({k: v for k, v in (("seeds", args.seeds), ("steps", args.steps)) if v is not None})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    from importlib.metadata import version

    from collapseguard.demos.tiny import train_tokenizer

    name = "rlvr" if args.part == "tiny" else "rlvr_smollm2" + ("_gpu" if args.device.startswith("cuda") else "")
    runs: list[dict[str, Any]] = []
    smol: list[dict[str, Any]] = []
    with quiet():
        if args.part == "tiny":
            problems, hard, lines = task()
            tok = train_tokenizer(lines, vocab_size=300)
            rows = [{"prompt": f"{a}*{b}=", "answer": str(a * b)} for a, b in problems]
            hard_flags = [p in hard for p in problems]
            for seed in range(size["seeds"]):
                base = pretrained(seed, size["pretrain_epochs"], tok, lines)
                for regime in args.regimes.split(","):
                    runs.append(grpo_run(copy.deepcopy(base), tok, rows, hard_flags, seed, regime, size["steps"]))
                    r = runs[-1]
                    print(f"seed {seed} {regime}: pass@1 {r['curve'][0]['pass_at_1']} -> {r['curve'][-1]['pass_at_1']}, "
                          f"pass@4 {r['curve'][0]['pass_at_4']} -> {r['curve'][-1]['pass_at_4']}, fell at "
                          f"{r['fell_at']}, warn {r['first_warn']}, critical {r['first_critical']}, {r['alerts']}, "
                          f"{r['seconds']:.0f} s, guard {r['guard_share']:.2%}", file=sys.stderr)
        else:
            if not args.model_dir:
                parser.error("--part smollm2 needs --model-dir (the folder collapseguard.demos.pretrained.smollm2 "
                             "prepares)")
            for seed in range(size["seeds"]):
                smol.append({**smollm2_run(args.model_dir, seed, size["steps"], args.device, args.lr, args.prompts), "device": args.device})
                r = smol[-1]
                print(f"smollm2 seed {seed}: pass@1 {r['curve'][0]['pass_at_1']} -> {r['curve'][-1]['pass_at_1']}, "
                      f"pass@4 {r['curve'][0]['pass_at_4']} -> {r['curve'][-1]['pass_at_4']}, warn {r['first_warn']}, "
                      f"{r['alerts']}, {r['seconds']:.0f} s", file=sys.stderr)
    argv = " ".join(sys.argv[1:]).replace(str(out), os.path.relpath(out, ROOT) if out.is_relative_to(ROOT) else str(out))
    meta = {"command": f"python benchmarks/bench_rlvr.py {argv}".strip(), "seconds": time.perf_counter() - began,
            "trl": version("trl"), "torch": torch.__version__, **({"lr": args.lr, "prompts": args.prompts} if args.part == "smollm2" else {}), **size}
    (out / f"{name}.json").write_text(json.dumps(json_safe({"meta": meta, "runs": runs, "smollm2": smol}), indent=1))
    (out / f"{name}.md").write_text(summarize(runs, meta, smol), encoding="utf-8")
    print(f"wrote {out / (name + '.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
