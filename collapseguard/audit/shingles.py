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
_MIX = np.uint64(0x9E3779B97F4A7C15)  # folds a band's rows into one key (uint64 arithmetic wraps)
#: an LSH group larger than this is paired as a star (see :func:`group_pairs`)
MAX_GROUP = 1000


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


_WORD_HASHES: dict[str, int] = {}  # word -> 64-bit hash: a corpus repeats its words, so most are looked up
_WORD_CACHE = 1 << 18  # entries (~50 MB at most); emptied when full
_GRAM = np.uint64(0x100000001B3)  # odd multiplier folding a gram's word hashes (uint64 arithmetic wraps)


def word_hashes(words: Sequence[str]) -> np.ndarray:
    """64-bit hashes (blake2b) of words, cached across texts."""
    cache = _WORD_HASHES
    hashes = list(map(cache.get, words))
    if None in hashes:
        if len(cache) > _WORD_CACHE:
            cache.clear()
        blake = hashlib.blake2b
        for i, h in enumerate(hashes):
            if h is None:
                hashes[i] = cache[words[i]] = int.from_bytes(blake(words[i].encode(), digest_size=8).digest(), "little")
    return np.array(hashes, dtype=np.uint64)


def member(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which ``values`` are in ``sorted_keys`` (ascending): a binary search per value, never a sort of the keys
    (``np.isin`` sorts both sides on every call, too slow for a small text against a large gold set)."""
    if not sorted_keys.size:
        return np.zeros(values.shape, dtype=bool)
    at = np.searchsorted(sorted_keys, values).clip(max=sorted_keys.size - 1)
    return sorted_keys[at] == values


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def gram_hashes(words: Sequence[str], k: int = 5, hashes: np.ndarray | None = None) -> np.ndarray:
    """Unique 61-bit hashes of the distinct word ``k``-grams (sorted): the shingles. A text shorter than ``k``
    words is one gram; a text without words is the one gram of no words.

    Each word is hashed once (blake2b, cached across texts) and a gram's ``k`` word hashes are folded and
    mixed with numpy, so that no per-gram string is built: two different grams share a hash with probability
    about 2^-61, which is the whole of the tolerance of the exact Jaccard check built on these sets.
    ``hashes``: :func:`word_hashes` of ``words``, if at hand.

    >>> gram_hashes("a b c d e f".split()).size, gram_hashes("a b c d e a b c d e".split()).size
    (2, 5)
    >>> bool(gram_hashes("a b c d e".split())[0] != gram_hashes("e d c b a".split())[0])  # word order counts
    True
    >>> gram_hashes([]).size, gram_hashes(["x", "y"]).size
    (1, 1)
    """
    if not len(words):
        return np.zeros(1, dtype=np.uint64)
    h = word_hashes(words) if hashes is None else hashes
    span = min(k, h.size)
    n = h.size - span + 1
    with np.errstate(over="ignore"):
        z = h[:n].copy()
        for t in range(1, span):
            z = z * _GRAM + h[t:t + n]
        z = z + np.uint64(span)  # a short text's one gram differs from the same words inside a longer one
    return np.unique(_mix(z) >> np.uint64(3))


def shingle_hashes(text: str, k: int = 5, words: list[str] | None = None) -> np.ndarray:
    """Unique 61-bit hashes of the text's word ``k``-grams (:func:`gram_hashes` of :func:`words_of` the text)."""
    return gram_hashes(words_of(text) if words is None else words, k)


def permutations(num_perm: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of the ``num_perm`` hash permutations ``h -> (a·h + b) mod 2^64`` (``a`` odd: a bijection)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a, b


def signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The MinHash signature of one shingle set under the permutations (a, b): per permutation, the top 60 bits
    of the smallest permuted shingle.

    The permutations work modulo 2^64 (uint64 arithmetic wraps), with no division: the classic
    ``mod (2^61 - 1)`` costs most of a signature's time, and the shingles are already well-mixed hashes, so a
    bijection of them is as good a random order. 60 bits keep every value below datatrove's bound for its
    64-bit MinHash files (2^61 - 1).
    """
    with np.errstate(over="ignore"):
        return (np.multiply.outer(shingles, a) + b).min(axis=0) >> np.uint64(4)


def minhash_signatures(texts: Sequence[str], *, num_perm: int = 64, shingle: int = 5, seed: int = 0) -> np.ndarray:
    """MinHash signatures (``len(texts)`` × ``num_perm``) of each text's word ``shingle``-grams.

    Two texts agree in each column with probability equal to the Jaccard similarity of their
    shingle sets (Broder, 1997); the permutations are ``(a·h + b) mod 2^64`` with fixed random a (odd), b.

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

    def __init__(self, num_perm: int = 64, bands: int = 16, *, buffer: int = 1 << 16, max_group: int = MAX_GROUP) -> None:
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
            found = [group_pairs(members, self.max_group) for members in self.groups(band)]
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


def group_pairs(members: np.ndarray, max_group: int = MAX_GROUP) -> np.ndarray:
    """The candidate pairs (i < j) of one LSH group (texts sharing a band): every pair for a group of up to
    ``max_group`` members; beyond that (a flood of exact copies, which would give millions of pairs) the
    smallest index with each other member, which still joins them all into one cluster.

    Both audits (one process and datatrove) call this on the same groups, so they propose the same pairs.
    """
    m = np.sort(np.asarray(members, dtype=np.int64))
    if m.size <= max_group:
        i, j = np.triu_indices(m.size, 1)
        return np.column_stack((m[i], m[j]))
    return np.column_stack((np.full(m.size - 1, m[0]), m[1:]))


def lsh_recall(jaccard_: float, bands: int = 16, rows: int = 4) -> float:
    """Probability that LSH proposes a pair of this Jaccard similarity: ``1 - (1 - J^rows)^bands``.

    >>> round(lsh_recall(0.8), 4), round(lsh_recall(0.5), 3)
    (0.9998, 0.644)
    """
    return 1.0 - (1.0 - jaccard_ ** rows) ** bands


def text_digest(normal: str) -> int:
    """64-bit hash (blake2b) of a normalised text (:func:`normalized`): equal for exact copies. Two different
    texts share one with probability 2^-64 a pair (about 3e-8 for a million distinct texts)."""
    return int.from_bytes(hashlib.blake2b(normal.encode(), digest_size=8).digest(), "little")


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
