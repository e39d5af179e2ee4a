"""Word shingles, MinHash signatures and LSH bands: what the near-duplicate and gold-leakage checks compare.

A text's shingles are the hashes of its lower-cased word ``k``-grams (words are ``\\w+`` runs, so case,
punctuation and spacing do not matter). Two texts' Jaccard similarity is computed on these sets;
MinHash estimates it, and LSH bands of the signatures find the candidate pairs worth computing it for.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

WORDS = re.compile(r"\w+")
_MERSENNE = np.uint64((1 << 61) - 1)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # folds a band's rows into one key (uint64 arithmetic wraps)


def words_of(text: str) -> list[str]:
    """The text's lower-cased words (``\\w+`` runs)."""
    return WORDS.findall(text.lower())


def normalized(text: str, words: list[str] | None = None) -> str:
    """The text's lower-cased words joined by single spaces: equal for texts that differ only in case,
    punctuation or spacing. ``words`` (:func:`words_of` the text) saves splitting it again.

    >>> normalized("Hello,  World!") == normalized("hello world")
    True
    """
    return " ".join(words_of(text) if words is None else words)


def word_grams(words: Sequence[str], k: int = 5) -> set[str]:
    """The distinct word ``k``-grams (a text shorter than ``k`` words is one gram, a text without words "")."""
    return {" ".join(words[i:i + k]) for i in range(max(len(words) - k + 1, 1))} if words else {""}


def hash_grams(grams: set[str]) -> np.ndarray:
    """61-bit hashes (blake2b) of grams: the shingles."""
    blake = hashlib.blake2b
    digests = b"".join([blake(g.encode(), digest_size=8).digest() for g in grams])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64) >> np.uint64(3)


def shingle_hashes(text: str, k: int = 5, words: list[str] | None = None) -> np.ndarray:
    """Unique 61-bit hashes of the text's word ``k``-grams (a text shorter than ``k`` words is one shingle)."""
    return hash_grams(word_grams(words_of(text) if words is None else words, k))


def permutations(num_perm: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of the ``num_perm`` hash permutations ``(a·h + b) mod (2^61 − 1)``."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 61, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 61, size=num_perm, dtype=np.uint64)
    return a, b


def signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The MinHash signature of one shingle set under the permutations (a, b)."""
    # (a*h) overflows 64 bits; wrapping is fine for hashing, then fold into the prime field
    with np.errstate(over="ignore"):
        return ((a * shingles[:, None] + b) % _MERSENNE).min(axis=0)


def minhash_signatures(texts: Sequence[str], *, num_perm: int = 64, shingle: int = 5, seed: int = 0) -> np.ndarray:
    """MinHash signatures (``len(texts)`` × ``num_perm``) of each text's word ``shingle``-grams.

    Two texts agree in each column with probability equal to the Jaccard similarity of their
    shingle sets (Broder, 1997); hashes are ``(a·h + b) mod (2^61 − 1)`` with fixed random a, b.

    >>> sig = minhash_signatures(["a b c d e f g", "a b c d e f g", "x y z w v u t"], shingle=3)
    >>> bool((sig[0] == sig[1]).all()), float((sig[0] == sig[2]).mean())
    (True, 0.0)
    """
    a, b = permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    for i, text in enumerate(texts):
        out[i] = signature(shingle_hashes(text, shingle), a, b)
    return out


def jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Jaccard similarity of two unique-hash arrays."""
    inter = np.intersect1d(x, y, assume_unique=True).size
    return inter / max(x.size + y.size - inter, 1)


class BandIndex:
    """LSH over MinHash signatures, streamed: the signatures and each band's key (its rows folded into one
    uint64) are buffered and spilled to temporary files, so memory stays flat however many texts are added.

    :meth:`pairs` groups texts by equal band key, band by band (one band's keys in memory at a time), and
    pairs each group's members: all pairs for groups of up to ``max_group`` members, the first member with
    every other beyond that (a flood of exact copies). :meth:`agreement` reads pairs' signatures back to
    estimate their Jaccard similarity.
    """

    def __init__(self, num_perm: int = 64, bands: int = 16, *, buffer: int = 1 << 16, max_group: int = 1000) -> None:
        if num_perm % bands:
            raise ValueError(f"num_perm={num_perm} must be a multiple of bands={bands}")
        self.num_perm, self.bands, self.rows = num_perm, bands, num_perm // bands
        self.buffer, self.max_group = buffer, max_group
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._files: list[tempfile._TemporaryFileWrapper] | None = None
        self.count = 0

    def add(self, signatures: np.ndarray) -> None:
        """Add the signatures (rows) of the next texts, in order."""
        sig = np.atleast_2d(signatures).astype(np.uint64)
        if sig.shape[1] != self.num_perm:
            raise ValueError(f"signatures have {sig.shape[1]} columns, this index {self.num_perm}")
        self._pending.append(sig)
        self._pending_rows += len(sig)
        self.count += len(sig)
        if self._pending_rows >= self.buffer:
            self._spill()

    def _spill(self) -> None:
        if not self._pending:
            return
        if self._files is None:
            # closed in close(): the signatures, then one file per band so that each band is read back alone
            self._files = [tempfile.TemporaryFile(prefix="collapseguard-lsh-") for _ in range(self.bands + 1)]  # noqa: SIM115
        sig = np.concatenate(self._pending)
        sig.tofile(self._files[0])
        keys = sig[:, 0::self.rows].copy()
        for r in range(1, self.rows):
            keys = keys * _MIX + sig[:, r::self.rows]
        for band, fh in enumerate(self._files[1:]):
            np.ascontiguousarray(keys[:, band]).tofile(fh)
        self._pending, self._pending_rows = [], 0

    def _band(self, band: int) -> np.ndarray:
        self._spill()
        if self._files is None:
            return np.empty(0, np.uint64)
        fh = self._files[band + 1]
        fh.seek(0)
        return np.fromfile(fh, dtype=np.uint64)

    def groups(self, band: int) -> Iterator[np.ndarray]:
        """Index arrays (ascending) of the texts that share a key in ``band``."""
        keys = self._band(band)
        order = np.argsort(keys, kind="stable")
        srt = keys[order]
        starts = np.flatnonzero(np.concatenate(([True], srt[1:] != srt[:-1], [True])))
        for lo, hi in itertools.pairwise(starts):
            if hi - lo > 1:
                yield order[lo:hi]

    def pairs(self, at_least: float = 0.0) -> np.ndarray:
        """Candidate pairs (rows i < j, sorted, unique) whose signatures agree on at least ``at_least`` of their
        rows; each band's candidates are filtered as they come, so only the likely ones are ever kept."""
        kept = [np.empty((0, 2), dtype=np.int64)]
        for band in range(self.bands):
            found = []
            for members in self.groups(band):
                m = members.astype(np.int64)
                if m.size <= self.max_group:
                    i, j = np.triu_indices(m.size, 1)
                    found.append(np.column_stack((m[i], m[j])))
                else:  # a giant bucket is an exact-duplicate flood: counted by the star anyway
                    found.append(np.column_stack((np.full(m.size - 1, m[0]), m[1:])))
            if found:
                band_pairs = np.concatenate(found)
                kept.append(band_pairs[self.agreement(band_pairs) >= at_least] if at_least > 0 else band_pairs)
        return np.unique(np.concatenate(kept), axis=0)

    def agreement(self, pairs: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
        """Share of signature rows each pair agrees on: MinHash's estimate of its Jaccard similarity.

        The rows are read from the file (not mapped: mapped pages would count as the process's memory).
        """
        self._spill()
        idx = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        out = np.empty(len(idx), dtype=np.float64)
        if not len(idx):
            return out
        fd, width = self._files[0].fileno(), self.num_perm * 8
        for lo in range(0, len(idx), chunk):
            part = idx[lo:lo + chunk]
            rows, where = np.unique(part, return_inverse=True)
            raw = b"".join([os.pread(fd, width, r * width) for r in rows.tolist()])
            sig = np.frombuffer(raw, dtype=np.uint64).reshape(len(rows), self.num_perm)
            where = where.reshape(part.shape)
            out[lo:lo + chunk] = (sig[where[:, 0]] == sig[where[:, 1]]).mean(axis=1)
        return out

    def close(self) -> None:
        for fh in self._files or []:
            fh.close()
        self._files = None


def components(pairs: Sequence[tuple[int, int, float]]) -> int:
    """Texts that are a near-copy of another (the texts in pairs minus the number of clusters they form)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    return len(parent) - len({find(k) for k in list(parent)})
