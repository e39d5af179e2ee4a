"""The arguments every guard callback takes: one specification, so the callbacks cannot drift apart.

Both callbacks (``collapseguard.integrations.lightning.CollapseGuard`` and
``collapseguard.integrations.transformers.CollapseGuardCallback``) spell each argument out, keyword-only, in
their own signatures -- IDEs, ``inspect.signature`` and LightningCLI read them there. :class:`GuardCallbackMeta`
compares those signatures with :data:`OPTIONS` when the class is defined (same names, defaults and annotations,
or the import fails), and at call time turns a misspelt argument into an error that names the callback and
suggests the close match, and a renamed one into a ``DeprecationWarning``. :class:`GuardEngine` validates the
values against the same table with :func:`collapseguard._validation.validate`.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import warnings
from dataclasses import dataclass
from typing import Any

from collapseguard._validation import (
    BOOL,
    CALLABLE,
    FRACTION,
    NONE,
    PATH,
    Constraint,
    HasMethods,
    InstanceOf,
    Interval,
    OneOf,
    describe,
    validate,
)
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.guard.schedule import SCHEDULE

ON_COLLAPSE = ("warn", "halt", "reweight")
ON_ERROR = ("warn", "raise")


@dataclass(frozen=True)
class Option:
    """One argument: its default, its annotation as written in the callbacks' signatures, what it accepts."""

    name: str
    default: Any
    annotation: str
    constraints: tuple[Constraint, ...]
    fix: str | None = None
    engine: bool = True  # passed on to GuardEngine (the rest are the adapter's: gold resolution, generation)


_REQUIRED = inspect.Parameter.empty
_INT1 = Interval(int, 1, None)

OPTIONS: tuple[Option, ...] = (
    Option("gold", _REQUIRED, "GoldSet | str | Path", (InstanceOf(GoldSet, name="a GoldSet"), PATH),
           "build one with GoldSet.from_texts / from_jsonl / from_pairs / from_arrays, or pass a JSONL gold file's path",
           engine=False),
    Option("tokenizer", None, "Any", (), engine=False),
    Option("generate_fn", None, "Callable[..., Any] | None", (CALLABLE, NONE), engine=False),
    Option("sample_fn", None, "Callable[..., Any] | None", (CALLABLE, NONE), engine=False),
    Option("score_fn", None, "Callable[..., Any] | None", (CALLABLE, NONE), engine=False),
    Option("thresholds", None, "Thresholds | str | dict[str, Any] | None",
           (InstanceOf(Thresholds, str, dict, name="a Thresholds, a preset name, a dict or a .yaml/.json path"), NONE)),
    Option("on_collapse", "warn", 'Literal["warn", "halt", "reweight"]', (OneOf(*ON_COLLAPSE),),
           "'warn' logs and warns, 'halt' stops training, 'reweight' raises the human share of anchor_sampler"),
    Option("on_error", "warn", 'Literal["warn", "raise"]', (OneOf(*ON_ERROR),),
           "'warn' turns a failing check into a fault alert and training goes on; 'raise' re-raises it"),
    Option("every_n_epochs", 1, "int", (_INT1,), "use every_n_epochs=1 to check at the end of every epoch"),
    Option("schedule", None, "CheckSchedule | str | dict[str, Any] | None", SCHEDULE,
           "e.g. schedule=CheckSchedule(every_n_steps=100, sentinel_every_n_steps=10) or schedule='steps'"),
    Option("num_samples", 64, "int", (Interval(int, 2, None),), "a check needs at least 2 outputs to compare"),
    Option("prompt_length", 16, "int", (_INT1,)),
    Option("max_new_tokens", 32, "int", (_INT1,)),
    Option("samples_per_prompt", 1, "int", (_INT1,)),
    Option("patience", 1, "int", (_INT1,), "halt after this many consecutive critical checks (1: the first)"),
    Option("seed", 0, "int", (Interval(int, 0, None),)),
    Option("generation_kwargs", None, "dict[str, Any] | None", (InstanceOf(dict, name="a dict"), NONE),
           "pass the sampling settings as a dict, e.g. {'temperature': 0.8}"),
    Option("score_gold", True, "bool", (BOOL,)),
    Option("batch_size", 32, "int", (_INT1,)),
    Option("check_on_train_start", True, "bool", (BOOL,)),
    Option("zero3_gather", True, "bool", (BOOL,)),
    Option("reference_profile", None, "ReferenceProfile | str | Path | None",
           (InstanceOf(ReferenceProfile, name="a ReferenceProfile"), PATH, NONE),
           "pass the JSON a run wrote with save_profile_to=..."),
    Option("save_profile_to", None, "str | Path | None", (PATH, NONE)),
    Option("alert_log", None, "str | Path | None", (PATH, NONE)),
    Option("anchor_sampler", None, "AnchorMixSampler | None",
           (HasMethods("set_human_fraction", name="an AnchorMixSampler"), NONE),
           "pass the AnchorMixSampler of your training DataLoader"),
    Option("max_human_fraction", 0.8, "float", (FRACTION,)),
    Option("reweight_step", 0.1, "float", (FRACTION,)),
    Option("recovery_checks", 2, "int", (_INT1,)),
    Option("provenance", None, "ProvenanceLedger | None", (HasMethods("log_summary", name="a ProvenanceLedger"), NONE)),
    Option("data_monitor", None, "DataStreamMonitor | None",
           (HasMethods("observe", "evaluate", name="a DataStreamMonitor"), NONE)),
)
BY_NAME = {o.name: o for o in OPTIONS}

RENAMED = {"model_stats": "score_gold", "reference": "reference_profile", "save_profile": "save_profile_to",
           "sampler": "anchor_sampler"}
"""Arguments renamed in 0.2 (old -> new): the old name still works, with a ``DeprecationWarning``, until 0.3."""


def check_option(caller: str, name: str, value: Any) -> Any:
    """Validate one argument against :data:`OPTIONS` (the one message format of :mod:`collapseguard._validation`)."""
    option = BY_NAME[name]
    return validate(caller, name, value, *option.constraints, fix=option.fix) if option.constraints else value


def check_names(caller: str, given: dict[str, Any], accepted: list[str]) -> None:
    """Refuse an argument ``caller`` does not take, naming the close match (a typo) or the ones it takes."""
    for key, value in given.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"; did you mean {close[0]}=?" if close else f"; it takes {', '.join(accepted)}"
            raise TypeError(f"{caller}: unexpected argument {key}={describe(value)}{hint}")


def adapter_arguments(caller: str, arguments: dict[str, Any]) -> tuple[GoldSet, Any, dict[str, Any]]:
    """Split a callback's arguments (its ``locals()``) into the gold set, the tokenizer (an object or a path the
    adapter loads) and the engine's options, checking the model-facing functions against the gold set's kind."""
    args = {k: v for k, v in arguments.items() if k in BY_NAME}
    for name in ("gold", "generate_fn", "sample_fn", "score_fn"):
        check_option(caller, name, args[name])
    gold = args.pop("gold")
    if not isinstance(gold, GoldSet):  # from LightningCLI / YAML / a script: the path of a JSONL gold file
        gold = GoldSet.from_jsonl(gold)
    tokenizer = args.pop("tokenizer")
    generate_fn, sample_fn, score_fn = args.pop("generate_fn"), args.pop("sample_fn"), args.pop("score_fn")
    if generate_fn is not None and sample_fn is not None:
        raise ValueError(f"{caller}: generate_fn and sample_fn were both given: pass generate_fn (text models) or "
                         "sample_fn (array models), not both")
    if score_fn is not None and sample_fn is None:
        raise ValueError(f"{caller}: score_fn scores gold samples of an array gold set: pass it with sample_fn")
    if sample_fn is None and gold.kind == "array":
        raise ValueError(f"{caller}: an array gold set needs sample_fn=fn(model, n) -> (n, d) samples")
    if sample_fn is not None and gold.kind == "text":
        raise ValueError(f"{caller}: sample_fn is for array gold sets; this gold set holds texts: use generate_fn")
    return gold, tokenizer, args


def renamed_arguments(caller: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with 0.1 names moved to their 0.2 names, warning once per old name."""
    out = dict(kwargs)
    for old, new in RENAMED.items():
        if old in out:
            if new in out:
                raise TypeError(f"{caller}: got both {old}= and {new}=; {old} is the old name of {new}: pass only {new}")
            warnings.warn(f"{caller}: {old}= was renamed {new}= in collapseguard 0.2; the old name goes away in 0.3",
                          DeprecationWarning, stacklevel=3)
            out[new] = out.pop(old)
    return out


def _normal(annotation: Any) -> str:
    """An annotation as the compiler writes it under ``from __future__ import annotations`` (quotes, spacing)."""
    return ast.unparse(ast.parse(annotation, mode="eval")) if isinstance(annotation, str) else repr(annotation)


class GuardCallbackMeta(type):
    """Metaclass of the guard callbacks: checks their signatures against :data:`OPTIONS` once, when the class is
    defined, and every call's keyword names (typos, renamed arguments) before ``__init__`` runs.

    A class lists the options it takes in ``_options`` (all of :data:`OPTIONS` by default) and those whose
    annotation it narrows in ``_narrowed`` (e.g. a guard that cannot reweight). A class may define
    ``_restore(key)``: a call with only ``_restore_key=key`` returns what it gives -- Hugging Face rebuilds stateful
    callbacks as ``type(cb)(**stored_args)``, and the guard hands back the live instance instead of a new one.
    """

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(name, bases, namespace)
        if "__init__" not in namespace:
            return
        signature = inspect.signature(namespace["__init__"])
        params = list(signature.parameters.values())[1:]  # without self
        expected = namespace.get("_options", tuple(BY_NAME))
        narrowed = set(namespace.get("_narrowed", ()))
        got = [p.name for p in params if p.name in BY_NAME]
        if got != [n for n in BY_NAME if n in expected]:
            raise TypeError(f"{name}.__init__ must take the shared guard options in the order of "
                            f"collapseguard.guard.options.OPTIONS; expected {list(expected)}, got {got}")
        for p in params:
            option = BY_NAME.get(p.name)
            if option is None:
                continue
            if p.default is not option.default and p.default != option.default:
                raise TypeError(f"{name}.__init__: {p.name} defaults to {p.default!r}, the shared options to "
                                f"{option.default!r}")
            if _normal(p.annotation) != _normal(option.annotation) and p.name not in narrowed:
                raise TypeError(f"{name}.__init__: {p.name} is annotated {p.annotation!r}, the shared options "
                                f"{option.annotation!r}")
        cls.__signature__ = signature.replace(parameters=params)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if "_restore_key" in kwargs and hasattr(cls, "_restore"):
            return cls._restore(kwargs["_restore_key"])
        kwargs = renamed_arguments(cls.__name__, kwargs)
        check_names(cls.__name__, kwargs, list(cls.__signature__.parameters))
        return super().__call__(*args, **kwargs)
