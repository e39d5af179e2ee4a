"""A batch of token sequences with vectorised, cached n-gram hashing.

All sequences are concatenated once; the n-grams of every sequence are then
hashed in a handful of numpy operations instead of a Python loop per output,
which keeps the whole text metric suite near linear in the number of tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property

import numpy as np

# Odd 64-bit multiplier (golden ratio); uint64 arithmetic wraps, which is the intent.
_MULT = np.uint64(0x9E3779B97F4A7C15)


class TokenBatch:
    """Token sequences plus per-order n-gram hashes and the document of each n-gram."""

    def __init__(self, sequences: Sequence[np.ndarray]) -> None:
        self.sequences = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
        self.lengths = np.array([s.size for s in self.sequences], dtype=np.int64)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.sequences)

    @cached_property
    def flat(self) -> np.ndarray:
        if not self.sequences:
            return np.empty(0, dtype=np.uint64)
        return np.concatenate(self.sequences).astype(np.uint64)

    def ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, doc index) of every contiguous n-gram that lies inside one sequence."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if n not in self._cache:
            self._cache[n] = self._hash(n)
        return self._cache[n]

    def _hash(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        flat, total = self.flat, int(self.lengths.sum())
        if total < n:
            return np.empty(0, np.uint64), np.empty(0, np.int64)
        width = total - n + 1
        h = flat[:width].copy()
        for k in range(1, n):
            h = h * _MULT + flat[k : k + width]
        doc = np.repeat(np.arange(len(self.sequences), dtype=np.int64), self.lengths)
        starts = np.repeat(np.cumsum(self.lengths) - self.lengths, self.lengths)
        pos = np.arange(total, dtype=np.int64) - starts
        valid = (pos + n <= np.repeat(self.lengths, self.lengths))[:width]
        return h[valid], doc[:width][valid]

    def ngram_totals(self, n: int) -> np.ndarray:
        """Number of n-grams in each sequence."""
        return np.maximum(self.lengths - n + 1, 0)

    @cached_property
    def sequence_hashes(self) -> np.ndarray:
        """One hash per whole sequence (exact-duplicate detection)."""
        # blake2b, not hash(): Python's hash is salted per process, and ranks must agree
        digests = b"".join(
            hashlib.blake2b(s.tobytes(), digest_size=8).digest() for s in self.sequences
        )
        return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def as_batch(outputs: object, tokenizer: object = None) -> TokenBatch:
    """A :class:`TokenBatch` from a batch, texts or token-id lists."""
    if isinstance(outputs, TokenBatch):
        return outputs
    from collapseguard.gold.tokenization import TokenizerAdapter, to_sequences

    adapter = tokenizer if isinstance(tokenizer, TokenizerAdapter) else None
    if tokenizer is not None and adapter is None:
        adapter = TokenizerAdapter(tokenizer)
    return TokenBatch(to_sequences(outputs, adapter))
