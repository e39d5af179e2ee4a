"""Gold sets, thresholds, the engine's argument checks, the CLI and the torch-free import."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from collapseguard import CollapseMonitor, GenerationSettings, GoldSet, GoldSetModifiedError, HaltPolicy, Thresholds
from collapseguard.cli import main
from collapseguard.gold.tokenization import SimpleTokenizer
from collapseguard.guard.engine import GeneratedBatch, GuardEngine

TEXTS = [f"human text number {i} says something about topic {i % 5} in its own words" for i in range(12)]


# ------------------------------------------------------------------ gold sets
def test_fingerprint_is_sha256_of_canonical_content():
    gold = GoldSet.from_texts(TEXTS)
    canonical = b"collapseguard-gold-v1\x00text\x00" + json.dumps(TEXTS, ensure_ascii=False,
                                                                   separators=(",", ":")).encode()
    assert gold.fingerprint == hashlib.sha256(canonical).hexdigest()
    assert GoldSet.from_texts(TEXTS).fingerprint == gold.fingerprint
    assert GoldSet.from_texts([*TEXTS[:-1], "changed"]).fingerprint != gold.fingerprint


def test_from_jsonl_reads_field_and_detects_file_change(tmp_path):
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(TEXTS)) + "\n")
    gold = GoldSet.from_jsonl(path)
    assert gold.texts == tuple(TEXTS) and gold.fingerprint == GoldSet.from_texts(TEXTS).fingerprint
    gold.verify()
    path.write_text(path.read_text().replace("number 3", "number three"))
    with pytest.raises(GoldSetModifiedError, match="changed on disk"):
        gold.verify()


def test_from_jsonl_errors_name_the_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no field text_field='text'"):
        GoldSet.from_jsonl(path)
    with pytest.raises(FileNotFoundError, match="no such gold file"):
        GoldSet.from_jsonl(tmp_path / "missing.jsonl")


def test_array_gold_is_read_only_copy():
    x = np.random.default_rng(0).normal(size=(20, 3))
    gold = GoldSet.from_arrays(x)
    x[0, 0] = 99.0  # the caller's array is not the gold set
    gold.verify()
    with pytest.raises(ValueError, match="read-only"):
        gold.array[0, 0] = 1.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: GoldSet.from_texts(["only", "three", "texts"]), ValueError, "at least 4"),
        (lambda: GoldSet.from_texts("one string"), TypeError, "not one str"),
        (lambda: GoldSet.from_texts([*TEXTS, 3]), TypeError, r"texts\[12\] is int"),
        (lambda: GoldSet.from_arrays(np.zeros((2, 3))), ValueError, "at least 4"),
        (lambda: GoldSet.from_arrays(np.full((8, 2), np.nan)), ValueError, "NaN"),
        (lambda: GoldSet.from_arrays(np.zeros((8, 2, 2))), ValueError, r"shape \(n, d\)"),
        (lambda: GoldSet.from_texts(TEXTS).split(prompt_length=40), ValueError, "lower prompt_length"),
        (lambda: GoldSet.from_texts(TEXTS).split(prompt_length=0), ValueError, "prompt_length must be"),
        (lambda: CollapseMonitor(TEXTS), TypeError, "gold must be a GoldSet"),
    ],
)
def test_bad_gold_input_is_rejected_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------ thresholds
def test_presets_are_ordered_strict_to_lenient():
    strict, balanced, lenient = (Thresholds.preset(p) for p in ("strict", "balanced", "lenient"))
    assert strict.diversity_warn > balanced.diversity_warn > lenient.diversity_warn
    assert strict.repetition_warn < balanced.repetition_warn < lenient.repetition_warn
    assert Thresholds() == balanced


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"diversity_warn": 1.5}, r"Thresholds: diversity_warn=1.5 is invalid: diversity_warn must be a number in \[0, 1\]"),
        ({"diversity_warn": 0.4, "diversity_critical": 0.5}, "must be below diversity_warn"),
        ({"repetition_warn": 0.5, "repetition_critical": 0.4}, "must be above repetition_warn"),
        ({"alert_patience": 0}, r"alert_patience=0 is invalid: alert_patience must be an int in \[1, 1000\]"),
        ({"alert_patience": 1.5}, "alert_patience must be an int"),
        ({"tail_coverage_warn": "high"}, "must be a number"),
        ({"tail_ppl_rise_warn": float("nan")}, "tail_ppl_rise_warn=nan is invalid"),
    ],
)
def test_invalid_thresholds_name_field_and_range(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Thresholds(**kwargs)


def test_thresholds_from_dict_file_and_unknowns(tmp_path):
    path = tmp_path / "th.json"
    path.write_text(json.dumps({"preset": "strict", "alert_patience": 3}))
    th = Thresholds.from_file(path)
    assert th.alert_patience == 3 and th.diversity_warn == Thresholds.preset("strict").diversity_warn
    with pytest.raises(ValueError, match="unknown threshold field"):
        Thresholds.from_dict({"diversity": 0.5})
    with pytest.raises(ValueError, match="unknown thresholds preset"):
        Thresholds.preset("paranoid")
    with pytest.raises(TypeError, match="thresholds must be"):
        Thresholds.coerce(0.5)


# ---------------------------------------------------------------------- engine
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_collapse": "explode"}, "on_collapse='explode' is invalid: on_collapse must be one of"),
        ({"on_error": "ignore"}, "on_error='ignore' is invalid: on_error must be one of"),
        ({"schedule": {"every_n_epochs": -1}}, "every_n_epochs must be an int >= 0"),
        ({"generation": {"num_samples": 1}}, "num_samples must be an int >= 2"),
        ({"generation": {"max_new_tokens": 0}}, "max_new_tokens must be"),
        ({"generation": {"generation_kwargs": "greedy"}}, "generation_kwargs must be a dict"),
        ({"generation": 8}, "generation must be a GenerationSettings or a dict"),
        ({"thresholds": "paranoid"}, "unknown thresholds preset"),
    ],
)
def test_engine_rejects_bad_arguments_at_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GuardEngine(GoldSet.from_texts(TEXTS), **kwargs)


def test_engine_faults_never_raise_in_warn_mode():
    # 24 texts: 12 prompts, enough to judge min_outputs=8 (a gold set that never could is refused)
    engine = GuardEngine(GoldSet.from_texts(TEXTS * 2), tokenizer=SimpleTokenizer(), generation=GenerationSettings(prompt_length=4, max_new_tokens=8, num_samples=6))
    engine.setup()
    empty = engine.measure(lambda: GeneratedBatch(sequences=[]))
    assert empty.phase == "fault" and "no outputs" in empty.message
    boom = engine.measure(lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert boom.phase == "fault" and "RuntimeError: boom" in boom.message
    outcome = engine.conclude([boom], step=1, epoch=0)
    assert outcome.result is None and not outcome.should_stop
    assert outcome.log_metrics == {"collapseguard/check_failed": 1.0}


def test_engine_halts_after_patience_critical_checks_and_shards_prompts():
    engine = GuardEngine(GoldSet.from_texts(TEXTS * 4), tokenizer=SimpleTokenizer(), on_collapse=HaltPolicy(patience=2), generation=GenerationSettings(prompt_length=4, max_new_tokens=8, num_samples=16))
    engine.setup()
    shards = [engine.prompts(r, 3) for r in range(3)]
    assert sum(len(s) for s in shards) == 16
    stuck = GeneratedBatch(sequences=[np.array([5, 6] * 4)] * 16)
    first = engine.conclude([engine.measure(lambda: stuck)], step=1, epoch=0)
    assert first.result.critical and not first.should_stop
    second = engine.conclude([engine.measure(lambda: stuck)], step=2, epoch=1)
    assert second.should_stop and "2 consecutive critical check(s) (patience=2)" in second.reason
    assert "gold reference" in second.reason


def test_text_gold_needs_a_tokenizer_at_setup():
    engine = GuardEngine(GoldSet.from_texts(TEXTS))
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        engine.setup()
    assert engine.monitor is None


# ------------------------------------------------------------------------- CLI
def test_cli_thresholds_lists_every_field(capsys):
    assert main(["thresholds", "strict"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name, _, _ in Thresholds.describe())


def test_cli_errors_are_one_line(capsys):
    assert main(["thresholds", "paranoid"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown thresholds preset 'paranoid'" in err


@pytest.mark.slow
def test_demo_collapses_without_reweighting_and_holds_with_it(capsys, tmp_path):
    assert main(["demo", "--generations", "6", "--out", str(tmp_path), "--no-report"]) == 0
    out = capsys.readouterr().out
    summary = {line.split()[0]: line for line in out.splitlines() if "final health" in line}
    assert "first critical at generation" in summary["replace"]
    assert "never critical" in summary["reweight"]


_BLOCK_FRAMEWORKS = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torch", "lightning", "pytorch_lightning", "transformers"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import collapseguard, collapseguard.metrics, collapseguard.cli, collapseguard.audit, collapseguard.demos.trigram
for pkg in ("gold", "metrics", "detection", "guard", "reporting"):
    import pkgutil, importlib
    for m in pkgutil.iter_modules(importlib.import_module("collapseguard." + pkg).__path__):
        importlib.import_module(f"collapseguard.{pkg}.{m.name}")
assert not {"torch", "lightning", "transformers"} & set(sys.modules), sorted(sys.modules)
print(collapseguard.__version__)
"""


def test_import_needs_no_torch():
    done = subprocess.run([sys.executable, "-c", _BLOCK_FRAMEWORKS], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_nan_samples_are_a_fault_not_a_crash():
    rng = np.random.default_rng(0)
    engine = GuardEngine(GoldSet.from_arrays(rng.normal(size=(40, 3))), generation=GenerationSettings(num_samples=10))
    engine.setup()
    fault = engine.measure(lambda: GeneratedBatch(samples=np.full((10, 3), np.nan)))
    assert fault.phase == "fault" and "NaN or inf in 10 of 10 rows" in fault.message
    ok = engine.measure(lambda: GeneratedBatch(samples=rng.normal(size=(10, 3))))
    assert engine.conclude([ok], step=1, epoch=0).result.judged


def test_no_pickle_no_remote_code_in_the_library():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = [*root.glob("collapseguard/**/*.py"), *root.glob("integrations/**/*.py")]
    assert sources
    for path in sources:
        text = path.read_text()
        for banned in ("import pickle", "pickle.load", "torch.load(", "trust_remote_code=True", "allow_pickle=True"):
            assert banned not in text, f"{path.name} uses {banned}"
