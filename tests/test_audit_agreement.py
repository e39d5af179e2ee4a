"""Both audits (one process, datatrove's local executor) agree on every figure, on data built to sit near the
near-duplicate bound, in any order and any sharding; each figure is checked against a plain-Python reference.

The data is CPython's documentation paragraphs (``train_gold_split()``, shipped with Python): paragraphs,
variants of them cut to a word 5-gram Jaccard similarity spread over 0.62-0.98 (so that many pairs sit on
either side of the 0.8 bound), chains of variants, exact copies (up to case and punctuation) and gold
paragraphs (leakage). The reference finds near-duplicates by comparing every pair's sets of word 5-gram
strings: no hashing, no MinHash.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from collapseguard import GoldSet
from collapseguard.audit import Sample, audit_path, audit_texts
from collapseguard.audit.dataset import NEAR_DUPLICATE_JACCARD, _OutlierRule
from collapseguard.cli import main
from tests.audit_data import corpora, grams, shard, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


@cache
def near_threshold_corpus() -> tuple[list[str], list[str]]:
    """(texts, gold): ~600 texts; about half of the paragraphs have a cut variant near the bound, a few a chain
    of two cuts, some an exact copy; 12 gold paragraphs are planted."""
    clean, _, gold, verbatim, _ = corpora()
    rng = np.random.default_rng(11)
    texts: list[str] = []
    for k, text in enumerate(clean):
        words = text.split()
        texts.append(text)
        if len(words) >= 30 and k % 2 == 0:
            target = rng.uniform(0.62, 0.98)  # a prefix keeps its grams: J = (n - cut) / n of the 5-grams
            n = len(words) - 4
            cut = max(round((1 - target) * n), 1)
            texts.append(" ".join(words[:len(words) - cut]))
            if k % 10 == 0:  # a chain: the cut of the cut may fall below the bound against the original
                texts.append(" ".join(words[:len(words) - 2 * cut]))
        if k % 9 == 0:  # an exact copy, up to case and punctuation
            texts.append(text.upper().replace(",", " ,"))
    texts += [gold[i] for i in verbatim[:12]]
    order = rng.permutation(len(texts))  # copies and variants far from their originals, across shard boundaries
    return [texts[i] for i in order], gold


def reference_near_duplicates(texts: list[str]) -> tuple[set[tuple[int, int]], int]:
    """Every pair with word 5-gram Jaccard >= 0.8 (plain sets of strings), and the texts beyond the first of
    each cluster they form."""
    sets = [grams(t) for t in texts]
    pairs = set()
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            a, b = sets[i], sets[j]
            if a and b and len(a & b) >= NEAR_DUPLICATE_JACCARD * len(a | b):
                pairs.add((i, j))
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[find(i)] = find(j)
    members = {x for p in pairs for x in p}
    return pairs, len(members) - len({find(x) for x in members})


def _order_free(report: dict) -> dict:
    """The figures that do not depend on where texts stand: all of them but the example indices."""
    leak = {k: v for k, v in report["gold_leakage"].items() if k != "examples"}
    return {"passed": report["passed"], "failures": report["failures"], "num_texts": report["num_texts"],
            "sample_size": report["sample_size"], "metrics": report["metrics"], "alerts": report["alerts"],
            "exact_duplicate_fraction": report["exact_duplicate_fraction"],
            "near_duplicate_fraction": report["near_duplicate_fraction"], "outlier_fraction": report["outlier_fraction"],
            "outlier_rules": report["outlier_rules"], "provenance": report["provenance"], "gold_leakage": leak}


def _same(a: dict, b: dict) -> bool:
    """Equal, with NaN equal to NaN (an undefined metric is undefined on both sides)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_near_duplicates_match_an_exact_reference_near_the_bound():
    texts, gold = near_threshold_corpus()
    pairs, removed = reference_near_duplicates(texts)
    sims = [len(grams(texts[i]) & grams(texts[j])) / len(grams(texts[i]) | grams(texts[j])) for i, j in pairs]
    assert len(pairs) > 100 and min(sims) < 0.82  # many pairs just above the bound ...
    result = audit_texts(texts, GoldSet.from_texts(gold), max_near_duplicates=1.0)
    # ... and the audit finds exactly the reference's: LSH proposes a pair at 0.8 with probability 0.9998, and
    # every proposal is checked exactly, so nothing below the bound (0.62-0.8 here, many) is counted
    assert result.near_duplicate_fraction == removed / len(texts)
    assert result.near_duplicate_examples == [(i, j, pytest.approx(s)) for (i, j), s in sorted(zip(pairs, sims, strict=True))][:5]
    norm = Counter(" ".join(t.lower().replace(",", " ").split()) for t in texts)
    assert result.exact_duplicate_fraction == sum(c - 1 for c in norm.values()) / len(texts) > 0


def test_both_audits_give_the_same_figures_in_any_order_and_sharding(tmp_path):
    pytest.importorskip("datatrove", reason="audits at scale need datatrove: pip install 'collapseguard[distributed]'")
    from collapseguard.audit.distributed import run_audit

    texts, gold = near_threshold_corpus()
    gold_set = GoldSet.from_texts(gold)
    labels = ["synthetic" if i % 4 == 0 else "human" for i in range(len(texts))]
    rng = np.random.default_rng(5)
    other = rng.permutation(len(texts))
    shard(tmp_path / "a", texts, 4, labels=labels, gz_first=True)
    shard(tmp_path / "b", [texts[i] for i in other], 5, labels=[labels[i] for i in other])
    settings = {"max_near_duplicates": 0.1, "sample_size": 300}
    single = audit_path(tmp_path / "a", gold_set, progress=False, **settings).to_dict()
    two = run_audit(tmp_path / "a", gold_set, tasks=2, workers=2, work_dir=tmp_path / "w2", **settings).to_dict()
    # 2 tasks above ran as 2 worker processes; these 4 run one after another here: the sharding is the point
    four = run_audit(tmp_path / "b", gold_set, tasks=4, workers=1, work_dir=tmp_path / "w4", **settings).to_dict()
    shuffled = audit_path(tmp_path / "b", gold_set, progress=False, **settings).to_dict()
    # the same order: every field the same, example indices included, float for float (NaN included)
    assert _same({k: v for k, v in two.items() if k != "engine"}, {k: v for k, v in single.items() if k != "engine"})
    # another order and sharding: every figure the same (the sample is chosen by content, not position)
    assert _same(_order_free(four), _order_free(single)) and _same(_order_free(shuffled), _order_free(single))
    assert not single["passed"] and single["near_duplicate_fraction"] > 0.1 and single["gold_leakage"]["leaked"] == 12
    assert any("near-duplicates" in f for f in single["failures"])
    assert single["sample_size"] == 236 and single["sample_rounds"] == 2  # 300 asked: two whole rounds of 118


def test_the_sample_depends_on_the_texts_only_and_keeps_copies_together():
    texts = corpora()[0]
    whole = Sample(40, seed=3)
    for t in texts:
        whole.add(whole.key(" ".join(t.lower().split())), t)
    parts = [Sample(40, seed=3) for _ in range(3)]
    for k, t in enumerate(reversed(texts)):  # another order, dealt out to three shards
        parts[k % 3].add(parts[0].key(" ".join(t.lower().split())), t)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.texts() == whole.texts() and len(whole.texts()) == 40
    # a text's copies hash alike: drawn together or not at all
    doubled = Sample(40, seed=3)
    for t in texts + texts:
        doubled.add(doubled.key(" ".join(t.lower().split())), t)
    assert Counter(Counter(doubled.texts()).values()) == {2: 20}
    assert Sample(40, seed=4).key("a b") != whole.key("a b")  # the seed changes the draw
    with pytest.raises(ValueError, match="AuditSettings: sample_size=0 is invalid: sample_size must be an int >= 1"):
        audit_texts(texts, GoldSet.from_texts(corpora()[2]), sample_size=0)


def test_outliers_are_judged_against_golds_spread_with_a_margin():
    clean, _, gold, _, _ = corpora()
    long = [t.split() for t in clean if len(t.split()) >= 40]
    # gold of 20- and 40-word texts: log lengths' Q1 = log 20, Q3 = log 40, IQR = log 2, so the fences are
    # 20 / 2^3 = 2.5 and 40 * 2^3 = 320 words
    rule = _OutlierRule([" ".join(w[:20]) for w in long[:30]] + [" ".join(w[:40]) for w in long[30:60]])
    assert (rule.lo, rule.hi) == (pytest.approx(2.5), pytest.approx(320.0))
    assert rule("Returns the value.") is None and rule(" ".join(long[0][:18])) is None  # short, but ordinary
    assert rule("Returns it")[0] == "length" and "2 words, below gold's lower fence" in rule("Returns it")[1]
    assert rule(" ".join(" ".join(w) for w in long[:20]))[0] == "length"  # one text of 20 paragraphs
    # the case: gold texts of 25-93 words, documents of 20-24 words cut from other paragraphs
    gold_mid = [g for g in gold if 25 <= len(g.split()) <= 93]
    data = [" ".join(w[:20 + k % 5]) for k, w in enumerate(long)]
    result = audit_texts(data, GoldSet.from_texts(gold_mid), max_near_duplicates=1.0)
    assert result.outlier_fraction == 0.0
    text = clean[3]
    foreign = " ".join(f"{w}zq" for w in re.findall(r"\w+", text))  # the same text, every word one gold never uses
    found = _OutlierRule(gold_mid)(foreign)
    assert found[0] == "unseen words" and found[1].startswith("unseen words: 100% of its")
    assert _OutlierRule(gold_mid)(text) is None


def test_the_cli_counts_sample_sizes_progress_and_hints(tmp_path):
    clean, _, gold, _, _ = corpora()
    data = write_jsonl(tmp_path / "data.jsonl", clean + clean[:20])
    bad_gold = tmp_path / "gold.jsonl"
    bad_gold.write_text("".join(json.dumps({"body": g}) + "\n" for g in gold))
    good_gold = write_jsonl(tmp_path / "good.jsonl", gold)
    env_cmd = [sys.executable, "-m", "collapseguard", "audit", str(data)]
    wrong = subprocess.run([*env_cmd, "--gold", str(bad_gold)], capture_output=True, text=True, check=False)
    assert wrong.returncode == 2 and "pass --gold-text-field with the field holding the gold text" in wrong.stderr
    assert "set text_field" not in wrong.stderr
    right = subprocess.run([*env_cmd, "--gold", str(bad_gold), "--gold-text-field", "body", "--sample-size", "300"],
                           capture_output=True, text=True, check=False)
    assert right.returncode == 1, right.stderr[-2000:]  # 20 exact copies in 353 texts: 5.7% near-duplicates
    assert "sample 236" in right.stdout and f"all {len(clean) + 20}" in right.stdout
    assert "exact copies                  5.7%" in right.stdout and "texts are numbered from 0" in right.stdout
    assert right.stderr == ""  # stderr is a pipe, not a terminal: no progress bar
    # the bar itself (forced on): bytes and documents read, with the rate
    from io import StringIO

    from collapseguard.audit import dataset

    stream = StringIO()
    bar = dataset._progress(True, data.stat().st_size, "audit: reading", stream, leave=True, mininterval=0)
    for _ in dataset._read_with_progress(lambda: ((0, k, t, None) for k, t in enumerate(clean * 2)), bar,
                                         lambda: 1000):
        pass
    assert "docs/s" in stream.getvalue() and f"{len(clean) * 2 // 256 * 256:,} docs" in stream.getvalue()
    assert main(["audit", str(data), "--gold", str(good_gold), "--no-progress", "--max-near-duplicates", "1"]) == 0
