"""Recursive training judged against a generation-0 reference profile, over several seeds.

Each generation is a new training run of a tiny GPT-2: trained on samples of the
previous generation's model (replace) or on fresh human text (control). Every
run loads the generation-0 profile and is checked once, at its end. The table
compares when the guard first alerts with when a plain output-diversity check
(alerts on output metrics only: distinct-n, self-BLEU, Vendi, compression,
repetition) first alerts, in the same runs.

    python examples/recursive_profiles.py [--seeds 3] [--generations 4] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from collapseguard import GenerationSettings, GoldSet
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.recursive_text import run_recursive
from collapseguard.demos.tiny import train_tokenizer

MODEL_SIDE = ("gold_ppl", "gold_ppl_tail", "gold_ppl_head", "gold_ppl_mid")


def first(results, regime, model_side: bool | None) -> int | None:
    """First generation with an alert (model_side: True = model-side only, False = output-only, None = any)."""
    for r in results:
        if r.regime != regime:
            continue
        picked = [a for a in r.alerts if model_side is None or (a["metric"] in MODEL_SIDE) == model_side]
        if picked:
            return r.generation
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    train, gold_texts = train_gold_split()
    tokenizer = train_tokenizer(train + gold_texts)
    gold = GoldSet.from_texts(gold_texts)
    rows, lines = [], []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            results = run_recursive(train, gold, tokenizer, tmp, generations=args.generations, epochs=args.epochs,
                                    samples=args.samples, seed=seed,
                                    generation=GenerationSettings(num_samples=64, max_new_tokens=32))
        for r in results:
            m, ref = r.metrics, r.reference
            rows.append({"seed": seed, "regime": r.regime, "generation": r.generation,
                         "gold_ppl_x": m["gold_ppl"] / ref["gold_ppl"],
                         "tail_ppl_x": m["gold_ppl_tail"] / ref["gold_ppl_tail"],
                         "head_ppl_x": m["gold_ppl_head"] / ref["gold_ppl_head"],
                         "distinct_2_x": m["distinct_2"] / ref["distinct_2"],
                         "alerts": sorted({f"{a['severity']}:{a['metric']}" for a in r.alerts})})
        lines.append((seed, first(results, "replace", None), first(results, "replace", False),
                      first(results, "fresh", None)))
        print(f"seed {seed}: replace first alert at gen {lines[-1][1]}, output-only at gen {lines[-1][2]}, "
              f"control first alert at gen {lines[-1][3]}", flush=True)
    table = ["| seed | regime | gen | gold ppl × gen 0 | tail ppl × gen 0 | head ppl × gen 0 | distinct-2 × gen 0 | alerts |",
             "|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['seed']} | {r['regime']} | {r['generation']} | {r['gold_ppl_x']:.2f} | {r['tail_ppl_x']:.2f} | "
              f"{r['head_ppl_x']:.2f} | {r['distinct_2_x']:.2f} | {', '.join(r['alerts']) or '-'} |"
              for r in rows if r["regime"] != "gen0"]
    summary = ["| seed | replace: first alert (guard with profile) | replace: first output-diversity alert | "
               "control: first alert |", "|---|---|---|---|"]
    summary += [f"| {s} | {a if a is not None else 'none'} | {b if b is not None else f'none in {args.generations}'} | "
                f"{c if c is not None else 'none'} |" for s, a, b, c in lines]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recursive_profiles.json").write_text(json.dumps(rows, indent=2))
    (out / "recursive_profiles.md").write_text("\n".join(summary) + "\n\n" + "\n".join(table) + "\n")
    print("\n".join(summary))
    print()
    print("\n".join(table))


if __name__ == "__main__":
    main()
