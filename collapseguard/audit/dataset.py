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

import gzip
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collapseguard.audit.leakage import LEAK_CONTAINMENT, GoldLeakIndex, LeakTally
from collapseguard.audit.shingles import (
    WORDS,
    BandIndex,
    components,
    hash_grams,
    jaccard,
    minhash_signatures,
    permutations,
    shingle_hashes,
    signature,
    word_grams,
    words_of,
)
from collapseguard.detection.alerts import SEVERITY_RANK, Alert, silenced_alerts
from collapseguard.detection.monitor import CollapseMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet, json_lines
from collapseguard.gold.provenance import normalize_label
from collapseguard.gold.tokenization import SimpleTokenizer
from collapseguard.metrics.suite import MetricSuite

__all__ = ["AuditResult", "DataSource", "ShardScan", "audit_path", "audit_texts", "judge", "minhash_signatures",
           "near_duplicate_pairs", "read_texts"]

NEAR_DUPLICATE_JACCARD = 0.8
# LSH candidates whose MinHash estimate (64 rows) is below this skip the exact check: a pair at the 0.8 bound
# estimates below 0.5 with probability under 1e-6, and pairs that merely share a sentence or two (many, in a
# large corpus) are never held
MINHASH_PREFILTER = 0.5
NUM_PERM, BANDS, SHINGLE = 64, 16, 5
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
        """(file index, index in the file, text, provenance label or None where the record has no field)."""
        for fi, name in enumerate(self.files):
            for li, (text, label) in enumerate(self._read(self.root / name)):
                yield fi, li, text, label

    def _label(self, row: dict[str, Any]) -> str | None:
        field_ = self.provenance_field
        return normalize_label(row.get(field_)) if field_ and field_ in row else None

    def _read(self, path: Path) -> Iterator[tuple[str, str | None]]:
        if self.kind == "jsonl":
            for i, row in json_lines(path, gzip.open if path.name.lower().endswith(".gz") else open):
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
                for row in batch.to_pylist():
                    text = text_of(row, self.text_field, f"{path}: record {i}")
                    i += 1
                    if text is not None:
                        yield text, self._label(row)
        else:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    for part in line.splitlines():  # the separators str.splitlines knows, as before
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
    until its last partner has come, so memory holds the pairs still open, not the data."""

    def __init__(self, candidates: np.ndarray, threshold: float, shingle: int = SHINGLE) -> None:
        self.threshold, self.shingle, self.pairs = threshold, shingle, []
        self.partners: dict[int, list[int]] = {}
        self.last: dict[int, int] = {}
        for i, j in candidates.tolist():
            self.partners.setdefault(j, []).append(i)
            self.last[i] = max(self.last.get(i, -1), j)
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
class _OutlierRule:
    """Texts whose length or share of words unseen in gold lies beyond gold's own 0.5–99.5% range."""

    def __init__(self, gold: Sequence[str]) -> None:
        self.gold_vocab = set(WORDS.findall(" ".join(gold).lower()))
        # a gold text's unseen share against the rest of gold would need leave-one-out vocabularies;
        # gold's own words are all seen, so the bound for novelty is set from a split of gold
        half = len(gold) // 2
        seen = set(WORDS.findall(" ".join(gold[:half]).lower()))
        novel = [sum(w not in seen for w in ws) / len(ws) for ws in (WORDS.findall(t.lower()) for t in gold[half:])
                 if ws]
        lengths = [len(WORDS.findall(t.lower())) for t in gold]
        self.lo, self.hi = np.percentile(lengths, [0.5, 99.5])
        self.novel_hi = float(np.percentile(novel, 99.5)) if novel else 1.0

    def __call__(self, text: str, words: list[str] | None = None) -> str | None:
        words = words_of(text) if words is None else words
        n = len(words)
        vocab = self.gold_vocab
        unseen = (len([w for w in words if w not in vocab]) / n) if words else 1.0
        if n < self.lo or n > self.hi:
            return f"{n} words; gold spans {self.lo:.0f}–{self.hi:.0f}"
        if unseen > self.novel_hi:
            return f"{unseen:.0%} of words unseen in gold; gold's own held-out share reaches {self.novel_hi:.0%}"
        return None


class GoldChecks:
    """What each text is checked against: gold's range (outliers) and gold's texts (leakage)."""

    def __init__(self, gold_texts: Sequence[str], *, leak_containment: float = LEAK_CONTAINMENT) -> None:
        self.outlier = _OutlierRule(list(gold_texts))
        self.leaks = GoldLeakIndex(gold_texts, containment=leak_containment, shingle=SHINGLE)


@dataclass
class ShardScan:
    """What one pass over (a shard of) the data found, text by text. :meth:`merge` is exact.

    Positions are ``(file index, index in the file)``: comparable across shards, and turned into a
    text's index in the whole dataset once every file's count is known (:meth:`index_of`).
    """

    files: dict[int, int] = field(default_factory=dict)
    provenance: Counter = field(default_factory=Counter)
    has_provenance: bool = False
    outliers: int = 0
    outlier_examples: list[tuple[tuple[int, int], str]] = field(default_factory=list)
    leaks: LeakTally = field(default_factory=LeakTally)

    EXAMPLES = 5

    @property
    def num_texts(self) -> int:
        """Texts scanned, over every file of the shard."""
        return sum(self.files.values())

    def add(self, position: tuple[int, int], text: str, label: str | None, checks: GoldChecks,
            words: list[str] | None = None, grams: set[str] | None = None) -> None:
        """Count and check one text (``words``, ``grams``: its :func:`words_of` and word 5-grams, if at hand)."""
        self.files[position[0]] = self.files.get(position[0], 0) + 1
        self.provenance["unknown" if label is None else label] += 1
        self.has_provenance |= label is not None
        words = words_of(text) if words is None else words
        why = checks.outlier(text, words)
        if why is not None:
            self.outliers += 1
            if len(self.outlier_examples) < self.EXAMPLES:
                self.outlier_examples.append((position, why))
        self.leaks.add(position, checks.leaks.find(text, words, grams))

    def merge(self, other: ShardScan) -> ShardScan:
        """Fold another shard's scan into this one and return self."""
        for f, n in other.files.items():
            self.files[f] = self.files.get(f, 0) + n
        self.provenance.update(other.provenance)
        self.has_provenance |= other.has_provenance
        self.outliers += other.outliers
        self.outlier_examples = sorted(self.outlier_examples + other.outlier_examples)[:self.EXAMPLES]
        self.leaks.merge(other.leaks)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state, for a shard's scan to be stored and merged elsewhere."""
        return {"files": sorted(self.files.items()), "provenance": dict(self.provenance),
                "has_provenance": self.has_provenance, "outliers": self.outliers,
                "outlier_examples": [[list(pos), why] for pos, why in self.outlier_examples],
                "leaks": self.leaks.to_dict()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ShardScan:
        """A scan from :meth:`to_dict`'s output."""
        return cls(dict(state["files"]), Counter(state["provenance"]), state["has_provenance"], state["outliers"],
                   [(tuple(pos), why) for pos, why in state["outlier_examples"]], LeakTally.from_dict(state["leaks"]))

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


def sample_indices(num_texts: int, size: int, seed: int) -> np.ndarray:
    """The texts (indices, ascending) whose diversity is measured: a uniform sample without replacement."""
    return np.sort(np.random.default_rng(seed).choice(num_texts, size=size, replace=False))


# --------------------------------------------------------------------- audit
@dataclass
class AuditResult:
    """What an audit found. ``passed`` is False when any ``failures`` exist.

    ``gold_leakage``: gold texts found in the data (see :meth:`LeakTally.report`); ``engine``: how the
    data was read (``"single process"`` or the datatrove executor and its task count).
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

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The verdict, failures, metrics and findings as a JSON-ready dict."""
        return {"passed": self.passed, "failures": self.failures, "num_texts": self.num_texts,
                "sample_size": self.sample_size, "metrics": self.metrics, "reference": self.reference,
                "alerts": [a.to_dict() for a in self.alerts], "near_duplicate_fraction": self.near_duplicate_fraction,
                "near_duplicate_examples": self.near_duplicate_examples, "outlier_fraction": self.outlier_fraction,
                "outlier_examples": self.outlier_examples, "provenance": self.provenance,
                "gold_leakage": self.gold_leakage, "engine": self.engine}


@dataclass(frozen=True)
class AuditSettings:
    """How an audit measures and judges; validated on creation (errors name the setting)."""

    thresholds: Thresholds | str | dict | None = None
    max_length: int = 64
    max_near_duplicates: float = 0.05
    max_outliers: float = 0.05
    min_human_fraction: float | None = None
    max_gold_leakage: float = 0.0
    leak_containment: float = LEAK_CONTAINMENT
    fail_on: str = "critical"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fail_on not in ("warn", "critical"):
            raise ValueError(f"fail_on={self.fail_on!r} must be 'warn' or 'critical'")
        for name in ("max_near_duplicates", "max_outliers", "max_gold_leakage"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a fraction in [0, 1]")
        if not 0.0 < self.leak_containment <= 1.0:
            raise ValueError(f"leak_containment={self.leak_containment!r} must be in (0, 1]")

    def monitor(self, gold: GoldSet, tokenizer: Any = None) -> CollapseMonitor:
        """The monitor that measures the diversity sample (one check: patience cannot apply to data seen once)."""
        if gold.kind != "text":
            raise ValueError("audit compares texts with a text gold set; this gold set holds arrays")
        return CollapseMonitor(gold, Thresholds.coerce(self.thresholds).replace(alert_patience=1),
                               tokenizer=tokenizer if tokenizer is not None else SimpleTokenizer(),
                               prompt_length=1, max_new_tokens=self.max_length)


def judge(scan: ShardScan, suite: MetricSuite, monitor: CollapseMonitor, settings: AuditSettings, *,
          near_duplicates: int, near_duplicate_examples: list[tuple[int, int, float]],
          engine: str = "single process") -> AuditResult:
    """The verdict on merged findings: the same for one process and for any number of shards.

    ``scan``: every text's findings, merged; ``suite``: the diversity sample's metric states, merged;
    ``near_duplicates``: texts that near-copy another.
    """
    n = scan.num_texts
    if not n:
        raise ValueError("the dataset holds no texts to audit")
    monitor.start_from_gold(suite.num_outputs)  # data, not a model that learns: judged against gold at once
    with silenced_alerts():  # the audit reports its findings itself
        result = monitor.evaluate(suite, step=0)
    size = suite.num_outputs
    dup = near_duplicates / n
    offsets = scan.offsets()

    def index_of(pos: tuple[int, int]) -> int:
        return offsets[pos[0]] + pos[1]

    provenance = dict(scan.provenance) if scan.has_provenance else {}
    leakage = scan.leaks.report(monitor.gold.texts, settings.leak_containment, index_of)
    failures: list[str] = []
    if not result.judged:
        failures.append(f"only {size} texts could be measured, fewer than min_outputs={monitor.thresholds.min_outputs}: "
                        "the diversity checks need more data")
    failures += [f"{a.severity} {a.phase} alert: {a.message}" for a in result.alerts
                 if SEVERITY_RANK[a.severity] >= SEVERITY_RANK[settings.fail_on]]
    if dup > settings.max_near_duplicates:
        failures.append(f"{dup:.1%} of texts are near-duplicates of another (word 5-gram Jaccard >= "
                        f"{NEAR_DUPLICATE_JACCARD}); the bound is {settings.max_near_duplicates:.1%}")
    if scan.outliers / n > settings.max_outliers:
        failures.append(f"{scan.outliers / n:.1%} of texts lie outside gold's range (length or unseen "
                        f"words); the bound is {settings.max_outliers:.1%}")
    if settings.min_human_fraction is not None:
        if not provenance:
            failures.append(f"min_human_fraction={settings.min_human_fraction} was asked for but the data has no "
                            "provenance field")
        elif provenance.get("human", 0) / n < settings.min_human_fraction:
            failures.append(f"human share {provenance.get('human', 0) / n:.1%} is below the floor "
                            f"{settings.min_human_fraction:.1%} (unknown provenance never counts as human)")
    if leakage["fraction"] > settings.max_gold_leakage:
        failures.append(f"gold leakage: {leakage['leaked']} of the gold set's {leakage['gold_texts']} texts are in the "
                        f"data ({leakage['exact']} verbatim, {leakage['near']} near-copies holding >= "
                        f"{settings.leak_containment:.0%} of their word 5-grams), in {leakage['texts']} text(s); "
                        "remove them from the data, or judge with a gold set the data never saw")
    return AuditResult(n, size, result.metrics, result.reference, result.alerts, dup, near_duplicate_examples[:5],
                       scan.outliers / n, [(index_of(p), why) for p, why in scan.outlier_examples], provenance,
                       failures, leakage, engine)


Records = Callable[[], Iterable[tuple[int, int, str, "str | None"]]]


def _audit_records(records: Records, gold: GoldSet, settings: AuditSettings, tokenizer: Any = None) -> AuditResult:
    """Two streamed passes over ``records()`` (which must give the same records, in the same order, each call)."""
    monitor = settings.monitor(gold, tokenizer)
    checks = GoldChecks(gold.texts, leak_containment=settings.leak_containment)
    scan, index = ShardScan(), BandIndex(NUM_PERM, BANDS)
    a, b = permutations(NUM_PERM)
    batch: list[np.ndarray] = []
    try:
        for fi, li, text, label in records():
            words = words_of(text)
            grams = word_grams(words, SHINGLE)
            batch.append(signature(hash_grams(grams), a, b))
            if len(batch) == 4096:
                index.add(np.stack(batch))
                batch = []
            scan.add((fi, li), text, label, checks, words, grams)
        if batch:
            index.add(np.stack(batch))
        check = _PairCheck(index.pairs(MINHASH_PREFILTER), NEAR_DUPLICATE_JACCARD)
    finally:
        index.close()
    if not scan.num_texts:
        raise ValueError("the dataset holds no texts to audit")
    pick = sample_indices(scan.num_texts, min(scan.num_texts, len(monitor.split)), settings.seed)
    wanted = set(pick.tolist())
    sample: dict[int, str] = {}
    for g, (_, _, text, _) in enumerate(records()):  # records come in index order
        if g in wanted:
            sample[g] = text
        check.feed(g, text)
    pairs = check.result()
    suite = monitor.measure([sample[g] for g in pick.tolist()])
    return judge(scan, suite, monitor, settings, near_duplicates=components(pairs), near_duplicate_examples=pairs)


def audit_texts(texts: Sequence[str], gold: GoldSet, *, thresholds: Thresholds | str | dict | None = None,
                labels: Sequence[str] | None = None, tokenizer: Any = None, max_length: int = 64,
                max_near_duplicates: float = 0.05, max_outliers: float = 0.05, min_human_fraction: float | None = None,
                max_gold_leakage: float = 0.0, leak_containment: float = LEAK_CONTAINMENT,
                fail_on: str = "critical", seed: int = 0) -> AuditResult:
    """Audit ``texts`` against ``gold``.

    Diversity: a random sample of the texts (as many as gold offers references), each cut to
    ``max_length`` tokens, is judged by a :class:`CollapseMonitor` exactly as model outputs are;
    an alert of severity ``fail_on`` or worse fails the audit. Near-duplicates (word 5-gram
    Jaccard ≥ 0.8) above ``max_near_duplicates`` of the texts, outliers above ``max_outliers``,
    a human share below ``min_human_fraction`` (when ``labels`` are given), or gold texts found in
    the data above ``max_gold_leakage`` of the gold set (default 0: any leaked gold text;
    see :mod:`collapseguard.audit.leakage` for ``leak_containment``) fail it too.

    Raises:
        ValueError: no texts, or a bad setting (named).
    """
    settings = AuditSettings(thresholds, max_length, max_near_duplicates, max_outliers, min_human_fraction,
                             max_gold_leakage, leak_containment, fail_on, seed)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"labels has {len(labels)} entries for {len(texts)} texts: give one provenance label per text")
    keep = [i for i, t in enumerate(texts) if isinstance(t, str)]
    if not keep:
        raise ValueError("the dataset holds no texts to audit")
    records = [(0, k, texts[i], labels[i] if labels is not None and labels[i] is not None
                else ("unknown" if labels is not None else None)) for k, i in enumerate(keep)]
    return _audit_records(lambda: records, gold, settings, tokenizer)


def audit_path(data: str | Path, gold: GoldSet, *, text_field: str = "text",
               provenance_field: str | None = "provenance", tokenizer: Any = None, **settings: Any) -> AuditResult:
    """Audit a file or folder (see :class:`DataSource`) in one process, streaming it twice; never loaded whole.

    ``settings`` are :func:`audit_texts`'s (``thresholds``, ``max_near_duplicates``, ...); the result
    equals ``audit_texts(*read_texts(data), ...)``.
    """
    config = AuditSettings(**settings)
    source = DataSource(data, text_field=text_field, provenance_field=provenance_field)
    return _audit_records(source.records, gold, config, tokenizer)
