"""A VAE retrained on its own handwritten digits, generation after generation, watched by the guard.

Real data: scikit-learn's bundled 8x8 digits (nothing is downloaded). Generation 0 trains on human
images; later generations train on the previous model's samples (replace, which collapses), on fresh
human images (fresh) or on the human images plus every generation's samples (accumulate). Each
generation the guard checks 300 sampled images against 300 held-out human gold images. ``quality`` is the
ground truth: per-pixel perplexity (exp of the negative ELBO per pixel) of held-out test digits, lower is
better. About 2 s per generation on one CPU thread.

    python examples/image_collapse.py [--seeds 1] [--generations 3] [--samples 800] [--plot samples.png]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from collapseguard.demos.experiment import REGIMES, GenerationRecord
from collapseguard.demos.recursive_images import DigitsVAE, run_vae

SHOWN = 10  # sample images per generation in the plot


def first_alert(records: list[GenerationRecord], severity: str) -> int | None:
    """The first generation >= 1 with an alert at least this severe (``"warn"`` counts critical too)."""
    for r in records:
        if r.generation >= 1 and any(severity == "warn" or a["severity"] == "critical" for a in r.alerts):
            return r.generation
    return None


def plot(images: dict[str, list[np.ndarray]], path: str) -> None:
    """One row per regime and generation, ``SHOWN`` sampled digits per row."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib): no plot written")
        return
    rows = [(regime, g, row) for regime, gens in images.items() for g, row in enumerate(gens)]
    fig, axes = plt.subplots(len(rows), SHOWN, figsize=(SHOWN * 0.6, len(rows) * 0.65), squeeze=False)
    for (regime, g, row), line in zip(rows, axes, strict=True):
        for ax, img in zip(line, row, strict=False):
            ax.imshow(img.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        for ax in line:
            ax.set_xticks([])
            ax.set_yticks([])
        line[0].set_ylabel(f"{regime} {g}", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle("VAE samples per generation (seed 0)", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..n-1 (default %(default)s)")
    parser.add_argument("--generations", type=int, default=3, help="generations after 0 (default %(default)s)")
    parser.add_argument("--samples", type=int, default=800, help="training images per generation (max 997)")
    parser.add_argument("--epochs", type=int, default=100, help="passes over --samples images per generation")
    parser.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated (default: %(default)s)")
    parser.add_argument("--thresholds", default="balanced", help="guard preset (default %(default)s)")
    parser.add_argument("--reference", default="gen0", choices=("gen0", "gold"),
                        help="judge against a generation-0 profile as well as gold (gen0, default) or gold alone")
    parser.add_argument("--plot", metavar="PNG", help="save a grid of sampled digits per generation (matplotlib)")
    args = parser.parse_args(argv)

    images: dict[str, list[np.ndarray]] = {}
    summary = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        for regime in args.regimes.split(","):
            keep: list[np.ndarray] = []

            def collect(g: int, model: DigitsVAE, check: np.ndarray, keep: list[Any] = keep) -> None:
                keep.append(check[:SHOWN])

            t = time.perf_counter()
            records = run_vae(regime, seed, args.generations, samples=args.samples, epochs=args.epochs,
                              thresholds=args.thresholds, reference=args.reference,
                              callback=collect if seed == 0 else None)
            per_gen = (time.perf_counter() - t) / len(records)
            if seed == 0:
                images[regime] = keep
            print(f"\n{regime}, seed {seed} ({per_gen:.1f} s per generation)")
            print(f"{'gen':>3} {'total var':>9} {'eff rank':>8} {'quality':>8} {'health':>6}  alerts")
            for r in records:
                alerts = ", ".join(f"{a['metric']} {a['severity']}" for a in r.alerts) or "-"
                print(f"{r.generation:>3} {r.metrics['total_variance']:9.3f} {r.metrics['effective_rank']:8.2f} "
                      f"{r.quality:8.2f} {r.health:6.2f}  {alerts}")
            summary.append((regime, seed, first_alert(records, "warn"), first_alert(records, "critical"),
                            records[-1].quality / records[0].quality))

    print("\nregime      seed  first warn  first critical  quality last/gen0")
    for regime, seed, warn, crit, ratio in summary:
        print(f"{regime:<11} {seed:>4}  {warn if warn is not None else '-':>10}  "
              f"{crit if crit is not None else '-':>14}  {ratio:17.2f}")
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if args.plot:
        plot(images, args.plot)


if __name__ == "__main__":
    main()
