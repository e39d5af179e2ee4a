"""Reference profiles: files, comparability, judging against a trusted model, the CLI, and recursive training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from collapseguard import CollapseMonitor, GenerationSettings, GoldSet
from collapseguard.cli import main
from collapseguard.gold.profiles import ProfileMismatchError, ReferenceProfile
from collapseguard.gold.tokenization import SimpleTokenizer
from collapseguard.metrics import ModelStats
from tests import tiny_runs as tr

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


@pytest.fixture(scope="module")
def gold():
    return tr.gold()


def _stats(monitor, head_nll, tail_nll):
    seqs = list(monitor.split.continuations[:32])
    band = [monitor.measurer.context.bands.lookup(s.astype(np.uint64)) for s in seqs]
    nll = [np.where(b == 2, tail_nll, head_nll) for b in band]
    return seqs, ModelStats(seqs, nll, [np.full(s.size, 2.5) for s in seqs])  # about as sure as it is right


def test_profile_round_trips_as_strict_json(tmp_path, gold):
    monitor = CollapseMonitor(gold, prompt_length=16, max_new_tokens=32)
    seqs, stats = _stats(monitor, 2.0, 4.0)
    monitor.check(seqs, step=0, model_stats=stats)
    path = monitor.profile(source="unit").save(tmp_path / "p.json")
    raw = path.read_text()
    assert "NaN" not in raw  # length_limit_fraction was not measured: stored as null
    data = json.loads(raw)
    assert data["schema_version"] == 1 and data["gold_fingerprint"] == gold.fingerprint
    assert data["metrics"]["length_limit_fraction"] is None
    loaded = ReferenceProfile.load(path)
    assert loaded.metrics["gold_ppl_tail"] == pytest.approx(math.exp(4.0))
    assert math.isnan(loaded.metrics["length_limit_fraction"])
    assert loaded.settings == monitor.settings()


def test_monitor_judges_rise_against_the_profile(gold):
    trusted = CollapseMonitor(gold, prompt_length=16, max_new_tokens=32)
    seqs, stats = _stats(trusted, 2.0, 4.0)
    trusted.check(seqs, step=0, model_stats=stats)
    profile = trusted.profile()

    plain = CollapseMonitor(gold, prompt_length=16, max_new_tokens=32)
    guarded = CollapseMonitor(gold, prompt_length=16, max_new_tokens=32, reference_profile=profile)
    seqs, worse = _stats(plain, 2.0, 4.0 + math.log(1.6))  # tail perplexity x1.6, head unchanged
    assert plain.check(seqs, step=0, model_stats=worse).alerts == []  # no history, no profile: nothing to compare
    alert = next(a for a in guarded.check(seqs, step=0, model_stats=worse).alerts if a.metric == "gold_ppl_tail")
    assert alert.phase == "early" and alert.severity == "warn"
    assert alert.reference == pytest.approx(math.exp(4.0))
    assert "reference profile" in alert.message and "specific to rare tokens" in alert.message

    seqs, all_bands = _stats(plain, 2.0 + math.log(2.5), 4.0 + math.log(2.5))  # every band x2.5
    alerts = guarded.check(seqs, step=1, model_stats=all_bands).alerts
    assert [(a.metric, a.severity) for a in alerts if "ppl" in a.metric] == [("gold_ppl", "critical")]


def test_mismatched_profiles_are_refused_naming_the_difference(gold):
    monitor = CollapseMonitor(gold, tokenizer=tr.tokenizer(), prompt_length=16, max_new_tokens=32)
    seqs, stats = _stats(monitor, 2.0, 4.0)
    monitor.check(seqs, step=0, model_stats=stats)
    profile = monitor.profile(settings={"num_samples": 32})
    with pytest.raises(ProfileMismatchError, match=r"max_new_tokens \(16 vs the profile's 32\)"):
        CollapseMonitor(gold, tokenizer=tr.tokenizer(), prompt_length=16, max_new_tokens=16, reference_profile=profile)
    with pytest.raises(ProfileMismatchError, match="tokenizer"):
        CollapseMonitor(gold, tokenizer=SimpleTokenizer(), prompt_length=16, max_new_tokens=32, reference_profile=profile)
    with pytest.raises(ProfileMismatchError, match="gold set"):
        CollapseMonitor(GoldSet.from_texts(tr.texts()[0][:100]), tokenizer=tr.tokenizer(), prompt_length=16,
                        max_new_tokens=32, reference_profile=profile)
    from collapseguard.guard.engine import GuardEngine

    with pytest.raises(ProfileMismatchError, match=r"num_samples \(64 vs the profile's 32\)"):
        GuardEngine(gold, tokenizer=tr.tokenizer(), reference_profile=profile, generation=GenerationSettings(num_samples=64))


def test_bad_profile_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such profile file"):
        ReferenceProfile.load(tmp_path / "missing.json")
    (tmp_path / "v9.json").write_text(json.dumps({"schema_version": 9}))
    with pytest.raises(ValueError, match="schema_version=9 is not supported"):
        ReferenceProfile.load(tmp_path / "v9.json")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ValueError, match="is not JSON"):
        ReferenceProfile.load(tmp_path / "junk.json")


def test_array_models_use_a_held_out_likelihood():
    rng = np.random.default_rng(0)
    gold = GoldSet.from_arrays(rng.normal(size=(300, 3)))
    trusted = CollapseMonitor(gold)
    trusted.check(rng.normal(size=(100, 3)), step=0, gold_loglik=np.full(100, -4.0))
    guarded = CollapseMonitor(gold, reference_profile=trusted.profile())
    # score_fn's log-likelihood per row (3 dimensions): judged per dimension, so a rise of 3 log 1.3 nats
    # per row is perplexity x1.3 per dimension -- a warn
    result = guarded.check(rng.normal(size=(100, 3)), step=0, gold_loglik=np.full(100, -4.0 - 3 * math.log(1.3)))
    alert = next(a for a in result.alerts if a.metric == "gold_nll")
    assert alert.severity == "warn" and alert.value == pytest.approx(4.0 / 3 + math.log(1.3))
    assert "per dimension" in alert.message


@pytest.mark.slow
def test_cli_profiles_a_saved_checkpoint_offline(tmp_path, gold, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tmp_path / "ckpt"
    tr.model().save_pretrained(ckpt)
    tr.tokenizer().save_pretrained(ckpt)
    gold_path = tmp_path / "gold.jsonl"
    gold_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in gold.texts))
    out = tmp_path / "profile.json"
    assert main(["profile", str(ckpt), "--gold", str(gold_path), "--out", str(out), "--num-samples", "32"]) == 0
    profile = ReferenceProfile.load(out)
    assert profile.gold_fingerprint == gold.fingerprint and profile.source == str(ckpt)
    assert profile.metrics["num_outputs"] == 32 and math.isfinite(profile.metrics["gold_ppl_tail"])
    from collapseguard.integrations.lightning import CollapseGuard

    guard = CollapseGuard(gold, tokenizer=tr.tokenizer(), reference_profile=out, **tr.GUARD_KWARGS)
    guard.engine.setup()  # same gold, tokenizer and settings: accepted
    assert main(["profile", str(tmp_path / "nope"), "--gold", str(gold_path), "--out", str(out)]) == 2


@pytest.mark.slow
def test_recursive_training_is_caught_at_generation_one_with_the_gen0_profile(tmp_path, gold):
    from collapseguard.demos.recursive_text import run_recursive

    results = run_recursive(tr.texts()[0], gold, tr.tokenizer(), tmp_path, generations=2, epochs=8, samples=500,
                            **tr.GUARD_KWARGS)
    by = {(r.regime, r.generation): r for r in results}
    worst = {k: {a["severity"] for a in r.alerts} for k, r in by.items()}
    assert worst[("replace", 1)] & {"warn", "critical"}, "generation 1 of the replace regime must alert"
    assert worst[("replace", 2)] & {"warn", "critical"}
    assert worst[("fresh", 1)] == worst[("fresh", 2)] == set(), "the fresh-data control must stay silent"
    gen1 = by[("replace", 1)]
    assert gen1.metrics["gold_ppl"] > 1.25 * gen1.reference["gold_ppl"]
    # a plain output-diversity check sees little at generation 1: distinct-2 within 15% of generation 0
    assert abs(gen1.metrics["distinct_2"] / gen1.reference["distinct_2"] - 1) < 0.15
