"""Gold leakage: gold texts, or near-copies of them, inside the data a model is about to train on.

The guard judges a model against its gold set, so gold must stay held out: a model that trained on
gold texts reproduces them, and its outputs look as diverse as human text when they are not. A
training text *leaks* a gold text when

- it is the gold text up to case, punctuation and spacing (``exact``), or
- it holds at least ``containment`` (default 0.5) of the gold text's word 5-gram shingles
  (``near``): a lightly edited copy, or the gold text pasted inside a longer document. Gold texts
  shorter than ``min_words`` (default 10) words are matched exactly only, so that a short common
  phrase is not taken for a leak.

Gold sets are small (hundreds to thousands of texts), so :class:`GoldLeakIndex` keeps gold's
shingles in memory and every shard of the data is joined against it exactly -- a broadcast join,
with no sketch and no false positives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collapseguard.shingles import normalized, shingle_hashes

LEAK_CONTAINMENT = 0.5
MIN_NEAR_WORDS = 10


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class GoldLeakIndex:
    """Gold's normalised texts and shingle postings, to find gold texts inside other texts.

    >>> gold = ["The quick brown fox jumps over the lazy dog near the river bank today.", "Short one."]
    >>> index = GoldLeakIndex(gold)
    >>> index.find("the QUICK brown fox jumps over the lazy dog, near the river bank today")
    [(0, True, 1.0)]
    >>> index.find("Yesterday the quick brown fox jumps over the lazy dog near the river bank, it said.")[0][:2]
    (0, False)
    >>> index.find("short one")
    [(1, True, 1.0)]
    """

    def __init__(self, gold_texts: Sequence[str], *, containment: float = LEAK_CONTAINMENT, shingle: int = 5,
                 min_words: int = MIN_NEAR_WORDS) -> None:
        if not 0.0 < containment <= 1.0:
            raise ValueError(f"containment={containment!r} must be in (0, 1]: the share of a gold text's word "
                             f"{shingle}-grams a training text must hold to leak it")
        self.containment, self.shingle, self.min_words = containment, shingle, min_words
        self.size = len(gold_texts)
        self.exact: dict[bytes, list[int]] = {}
        keys, owners, sizes = [], [], np.zeros(len(gold_texts), dtype=np.int64)
        for i, text in enumerate(gold_texts):
            norm = normalized(text)
            if not norm:
                continue
            self.exact.setdefault(_digest(norm), []).append(i)
            if norm.count(" ") + 1 >= min_words:
                sh = shingle_hashes(text, shingle)
                keys.append(sh)
                owners.append(np.full(sh.size, i, dtype=np.int64))
                sizes[i] = sh.size
        self.sizes = sizes
        flat = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        who = np.concatenate(owners) if owners else np.empty(0, np.int64)
        order = np.lexsort((who, flat))
        flat, self._owners = flat[order], who[order]
        new = np.concatenate(([True], flat[1:] != flat[:-1])) if flat.size else np.empty(0, bool)
        self._keys = flat[new]  # sorted unique gold shingles
        self._starts = np.append(np.flatnonzero(new), flat.size)  # postings of key k: owners[starts[k]:starts[k+1]]

    def find(self, text: str, shingles: np.ndarray | None = None, words: list[str] | None = None
             ) -> list[tuple[int, bool, float]]:
        """(gold index, exact, containment) of every gold text that ``text`` leaks, by gold index.

        ``shingles`` and ``words`` (the text's :func:`~collapseguard.shingles.shingle_hashes` and
        :func:`~collapseguard.shingles.words_of`) save computing them twice.
        """
        found: dict[int, tuple[int, bool, float]] = {}
        for g in self.exact.get(_digest(normalized(text, words)), ()):
            found[g] = (g, True, 1.0)
        if self._keys.size:
            sh = shingle_hashes(text, self.shingle, words) if shingles is None else shingles
            idx = np.minimum(np.searchsorted(self._keys, sh), self._keys.size - 1)
            hit = idx[self._keys[idx] == sh]
            if hit.size:
                lo, hi = self._starts[hit], self._starts[hit + 1]
                lens = hi - lo
                take = np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
                counts = np.bincount(self._owners[take], minlength=self.size)
                share = np.divide(counts, self.sizes, out=np.zeros(self.size), where=self.sizes > 0)
                for g in np.flatnonzero(share >= self.containment).tolist():
                    found.setdefault(g, (g, False, float(share[g])))
        return [found[g] for g in sorted(found)]


@dataclass
class LeakTally:
    """Gold texts found in the data so far: mergeable across shards (positions are comparable tuples).

    ``first``: per gold text, (position, exact, containment) of the first text that leaks it;
    ``exact``: gold texts found verbatim anywhere; ``texts``: texts that leak at least one gold text.
    """

    first: dict[int, tuple[Any, bool, float]] = field(default_factory=dict)
    exact: set[int] = field(default_factory=set)
    texts: int = 0

    def add(self, position: Any, hits: Sequence[tuple[int, bool, float]]) -> None:
        if not hits:
            return
        self.texts += 1
        for g, exact, share in hits:
            if g not in self.first or position < self.first[g][0]:
                self.first[g] = (position, exact, share)
            if exact:
                self.exact.add(g)

    def merge(self, other: LeakTally) -> LeakTally:
        for g, entry in other.first.items():
            if g not in self.first or entry[0] < self.first[g][0]:
                self.first[g] = entry
        self.exact |= other.exact
        self.texts += other.texts
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (positions must be tuples of ints)."""
        return {"first": [[g, list(pos), exact, share] for g, (pos, exact, share) in sorted(self.first.items())],
                "exact": sorted(self.exact), "texts": self.texts}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LeakTally:
        return cls({g: (tuple(pos), exact, share) for g, pos, exact, share in state["first"]}, set(state["exact"]),
                   state["texts"])

    def report(self, gold_texts: Sequence[str], containment: float, index_of: Any = None,
               examples: int = 5) -> dict[str, Any]:
        """JSON-ready summary; ``index_of`` maps a position to the text's index in the data."""
        index_of = index_of or (lambda pos: pos)
        firsts = sorted(self.first.items(), key=lambda kv: kv[1][0])
        return {
            "leaked": len(self.first), "gold_texts": len(gold_texts),
            "fraction": len(self.first) / len(gold_texts) if gold_texts else 0.0,
            "exact": len(self.exact), "near": len(self.first) - len(self.exact), "texts": self.texts,
            "containment_threshold": containment,
            "examples": [{"gold": g, "text": index_of(pos), "exact": exact, "containment": round(share, 4),
                          "gold_excerpt": gold_texts[g][:80]} for g, (pos, exact, share) in firsts[:examples]],
        }
