"""Audit incoming datasets before training on them: what passes, what fails and why.

Three candidate training sets are screened against held-out human paragraphs (the gold set):

1. human paragraphs from CPython's documentation, as they are -- the docs repeat some paragraphs verbatim,
   which the near-duplicate check finds; some of the repeats are gold paragraphs, which the gold-leakage
   check finds (a model trained on them would be judged against text it has seen);
2. the same paragraphs deduplicated and without the ones that leak gold;
3. text sampled from a word trigram model after ``--generations`` rounds of training on its own samples.

Each is written as JSONL (with a ``provenance`` field) and screened with ``collapseguard audit``, the command
a data pipeline would call; its exit code (0 pass, 1 fail) is what the pipeline gates on.

    python examples/audit_dataset.py [--generations 8] [--out runs/audit]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from collapseguard.audit import near_duplicate_pairs
from collapseguard.audit.leakage import GoldLeakIndex
from collapseguard.cli import main as collapseguard
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.trigram import collapsed_corpus


def write(path: Path, texts: list[str], provenance: str) -> Path:
    path.write_text("".join(json.dumps({"text": t, "provenance": provenance}) + "\n" for t in texts), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--out", default="runs/audit")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, gold = train_gold_split()
    write(out / "gold.jsonl", gold, "human")
    copies = {j for _, j, _ in near_duplicate_pairs(train)}
    leaks = GoldLeakIndex(gold)
    clean = [t for i, t in enumerate(train) if i not in copies and not leaks.find(t)]
    candidates = {
        "human.jsonl": (train, "human"),
        "human_dedup.jsonl": (clean, "human"),
        f"trigram_gen{args.generations}.jsonl": (collapsed_corpus(args.generations, 600), "synthetic"),
    }
    codes = {}
    for name, (texts, label) in candidates.items():
        print(f"\n$ collapseguard audit {out / name} --gold {out / 'gold.jsonl'}")
        codes[name] = collapseguard(["audit", str(write(out / name, texts, label)), "--gold", str(out / "gold.jsonl")])
    print("\nexit codes: " + ", ".join(f"{n} -> {c}" for n, c in codes.items()))


if __name__ == "__main__":
    main()
