"""The arguments every guard callback takes: one specification, so the callbacks cannot drift apart.

Both callbacks (``collapseguard.integrations.lightning.CollapseGuard`` and
``collapseguard.integrations.transformers.CollapseGuardCallback``) spell each argument out, keyword-only, in their
own signatures, where IDEs, ``inspect.signature`` and LightningCLI read them; ``tests/test_signatures.py`` checks
those signatures and their docstrings against :data:`OPTIONS`. :class:`~collapseguard.guard.engine.GuardEngine`
validates the values against the same table with :func:`collapseguard._validation.validate`.

Settings that belong together travel as one object, as Lightning's ``strategy=`` does: ``generation=``
(:class:`~collapseguard.guard.generation.GenerationSettings`), ``hooks=``
(:class:`~collapseguard.guard.generation.ModelHooks`), ``schedule=`` (:class:`~collapseguard.CheckSchedule`) and
``on_collapse=`` (a string or a :class:`~collapseguard.guard.halting.HaltPolicy` /
:class:`~collapseguard.guard.reweighting.ReweightPolicy`). The 0.2 spellings of their fields as top-level arguments
still work for one release (:data:`MOVED`, through :func:`collapseguard._deprecation.deprecate_kwargs`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from collapseguard._deprecation import deprecate_kwargs
from collapseguard._validation import BOOL, NONE, PATH, Constraint, HasMethods, InstanceOf, OneOf, validate
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.guard.generation import GenerationSettings, ModelHooks
from collapseguard.guard.halting import HaltPolicy
from collapseguard.guard.reweighting import ReweightPolicy
from collapseguard.guard.schedule import SCHEDULE, CheckSchedule

ON_COLLAPSE = ("warn", "halt")
ON_ERROR = ("warn", "raise")


@dataclass(frozen=True)
class Option:
    """One argument: its default, its annotation as written in the callbacks' signatures, what it accepts."""

    name: str
    default: Any
    annotation: str
    constraints: tuple[Constraint, ...]
    fix: str | None = None
    engine: bool = True  # passed on to GuardEngine (the rest are the adapter's: gold resolution, model hooks)


_REQUIRED = inspect.Parameter.empty

OPTIONS: tuple[Option, ...] = (
    Option("gold", _REQUIRED, "GoldSet | str | Path", (InstanceOf(GoldSet, name="a GoldSet"), PATH),
           "build one with GoldSet.from_texts / from_jsonl / from_pairs / from_arrays, or pass a JSONL gold file's path",
           engine=False),
    Option("tokenizer", None, "Any", (), engine=False),
    Option("hooks", None, "ModelHooks | None", (InstanceOf(ModelHooks, dict, name="a ModelHooks"), NONE),
           "e.g. hooks=ModelHooks(generate=fn) with fn(model, prompts) -> token id sequences", engine=False),
    Option("generation", None, "GenerationSettings | dict[str, Any] | None",
           (InstanceOf(GenerationSettings, dict, name="a GenerationSettings or a dict of its fields"), NONE),
           "e.g. generation=GenerationSettings(num_samples=32, max_new_tokens=48)"),
    Option("thresholds", None, "Thresholds | str | dict[str, Any] | None",
           (InstanceOf(Thresholds, str, dict, name="a Thresholds, a preset name, a dict or a .yaml/.json path"), NONE)),
    Option("on_collapse", "warn", 'Literal["warn", "halt"] | HaltPolicy | ReweightPolicy',
           (OneOf(*ON_COLLAPSE), InstanceOf(HaltPolicy, ReweightPolicy, name="a HaltPolicy or a ReweightPolicy")),
           "'warn' logs, 'halt' (or HaltPolicy(patience=...)) stops training, on_collapse=ReweightPolicy(anchor_sampler) "
           "raises the human share of the training batches"),
    Option("on_error", "warn", 'Literal["warn", "raise"]', (OneOf(*ON_ERROR),),
           "'warn' turns a failing check into a fault alert and training goes on; 'raise' re-raises it"),
    Option("schedule", None, "CheckSchedule | str | dict[str, Any] | None", SCHEDULE,
           "e.g. schedule=CheckSchedule(every_n_steps=100, sentinel_every_n_steps=10) or schedule='steps'"),
    Option("score_gold", True, "bool", (BOOL,)),
    Option("reference_profile", None, "ReferenceProfile | str | Path | None",
           (InstanceOf(ReferenceProfile, name="a ReferenceProfile"), PATH, NONE),
           "pass the JSON a run wrote with save_profile_to=..."),
    Option("save_profile_to", None, "str | Path | None", (PATH, NONE)),
    Option("alert_log", None, "str | Path | None", (PATH, NONE)),
    Option("provenance", None, "ProvenanceLedger | None", (HasMethods("log_summary", name="a ProvenanceLedger"), NONE)),
    Option("data_monitor", None, "DataStreamMonitor | None",
           (HasMethods("observe", "evaluate", name="a DataStreamMonitor"), NONE)),
)
BY_NAME = {o.name: o for o in OPTIONS}


def check_option(caller: str, name: str, value: Any) -> Any:
    """Validate one argument against :data:`OPTIONS` (the one message format of :mod:`collapseguard._validation`)."""
    option = BY_NAME[name]
    return validate(caller, name, value, *option.constraints, fix=option.fix) if option.constraints else value


_HALT_FIELDS = ("patience",)
_REWEIGHT_FIELDS = ("anchor_sampler", "max_human_fraction", "step", "recovery_checks")


def merged_on_collapse(caller: str, value: Any, fields: dict[str, Any]) -> Any:
    """``on_collapse`` with the 0.2 top-level ``patience=`` / ``anchor_sampler=`` / ``max_human_fraction=`` /
    ``reweight_step=`` / ``recovery_checks=`` folded into the policy they configure (fields of the other policy are
    dropped, as they did nothing before either)."""
    if isinstance(value, HaltPolicy | ReweightPolicy):
        raise TypeError(f"{caller}: on_collapse={value!r} and {', '.join(f'{k}=' for k in fields)} were both given: "
                        "set them on the policy")
    if value == "halt":
        return HaltPolicy(**{k: fields[k] for k in _HALT_FIELDS if k in fields})
    if value == "reweight" and "anchor_sampler" in fields:
        given = {k: fields[k] for k in _REWEIGHT_FIELDS if k in fields}
        return ReweightPolicy(given.pop("anchor_sampler"), **given)
    return value  # "warn", or "reweight" with no sampler (the validator refuses it, naming ReweightPolicy)


MOVED: dict[str, str] = {
    # 0.1 names, renamed in 0.2
    "model_stats": "score_gold", "reference": "reference_profile", "save_profile": "save_profile_to",
    "sampler": "on_collapse.anchor_sampler",  # (0.1's name of anchor_sampler, grouped since)
    # 0.2 top-level settings, grouped in 0.3's objects
    **{name: f"hooks.{name.removesuffix('_fn')}" for name in ("generate_fn", "sample_fn", "score_fn")},
    **{name: f"generation.{name}" for name in ("num_samples", "prompt_length", "max_new_tokens", "samples_per_prompt",
                                               "batch_size", "seed", "generation_kwargs", "zero3_gather")},
    "every_n_epochs": "schedule.every_n_epochs", "check_on_train_start": "schedule.check_on_train_start",
    "patience": "on_collapse.patience", "anchor_sampler": "on_collapse.anchor_sampler",
    "max_human_fraction": "on_collapse.max_human_fraction", "reweight_step": "on_collapse.step",
    "recovery_checks": "on_collapse.recovery_checks",
}
"""Old spelling -> new place, for one release: a plain name (renamed) or ``group.field`` (moved into an object)."""


RENAMED_IN_0_2 = ("model_stats", "reference", "save_profile", "sampler")

accepts_old_spellings = deprecate_kwargs(
    MOVED, since={old: "0.2" if old in RENAMED_IN_0_2 else "0.3" for old in MOVED},
    merge={"hooks": ModelHooks.merged, "generation": GenerationSettings.merged, "schedule": CheckSchedule.merged,
           "on_collapse": merged_on_collapse})
"""The decorator on both callbacks' ``__init__``: old spellings work, with a ``DeprecationWarning``; typos are
refused naming the close match."""


def resolve_gold(caller: str, gold: Any) -> GoldSet:
    """The gold set a callback was given: a :class:`GoldSet`, or the path of a JSONL gold file (LightningCLI, YAML)."""
    check_option(caller, "gold", gold)
    return gold if isinstance(gold, GoldSet) else GoldSet.from_jsonl(gold)


def resolve_hooks(caller: str, hooks: Any, gold: GoldSet) -> ModelHooks:
    """The model hooks, checked against the gold set's kind."""
    check_option(caller, "hooks", hooks)
    resolved = ModelHooks.coerce(hooks, caller)
    resolved.check_against(caller, gold.kind)
    return resolved


