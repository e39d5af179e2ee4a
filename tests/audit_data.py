"""Datasets for the audit tests, built from CPython's documentation paragraphs (shipped with Python).

The training paragraphs of ``train_gold_split()`` already hold gold paragraphs (the docs repeat
themselves), so the clean set is cut with an oracle independent of the library: plain Python sets of
word 5-grams, no hashing, no MinHash.
"""

from __future__ import annotations

import gzip
import json
import re
from functools import cache
from pathlib import Path

import numpy as np

from collapseguard.demos.data import train_gold_split

_WORD = re.compile(r"\w+")
VERBATIM, EDITED = 40, 10


def grams(text: str) -> set[str]:
    words = _WORD.findall(text.lower())
    return {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}


@cache
def corpora() -> tuple[list[str], list[str], list[str], list[int], list[int]]:
    """(clean, leaky, gold, verbatim gold indices, edited gold indices).

    clean: training paragraphs sharing under 30% of any gold paragraph's 5-grams and no more than half
    of an earlier kept one's; leaky: clean with 40 gold paragraphs inserted verbatim and 10 more with two
    words changed, at seeded positions.
    """
    train, gold = train_gold_split()
    gold_grams = [grams(g) for g in gold]
    clean: list[str] = []
    kept: list[set[str]] = []
    for text in train:
        g5 = grams(text)
        if max(len(g5 & gg) / len(gg) for gg in gold_grams if gg) >= 0.3:
            continue
        if any(len(g5 & k) / max(len(g5 | k), 1) >= 0.5 for k in kept):
            continue
        kept.append(g5)
        clean.append(text)
    norms = [" ".join(_WORD.findall(g.lower())) for g in gold]
    unique = [i for i, n in enumerate(norms) if norms.count(n) == 1]
    long = [i for i in unique if len(gold[i].split()) >= 40]
    edited_ids = long[:EDITED]
    verbatim_ids = [i for i in unique if i not in edited_ids][:VERBATIM]
    inserts = [gold[i] for i in verbatim_ids]
    for i in edited_ids:  # two words changed, far apart: most of the 5-grams survive
        words = gold[i].split()
        words[8], words[30] = "zebra", "quartz"
        inserts.append(" ".join(words))
    leaky = list(clean)
    rng = np.random.default_rng(7)
    for text in inserts:
        leaky.insert(int(rng.integers(0, len(leaky) + 1)), text)
    return clean, leaky, list(gold), verbatim_ids, edited_ids


def write_jsonl(path: Path, texts: list[str], labels: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(json.dumps({"text": t, **({"provenance": labels[i]} if labels else {})}) + "\n"
                   for i, t in enumerate(texts))
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(rows.encode()))
    else:
        path.write_text(rows, encoding="utf-8")
    return path


def shard(folder: Path, texts: list[str], parts: int, *, labels: list[str] | None = None, gz_first: bool = False
          ) -> list[str]:
    """Write ``texts`` as ``parts`` JSONL files (contiguous slices, file names in order); returns the texts in
    the order an audit of the folder reads them."""
    bounds = np.linspace(0, len(texts), parts + 1).astype(int)
    for p in range(parts):
        name = f"part-{p:03d}.jsonl" + (".gz" if gz_first and p == 0 else "")
        lo, hi = bounds[p], bounds[p + 1]
        write_jsonl(folder / name, texts[lo:hi], labels[lo:hi] if labels else None)
    return texts
