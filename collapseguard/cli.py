"""The ``collapseguard`` command line."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from collapseguard.thresholds import PRESETS, Thresholds


def _cmd_demo(args: argparse.Namespace) -> int:
    from collapseguard.demo import run_demo

    rows = run_demo(generations=args.generations, anchor_fraction=args.anchor, seed=args.seed,
                    thresholds=args.thresholds)
    first = {}
    for row in rows:
        if row.result.alerts and row.track not in first:
            first[row.track] = (row.generation, row.result.severity)
    crit = {}
    for row in rows:
        if row.result.critical and row.track not in crit:
            crit[row.track] = row.generation
    print()
    for track in dict.fromkeys(r.track for r in rows):
        last = [r for r in rows if r.track == track][-1].result
        warn = f"first alert at generation {first[track][0]}" if track in first else "no alert"
        c = f", first critical at generation {crit[track]}" if track in crit else ", never critical"
        print(f"{track:<11} {warn}{c}; final health {last.health:.2f}")
    return 0


def _cmd_thresholds(args: argparse.Namespace) -> int:
    th = Thresholds.preset(args.preset)
    print(f"thresholds preset {args.preset!r} (presets: {', '.join(sorted(PRESETS))})\n")
    for name, default, doc in Thresholds.describe():
        value = getattr(th, name)
        lines = textwrap.wrap(doc, 70)
        print(f"{name:<24} {value!s:>6}  (default {default})\n" + "".join(f"{'':<32}{ln}\n" for ln in lines))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from collapseguard.goldset import GoldSet

    try:
        from collapseguard.integrations.profiling import profile_checkpoint
    except ImportError as exc:
        raise ValueError(f"`collapseguard profile` needs torch and transformers ({exc}); "
                         "install with: pip install 'collapseguard[transformers]'") from None
    gold = GoldSet.from_jsonl(args.gold, text_field=args.text_field)
    profile = profile_checkpoint(args.checkpoint, gold, num_samples=args.num_samples,
                                 prompt_length=args.prompt_length, max_new_tokens=args.max_new_tokens, seed=args.seed)
    path = profile.save(args.out)
    m = profile.metrics
    print(f"wrote {path}: gold {gold.name} ({gold.fingerprint[:12]}...), {int(m['num_outputs'])} outputs, "
          f"gold perplexity {m.get('gold_ppl', float('nan')):.4g} (tail band {m.get('gold_ppl_tail', float('nan')):.4g}), "
          f"distinct-2 {m['distinct_2']:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collapseguard", description="Catch model collapse while training.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="recursive-training demo on built-in real human text (no download)")
    demo.add_argument("--generations", type=int, default=8)
    demo.add_argument("--anchor", type=float, default=0.2, help="human floor of the anchored track")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--thresholds", default="balanced", choices=sorted(PRESETS))
    demo.set_defaults(func=_cmd_demo)
    prof = sub.add_parser("profile", help="write a reference profile of a saved Hugging Face checkpoint")
    prof.add_argument("checkpoint", help="folder saved with save_pretrained() (model and tokenizer)")
    prof.add_argument("--gold", required=True, help="gold set as JSONL")
    prof.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    prof.add_argument("--out", required=True, help="profile JSON to write")
    prof.add_argument("--num-samples", type=int, default=64)
    prof.add_argument("--prompt-length", type=int, default=16)
    prof.add_argument("--max-new-tokens", type=int, default=32)
    prof.add_argument("--seed", type=int, default=0)
    prof.set_defaults(func=_cmd_profile)
    th = sub.add_parser("thresholds", help="print every threshold with its default and meaning")
    th.add_argument("preset", nargs="?", default="balanced", choices=sorted(PRESETS))
    th.set_defaults(func=_cmd_thresholds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError) as exc:
        if args.debug:
            raise
        print(f"collapseguard: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
