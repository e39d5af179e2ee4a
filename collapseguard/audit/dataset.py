"""Screen an incoming dataset before it is trained on: diversity against gold, near-duplicates, outliers,
provenance and gold leakage.

A dataset that a model wrote is narrower than human text long before anyone
reads it: fewer distinct phrases, fewer rare words, many near-copies. The audit
measures a sample of the data exactly as the guard measures a model's outputs
(same metrics, same gold reference of the same count and length, same
thresholds), and adds what only a dataset has: near-duplicate pairs over the
whole set, texts far outside the gold set's range, the provenance mix, and gold
texts that leaked into it (:mod:`collapseguard.audit.leakage`).

The data is streamed, never held whole: one pass measures every text into a
mergeable :class:`ShardScan` (and MinHash bands spilled to disk), a second pass
fetches the diversity sample and the texts of candidate near-duplicate pairs.
:mod:`collapseguard.audit.distributed` runs the same passes as datatrove steps
over shards, merges the shards' states and judges them with :func:`judge`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collapseguard._validation import (
    FRACTION,
    NONE,
    ArgumentTypeError,
    Constraint,
    Interval,
    OneOf,
    validate,
)
from collapseguard.audit.leakage import LEAK_CONTAINMENT, GoldLeakIndex, LeakTally
from collapseguard.audit.shingles import (
    WORDS,
    BandIndex,
    components,
    gram_hashes,
    jaccard,
    lsh_recall,
    member,
    minhash_signatures,
    normalized,
    permutations,
    shingle_hashes,
    signature,
    text_digest,
    word_hashes,
    words_of,
)
from collapseguard.detection.alerts import SEVERITY_RANK, Alert, silenced_alerts
from collapseguard.detection.monitor import CheckResult, CollapseMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.provenance import normalize_label
from collapseguard.gold.tokenization import SimpleTokenizer

__all__ = ["AuditResult", "DataSource", "ShardScan", "Verdict", "audit_path", "audit_texts", "decide", "judge",
           "minhash_signatures", "near_duplicate_pairs", "read_texts"]

NEAR_DUPLICATE_JACCARD = 0.8
# LSH candidates whose MinHash estimate (64 rows) is below this skip the exact check: a pair at the 0.8 bound
# estimates below 0.5 with probability under 1e-6, and pairs that merely share a sentence or two (many, in a
# large corpus) are never held
MINHASH_PREFILTER = 0.5
NUM_PERM, BANDS, SHINGLE = 64, 16, 5
NEAR_DUPLICATE_DEFINITION = (
    f"word {SHINGLE}-gram Jaccard >= {NEAR_DUPLICATE_JACCARD}, computed exactly for every pair that MinHash LSH "
    f"proposes ({BANDS} bands x {NUM_PERM // BANDS} rows: a pair at {NEAR_DUPLICATE_JACCARD} is proposed with "
    f"probability {lsh_recall(NEAR_DUPLICATE_JACCARD, BANDS, NUM_PERM // BANDS):.4f}); the share counts texts "
    "beyond the first of each cluster of such pairs")
"""What both audits (one process, datatrove) count as a near-duplicate, word for word; reports print it."""
SAMPLE_SIZE = 2000
"""Texts in the diversity sample, by default."""
_JSONL = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


# ------------------------------------------------------------------ reading
def _suffix(name: str) -> str:
    lower = name.lower()
    for suf in (*_JSONL, ".parquet"):
        if lower.endswith(suf):
            return suf
    return ""


def _kind(name: str) -> str:
    suf = _suffix(name)
    return "jsonl" if suf in _JSONL else "parquet" if suf == ".parquet" else "text"


def text_of(row: Any, text_field: str, where: str) -> str | None:
    """The record's text; None for an empty one (skipped, as datatrove's readers skip it).

    Raises:
        ValueError: the record is not an object or has no string ``text_field``.
    """
    if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
        keys = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise ValueError(f"{where} has no string field {text_field!r} (it has {keys}); "
                         "pass --text-field with the right name")
    return row[text_field] or None


class DataSource:
    """A dataset on disk, read as a stream of records.

    ``path`` is a file or a folder. Files: ``.jsonl``/``.json`` (optionally ``.gz``; one JSON object per
    line, text in ``text_field``), ``.parquet`` (the ``text_field`` column, read in batches; needs pyarrow),
    anything else as plain text (one item per non-empty line). A folder holds files of one of these kinds
    (found recursively, read in sorted order of their relative paths). Records with an empty text are
    skipped; ``provenance_field``, where present, is read as the record's human/synthetic label.

    Raises:
        FileNotFoundError: no such path, or a folder without data files.
        ValueError: a folder mixing kinds of files.
    """

    def __init__(self, path: str | Path, *, text_field: str = "text", provenance_field: str | None = "provenance"
                 ) -> None:
        path = Path(path)
        self.path, self.text_field, self.provenance_field = path, text_field, provenance_field
        self.bytes_read = 0
        if path.is_file():
            self.root, self.files = path.parent, [path.name]
        elif path.is_dir():
            self.root = path
            self.files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                                if p.is_file() and _suffix(p.name) and not p.name.startswith((".", "_")))
            if not self.files:
                raise FileNotFoundError(f"DATA={str(path)!r} holds no .jsonl, .json(.gz) or .parquet files")
        else:
            raise FileNotFoundError(f"DATA={str(path)!r}: no such file or folder")
        kinds = {_kind(f) for f in self.files}
        if len(kinds) > 1:
            raise ValueError(f"DATA={str(path)!r} mixes {sorted(kinds)} files; audit one kind at a time")
        self.kind = kinds.pop()

    def records(self) -> Iterator[tuple[int, int, str, str | None]]:
        """(file index, index in the file, text, provenance label or None where the record has no field).

        :attr:`bytes_read` counts the data read so far (uncompressed bytes), for a progress bar."""
        self.bytes_read = 0
        for fi, name in enumerate(self.files):
            for li, (text, label) in enumerate(self._read(self.root / name)):
                yield fi, li, text, label

    @property
    def size_on_disk(self) -> int | None:
        """Bytes of the files when that is what :attr:`bytes_read` reaches at the end (plain JSONL or text);
        None for gzip and parquet, whose decoded size is not known before reading."""
        if self.kind == "parquet" or any(f.lower().endswith(".gz") for f in self.files):
            return None
        return sum((self.root / f).stat().st_size for f in self.files)

    def _label(self, row: dict[str, Any]) -> str | None:
        field_ = self.provenance_field
        return normalize_label(row.get(field_)) if field_ and field_ in row else None

    def _read(self, path: Path) -> Iterator[tuple[str, str | None]]:
        if self.kind == "jsonl":
            # read as bytes, so that the bytes read can be counted (json.loads takes UTF-8 bytes as they are)
            opener = gzip.open if path.name.lower().endswith(".gz") else open
            with opener(path, "rb") as fh:
                for i, line in enumerate(fh, 1):
                    self.bytes_read += len(line)
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{i}: not valid JSON ({exc.msg}); repair or drop that line") from None
                    text = text_of(row, self.text_field, f"{path}:{i}")
                    if text is not None:
                        yield text, self._label(row)
        elif self.kind == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise ImportError("reading parquet needs pyarrow: pip install pyarrow") from None
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            columns = [c for c in (self.text_field, self.provenance_field) if c and c in names]
            i = 0
            for batch in parquet.iter_batches(columns=columns or None):
                self.bytes_read += batch.nbytes
                for row in batch.to_pylist():
                    text = text_of(row, self.text_field, f"{path}: record {i}")
                    i += 1
                    if text is not None:
                        yield text, self._label(row)
        else:
            with open(path, "rb") as fh:
                for raw in fh:
                    self.bytes_read += len(raw)
                    for part in raw.decode("utf-8").splitlines():  # the separators str.splitlines knows, as before
                        if part.strip():
                            yield part.strip(), None


def read_texts(path: str | Path, *, text_field: str = "text", provenance_field: str | None = "provenance"
               ) -> tuple[list[str], list[str] | None]:
    """Texts (and provenance labels, where the records have them) from JSONL, text or parquet, in memory.

    See :class:`DataSource` for the formats; :func:`audit_path` audits a file or folder without loading it.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: a record without ``text_field``.
        ImportError: parquet without pyarrow.
    """
    texts, labels = [], []
    for _, _, text, label in DataSource(path, text_field=text_field, provenance_field=provenance_field).records():
        texts.append(text)
        labels.append(label)
    if not any(label is not None for label in labels):
        return texts, None
    return texts, [label if label is not None else "unknown" for label in labels]


# ------------------------------------------------------------ near-duplicates
class _PairCheck:
    """The exact Jaccard of candidate pairs, texts fed in index order: a text's shingles are kept only
    until its last partner has come, so memory holds the pairs still open, not the data. ``end``: the
    last text any pair needs (-1 without pairs), after which the data need not be read."""

    def __init__(self, candidates: np.ndarray, threshold: float, shingle: int = SHINGLE) -> None:
        self.threshold, self.shingle, self.pairs = threshold, shingle, []
        self.partners: dict[int, list[int]] = {}
        self.last: dict[int, int] = {}
        for i, j in candidates.tolist():
            self.partners.setdefault(j, []).append(i)
            self.last[i] = max(self.last.get(i, -1), j)
        self.end = max(self.partners, default=-1)
        self.held: dict[int, np.ndarray] = {}

    def feed(self, g: int, text: str, shingles: np.ndarray | None = None) -> None:
        if g not in self.partners and g not in self.last:
            return
        sh = shingle_hashes(text, self.shingle) if shingles is None else shingles
        for i in self.partners.pop(g, ()):
            jac = jaccard(self.held[i], sh)
            if jac >= self.threshold:
                self.pairs.append((i, g, jac))
            if self.last[i] == g:
                del self.held[i]
        if self.last.get(g, -1) > g:
            self.held[g] = sh

    def result(self) -> list[tuple[int, int, float]]:
        return sorted(self.pairs)


def near_duplicate_pairs(texts: Sequence[str], *, threshold: float = NEAR_DUPLICATE_JACCARD, num_perm: int = NUM_PERM,
                         bands: int = BANDS, shingle: int = SHINGLE) -> list[tuple[int, int, float]]:
    """Pairs (i, j, Jaccard) of texts whose shingle sets overlap at least ``threshold``.

    Candidates come from MinHash LSH (``bands`` bands of ``num_perm / bands`` rows), each is then
    verified with the exact Jaccard similarity, so no reported pair is a false positive.
    """
    index = BandIndex(num_perm, bands)
    try:
        index.add(minhash_signatures(texts, num_perm=num_perm, shingle=shingle))
        check = _PairCheck(index.pairs(MINHASH_PREFILTER), threshold, shingle)
    finally:
        index.close()
    for g, text in enumerate(texts):
        check.feed(g, text)
    return check.result()


# --------------------------------------------------------------- per-text checks
#: Tukey's "far out" fence (Q1 - 3 IQR, Q3 + 3 IQR): beyond it a text is unlike gold, not merely shorter or longer
#: than gold's few hundred texts happen to be
OUTLIER_FENCE = 3.0


def _fences(values: Sequence[float]) -> tuple[float, float]:
    q1, q3 = np.percentile(values, [25, 75])
    iqr = q3 - q1
    return float(min(q1 - OUTLIER_FENCE * iqr, min(values))), float(max(q3 + OUTLIER_FENCE * iqr, max(values)))


class _OutlierRule:
    """Texts far outside gold's spread, by one of two rules (named in each finding):

    - ``length``: the word count lies beyond Tukey's far-out fences of gold's log word counts
      (Q1 - 3 IQR, Q3 + 3 IQR, and never inside gold's own range). On a log scale, so that the margin
      grows with the length: as gold, the 174 paragraphs of 25-93 words of CPython's docs admit 6-294.
    - ``unseen words``: the share of words gold never uses lies beyond the same fence of gold's own
      held-out share (each half of gold against the other's vocabulary), plus two binomial standard
      errors for the text's length, since a short text's share varies more.
    """

    def __init__(self, gold: Sequence[str]) -> None:
        self.gold_vocab = set(WORDS.findall(" ".join(gold).lower()))
        self._vocab = np.unique(word_hashes(sorted(self.gold_vocab)))  # sorted: unseen words by binary search
        words = [WORDS.findall(t.lower()) for t in gold]
        lengths = [len(w) for w in words if w]
        if not lengths:
            raise ValueError("the gold set holds no words: outliers are judged against gold's texts")
        lo, hi = _fences(np.log(lengths))
        self.lo, self.hi = float(np.exp(lo)), float(np.exp(hi))
        # gold's own words are all seen, so its spread of unseen shares comes from each half against the other
        half = len(gold) // 2
        novel = []
        for part, other in ((words[half:], words[:half]), (words[:half], words[half:])):
            seen = {w for ws in other for w in ws}
            novel += [sum(w not in seen for w in ws) / len(ws) for ws in part if ws]
        self.novel_hi = min(_fences(novel)[1], 1.0) if len(novel) >= 4 else 1.0

    def __call__(self, text: str, words: list[str] | None = None, hashes: np.ndarray | None = None
                 ) -> tuple[str, str] | None:
        """None, or (rule, why) for an outlier (``hashes``: :func:`word_hashes` of ``words``, if at hand)."""
        words = words_of(text) if words is None else words
        n = len(words)
        if n < self.lo or n > self.hi:
            side = "below gold's lower" if n < self.lo else "above gold's upper"
            return "length", (f"length: {n} words, {side} fence ({self.lo:.0f}-{self.hi:.0f} words: Q1 - 3 IQR to "
                              "Q3 + 3 IQR of gold's log word counts)")
        hashes = word_hashes(words) if hashes is None else hashes
        unseen = (n - int(member(hashes, self._vocab).sum())) / n  # a 64-bit collision would count a word seen
        p = self.novel_hi
        bound = p + 2.0 * np.sqrt(p * (1.0 - p) / n)
        if unseen > bound:
            return "unseen words", (f"unseen words: {unseen:.0%} of its {n} words are not in gold; gold's own held-out "
                                    f"share reaches {p:.0%} (Q3 + 3 IQR), {bound:.0%} with the margin for {n} words")
        return None


class GoldChecks:
    """What each text is checked against: gold's range (outliers) and gold's texts (leakage)."""

    def __init__(self, gold_texts: Sequence[str], *, leak_containment: float = LEAK_CONTAINMENT) -> None:
        self.outlier = _OutlierRule(list(gold_texts))
        self.leaks = GoldLeakIndex(gold_texts, containment=leak_containment, shingle=SHINGLE)


class Sample:
    """The diversity sample: the ``size`` texts whose seeded hash of their normalised words is smallest
    (a bottom-k sample). It depends on the texts only, so the same data in any order and any sharding gives
    the same sample, and shards' samples merge exactly (keep the ``size`` smallest of the union).

    Hashing the words rather than the position keeps exact copies together: a text that stands 10 times
    is drawn with all its copies or not at all, so the sample holds copies in the share the data does.
    Ties (copies) are broken by the text itself, so the sample is one well-defined multiset.
    """

    def __init__(self, size: int, seed: int = 0, items: list[tuple[int, str]] | None = None) -> None:
        self.size, self.seed = size, seed
        self.items: list[tuple[int, str]] = list(items or [])
        self._salt = str(seed).encode()[:64]
        self.cut: int | None = None  # once full, the largest key kept: a text above it can never enter
        self._trim()

    def key(self, normal: str) -> int:
        """The seeded 64-bit hash of a normalised text."""
        return int.from_bytes(hashlib.blake2b(normal.encode(), digest_size=8, key=self._salt).digest(), "little")

    def add(self, key: int, text: str) -> None:
        """Offer one text with its :meth:`key`; kept while it is among the ``size`` smallest so far."""
        if self.cut is not None and key > self.cut:
            return
        self.items.append((key, text))
        if len(self.items) >= 2 * self.size:
            self._trim()

    def _trim(self) -> None:
        self.items.sort()
        del self.items[self.size:]
        if len(self.items) == self.size and self.size:
            self.cut = self.items[-1][0]

    def merge(self, other: Sample) -> Sample:
        """Fold another shard's sample into this one (the ``size`` smallest of both) and return self."""
        self.items += other.items
        self._trim()
        return self

    def texts(self) -> list[str]:
        """The sample's texts, in key order (a fixed order, whatever the data's)."""
        self._trim()
        return [t for _, t in self.items]


@dataclass
class ShardScan:
    """What one pass over (a shard of) the data found, text by text. :meth:`merge` is exact.

    Positions are ``(file index, index in the file)``: comparable across shards, and turned into a
    text's index in the whole dataset once every file's count is known (:meth:`index_of`). ``digests``:
    every text's 64-bit hash of its normalised words (8 bytes a text), to count exact copies over the
    whole data; ``sample``: the diversity sample (:class:`Sample`).
    """

    files: dict[int, int] = field(default_factory=dict)
    provenance: Counter = field(default_factory=Counter)
    has_provenance: bool = False
    outliers: int = 0
    outlier_examples: list[tuple[tuple[int, int], str]] = field(default_factory=list)
    leaks: LeakTally = field(default_factory=LeakTally)
    outlier_rules: Counter = field(default_factory=Counter)
    digests: array = field(default_factory=lambda: array("Q"))
    sample: Sample = field(default_factory=lambda: Sample(SAMPLE_SIZE))

    EXAMPLES = 5

    @property
    def num_texts(self) -> int:
        """Texts scanned, over every file of the shard."""
        return sum(self.files.values())

    def add(self, position: tuple[int, int], text: str, label: str | None, checks: GoldChecks,
            words: list[str] | None = None, grams: np.ndarray | None = None, hashes: np.ndarray | None = None) -> None:
        """Count and check one text (``words``, ``grams``, ``hashes``: its :func:`words_of`, :func:`gram_hashes`
        and :func:`word_hashes`, if at hand)."""
        self.files[position[0]] = self.files.get(position[0], 0) + 1
        self.provenance["unknown" if label is None else label] += 1
        self.has_provenance |= label is not None
        words = words_of(text) if words is None else words
        found = checks.outlier(text, words, hashes)
        if found is not None:
            self.outliers += 1
            self.outlier_rules[found[0]] += 1
            if len(self.outlier_examples) < self.EXAMPLES:
                self.outlier_examples.append((position, found[1]))
        normal = normalized(text, words)
        self.digests.append(text_digest(normal))
        self.sample.add(self.sample.key(normal), text)
        self.leaks.add(position, checks.leaks.find(text, words, grams))

    def merge(self, other: ShardScan) -> ShardScan:
        """Fold another shard's scan into this one and return self."""
        for f, n in other.files.items():
            self.files[f] = self.files.get(f, 0) + n
        self.provenance.update(other.provenance)
        self.has_provenance |= other.has_provenance
        self.outliers += other.outliers
        self.outlier_rules.update(other.outlier_rules)
        self.outlier_examples = sorted(self.outlier_examples + other.outlier_examples)[:self.EXAMPLES]
        self.leaks.merge(other.leaks)
        self.digests.extend(other.digests)
        self.sample.merge(other.sample)
        return self

    @property
    def exact_duplicates(self) -> int:
        """Texts that repeat an earlier text word for word (up to case, punctuation and spacing)."""
        return self.num_texts - int(np.unique(np.frombuffer(self.digests, dtype=np.uint64)).size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state, for a shard's scan to be stored and merged elsewhere."""
        return {"files": sorted(self.files.items()), "provenance": dict(self.provenance),
                "has_provenance": self.has_provenance, "outliers": self.outliers,
                "outlier_examples": [[list(pos), why] for pos, why in self.outlier_examples],
                "leaks": self.leaks.to_dict(), "outlier_rules": dict(self.outlier_rules),
                "digests": base64.b64encode(self.digests.tobytes()).decode(),
                "sample": {"size": self.sample.size, "seed": self.sample.seed, "items": self.sample.items}}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ShardScan:
        """A scan from :meth:`to_dict`'s output."""
        digests = array("Q")
        digests.frombytes(base64.b64decode(state["digests"]))
        sample = state["sample"]
        return cls(dict(state["files"]), Counter(state["provenance"]), state["has_provenance"], state["outliers"],
                   [(tuple(pos), why) for pos, why in state["outlier_examples"]], LeakTally.from_dict(state["leaks"]),
                   Counter(state["outlier_rules"]), digests,
                   Sample(sample["size"], sample["seed"], [(int(k), t) for k, t in sample["items"]]))

    def offsets(self) -> dict[int, int]:
        """Index in the whole dataset of each file's first text."""
        out, total = {}, 0
        for f in sorted(self.files):
            out[f] = total
            total += self.files[f]
        return out

    def index_of(self, position: tuple[int, int]) -> int:
        """Index in the whole dataset of a (file, line) position."""
        return self.offsets()[position[0]] + position[1]


# --------------------------------------------------------------------- audit
@dataclass(frozen=True)
class Verdict:
    """One check's verdict, decided once (:func:`decide`) for the result, its ``failures`` and every report of it
    (the command line's table prints ``word``).

    ``check``: a judged diversity metric's name, ``"diversity sample"``, ``"near-duplicates"``, ``"outliers"``,
    ``"human share"`` (with ``min_human_fraction``) or ``"gold leakage"``. ``word``: ``"ok"``; an alert's
    severity below ``fail_on`` (``"warn"``: reported, passing); ``"FAIL"``, or ``"FAIL (warn)"`` /
    ``"FAIL (critical)"`` for an alert at or beyond ``fail_on``; ``"not judged"`` (a metric of a sample too small
    to judge). ``value`` and ``bound``: the figure and the bound it was held to (the diversity sample: texts per
    round against ``min_outputs``; a metric: neither, its alert says). ``failures``: why it failed, as
    :attr:`AuditResult.failures` lists them.
    """

    check: str
    word: str
    value: float | None = None
    bound: float | None = None
    failures: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        """True when the check fails the audit (it has ``failures``)."""
        return bool(self.failures)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict (``AuditResult.to_dict()["verdicts"]``)."""
        return {"check": self.check, "word": self.word, "value": self.value, "bound": self.bound,
                "failures": list(self.failures)}


@dataclass
class AuditResult:
    """What an audit found. ``passed`` is False when any ``failures`` exist.

    Texts are numbered from 0, in reading order (a folder's files in sorted order of their paths, each
    file's records in order, empty texts skipped): ``near_duplicate_examples``, ``outlier_examples`` and
    the leakage examples give these indices.

    ``metrics``: the diversity sample's metrics, the mean over ``sample_rounds`` rounds of
    ``sample_size // sample_rounds`` texts each (each round is judged against gold at the same count);
    ``exact_duplicate_fraction``, ``near_duplicate_fraction``, ``outlier_fraction``, ``provenance`` and
    ``gold_leakage`` count every text. ``gold_leakage``: gold texts found in the data (see
    :meth:`LeakTally.report`); ``engine``: how the data was read (``"single process"`` or the datatrove
    executor and its task count).
    """

    num_texts: int
    sample_size: int
    metrics: dict[str, float]
    reference: dict[str, float]
    alerts: list[Alert]
    near_duplicate_fraction: float
    near_duplicate_examples: list[tuple[int, int, float]]
    outlier_fraction: float
    outlier_examples: list[tuple[int, str]]
    provenance: dict[str, int]
    failures: list[str] = field(default_factory=list)
    gold_leakage: dict[str, Any] = field(default_factory=dict)
    engine: str = "single process"
    sample_rounds: int = 1
    exact_duplicate_fraction: float = 0.0
    outlier_rules: dict[str, int] = field(default_factory=dict)
    near_duplicate_definition: str = ""
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The verdict, failures, metrics and findings as a JSON-ready dict."""
        return {"passed": self.passed, "failures": self.failures, "num_texts": self.num_texts,
                "sample_size": self.sample_size, "sample_rounds": self.sample_rounds, "metrics": self.metrics,
                "reference": self.reference, "alerts": [a.to_dict() for a in self.alerts],
                "exact_duplicate_fraction": self.exact_duplicate_fraction,
                "near_duplicate_fraction": self.near_duplicate_fraction,
                "near_duplicate_definition": self.near_duplicate_definition,
                "near_duplicate_examples": self.near_duplicate_examples, "outlier_fraction": self.outlier_fraction,
                "outlier_rules": self.outlier_rules, "outlier_examples": self.outlier_examples,
                "provenance": self.provenance, "gold_leakage": self.gold_leakage, "engine": self.engine,
                "verdicts": [v.to_dict() for v in self.verdicts]}


_SHARE = Interval(float, 0, 1)
SETTINGS: dict[str, tuple[tuple[Constraint, ...], str | None]] = {
    "max_length": ((Interval(int, 1, None),), "the tokens each sampled text is cut to"),
    "max_near_duplicates": ((_SHARE,), "a share of the texts: 0.05 fails above 5%"),
    "max_outliers": ((_SHARE,), "a share of the texts: 0.05 fails above 5%"),
    "min_human_fraction": ((_SHARE, NONE), "a share of the texts (0.2: at least 20% human), or None for no floor"),
    "max_gold_leakage": ((_SHARE,), "a share of the gold set's texts: 0 fails on any leaked gold text"),
    "leak_containment": ((FRACTION,), "the share of a gold text's word 5-grams a text must hold to leak it"),
    "fail_on": ((OneOf("warn", "critical"),), "the alert severity that fails the audit"),
    "seed": ((Interval(int, None, None),), None),
    "sample_size": ((Interval(int, 1, None),), "the texts in the diversity sample (default 2000)"),
}
"""Each :class:`AuditSettings` field's constraints (:func:`collapseguard._validation.validate`) and fix; the
command line holds its audit flags to the same."""


@dataclass(frozen=True)
class AuditSettings:
    """How an audit measures and judges; validated on creation (errors name the setting).

    ``sample_size``: texts in the diversity sample (default 2,000), measured in rounds of as many texts
    as gold offers references; the other checks count every text.
    """

    thresholds: Thresholds | str | dict | None = None
    max_length: int = 64
    max_near_duplicates: float = 0.05
    max_outliers: float = 0.05
    min_human_fraction: float | None = None
    max_gold_leakage: float = 0.0
    leak_containment: float = LEAK_CONTAINMENT
    fail_on: str = "critical"
    seed: int = 0
    sample_size: int = SAMPLE_SIZE

    def __post_init__(self) -> None:
        for name, (constraints, fix) in SETTINGS.items():
            # sample_size refused every bad value with ValueError before: a wrong type still is one too
            validate("AuditSettings", name, getattr(self, name), *constraints, fix=fix,
                     type_error=ArgumentTypeError if name == "sample_size" else TypeError)

    def monitor(self, gold: GoldSet, tokenizer: Any = None) -> CollapseMonitor:
        """The monitor that measures the diversity sample (one check: patience cannot apply to data seen once)."""
        if gold.kind != "text":
            raise ValueError("audit compares texts with a text gold set; this gold set holds arrays")
        return CollapseMonitor(gold, Thresholds.coerce(self.thresholds).replace(alert_patience=1),
                               tokenizer=tokenizer if tokenizer is not None else SimpleTokenizer(),
                               prompt_length=1, max_new_tokens=self.max_length)

    def scan(self) -> ShardScan:
        """An empty scan that samples as these settings say."""
        return ShardScan(sample=Sample(self.sample_size, self.seed))


def measure_sample(monitor: CollapseMonitor, texts: Sequence[str]) -> tuple[dict[str, float], int]:
    """The sample's metrics: the mean over rounds of as many texts as gold offers references (so that each
    round is compared with gold at the same count, as count-sensitive metrics need), and the rounds."""
    per_round = min(len(monitor.split), len(texts))
    rounds = max(len(texts) // per_round, 1) if per_round else 0
    if not rounds:
        return {"num_outputs": 0.0}, 0
    measured = [monitor.measure(list(texts[r * per_round:(r + 1) * per_round])).compute() for r in range(rounds)]
    metrics = {}
    for name in measured[0]:
        values = np.array([m[name] for m in measured], dtype=np.float64)
        defined = values[~np.isnan(values)]
        metrics[name] = float(defined.mean()) if defined.size else float("nan")  # undefined in a round: left out
    return metrics, rounds


def judge(scan: ShardScan, monitor: CollapseMonitor, settings: AuditSettings, *, near_duplicates: int,
          near_duplicate_examples: list[tuple[int, int, float]], engine: str = "single process") -> AuditResult:
    """The verdict on merged findings: the same for one process and for any number of shards.

    ``scan``: every text's findings (and the diversity sample), merged; ``near_duplicates``: texts that
    near-copy another (:data:`NEAR_DUPLICATE_DEFINITION`).
    """
    n = scan.num_texts
    if not n:
        raise ValueError("the dataset holds no texts to audit")
    metrics, rounds = measure_sample(monitor, scan.sample.texts())
    per_round = int(metrics["num_outputs"])
    monitor.start_from_gold(per_round)  # data, not a model that learns: judged against gold at once
    with silenced_alerts():  # the audit reports its findings itself
        result = monitor.judge(metrics, step=0)
    dup = near_duplicates / n
    index_of = scan.index_of  # (file, line) -> the text's index in the whole dataset

    provenance = dict(scan.provenance) if scan.has_provenance else {}
    leakage = scan.leaks.report(monitor.gold.texts, settings.leak_containment, index_of)
    rules = dict(sorted(scan.outlier_rules.items()))
    verdicts = decide(result, settings, measured=per_round, min_outputs=monitor.thresholds.min_outputs,
                      num_texts=n, near_duplicates=dup, outliers=scan.outliers / n, outlier_rules=rules,
                      provenance=provenance, leakage=leakage)
    failures = [f for v in verdicts for f in v.failures]
    return AuditResult(n, per_round * rounds, result.metrics, result.reference, result.alerts, dup,
                       sorted(near_duplicate_examples)[:5], scan.outliers / n,
                       [(index_of(p), why) for p, why in scan.outlier_examples], provenance, failures, leakage, engine,
                       sample_rounds=rounds, exact_duplicate_fraction=scan.exact_duplicates / n,
                       outlier_rules=rules, near_duplicate_definition=NEAR_DUPLICATE_DEFINITION,
                       verdicts=verdicts)


def decide(result: CheckResult, settings: AuditSettings, *, measured: int, min_outputs: int, num_texts: int,
           near_duplicates: float, outliers: float, outlier_rules: dict[str, int], provenance: dict[str, int],
           leakage: dict[str, Any]) -> list[Verdict]:
    """Every check's :class:`Verdict`, in the order the audit reports them: the one place an audit's figures
    meet its bounds (both audits' :func:`judge` and the command line's table read these).

    ``result``: the monitor's judgement of the diversity sample (``measured`` texts per round); ``near_duplicates``
    and ``outliers``: shares of the ``num_texts`` texts; ``leakage``: :meth:`LeakTally.report`.
    """
    verdicts = [Verdict("diversity sample", "ok" if result.judged else "FAIL", float(measured), float(min_outputs),
                        () if result.judged else (f"only {measured} texts could be measured, fewer than min_outputs="
                                                  f"{min_outputs}: the diversity checks need more data",))]
    by_metric: dict[str, list[Alert]] = {m: [] for m in result.bounds}
    for alert in result.alerts:
        by_metric.setdefault(alert.metric, []).append(alert)
    for metric, alerts in by_metric.items():
        failing = [a for a in alerts if SEVERITY_RANK[a.severity] >= SEVERITY_RANK[settings.fail_on]]
        worst = max(alerts, key=lambda a: SEVERITY_RANK[a.severity], default=None)
        if not result.judged:
            word = "not judged"
        elif failing and worst is not None:
            word = f"FAIL ({worst.severity})"
        else:
            word = worst.severity if worst is not None else "ok"
        verdicts.append(Verdict(metric, word, failures=tuple(f"{a.severity} {a.phase} alert: {a.message}"
                                                                for a in failing)))

    def bounded(check: str, value: float, bound: float, failure: str | None) -> Verdict:
        return Verdict(check, "FAIL" if failure else "ok", value, bound, (failure,) if failure else ())

    verdicts.append(bounded(
        "near-duplicates", near_duplicates, settings.max_near_duplicates,
        f"{near_duplicates:.1%} of texts are near-duplicates of another ({NEAR_DUPLICATE_DEFINITION}); the bound is "
        f"{settings.max_near_duplicates:.1%}" if near_duplicates > settings.max_near_duplicates else None))
    rules = ", ".join(f"{k} {v}" for k, v in sorted(outlier_rules.items()))
    verdicts.append(bounded(
        "outliers", outliers, settings.max_outliers,
        f"{outliers:.1%} of texts lie far outside gold's spread ({rules}); the bound is {settings.max_outliers:.1%}"
        if outliers > settings.max_outliers else None))
    if settings.min_human_fraction is not None:
        floor = settings.min_human_fraction
        human = provenance.get("human", 0) / num_texts if provenance else None
        if human is None:
            failure: str | None = (f"min_human_fraction={floor} was asked for but the data has no provenance "
                                   "field")
        elif human < floor:
            failure = (f"human share {human:.1%} is below the floor {floor:.1%} (unknown provenance never counts as "
                       "human)")
        else:
            failure = None
        verdicts.append(Verdict("human share", "FAIL" if failure else "ok", human, floor,
                                (failure,) if failure else ()))
    verdicts.append(bounded(
        "gold leakage", leakage["fraction"], settings.max_gold_leakage,
        f"gold leakage: {leakage['leaked']} of the gold set's {leakage['gold_texts']} texts are in the data "
        f"({leakage['exact']} verbatim, {leakage['near']} near-copies holding >= {settings.leak_containment:.0%} of "
        f"their word 5-grams), in {leakage['texts']} text(s); remove them from the data, or judge with a gold set "
        "the data never saw" if leakage["fraction"] > settings.max_gold_leakage else None))
    return verdicts


Records = Callable[[], Iterable[tuple[int, int, str, "str | None"]]]


def _progress(enabled: bool | None, total: int | None, desc: str, stream: Any = None, **options: Any) -> Any:
    """A tqdm bar on stderr (bytes read, documents, rate); off when stderr is not a terminal (``enabled=None``),
    or when tqdm is not installed (it comes with the ``cli`` extra)."""
    if enabled is False:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
               file=sys.stderr if stream is None else stream, disable=None if enabled is None else not enabled,
               dynamic_ncols=True, **{"leave": False, **options})
    return None if bar.disable else bar


def _read_with_progress(records: Records, bar: Any, bytes_read: Callable[[], int] | None
                        ) -> Iterator[tuple[int, int, str, str | None]]:
    if bar is None:
        yield from records()
        return
    start, seen = time.perf_counter(), 0
    try:
        for docs, record in enumerate(records(), 1):
            yield record
            if docs % 256 == 0:
                now = bytes_read() if bytes_read else 0
                bar.update(now - seen)
                seen = now
                bar.set_postfix_str(f"{docs:,} docs, {docs / max(time.perf_counter() - start, 1e-9):,.0f} docs/s",
                                    refresh=False)
        if bytes_read:
            bar.update(bytes_read() - seen)
    finally:
        bar.close()


def _audit_records(records: Records, gold: GoldSet, settings: AuditSettings, tokenizer: Any = None, *,
                   progress: bool | None = False, size: int | None = None,
                   bytes_read: Callable[[], int] | None = None) -> AuditResult:
    """Two streamed passes over ``records()`` (which must give the same records, in the same order, each call);
    the second reads only up to the last text of a candidate near-duplicate pair, and not at all without one."""
    monitor = settings.monitor(gold, tokenizer)
    checks = GoldChecks(gold.texts, leak_containment=settings.leak_containment)
    scan, index = settings.scan(), BandIndex(NUM_PERM, BANDS)
    a, b = permutations(NUM_PERM)
    batch: list[np.ndarray] = []
    try:
        bar = _progress(progress, size, "audit: reading")
        for fi, li, text, label in _read_with_progress(records, bar, bytes_read):
            words = words_of(text)
            hashes = word_hashes(words)
            grams = gram_hashes(words, SHINGLE, hashes)
            batch.append(signature(grams, a, b))
            if len(batch) == 4096:
                index.add(np.stack(batch))
                batch = []
            scan.add((fi, li), text, label, checks, words, grams, hashes)
        if batch:
            index.add(np.stack(batch))
        candidates = index.pairs(MINHASH_PREFILTER)
    finally:
        index.close()
    if not scan.num_texts:
        raise ValueError("the dataset holds no texts to audit")
    check = _PairCheck(candidates, NEAR_DUPLICATE_JACCARD)
    if check.last:
        bar = _progress(progress, None, f"audit: checking {len(candidates):,} candidate near-duplicate pairs")
        for g, (_, _, text, _) in enumerate(_read_with_progress(records, bar, bytes_read)):
            check.feed(g, text)  # records come in index order
            if g >= check.end:
                break
    pairs = check.result()
    return judge(scan, monitor, settings, near_duplicates=components(pairs), near_duplicate_examples=pairs)


def audit_texts(texts: Sequence[str], gold: GoldSet, *, thresholds: Thresholds | str | dict | None = None,
                labels: Sequence[str] | None = None, tokenizer: Any = None, max_length: int = 64,
                max_near_duplicates: float = 0.05, max_outliers: float = 0.05, min_human_fraction: float | None = None,
                max_gold_leakage: float = 0.0, leak_containment: float = LEAK_CONTAINMENT,
                fail_on: str = "critical", seed: int = 0, sample_size: int = SAMPLE_SIZE) -> AuditResult:
    """Audit ``texts`` against ``gold``.

    Diversity: a sample of ``sample_size`` texts (chosen by a seeded hash of their words, so that order and
    sharding do not matter; see :class:`Sample`), each cut to ``max_length`` tokens, is judged by a
    :class:`CollapseMonitor` exactly as model outputs are, in rounds of as many texts as gold offers
    references (the metrics are the rounds' mean); an alert of severity ``fail_on`` or worse fails the audit.
    Counted over every text: exact copies; near-duplicates (:data:`NEAR_DUPLICATE_DEFINITION`) above
    ``max_near_duplicates`` of the texts; outliers (far outside gold's spread, see :class:`_OutlierRule`)
    above ``max_outliers``; a human share below ``min_human_fraction`` (when ``labels`` are given); gold
    texts found in the data above ``max_gold_leakage`` of the gold set (default 0: any leaked gold text;
    see :mod:`collapseguard.audit.leakage` for ``leak_containment``). Findings name texts by 0-based index.

    Raises:
        ValueError: no texts, or a bad setting (named).
    """
    settings = AuditSettings(thresholds, max_length, max_near_duplicates, max_outliers, min_human_fraction,
                             max_gold_leakage, leak_containment, fail_on, seed, sample_size)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"labels has {len(labels)} entries for {len(texts)} texts: give one provenance label per text")
    keep = [i for i, t in enumerate(texts) if isinstance(t, str)]
    if not keep:
        raise ValueError("the dataset holds no texts to audit")
    records = [(0, k, texts[i], labels[i] if labels is not None and labels[i] is not None
                else ("unknown" if labels is not None else None)) for k, i in enumerate(keep)]
    return _audit_records(lambda: records, gold, settings, tokenizer)


def audit_path(data: str | Path, gold: GoldSet, *, text_field: str = "text",
               provenance_field: str | None = "provenance", tokenizer: Any = None, progress: bool | None = None,
               **settings: Any) -> AuditResult:
    """Audit a file or folder (see :class:`DataSource`) in one process, streaming it; never loaded whole.

    ``settings`` are :func:`audit_texts`'s (``thresholds``, ``max_near_duplicates``, ``sample_size``, ...);
    the result equals ``audit_texts(*read_texts(data), ...)``. ``progress``: a progress bar on stderr
    (bytes and documents read, rate; needs tqdm); None (default) shows it only when stderr is a terminal.
    """
    config = AuditSettings(**settings)
    source = DataSource(data, text_field=text_field, provenance_field=provenance_field)
    return _audit_records(source.records, gold, config, tokenizer, progress=progress, size=source.size_on_disk,
                          bytes_read=lambda: source.bytes_read)
