"""Provenance labels from columns, manifests, dataset cards and Croissant; the append-only ledger."""

from __future__ import annotations

import json
import logging

import pytest

from collapseguard import GenerationSettings, GoldSet
from collapseguard.gold.provenance import (
    Provenance,
    ProvenanceLedger,
    label_from_croissant,
    label_from_dataset_card,
    labels_from_column,
    load_manifest,
    normalize_label,
)
from collapseguard.gold.tokenization import SimpleTokenizer
from collapseguard.guard.engine import GuardEngine


def test_column_labels_never_count_missing_as_human():
    rows = [{"provenance": "human"}, {"provenance": "machine-generated"}, {"text": "no label"}]
    assert labels_from_column(rows) == ["human", "synthetic", "unknown"]
    assert labels_from_column({"src": ["real", None]}, column="src") == ["human", "unknown"]
    with pytest.raises(ValueError, match="label 'robot' is not one of"):
        normalize_label("robot")
    with pytest.raises(ValueError, match="column='provenance' is not in the data"):
        labels_from_column({"text": ["a"]})


def test_column_from_a_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "provenance": ["human", "synthetic"]})
    assert labels_from_column(ds) == ["human", "synthetic"]


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_manifest_json_and_yaml(tmp_path, suffix):
    data = {"wiki-2019": "human", "gen3": {"label": "synthetic", "generator": "tiny-gpt2", "generation_index": 3}}
    path = tmp_path / f"manifest{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(data))
    manifest = load_manifest(path)
    assert manifest["wiki-2019"].label == "human"
    assert manifest["gen3"] == Provenance("synthetic", generator="tiny-gpt2", generation_index=3)


@pytest.mark.parametrize(("creators", "label"), [
    ("[machine-generated]", "synthetic"), ("[found, crowdsourced]", "human"), ("[expert-generated]", "human"),
    ("[found, machine-generated]", "unknown"), ("[other]", "unknown"),
])
def test_dataset_card_language_creators(tmp_path, creators, label):
    pytest.importorskip("yaml")
    card = tmp_path / "README.md"
    card.write_text(f"---\nlicense: cc-by-4.0\nlanguage_creators: {creators}\n---\n# A dataset\n")
    assert label_from_dataset_card(card) == label
    assert label_from_dataset_card("# no front matter\nat all\n") == "unknown"


def test_croissant_prov_properties():
    generated = {"prov:wasGeneratedBy": {"@type": "prov:Activity", "name": "sampling from a language model"}}
    attributed = {"prov:wasAttributedTo": {"@type": "sc:Person", "name": "A. Writer"}}
    assert label_from_croissant(generated) == "synthetic"
    assert label_from_croissant(attributed) == "human"
    assert label_from_croissant({"name": "no prov"}) == "unknown"


def test_ledger_is_append_only_and_summarises_by_label(tmp_path, caplog):
    ledger = ProvenanceLedger(tmp_path / "ledger.jsonl")
    ledger.record("docs", Provenance("human", source_uri="file://docs"), texts=["one two", "three"])
    ledger.record("gen1", Provenance("synthetic", generator="tiny", generation_index=1), samples=10, tokens=300)
    ledger.record("scrape", Provenance(None), samples=4, tokens=40)
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["sha256"] and json.loads(lines[0])["tokens"] == 3
    summary = ledger.summary()
    assert summary == {"human": {"sources": 1, "samples": 2, "tokens": 3},
                       "synthetic": {"sources": 1, "samples": 10, "tokens": 300},
                       "unknown": {"sources": 1, "samples": 4, "tokens": 40}}
    # logged when a guard starts, with a warning because some data has unknown provenance
    texts = [f"human text number {i} says something about topic {i % 5}" for i in range(24)]  # enough to judge
    engine = GuardEngine(GoldSet.from_texts(texts), tokenizer=SimpleTokenizer(), provenance=ledger, generation=GenerationSettings(prompt_length=4, max_new_tokens=4))
    with caplog.at_level(logging.INFO, logger="collapseguard"):
        engine.setup()
    msg = next(r.getMessage() for r in caplog.records if "provenance" in r.getMessage())
    assert "human 2 samples / 3 tokens (12%)" in msg and "unknown provenance is not counted as human" in msg
