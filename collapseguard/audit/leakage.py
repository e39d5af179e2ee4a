"""Gold leakage: gold texts, or near-copies of them, inside the data a model is about to train on.

The guard judges a model against its gold set, so gold must stay held out: a model that trained on
gold texts reproduces them, and its outputs look as diverse as human text when they are not. A
training text *leaks* a gold text when

- it is the gold text up to case, punctuation and spacing (``exact``), or
- it holds at least ``containment`` (default 0.5) of the gold text's word 5-gram shingles
  (``near``): a lightly edited copy, or the gold text pasted inside a longer document. Gold texts
  shorter than ``min_words`` (default 10) words are matched exactly only, so that a short common
  phrase is not taken for a leak.

Gold sets are small (hundreds to thousands of texts), so :class:`GoldLeakIndex` keeps gold's word
5-grams in memory and every shard of the data is joined against them exactly -- a broadcast join on
every 5-gram (by its 61-bit hash, the audit's shingle: two different 5-grams share one with probability
about 2^-61), with no sketch, so no leak is missed and none is made up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collapseguard.audit.shingles import gram_hashes, member, normalized, words_of

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
        self.postings: dict[int, list[int]] = {}  # gold's word 5-grams (their shingle hashes) -> gold texts
        self.sizes = np.zeros(len(gold_texts), dtype=np.int64)
        for i, text in enumerate(gold_texts):
            words = words_of(text)
            if not words:
                continue
            self.exact.setdefault(_digest(normalized(text, words)), []).append(i)
            if len(words) >= min_words:
                grams = gram_hashes(words, shingle).tolist()
                self.sizes[i] = len(grams)
                for gram in grams:
                    self.postings.setdefault(gram, []).append(i)
        self._keys = np.array(sorted(self.postings), dtype=np.uint64)  # sorted: a text's hits by binary search

    def find(self, text: str, words: list[str] | None = None, grams: np.ndarray | None = None
             ) -> list[tuple[int, bool, float]]:
        """(gold index, exact, containment) of every gold text that ``text`` leaks, by gold index.

        ``words`` and ``grams`` (the text's :func:`~collapseguard.audit.shingles.words_of` and
        :func:`~collapseguard.audit.shingles.gram_hashes`) save computing them twice.
        """
        words = words_of(text) if words is None else words
        found: dict[int, tuple[int, bool, float]] = {}
        for g in self.exact.get(_digest(normalized(text, words)), ()):
            found[g] = (g, True, 1.0)
        if self.postings:
            postings = self.postings
            shingles = gram_hashes(words, self.shingle) if grams is None else grams
            hits = [postings[gram] for gram in shingles[member(shingles, self._keys)].tolist()]
            if hits:
                counts = np.bincount(np.concatenate(hits), minlength=self.size)
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
