"""Iterative retraining on the model's own samples, with and without a 20% human floor, over several seeds.

Each generation continues the previous generation's tiny GPT-2 on 500 of its own samples (replace), or on
those samples plus a fresh draw of human paragraphs behind an AnchorMixSampler with a 20% floor that the
guard raises from its alerts (reweight). Writes a table and a plot of gold perplexity and distinct-2,
relative to generation 0, per generation.

    python examples/recursive_reweight.py [--seeds 3] [--generations 8] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from collapseguard import GenerationSettings, GoldSet
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.recursive_text import run_anchored
from collapseguard.demos.tiny import train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--plot", default="docs/recursive_reweight.png")
    args = parser.parse_args()
    train, gold_texts = train_gold_split()
    tokenizer = train_tokenizer(train + gold_texts)
    gold = GoldSet.from_texts(gold_texts)
    rows = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            results = run_anchored(train, gold, tokenizer, tmp, generations=args.generations, seed=seed,
                                   generation=GenerationSettings(num_samples=64, max_new_tokens=32))
        for r in results:
            if r.regime == "gen0":
                continue
            rows.append({"seed": seed, "regime": r.regime, "generation": r.generation,
                         "gold_ppl_x": r.metrics["gold_ppl"] / r.reference["gold_ppl"],
                         "tail_ppl_x": r.metrics["gold_ppl_tail"] / r.reference["gold_ppl_tail"],
                         "distinct_2_x": r.metrics["distinct_2"] / r.reference["distinct_2"],
                         "alerts": sorted({f"{a['severity']}:{a['metric']}" for a in r.alerts})})
        print(f"seed {seed} done", flush=True)

    def mean(regime: str, g: int, key: str) -> tuple[float, float, float]:
        vals = [r[key] for r in rows if r["regime"] == regime and r["generation"] == g]
        return statistics.mean(vals), min(vals), max(vals)

    gens = range(1, args.generations + 1)
    table = ["| gen | replace: gold ppl × gen 0 | reweight (20% floor): gold ppl × gen 0 | replace: tail ppl × | "
             "reweight: tail ppl × | replace: distinct-2 × | reweight: distinct-2 × |", "|---|---|---|---|---|---|---|"]
    for g in gens:
        cells = [f"{mean(reg, g, key)[0]:.2f} ({mean(reg, g, key)[1]:.2f}–{mean(reg, g, key)[2]:.2f})"
                 for key in ("gold_ppl_x", "tail_ppl_x", "distinct_2_x") for reg in ("replace", "reweight")]
        table.append(f"| {g} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recursive_reweight.json").write_text(json.dumps(rows, indent=2))
    (out / "recursive_reweight.md").write_text(
        f"Mean (min–max) over {args.seeds} seeds; `python examples/recursive_reweight.py`.\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "gold_ppl_x", "gold perplexity, × generation 0"),
                           (axes[1], "distinct_2_x", "distinct-2 of samples, × generation 0")):
        for regime, colour in (("replace", "tab:red"), ("reweight", "tab:blue")):
            for seed in range(args.seeds):
                ys = [r[key] for r in rows if r["regime"] == regime and r["seed"] == seed]
                ax.plot(list(gens), ys, color=colour, alpha=0.35)
            ax.plot(list(gens), [mean(regime, g, key)[0] for g in gens], color=colour, lw=2.5,
                    label="own samples only" if regime == "replace" else "with 20% human floor (reweight)")
        ax.axhline(1.0, color="grey", lw=1, ls="--")
        ax.set_xlabel("generation")
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
