"""GoldSet.from_hub, offline, from a cache laid out exactly as huggingface_hub lays it out."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("huggingface_hub")

from collapseguard import GoldSet, GoldSetModifiedError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEXTS = [f"held-out human paragraph {i} about topic {i % 3}" for i in range(8)]


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """datasets--org--gold/{blobs/<sha256>, snapshots/<commit>/gold.jsonl -> blob, refs/main}."""
    body = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()
    repo = tmp_path / "hub" / "datasets--org--gold"
    blob = repo / "blobs" / hashlib.sha256(body).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(body)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "gold.jsonl").symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub", blob


def test_offline_load_pinned_to_a_commit(hub_cache):
    cache, _ = hub_cache
    gold = GoldSet.from_hub("org/gold", "gold.jsonl", revision=COMMIT, cache_dir=cache)
    assert gold.texts == tuple(TEXTS) and gold.fingerprint == GoldSet.from_texts(TEXTS).fingerprint
    again = GoldSet.from_hub("org/gold", "gold.jsonl", revision=COMMIT, cache_dir=cache, fingerprint=gold.fingerprint)
    again.verify()


def test_branches_and_tags_are_refused_unless_allowed(hub_cache):
    cache, _ = hub_cache
    with pytest.raises(ValueError, match=r"GoldSet\.from_hub: revision='main' is invalid: revision must be a 40-hex commit sha"):
        GoldSet.from_hub("org/gold", "gold.jsonl", revision="main", cache_dir=cache)
    gold = GoldSet.from_hub("org/gold", "gold.jsonl", revision="main", allow_mutable=True, cache_dir=cache)
    assert len(gold) == len(TEXTS)


def test_tampered_cache_is_detected(hub_cache):
    cache, blob = hub_cache
    recorded = GoldSet.from_texts(TEXTS).fingerprint
    blob.write_bytes(blob.read_bytes().replace(b"paragraph 3", b"paragraph three"))
    with pytest.raises(GoldSetModifiedError, match="not the recorded"):
        GoldSet.from_hub("org/gold", "gold.jsonl", revision=COMMIT, cache_dir=cache, fingerprint=recorded)


def test_missing_from_cache_offline_is_a_clear_error(hub_cache):
    cache, _ = hub_cache
    with pytest.raises(Exception, match=r"(?i)offline|cannot find|local"):
        GoldSet.from_hub("org/other", "gold.jsonl", revision=COMMIT, cache_dir=cache)
