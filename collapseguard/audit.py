"""Screen an incoming dataset before it is trained on: diversity against gold, near-duplicates, outliers, provenance.

A dataset that a model wrote is narrower than human text long before anyone
reads it: fewer distinct phrases, fewer rare words, many near-copies. The audit
measures a sample of the data exactly as the guard measures a model's outputs
(same metrics, same gold reference of the same count and length, same
thresholds), and adds what only a dataset has: near-duplicate pairs over the
whole set, texts far outside the gold set's range, and the provenance mix.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collapseguard.alerts import SEVERITY_RANK, Alert, silenced_alerts
from collapseguard.goldset import GoldSet
from collapseguard.monitor import CollapseMonitor
from collapseguard.provenance import normalize_label
from collapseguard.thresholds import Thresholds
from collapseguard.tokenize import SimpleTokenizer

_WORDS = re.compile(r"\w+")
_MERSENNE = np.uint64((1 << 61) - 1)


# ------------------------------------------------------------------ reading
def read_texts(path: str | Path, *, text_field: str = "text", provenance_field: str | None = "provenance"
               ) -> tuple[list[str], list[str] | None]:
    """Texts (and provenance labels, where the records have them) from JSONL, text or parquet.

    ``.jsonl``/``.json``: one JSON object per line, text in ``text_field``. ``.parquet``: the
    ``text_field`` column (needs pyarrow). Anything else is read as text, one item per
    non-empty line.

    Raises:
        FileNotFoundError, ValueError (a record without ``text_field``), ImportError (parquet without pyarrow).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DATA={str(path)!r}: no such file")
    rows: list[dict[str, Any]]
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{i} is not a JSON line ({exc.msg})") from None
    elif path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("reading parquet needs pyarrow: pip install pyarrow") from None
        names = pq.read_schema(path).names
        rows = pq.read_table(path, columns=[c for c in (text_field, provenance_field) if c in names]).to_pylist()
    else:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()], None
    texts = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{path}: record {i} has no string field {text_field!r} (it has {keys}); "
                             "pass --text-field with the right name")
        texts.append(row[text_field])
    labels = None
    if provenance_field and any(provenance_field in r for r in rows):
        labels = [normalize_label(r.get(provenance_field)) for r in rows]
    return texts, labels


# ------------------------------------------------------------ near-duplicates
def _shingles(text: str, k: int) -> np.ndarray:
    words = _WORDS.findall(text.lower())
    grams = {" ".join(words[i:i + k]) for i in range(max(len(words) - k + 1, 1))} if words else {""}
    return np.array([int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") >> 3
                     for g in grams], dtype=np.uint64)


def minhash_signatures(texts: Sequence[str], *, num_perm: int = 64, shingle: int = 5, seed: int = 0) -> np.ndarray:
    """MinHash signatures (``len(texts)`` × ``num_perm``) of each text's word ``shingle``-grams.

    Two texts agree in each column with probability equal to the Jaccard similarity of their
    shingle sets (Broder, 1997); hashes are ``(a·h + b) mod (2^61 − 1)`` with fixed random a, b.

    >>> sig = minhash_signatures(["a b c d e f g", "a b c d e f g", "x y z w v u t"], shingle=3)
    >>> bool((sig[0] == sig[1]).all()), float((sig[0] == sig[2]).mean())
    (True, 0.0)
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 61, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 61, size=num_perm, dtype=np.uint64)
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    for i, text in enumerate(texts):
        h = _shingles(text, shingle)[:, None]
        # (a*h) overflows 64 bits; wrapping is fine for hashing, then fold into the prime field
        with np.errstate(over="ignore"):
            out[i] = ((a * h + b) % _MERSENNE).min(axis=0)
    return out


def near_duplicate_pairs(texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 64, bands: int = 16,
                         shingle: int = 5) -> list[tuple[int, int, float]]:
    """Pairs (i, j, Jaccard) of texts whose shingle sets overlap at least ``threshold``.

    Candidates come from MinHash LSH (``bands`` bands of ``num_perm / bands`` rows), each is then
    verified with the exact Jaccard similarity, so no reported pair is a false positive.
    """
    if num_perm % bands:
        raise ValueError(f"num_perm={num_perm} must be a multiple of bands={bands}")
    sig = minhash_signatures(texts, num_perm=num_perm, shingle=shingle)
    rows = num_perm // bands
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, key in enumerate(sig[:, band * rows:(band + 1) * rows]):
            buckets.setdefault(key.tobytes(), []).append(i)
        for members in buckets.values():
            if 1 < len(members) <= 1000:  # a giant bucket is an exact-duplicate flood: counted below anyway
                candidates.update((members[x], members[y]) for x in range(len(members))
                                  for y in range(x + 1, len(members)))
            elif len(members) > 1000:
                candidates.update((members[0], m) for m in members[1:])
    sets = {}
    pairs = []
    for i, j in sorted(candidates):
        for k in (i, j):
            if k not in sets:
                sets[k] = set(_shingles(texts[k], shingle).tolist())
        jac = len(sets[i] & sets[j]) / max(len(sets[i] | sets[j]), 1)
        if jac >= threshold:
            pairs.append((i, j, jac))
    return pairs


def _components(n: int, pairs: Sequence[tuple[int, int, float]]) -> int:
    """Texts that are a near-copy of an earlier one (n minus the number of clusters they form)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    involved = {k for i, j, _ in pairs for k in (i, j)}
    return len(involved) - len({find(k) for k in involved})


# --------------------------------------------------------------------- audit
@dataclass
class AuditResult:
    """What :func:`audit_texts` found. ``passed`` is False when any ``failures`` exist."""

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

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": self.failures, "num_texts": self.num_texts,
                "sample_size": self.sample_size, "metrics": self.metrics, "reference": self.reference,
                "alerts": [a.to_dict() for a in self.alerts], "near_duplicate_fraction": self.near_duplicate_fraction,
                "near_duplicate_examples": self.near_duplicate_examples, "outlier_fraction": self.outlier_fraction,
                "outlier_examples": self.outlier_examples, "provenance": self.provenance}


def _outliers(texts: Sequence[str], gold: Sequence[str], tokenizer: SimpleTokenizer) -> list[tuple[int, str]]:
    """Texts whose length or share of words unseen in gold lies beyond gold's own 0.5–99.5% range."""
    gold_vocab = set(_WORDS.findall(" ".join(gold).lower()))

    def features(t: str) -> tuple[int, float]:
        words = _WORDS.findall(t.lower())
        return len(words), (sum(w not in gold_vocab for w in words) / len(words)) if words else 1.0

    # a gold text's unseen share against the rest of gold would need leave-one-out vocabularies;
    # gold's own words are all seen, so the bound for novelty is set from a split of gold
    half = len(gold) // 2
    seen = set(_WORDS.findall(" ".join(gold[:half]).lower()))
    novel = [sum(w not in seen for w in ws) / len(ws) for ws in (_WORDS.findall(t.lower()) for t in gold[half:]) if ws]
    lengths = [features(t)[0] for t in gold]
    lo, hi = np.percentile(lengths, [0.5, 99.5])
    novel_hi = float(np.percentile(novel, 99.5)) if novel else 1.0
    out = []
    for i, t in enumerate(texts):
        n, unseen = features(t)
        if n < lo or n > hi:
            out.append((i, f"{n} words; gold spans {lo:.0f}–{hi:.0f}"))
        elif unseen > novel_hi:
            out.append((i, f"{unseen:.0%} of words unseen in gold; gold's own held-out share reaches {novel_hi:.0%}"))
    return out


def audit_texts(texts: Sequence[str], gold: GoldSet, *, thresholds: Thresholds | str | dict | None = None,
                labels: Sequence[str] | None = None, tokenizer: Any = None, max_length: int = 64,
                max_near_duplicates: float = 0.05, max_outliers: float = 0.05, min_human_fraction: float | None = None,
                fail_on: str = "critical", seed: int = 0) -> AuditResult:
    """Audit ``texts`` against ``gold``.

    Diversity: a random sample of the texts (as many as gold offers references), each cut to
    ``max_length`` tokens, is judged by a :class:`CollapseMonitor` exactly as model outputs are;
    an alert of severity ``fail_on`` or worse fails the audit. Near-duplicates (word 5-gram
    Jaccard ≥ 0.8) above ``max_near_duplicates`` of the texts, outliers above ``max_outliers``,
    or a human share below ``min_human_fraction`` (when ``labels`` are given) fail it too.

    Raises:
        ValueError: no texts, or a bad setting (named).
    """
    if fail_on not in ("warn", "critical"):
        raise ValueError(f"fail_on={fail_on!r} must be 'warn' or 'critical'")
    for name, value in (("max_near_duplicates", max_near_duplicates), ("max_outliers", max_outliers)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value!r} must be a fraction in [0, 1]")
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"labels has {len(labels)} entries for {len(texts)} texts: give one provenance label per text")
    keep = [i for i, t in enumerate(texts) if isinstance(t, str)]
    texts = [texts[i] for i in keep]
    labels = [labels[i] for i in keep] if labels is not None else None
    if not texts:
        raise ValueError("the dataset holds no texts to audit")
    if gold.kind != "text":
        raise ValueError("audit compares texts with a text gold set; this gold set holds arrays")
    tokenizer = tokenizer if tokenizer is not None else SimpleTokenizer()
    # one check: patience (consecutive checks) cannot apply to a dataset seen once
    monitor = CollapseMonitor(gold, Thresholds.coerce(thresholds).replace(patience=1), tokenizer=tokenizer,
                              prompt_length=1, max_new_tokens=max_length)
    size = min(len(texts), len(monitor.split))
    pick = np.sort(np.random.default_rng(seed).choice(len(texts), size=size, replace=False))
    monitor.start_from_gold(size)  # data, not a model that learns: judged against gold at once
    with silenced_alerts():  # the audit reports its findings itself
        result = monitor.check([texts[i] for i in pick], step=0)
    pairs = near_duplicate_pairs(texts)
    dup = _components(len(texts), pairs) / len(texts)
    outliers = _outliers(texts, list(gold.texts), tokenizer)
    provenance = dict(Counter(labels)) if labels is not None else {}
    failures: list[str] = []
    if not result.judged:
        failures.append(f"only {size} texts could be measured, fewer than min_outputs={monitor.thresholds.min_outputs}: "
                        "the diversity checks need more data")
    failures += [f"{a.severity} {a.phase} alert: {a.message}" for a in result.alerts
                if SEVERITY_RANK[a.severity] >= SEVERITY_RANK[fail_on]]
    if dup > max_near_duplicates:
        failures.append(f"{dup:.1%} of texts are near-duplicates of another (word 5-gram Jaccard >= 0.8); "
                        f"the bound is {max_near_duplicates:.1%}")
    if len(outliers) / len(texts) > max_outliers:
        failures.append(f"{len(outliers) / len(texts):.1%} of texts lie outside gold's range (length or unseen "
                        f"words); the bound is {max_outliers:.1%}")
    if min_human_fraction is not None:
        human = provenance.get("human", 0) / len(texts) if labels is not None else 0.0
        if labels is None:
            failures.append(f"min_human_fraction={min_human_fraction} was asked for but the data has no provenance field")
        elif human < min_human_fraction:
            failures.append(f"human share {human:.1%} is below the floor {min_human_fraction:.1%} "
                            "(unknown provenance never counts as human)")
    return AuditResult(len(texts), size, result.metrics, result.reference, result.alerts, dup, pairs[:5],
                       len(outliers) / len(texts), outliers[:5], provenance, failures)
