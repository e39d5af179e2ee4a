"""What a guard asks of the model at each check, and how: :class:`GenerationSettings` and :class:`ModelHooks`.

The callbacks take both as one argument each (``generation=``, ``hooks=``), as Lightning's ``Trainer`` takes a
``strategy=`` object rather than a dozen of its settings. Both validate in ``__init__`` and accept a plain dict
where a config file gives one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from collapseguard._validation import BOOL, CALLABLE, NONE, InstanceOf, Interval, describe, validate

DEFAULT_SAMPLING = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
"""Pure sampling at temperature 1: the model's own distribution, which is what collapse narrows."""

# set by the guard itself from the settings above: given again in generation_kwargs, generate() gets them twice
_OWNED_BY_SETTINGS = {"max_new_tokens": "max_new_tokens", "max_length": "max_new_tokens",
                      "num_return_sequences": "samples_per_prompt", "input_ids": None, "attention_mask": None,
                      "eos_token_id": None, "pad_token_id": None}

_INT1 = Interval(int, 1, None)


def _coerce(cls: type, value: Any, caller: str, argument: str, fix: str) -> Any:
    """``cls`` from an instance, a dict of its fields or None (its defaults), refusing unknown fields by name."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    validate(caller, argument, value, InstanceOf(dict, name=f"a {cls.__name__} or a dict of its fields"), fix=fix)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise TypeError(f"{caller}: {argument}={describe(value)} is invalid: unknown field(s) {unknown}; "
                        f"{cls.__name__} takes {known}")
    return cls(**value)


def _merged(cls: type, caller: str, argument: str, value: Any, fields_: dict[str, Any]) -> Any:
    """``value`` (an instance, a dict or None) with ``fields_`` set; a field set both there and in ``value`` (away
    from its default) is refused, since one of the two would be silently lost."""
    current = _coerce(cls, value, caller, argument, f"pass a {cls.__name__}")
    defaults = cls()
    for name in fields_:
        if getattr(current, name) != getattr(defaults, name):
            raise TypeError(f"{caller}: {name}={describe(fields_[name])} and {argument}.{name}="
                            f"{describe(getattr(current, name))} were both given: pass only {argument}.{name}")
    return dataclasses.replace(current, **fields_)


@dataclass(frozen=True)
class GenerationSettings:
    """How much each check generates (the callbacks' ``generation=``).

    Args:
        num_samples: gold prompts continued per check (across all processes); array gold: samples drawn.
        prompt_length: gold tokens in each prompt.
        max_new_tokens: tokens generated per prompt (also the length of the gold reference continuations).
        samples_per_prompt: continue each prompt k times and judge within-prompt diversity (chat gold sets).
        batch_size: prompts per generation batch.
        seed: generation seed; check k samples with ``seed + k``, so a resumed run samples the same way.
        generation_kwargs: overrides of the sampling settings passed to ``generate`` (default: pure sampling at
            temperature 1, :data:`DEFAULT_SAMPLING`). The lengths and counts above are the guard's own: set them here,
            not in ``generation_kwargs``.
        zero3_gather: DeepSpeed ZeRO-3 only: gather the whole model once per check (``False``: module by module).

    >>> GenerationSettings(generation_kwargs={"temperature": 0.7}).sampling["temperature"]
    0.7
    >>> GenerationSettings(generation_kwargs={"max_new_tokens": 64})
    Traceback (most recent call last):
    ...
    ValueError: GenerationSettings: generation_kwargs={'max_new_tokens': 64} is invalid: generation_kwargs must be sampling settings only (temperature, top_p, ...). The guard sets max_new_tokens itself: pass GenerationSettings(max_new_tokens=64).
    """

    num_samples: int = 64
    prompt_length: int = 16
    max_new_tokens: int = 32
    samples_per_prompt: int = 1
    batch_size: int = 32
    seed: int = 0
    generation_kwargs: dict[str, Any] | None = None
    zero3_gather: bool = True

    def __post_init__(self) -> None:
        caller = type(self).__name__
        validate(caller, "num_samples", self.num_samples, Interval(int, 2, None),
                 fix="a check needs at least 2 outputs to compare")
        for name in ("prompt_length", "max_new_tokens", "samples_per_prompt", "batch_size"):
            validate(caller, name, getattr(self, name), _INT1)
        validate(caller, "seed", self.seed, Interval(int, 0, None))
        validate(caller, "generation_kwargs", self.generation_kwargs, InstanceOf(dict, name="a dict"), NONE,
                 fix="pass the sampling settings as a dict, e.g. {'temperature': 0.8}")
        validate(caller, "zero3_gather", self.zero3_gather, BOOL)
        for key, value in (self.generation_kwargs or {}).items():
            if key in _OWNED_BY_SETTINGS:
                setting = _OWNED_BY_SETTINGS[key]
                fix = (f"the guard sets {key} itself: pass {caller}({setting}={describe(value)})" if setting else
                       f"the guard sets {key} itself from the gold prompts and the tokenizer: drop it")
                raise ValueError(f"{caller}: generation_kwargs={describe(self.generation_kwargs)} is invalid: "
                                 f"generation_kwargs must be sampling settings only (temperature, top_p, ...). "
                                 f"{fix[:1].upper()}{fix[1:]}.")

    @property
    def sampling(self) -> dict[str, Any]:
        """The keyword arguments of ``generate``: the default sampling, overridden by ``generation_kwargs``."""
        return {**DEFAULT_SAMPLING, **(self.generation_kwargs or {})}

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def coerce(cls, value: GenerationSettings | dict[str, Any] | None, caller: str) -> GenerationSettings:
        """Settings from a :class:`GenerationSettings`, a dict of its fields (a config file) or None (defaults)."""
        return _coerce(cls, value, caller, "generation", "pass e.g. generation=GenerationSettings(num_samples=32)")

    @classmethod
    def merged(cls, caller: str, value: GenerationSettings | dict[str, Any] | None,
               fields_: dict[str, Any]) -> GenerationSettings:
        """``value`` with ``fields_`` set (the 0.2 callbacks' ``num_samples=`` ... spellings)."""
        return _merged(cls, caller, "generation", value, fields_)


@dataclass(frozen=True)
class ModelHooks:
    """How the guard asks a model that is not a Hugging Face ``PreTrainedModel`` for outputs (the callbacks'
    ``hooks=``). Every hook has one shape, ``hook(model, request) -> outputs``, where ``model`` is what the framework
    trains (the ``LightningModule``, the Trainer's model):

    Args:
        generate: ``generate(model, prompts) -> continuations``: ``prompts`` a list of token id arrays, one
            continuation (token ids, EOS excluded; or a :class:`~collapseguard.guard.engine.GeneratedBatch`) per
            prompt. For text gold sets.
        sample: ``sample(model, n) -> (n, d) array``: n samples of a non-text model, judged against an array gold set.
        score: ``score(model, rows) -> (len(rows),) array``: the model's log-likelihood of held-out gold rows, the
            model-side statistic of a non-text model (judged as ``gold_nll``). With ``sample`` only.

    Pass ``generate`` or ``sample``, not both. A Hugging Face model (or a module holding one, or with an HF-style
    ``generate``) needs no hooks.
    """

    generate: Callable[[Any, list[Any]], Any] | None = None
    sample: Callable[[Any, int], Any] | None = None
    score: Callable[[Any, Any], Any] | None = None

    def __post_init__(self) -> None:
        caller = type(self).__name__
        for name in ("generate", "sample", "score"):
            validate(caller, name, getattr(self, name), CALLABLE, NONE)
        if self.generate is not None and self.sample is not None:
            raise ValueError(f"{caller}: generate and sample were both given: pass generate (text models) or sample "
                             "(array models), not both")
        if self.score is not None and self.sample is None:
            raise ValueError(f"{caller}: score scores gold samples of an array gold set: pass it with sample")

    @classmethod
    def coerce(cls, value: ModelHooks | dict[str, Any] | None, caller: str) -> ModelHooks:
        """Hooks from a :class:`ModelHooks`, a dict of its hooks or None (none)."""
        return _coerce(cls, value, caller, "hooks",
                       "pass e.g. hooks=ModelHooks(generate=fn) with fn(model, prompts) -> token id sequences")

    @classmethod
    def merged(cls, caller: str, value: ModelHooks | dict[str, Any] | None, fields_: dict[str, Any]) -> ModelHooks:
        """``value`` with ``fields_`` set (the 0.2 callbacks' ``generate_fn=`` / ``sample_fn=`` / ``score_fn=``)."""
        return _merged(cls, caller, "hooks", value, fields_)

    def check_against(self, caller: str, gold_kind: str) -> None:
        """Refuse hooks that cannot serve this kind of gold set."""
        if self.sample is None and gold_kind == "array":
            raise ValueError(f"{caller}: an array gold set needs hooks=ModelHooks(sample=fn) with fn(model, n) -> "
                             "(n, d) samples")
        if self.sample is not None and gold_kind == "text":
            raise ValueError(f"{caller}: hooks.sample is for array gold sets; this gold set holds texts: use "
                             "ModelHooks(generate=fn)")
