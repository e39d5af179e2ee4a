"""The callbacks' explicit signatures: one shared specification, typos named with the close match, renamed
arguments still working for one release, and the engine's decisions split into policies."""

from __future__ import annotations

import inspect
import json
import logging
import warnings

import numpy as np
import pytest

from collapseguard import AnchorMixSampler, DataStreamMonitor, GoldSet, Thresholds
from collapseguard.guard.engine import GeneratedBatch, GuardEngine
from collapseguard.guard.options import OPTIONS, RENAMED, GuardCallbackMeta
from tests import tiny_runs as tr

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


def _callbacks() -> list[type]:
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from collapseguard.integrations.lightning import CollapseGuard
    from collapseguard.integrations.transformers import CollapseGuardCallback

    return [CollapseGuard, CollapseGuardCallback]


def test_both_callbacks_spell_out_the_same_arguments():
    lightning_cb, hf_cb = _callbacks()
    sig_l, sig_h = inspect.signature(lightning_cb), inspect.signature(hf_cb)
    assert sig_l == sig_h  # names, kinds, defaults and annotations
    assert list(sig_l.parameters) == [o.name for o in OPTIONS]
    assert not any(p.kind is p.VAR_KEYWORD for p in sig_l.parameters.values())
    assert "restore_key" not in sig_h.parameters and "_restore_key" not in sig_h.parameters
    keyword_only = [n for n, p in sig_l.parameters.items() if p.kind is p.KEYWORD_ONLY]
    assert keyword_only == [o.name for o in OPTIONS][2:]  # all but gold and tokenizer
    for cls in (lightning_cb, hf_cb):  # every option is documented where the user reads it
        doc = inspect.getdoc(lightning_cb)
        assert all(f"{o.name}:" in doc for o in OPTIONS), [o.name for o in OPTIONS if f"{o.name}:" not in doc]
        assert cls.__init__.__doc__ is None or "engine_kwargs" not in cls.__init__.__doc__


def test_a_callback_that_drifts_from_the_specification_fails_at_import():
    with pytest.raises(TypeError, match="num_samples defaults to 32, the shared options to 64"):
        class Drifted(metaclass=GuardCallbackMeta):
            _options = ("num_samples",)

            def __init__(self, *, num_samples: int = 32) -> None: ...

    with pytest.raises(TypeError, match="patience is annotated 'float'"):
        class Retyped(metaclass=GuardCallbackMeta):
            _options = ("patience",)

            def __init__(self, *, patience: float = 1) -> None: ...


@pytest.mark.parametrize("typo", ["on_colapse", "every_n_epoch", "num_sample", "tresholds"])
def test_a_typo_names_the_callback_and_the_close_match(typo):
    for cls in _callbacks():
        with pytest.raises(TypeError) as info:
            cls(tr.gold(), **{typo: 1})
        text = str(info.value)
        assert text.startswith(f"{cls.__name__}: unexpected argument {typo}=1; did you mean ")
        assert "GuardEngine" not in text


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_renamed_arguments_still_work_with_a_deprecation_warning(old, new, tmp_path):
    value = {"model_stats": False, "reference": None, "save_profile": tmp_path / "p.json",
             "sampler": AnchorMixSampler(["human", "synthetic"] * 4, 4, 0.25)}[old]
    extra = {"on_collapse": "reweight"} if old == "sampler" else {}
    for cls in _callbacks():
        with pytest.warns(DeprecationWarning, match=f"{old}= was renamed {new}="):
            guard = cls(tr.gold(), **{old: value}, **extra)
        attribute = {"score_gold": "score_gold", "reference_profile": "reference_profile",
                     "save_profile_to": "save_profile_to", "anchor_sampler": "anchor_sampler"}[new]
        assert getattr(guard.engine, attribute) == value
        with pytest.raises(TypeError, match=f"got both {old}= and {new}="):
            cls(tr.gold(), **{old: value, new: value}, **extra)


def test_gold_and_tokenizer_paths_on_both_callbacks(tmp_path):
    gold_file = tmp_path / "gold.jsonl"
    gold_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in tr.gold().texts))
    tr.tokenizer().save_pretrained(tmp_path / "tok")
    for cls in _callbacks():
        guard = cls(str(gold_file), tokenizer=str(tmp_path / "tok"))
        assert guard.engine.gold.fingerprint == GoldSet.from_jsonl(gold_file).fingerprint
        assert guard.engine.tokenizer.vocab_size == tr.tokenizer().vocab_size
        with pytest.raises(TypeError, match=rf"{cls.__name__}: gold=\[1, 2\] is invalid: gold must be a GoldSet"):
            cls([1, 2])


def test_thresholds_are_coerced_once_and_the_data_stream_inherits_them(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: strict\n")
    reads = []
    real = Thresholds.from_file.__func__
    monkeypatch.setattr(Thresholds, "from_file", classmethod(lambda cls, p: reads.append(p) or real(cls, p)))
    stream = DataStreamMonitor()
    own = DataStreamMonitor(thresholds="lenient")
    engine = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), thresholds=str(path), data_monitor=stream)
    engine.setup()
    assert len(reads) == 1
    assert engine.monitor.thresholds is engine.thresholds and stream.thresholds is engine.thresholds
    assert engine.thresholds == Thresholds.preset("strict")
    GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), thresholds="strict", data_monitor=own)
    assert own.thresholds == Thresholds.preset("lenient")  # given its own: kept


def test_thresholds_patience_is_now_alert_patience():
    with pytest.warns(DeprecationWarning, match="patience was renamed alert_patience"):
        th = Thresholds(patience=3)
    assert th.alert_patience == 3
    with pytest.warns(DeprecationWarning):
        assert Thresholds.from_dict({"patience": 2}).alert_patience == 2
    with pytest.warns(DeprecationWarning):
        assert Thresholds().patience == 1
    assert "patience" not in Thresholds().to_dict() and "alert_patience" in Thresholds().to_dict()


def test_generation_is_now_generated_batch():
    import collapseguard.guard.engine as engine_module

    with pytest.warns(DeprecationWarning, match="renamed GeneratedBatch"):
        assert engine_module.Generation is GeneratedBatch


def test_halting_and_reweighting_are_policies_of_their_own():
    loop = [np.array([5, 6, 7, 8] * 8)] * 16
    sampler = AnchorMixSampler(["human"] * 8 + ["synthetic"] * 24, 8, 0.25)
    engine = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), on_collapse="reweight", anchor_sampler=sampler,
                         max_human_fraction=0.6, reweight_step=0.1, num_samples=16, check_on_train_start=False)
    engine.setup()
    outcome = engine.run_check(lambda: GeneratedBatch(sequences=loop, finished=[False] * 16), step=1, epoch=0)
    assert outcome.result.critical and not outcome.should_stop  # reweighting never halts
    assert engine.reweighting.fraction == pytest.approx(0.45) == engine.human_fraction  # a critical: two steps
    assert engine.halting.critical_streak == 1 and engine.critical_streak == 1
    halting = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), on_collapse="halt", patience=2, num_samples=16)
    halting.setup()
    produce = lambda: GeneratedBatch(sequences=loop, finished=[False] * 16)  # noqa: E731
    assert not halting.run_check(produce, step=1, epoch=0).should_stop
    second = halting.run_check(produce, step=2, epoch=1)
    assert second.should_stop and "after 2 consecutive critical check(s) (patience=2)" in second.reason


def test_lightning_skips_fast_dev_run_like_early_stopping(tmp_path, caplog):
    from collapseguard.integrations.lightning import CollapseGuard

    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), generate_fn=tr.alarming, on_collapse="halt",
                          **tr.GUARD_KWARGS)
    with caplog.at_level(logging.ERROR, logger="collapseguard"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, _ = tr.lightning_fit(tmp_path, "varied", 2, [guard], fast_dev_run=True, logger=False)
    assert guard.engine.checks_done == 0 and not guard.engine.monitor.history  # no baseline, no check
    assert not trainer.should_stop and "halted" not in caplog.text


def test_lightning_cli_sees_every_argument_with_its_type():
    jsonargparse = pytest.importorskip("jsonargparse")
    _callbacks()
    from collapseguard.integrations.lightning import CollapseGuard

    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(CollapseGuard, "guard")
    text = parser.format_help()
    assert all(f"--guard.{o.name}" in text for o in OPTIONS if o.name != "gold") and "--guard.gold" in text
    assert "{warn,halt,reweight}" in text
    parsed = parser.parse_args(["--guard.gold=g.jsonl", "--guard.on_collapse=halt", "--guard.num_samples=8"])
    assert parsed.guard.on_collapse == "halt" and parsed.guard.num_samples == 8


def test_the_engine_takes_exactly_the_shared_options():
    from collapseguard.guard.engine import ENGINE_OPTIONS

    assert list(ENGINE_OPTIONS) == [o.name for o in OPTIONS if o.engine]
    with pytest.raises(TypeError, match=r"^GuardEngine: unexpected argument on_colapse='halt'; did you mean on_collapse=\?"):
        GuardEngine(tr.gold(), on_colapse="halt")
    engine = GuardEngine(tr.gold())
    assert (engine.num_samples, engine.on_collapse, engine.patience) == (64, "warn", 1)  # the specification's defaults


def test_the_monitor_names_the_reference_profile_as_the_callbacks_do():
    assert "reference_profile" in inspect.signature(__import__("collapseguard").CollapseMonitor).parameters
    from collapseguard import CollapseMonitor

    with pytest.warns(DeprecationWarning, match="CollapseMonitor: reference= was renamed reference_profile="):
        monitor = CollapseMonitor(tr.gold(), tokenizer=tr.tokenizer(), reference=None)
    assert monitor.reference_profile is None


def test_refusals_keep_argument_names_and_fix_text_intact():
    lightning_cb, _ = _callbacks()
    with pytest.raises(ValueError) as info:
        lightning_cb(tr.gold(), every_n_epochs=0)
    assert str(info.value).endswith("Use every_n_epochs=1 to check at the end of every epoch.")
    with pytest.raises(TypeError) as info:
        lightning_cb(tr.gold(), reference_profile=123)
    assert str(info.value).endswith("Pass the JSON a run wrote with save_profile_to=...")
    with pytest.raises(ValueError, match=r"^CollapseGuard: thresholds='balnced' is invalid: unknown thresholds preset "
                                         r"'balnced' \(did you mean 'balanced'\?\)"):
        lightning_cb(tr.gold(), thresholds="balnced")
