"""Gold leakage in the single-process audit, and the audit streaming files and folders."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from collapseguard import GoldSet
from collapseguard.audit import audit_path, audit_texts, read_texts
from collapseguard.audit.leakage import GoldLeakIndex
from collapseguard.audit.shingles import BandIndex, minhash_signatures
from collapseguard.cli import main
from tests.audit_data import EDITED, VERBATIM, corpora, grams, shard, write_jsonl


@pytest.fixture(scope="module")
def gold_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("gold") / "gold.jsonl", corpora()[2])


def test_gold_inside_the_data_fails_the_audit_and_the_same_data_without_it_passes(gold_file, tmp_path, capsys):
    clean, leaky, gold, verbatim, edited = corpora()
    assert main(["audit", str(write_jsonl(tmp_path / "clean.jsonl", clean)), "--gold", str(gold_file)]) == 0
    assert "PASSED" in capsys.readouterr().out
    report = tmp_path / "leaky.json"
    assert main(["audit", str(write_jsonl(tmp_path / "leaky.jsonl", leaky)), "--gold", str(gold_file),
                 "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "gold leakage" in out and "leaked: gold text" in out and "FAILED" in out
    found = json.loads(report.read_text())
    leak = found["gold_leakage"]
    assert (leak["leaked"], leak["exact"], leak["near"], leak["texts"]) == (VERBATIM + EDITED, VERBATIM, EDITED,
                                                                            VERBATIM + EDITED)
    assert leak["gold_texts"] == len(gold) and leak["fraction"] == pytest.approx(50 / len(gold))
    assert found["failures"] == [f for f in found["failures"] if f.startswith("gold leakage: 50 of the gold set's")]
    for ex in leak["examples"]:  # each example points at the inserted copy of that gold text
        assert ex["gold"] in verbatim + edited
        text = leaky[ex["text"]]
        if ex["exact"]:
            assert text == gold[ex["gold"]]
        else:  # the containment reported is the share of the gold text's 5-grams the copy kept
            assert ex["containment"] == pytest.approx(len(grams(text) & grams(gold[ex["gold"]]))
                                                      / len(grams(gold[ex["gold"]])), abs=1e-4)
    # a bound on the share of gold allowed lets it through; the containment bound decides what is near
    assert main(["audit", str(tmp_path / "leaky.jsonl"), "--gold", str(gold_file), "--max-gold-leakage", "0.25"]) == 0
    capsys.readouterr()
    strict = audit_texts(leaky, GoldSet.from_texts(gold), leak_containment=0.95)
    assert strict.gold_leakage["leaked"] == VERBATIM  # two changed words keep ~80% of a 40-word text's 5-grams


def _as_json(d: dict) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def test_what_counts_as_a_leak():
    gold = corpora()[2]
    text = max(gold, key=len)
    index = GoldLeakIndex(gold)
    g = gold.index(text)
    assert (g, True, 1.0) in index.find(text.upper().replace(" ", "  ") + " !!")  # case, spacing, punctuation
    inside = index.find("Some preface of our own. " + text + " And a closing remark of ours.")
    assert (g, False, 1.0) in inside  # a gold text pasted inside a longer document
    words = text.split()
    rewritten = " ".join(w if k % 4 else "changed" for k, w in enumerate(words))
    assert len(grams(rewritten) & grams(text)) / len(grams(text)) < 0.5 and g not in [h[0] for h in
                                                                                         index.find(rewritten)]
    short = GoldLeakIndex(["Returns the value.", *gold[:3]])
    assert short.find("returns the value") == [(0, True, 1.0)]
    assert short.find("This method returns the value of the attribute it was asked for today.") == []
    with pytest.raises(ValueError, match="containment=0 must be in"):
        GoldLeakIndex(gold, containment=0)


def test_streamed_audit_of_a_folder_equals_the_audit_of_its_texts(gold_file, tmp_path):
    leaky = corpora()[1]
    labels = ["human" if i % 3 else "synthetic" for i in range(len(leaky))]
    shard(tmp_path / "data", leaky, 4, labels=labels, gz_first=True)
    gold_set = GoldSet.from_jsonl(gold_file)
    streamed = audit_path(tmp_path / "data", gold_set, max_near_duplicates=0.2)
    in_memory = audit_texts(leaky, gold_set, labels=labels, max_near_duplicates=0.2)
    assert _as_json(streamed.to_dict()) == _as_json(in_memory.to_dict())  # NaN (length_limit_fraction) included
    assert streamed.provenance == {"human": labels.count("human"), "synthetic": labels.count("synthetic")}
    texts, got = read_texts(tmp_path / "data")
    assert texts == leaky and got == labels
    # the LSH bands spilled to disk every few texts give the same candidate pairs as bands kept in memory
    sig = minhash_signatures(leaky + leaky[::25])  # with some copies
    spilled, kept = BandIndex(buffer=7), BandIndex()
    for rows in np.array_split(sig, 60):
        spilled.add(rows)
    kept.add(sig)
    assert np.array_equal(spilled.pairs(), kept.pairs()) and len(kept.pairs()) > 0
    likely = kept.pairs(0.5)  # the copies agree on every row; pairs that merely share a phrase do not
    assert 0 < len(likely) <= len(kept.pairs()) and (kept.agreement(likely) >= 0.5).all()
    spilled.close()
    kept.close()


_WITHOUT_DATATROVE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"datatrove", "ray", "torch", "transformers", "lightning"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
from collapseguard.cli import main
code = main(["audit", sys.argv[1], "--gold", sys.argv[2]])
assert code == 1, code
assert main(["audit", sys.argv[1], "--gold", sys.argv[2], "--executor", "local"]) == 2
assert not {"datatrove", "ray"} & {m.split(".")[0] for m in sys.modules}
"""


def test_the_single_process_audit_needs_no_datatrove(gold_file, tmp_path):
    data = write_jsonl(tmp_path / "leaky.jsonl", corpora()[1])
    done = subprocess.run([sys.executable, "-c", _WITHOUT_DATATROVE, str(data), str(gold_file)], capture_output=True,
                          text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gold leakage: 50 of the gold set's" in done.stdout
    assert "pip install 'collapseguard[distributed]'" in done.stderr  # --executor without datatrove: told how
