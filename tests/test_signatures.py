"""The callbacks' explicit signatures: one shared specification (names, defaults, annotations and documentation),
settings grouped in objects, typos named with the close match, old spellings still working for one release, bad
values refused in one format (tests generated from the specification), and the engine's decisions in policies."""

from __future__ import annotations

import inspect
import json
import logging
import re
import warnings

import numpy as np
import pytest

from collapseguard import (
    AnchorMixSampler,
    CheckSchedule,
    DataStreamMonitor,
    GenerationSettings,
    GoldSet,
    HaltPolicy,
    ModelHooks,
    ReweightPolicy,
    Thresholds,
)
from collapseguard._validation import Constraint, HasMethods, InstanceOf, Interval, OneOf, Satisfies
from collapseguard.guard.engine import GeneratedBatch, GuardEngine
from collapseguard.guard.options import MOVED, OPTIONS
from tests import tiny_runs as tr

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


def _callbacks() -> list[type]:
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from collapseguard.integrations.lightning import CollapseGuard
    from collapseguard.integrations.transformers import CollapseGuardCallback

    return [CollapseGuard, CollapseGuardCallback]


def _documented(cls: type) -> dict[str, str]:
    """The ``Args:`` section of a class docstring: argument name -> its text."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    section = re.split(r"\n\S", section, maxsplit=1)[0]  # up to the first unindented line
    return {m.group(1): m.group(2) for m in re.finditer(r"^    (\w+): (.*)$", section, re.M)}


def test_both_callbacks_spell_out_and_document_the_specification():
    lightning_cb, hf_cb = _callbacks()
    sig_l, sig_h = inspect.signature(lightning_cb), inspect.signature(hf_cb)
    assert sig_l == sig_h  # names, kinds, defaults and annotations
    assert list(sig_l.parameters) == [o.name for o in OPTIONS]
    assert len(OPTIONS) <= 14  # about a dozen, as Lightning's EarlyStopping (11) and ModelCheckpoint (16)
    assert not any(p.kind is p.VAR_KEYWORD for p in sig_l.parameters.values())
    keyword_only = [n for n, p in sig_l.parameters.items() if p.kind is p.KEYWORD_ONLY]
    assert keyword_only == [o.name for o in OPTIONS][2:]  # all but gold and tokenizer
    for option in OPTIONS:
        parameter = sig_l.parameters[option.name]
        assert parameter.default is option.default or parameter.default == option.default, option.name
        assert parameter.annotation.replace("'", '"') == option.annotation, option.name
    for cls in (lightning_cb, hf_cb):  # every option documented, by name, in each class's own docstring
        documented = _documented(cls)
        assert list(documented) == [o.name for o in OPTIONS], cls.__name__


def test_a_docstring_that_drifts_from_the_specification_is_caught():
    class Drifted:
        """A callback.

        Args:
            gold: the gold set.
            num_samples: an argument that moved.
        """

    assert list(_documented(Drifted)) != [o.name for o in OPTIONS]
    assert list(_documented(Drifted)) == ["gold", "num_samples"]


@pytest.mark.parametrize("typo", ["on_colapse", "schedul", "generaton", "tresholds"])
def test_a_typo_names_the_callback_and_the_close_match(typo):
    for cls in _callbacks():
        with pytest.raises(TypeError) as info:
            cls(tr.gold(), **{typo: 1})
        text = str(info.value)
        assert text.startswith(f"{cls.__name__}: unexpected argument {typo}=1; did you mean ")
        assert "GuardEngine" not in text


def _old_value(old: str, tmp_path) -> object:
    sampler = AnchorMixSampler(["human", "synthetic"] * 4, 4, 0.25)
    return {"model_stats": False, "reference": None, "save_profile": tmp_path / "p.json", "sampler": sampler,
            "anchor_sampler": sampler, "generate_fn": tr.alarming, "sample_fn": None, "score_fn": None,
            "num_samples": 8, "prompt_length": 4, "max_new_tokens": 6, "samples_per_prompt": 2, "batch_size": 3,
            "seed": 5, "generation_kwargs": {"temperature": 0.5}, "zero3_gather": False, "every_n_epochs": 2,
            "check_on_train_start": False, "patience": 3, "max_human_fraction": 0.7, "reweight_step": 0.2,
            "recovery_checks": 4}[old]


def _new_place(guard: object, new: str) -> object:
    engine = guard.engine  # type: ignore[attr-defined]
    group, _, field = new.partition(".")
    if not field:
        return getattr(engine, group)
    if group == "hooks":
        return getattr(guard.hooks, field)  # type: ignore[attr-defined]
    if group == "generation":
        return getattr(engine.generation, field)
    if group == "schedule":
        return getattr(engine.schedule, field)
    policy = engine.halting if field == "patience" else engine.reweighting
    return getattr(policy, {"anchor_sampler": "sampler", "reweight_step": "step",
                            "max_human_fraction": "ceiling"}.get(field, field))


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_old_spellings_still_work_with_a_deprecation_warning(old, new, tmp_path):
    if old in ("sample_fn", "score_fn"):
        pytest.skip("array-model hooks need an array gold set: test_old_array_hook_spellings_still_work")
    value = _old_value(old, tmp_path)
    group = new.partition(".")[0]
    # 0.1 names were renamed in 0.2; 0.2's top-level settings were grouped in 0.3: each goes one release later
    since, removal = (r"0\.2", r"0\.3") if old in ("model_stats", "reference", "save_profile", "sampler") \
        else (r"0\.3", r"0\.4")
    extra = {"patience": {"on_collapse": "halt"}}.get(old, {"on_collapse": "reweight"} if group == "on_collapse" else {})
    if group == "on_collapse" and old not in ("anchor_sampler", "sampler", "patience"):
        extra = {"on_collapse": "reweight", "anchor_sampler": _old_value("anchor_sampler", tmp_path)}
    for cls in _callbacks():
        with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\({old}=\.\.\.\) is deprecated since "
                                                    rf"collapseguard {since} and goes away in {removal}: use "):
            guard = cls(tr.gold(), **{old: value}, **extra)
        assert _new_place(guard, new) == value
    if "." not in new:
        with pytest.raises(TypeError, match=f"got both {old}= and {new}="):
            cls(tr.gold(), **{old: value, new: value})


def test_old_array_hook_spellings_still_work():
    gold = GoldSet.from_arrays(np.random.default_rng(0).normal(size=(40, 3)))
    sample, score = (lambda model, n: np.zeros((n, 3))), (lambda model, rows: np.zeros(len(rows)))
    for cls in _callbacks():
        with pytest.warns(DeprecationWarning, match=r"\(sample_fn=\.\.\.\) is deprecated since collapseguard 0\.3"):
            guard = cls(gold, sample_fn=sample, score_fn=score)
        assert guard.hooks == ModelHooks(sample=sample, score=score)


def test_old_and_new_spellings_of_one_field_are_refused_together():
    lightning_cb, _ = _callbacks()
    with pytest.raises(ValueError, match=r"every_n_epochs=3 and schedule\.every_n_epochs=2 were both given"), \
            pytest.warns(DeprecationWarning):
        lightning_cb(tr.gold(), schedule=CheckSchedule(every_n_epochs=2), every_n_epochs=3)
    with pytest.raises(TypeError, match=r"on_collapse=HaltPolicy\(patience=2\) and patience= were both given"), \
            pytest.warns(DeprecationWarning):
        lightning_cb(tr.gold(), on_collapse=HaltPolicy(patience=2), patience=3)
    with pytest.raises(TypeError, match=r"num_samples=16 and generation\.num_samples=32 were both given"), \
            pytest.warns(DeprecationWarning):
        lightning_cb(tr.gold(), generation=GenerationSettings(num_samples=32), num_samples=16)
    with pytest.raises(ValueError, match=r"check_on_train_start=False and schedule\.check_on_train_start=False"), \
            pytest.warns(DeprecationWarning):
        lightning_cb(tr.gold(), schedule={"check_on_train_start": False}, check_on_train_start=False)


# ----------------------------------------------------------------- bad values, generated from the specification
def _invalid_value(constraints: tuple[Constraint, ...]) -> object:
    """A value no constraint accepts, as scikit-learn's ``generate_invalid_param_val`` builds one."""
    for candidate in (object(), -7, "not-an-option", 0, 1.5, [1, 2]):
        if not any(c.accepts(candidate) for c in constraints):
            return candidate
    raise AssertionError(f"no invalid value for {constraints}")


_VALIDATED = [o for o in OPTIONS if o.constraints]


@pytest.mark.parametrize("option", _VALIDATED, ids=[o.name for o in _VALIDATED])
def test_a_bad_value_for_each_option_is_refused_in_the_one_format(option):
    assert all(isinstance(c, InstanceOf | OneOf | Interval | HasMethods | Satisfies) for c in option.constraints)
    value = _invalid_value(option.constraints)
    for cls in _callbacks():
        arguments = {"gold": value} if option.name == "gold" else {option.name: value}
        with pytest.raises((TypeError, ValueError)) as info:
            cls(**arguments) if option.name == "gold" else cls(tr.gold(), **arguments)
        assert str(info.value).startswith(f"{cls.__name__}: {option.name}=")
        assert f"is invalid: {option.name} must be " in str(info.value)


@pytest.mark.parametrize(("settings", "bad"), [(GenerationSettings, {"num_samples": 1}),
                                              (GenerationSettings, {"max_new_tokens": 0}),
                                              (GenerationSettings, {"seed": -1}),
                                              (CheckSchedule, {"every_n_steps": 0}),
                                              (ModelHooks, {"generate": 3})])
def test_the_grouped_settings_refuse_bad_fields_in_the_same_format(settings, bad):
    name, value = next(iter(bad.items()))
    with pytest.raises((TypeError, ValueError), match=rf"^{settings.__name__}: {name}={value!r} is invalid: {name} "
                                                       "must be "):
        settings(**bad)


def test_generation_kwargs_that_the_guard_sets_itself_are_refused_at_construction():
    lightning_cb, hf_cb = _callbacks()
    for cls in (lightning_cb, hf_cb):
        with pytest.raises(ValueError, match=r"GenerationSettings: generation_kwargs=\{'max_new_tokens': 64\} is "
                                             r"invalid: .* pass GenerationSettings\(max_new_tokens=64\)"):
            cls(tr.gold(), generation={"generation_kwargs": {"max_new_tokens": 64}})
    with pytest.raises(ValueError, match="The guard sets num_return_sequences itself: pass "
                                         r"GenerationSettings\(samples_per_prompt=4\)"):
        GenerationSettings(generation_kwargs={"num_return_sequences": 4})


def test_policies_are_objects_and_each_guard_keeps_its_own_copy():
    halt = HaltPolicy(patience=2)
    first, second = (GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), on_collapse=halt) for _ in range(2))
    assert first.halting is not second.halting and first.halting.patience == second.halting.patience == 2
    assert first.on_collapse == "halt" and first.patience == 2
    sampler = AnchorMixSampler(["human", "synthetic"] * 4, 4, 0.25)
    reweight = GuardEngine(tr.gold(), on_collapse=ReweightPolicy(sampler, max_human_fraction=0.6, step=0.2))
    assert reweight.anchor_sampler is sampler and reweight.on_collapse == "reweight"
    assert (reweight.reweighting.ceiling, reweight.reweighting.step) == (0.6, 0.2)


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
    with pytest.warns(DeprecationWarning, match="Thresholds: patience is deprecated since collapseguard 0.2 and goes "
                                                "away in 0.3: use alert_patience instead"):
        th = Thresholds(patience=3)
    assert th.alert_patience == 3
    with pytest.warns(DeprecationWarning):
        assert Thresholds.from_dict({"patience": 2}).alert_patience == 2
    with pytest.warns(DeprecationWarning):
        assert Thresholds().patience == 1
    assert "patience" not in Thresholds().to_dict() and "alert_patience" in Thresholds().to_dict()


def test_generation_is_now_generated_batch():
    import collapseguard.guard.engine as engine_module

    with pytest.warns(DeprecationWarning, match="Generation is deprecated since collapseguard 0.2 .* use "
                                                "GeneratedBatch"):
        assert engine_module.Generation is GeneratedBatch


def test_halting_and_reweighting_are_policies_of_their_own():
    loop = [np.array([5, 6, 7, 8] * 8)] * 16
    sampler = AnchorMixSampler(["human"] * 8 + ["synthetic"] * 24, 8, 0.25)
    engine = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(),
                         on_collapse=ReweightPolicy(sampler, max_human_fraction=0.6, step=0.1),
                         generation=GenerationSettings(num_samples=16), schedule={"check_on_train_start": False})
    engine.setup()
    outcome = engine.run_check(lambda: GeneratedBatch(sequences=loop, finished=[False] * 16), step=1, epoch=0)
    assert outcome.result.critical and not outcome.should_stop  # reweighting never halts
    assert engine.reweighting.fraction == pytest.approx(0.45) == engine.human_fraction  # a critical: two steps
    assert engine.halting.critical_streak == 1 and engine.critical_streak == 1
    halting = GuardEngine(tr.gold(), tokenizer=tr.tokenizer(), on_collapse=HaltPolicy(patience=2),
                          generation=GenerationSettings(num_samples=16))
    halting.setup()
    produce = lambda: GeneratedBatch(sequences=loop, finished=[False] * 16)  # noqa: E731
    assert not halting.run_check(produce, step=1, epoch=0).should_stop
    second = halting.run_check(produce, step=2, epoch=1)
    assert second.should_stop and "after 2 consecutive critical check(s) (patience=2)" in second.reason


def test_lightning_skips_fast_dev_run_like_early_stopping(tmp_path, caplog):
    from collapseguard.integrations.lightning import CollapseGuard

    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), hooks=ModelHooks(generate=tr.alarming),
                          on_collapse="halt", **tr.GUARD_KWARGS)
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
    assert "--guard.on_collapse ON_COLLAPSE" in text and "--guard.on_error {warn,raise}" in text
    parsed = parser.parse_args(["--guard.gold=g.jsonl", "--guard.on_collapse=halt",
                                "--guard.generation={\"num_samples\": 8}"])
    assert parsed.guard.on_collapse == "halt"
    assert parsed.guard.generation.num_samples == 8  # the dataclass's fields, as LightningCLI instantiates it


def test_the_engine_takes_exactly_the_shared_options():
    from collapseguard.guard.engine import ENGINE_OPTIONS

    assert list(ENGINE_OPTIONS) == [o.name for o in OPTIONS if o.engine]
    with pytest.raises(TypeError, match=r"^GuardEngine: unexpected argument on_colapse='halt'; it takes generation"):
        GuardEngine(tr.gold(), on_colapse="halt")
    engine = GuardEngine(tr.gold())
    assert (engine.num_samples, engine.on_collapse, engine.patience) == (64, "warn", 1)  # the specification's defaults


def test_the_monitor_names_the_reference_profile_as_the_callbacks_do():
    assert "reference_profile" in inspect.signature(__import__("collapseguard").CollapseMonitor).parameters
    from collapseguard import CollapseMonitor

    with pytest.warns(DeprecationWarning, match=r"CollapseMonitor\(reference=\.\.\.\) is deprecated .* use "
                                                "reference_profile="):
        monitor = CollapseMonitor(tr.gold(), tokenizer=tr.tokenizer(), reference=None)
    assert monitor.reference_profile is None


def test_refusals_keep_argument_names_and_fix_text_intact():
    lightning_cb, _ = _callbacks()
    with pytest.raises(ValueError) as info:
        lightning_cb(tr.gold(), schedule={"every_n_epochs": -1})
    assert str(info.value).endswith("Pass 1 to check at every epoch end, 0 for never.")
    with pytest.raises(TypeError) as info:
        lightning_cb(tr.gold(), reference_profile=123)
    assert str(info.value).endswith("Pass the JSON a run wrote with save_profile_to=...")
    with pytest.raises(ValueError, match=r"^CollapseGuard: thresholds='balnced' is invalid: unknown thresholds preset "
                                         r"'balnced' \(did you mean 'balanced'\?\)"):
        lightning_cb(tr.gold(), thresholds="balnced")


def test_adapters_rely_on_no_interpreter_tricks():
    """No frame walking, no registry of live instances, no metaclass in the adapters; the GRPO guard is a callback of
    its own, not a narrowed CollapseGuardCallback."""
    import ast
    import pathlib

    _callbacks()
    from collapseguard.integrations.transformers import CollapseGuardCallback
    from collapseguard.integrations.trl import GRPOCollapseGuard

    for path in sorted(pathlib.Path(__file__).resolve().parents[1].joinpath("integrations").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree)
                 if isinstance(n, ast.Attribute | ast.Name)}
        assert not names & {"currentframe", "_getframe", "f_back", "f_locals", "WeakValueDictionary"}, path
        assert not any(k.arg == "metaclass" for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                       for k in n.keywords), path
    assert not issubclass(GRPOCollapseGuard, CollapseGuardCallback)
    assert type(CollapseGuardCallback) is type and type(GRPOCollapseGuard) is type


def test_the_callback_reference_documents_exactly_the_specification():
    import pathlib

    text = pathlib.Path(__file__).resolve().parents[1].joinpath("docs", "callbacks.md").read_text()
    table = text.split("## Arguments", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")]
    assert rows == [o.name for o in OPTIONS]
