"""Detector thresholds: one validated, documented dataclass with presets."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from collapseguard._deprecation import renamed_keys, warn_deprecated
from collapseguard._validation import Interval, validate

RENAMED_FIELDS = {"patience": "alert_patience"}
"""Threshold fields renamed in 0.2 (old -> new); the old names work in dicts, files, ``replace`` and the constructor,
with a ``DeprecationWarning``, until 0.3."""


def _renamed_fields(data: dict[str, Any]) -> dict[str, Any]:
    # (the old name patience now belongs to halting: HaltPolicy(patience=...))
    return renamed_keys("Thresholds", data, RENAMED_FIELDS, stacklevel=4)


def _f(default: float, lo: float, hi: float, doc: str, **kw: Any) -> Any:
    return field(default=default, metadata={"range": (lo, hi), "doc": doc, **kw})


@dataclass(frozen=True)
class Thresholds:
    """Bounds at which each detector warns or turns critical.

    *Ratio* bounds compare a metric with its gold reference (the same metric on
    gold continuations of the same count and length): ``0.75`` means "warn when
    the outputs reach less than 75% of the gold value". *Excess* bounds are
    absolute increases over gold. Every field is validated on construction.

    >>> Thresholds.preset("strict").diversity_warn
    0.85
    >>> Thresholds(diversity_warn=0.4, diversity_critical=0.5)
    Traceback (most recent call last):
    ...
    ValueError: Thresholds: diversity_critical=0.5 is invalid: it must be below diversity_warn=0.4 (critical is the more severe bound). Lower diversity_critical or raise diversity_warn.
    """

    # early phase: tail loss
    tail_coverage_warn: float = _f(0.65, 0, 1, "warn when outputs cover less than this share of the gold tail types that an equal gold sample covers")
    tail_coverage_critical: float = _f(0.4, 0, 1, "critical below this share of gold's tail coverage")
    tail_ppl_rise_warn: float = _f(1.5, 1, 100, "warn when tail-band gold perplexity rises this many times more than the head band's, against its baseline (the best of the run or the reference profile)")
    tail_ppl_rise_critical: float = _f(2.5, 1, 100, "critical at this tail-beyond-head rise")
    head_ppl_tolerance: float = _f(1.05, 1, 100, "the alert message calls a tail rise rare-token-specific while head-band perplexity stays within this multiple of its baseline")
    # mid phase: modes narrowing
    ppl_rise_warn: float = _f(1.15, 1, 100, "warn when gold perplexity over all bands reaches this multiple of its baseline: the best of the run (the model before training included) or the reference profile")
    ppl_rise_critical: float = _f(1.5, 1, 100, "critical at this multiple of the baseline gold perplexity")
    nll_rise_warn: float = _f(1.2, 1, 100, "arrays: warn when the perplexity per dimension of held-out gold samples (exp of the gold NLL per dimension from score_fn) reaches this multiple of its baseline")
    nll_rise_critical: float = _f(1.5, 1, 100, "arrays: critical at this multiple of the baseline perplexity per dimension")
    diversity_warn: float = _f(0.75, 0, 1, "warn when distinct-2, Vendi, total variance, effective rank or inverse compression ratio fall below this share of gold")
    diversity_critical: float = _f(0.5, 0, 1, "critical below this share of gold")
    overconfidence_warn: float = _f(1.0, 0, 50, "warn when the model's mean NLL of gold tokens exceeds its mean next-token entropy there by this many nats (a model sure of a narrower distribution than human text; 0 for a model that writes like gold), beyond where it started")
    overconfidence_critical: float = _f(1.5, 0, 50, "critical at this many nats of overconfidence")
    self_bleu_rise_warn: float = _f(0.15, 0, 1, "warn when self-BLEU exceeds gold's by this much (absolute)")
    self_bleu_rise_critical: float = _f(0.35, 0, 1, "critical when self-BLEU exceeds gold's by this much")
    # within-prompt diversity (samples_per_prompt > 1, GRPO groups) and RL policy statistics: each judged against
    # gold's within-prompt reference where gold has several responses per prompt, else against the run's own start
    distinct_k_warn: float = _f(0.75, 0, 1, "warn when the functionally distinct answers among a prompt's k samples (distinct_k) fall below this share of the reference (gold's k responses, else the run's start)")
    distinct_k_critical: float = _f(0.5, 0, 1, "critical below this share of the reference distinct_k")
    within_similarity_warn: float = _f(0.25, 0, 1, "warn when the mean pairwise similarity of a prompt's samples exceeds the reference by this much (absolute; 1 = identical samples)")
    within_similarity_critical: float = _f(0.5, 0, 1, "critical at this excess of within-prompt similarity")
    entropy_warn: float = _f(0.5, 0, 1, "warn when the policy's mean per-token entropy on its own completions (TRL's entropy) falls below this share of its level at the run's start")
    entropy_critical: float = _f(0.2, 0, 1, "critical below this share of the starting policy entropy")
    pass_at_k_warn: float = _f(0.85, 0, 1, "RL with correctness: warn when pass@k at the group size falls below this share of the run's best point while pass@1 holds (the policy narrows), and the fall exceeds two standard errors")
    pass_at_k_critical: float = _f(0.7, 0, 1, "critical below this share of the run's best pass@k")
    mixed_groups_warn: float = _f(0.5, 0, 1, "RL with correctness: warn when the share of mixed groups (some samples right, some wrong: the only ones GRPO learns from) falls below this share of the run's best point while all-correct and all-wrong groups both pile up (the groups polarise)")
    mixed_groups_critical: float = _f(0.25, 0, 1, "critical below this share of the run's best share of mixed groups")
    own_start_checks: int = _f(3, 1, 1000, "where gold has no reference for a signal (policy entropy, within-prompt diversity without several human responses per prompt; overconfidence without the check before training), the run's own start is its reference: its first checks (the check before training first) until they hold own_start_checks x min_outputs outputs (without gold, a prompt's group of samples counts once), their mean weighted by outputs; until then the signal is not judged, and smaller checks are judged pooled with the ones just before them to as many outputs", integer=True)
    # late phase: functional collapse
    repetition_warn: float = _f(0.15, 0, 1, "warn when seq-rep-4, loop fraction or duplicate fraction exceed gold's by this much (absolute)")
    repetition_critical: float = _f(0.35, 0, 1, "critical at this excess over gold")
    length_limit_note: float = _f(0.5, 0, 1, "add the EOS/padding hint to late-phase alerts when this share of outputs hit the length limit")
    # dynamics
    trend_window: int = _f(3, 2, 1000, "checks in the trend window", integer=True)
    trend_drop_warn: float = _f(0.2, 0, 1, "warn when a metric already below gold fell by this share across the trend window, even above the ratio bound")
    alert_patience: int = _f(1, 1, 1000, "consecutive checks a condition must hold before its alert is raised (the callbacks' patience= counts critical checks before halting)", integer=True)
    corroboration: int = _f(2, 0, 1000, "a check where this many different signals warn at once is critical: independent evidence that agrees (0 switches it off)", integer=True)
    min_outputs: int = _f(8, 2, 10**6, "fewer outputs than this make a check unreliable: it is reported, not judged", integer=True)
    min_tail_types: int = _f(10, 0, 10**6, "tail coverage is judged only where gold's own continuations at the check size cover at least this many rare types: with fewer, a word or two swings the ratio", integer=True)

    _PAIRS = (
        ("tail_coverage_warn", "tail_coverage_critical", "below"),
        ("diversity_warn", "diversity_critical", "below"),
        ("tail_ppl_rise_warn", "tail_ppl_rise_critical", "above"),
        ("ppl_rise_warn", "ppl_rise_critical", "above"),
        ("nll_rise_warn", "nll_rise_critical", "above"),
        ("self_bleu_rise_warn", "self_bleu_rise_critical", "above"),
        ("overconfidence_warn", "overconfidence_critical", "above"),
        ("repetition_warn", "repetition_critical", "above"),
        ("distinct_k_warn", "distinct_k_critical", "below"),
        ("within_similarity_warn", "within_similarity_critical", "above"),
        ("pass_at_k_warn", "pass_at_k_critical", "below"),
        ("mixed_groups_warn", "mixed_groups_critical", "below"),
        ("entropy_warn", "entropy_critical", "below"),
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            lo, hi = f.metadata["range"]
            validate("Thresholds", f.name, getattr(self, f.name), Interval(int if f.metadata.get("integer") else float,
                                                                          lo, hi), fix=f.metadata["doc"])
        for warn, crit, side in self._PAIRS:
            w, c = getattr(self, warn), getattr(self, crit)
            if side == "below" and not c < w:
                raise ValueError(
                    f"Thresholds: {crit}={c} is invalid: it must be below {warn}={w} (critical is the more severe "
                    f"bound). Lower {crit} or raise {warn}."
                )
            if side == "above" and not c > w:
                raise ValueError(
                    f"Thresholds: {crit}={c} is invalid: it must be above {warn}={w} (critical is the more severe "
                    f"bound). Raise {crit} or lower {warn}."
                )

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> Thresholds:
        """``"strict"`` (alerts early, more false alarms), ``"balanced"`` (default) or ``"lenient"``."""
        if name not in PRESETS:
            close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown thresholds preset {name!r}{hint}: choose one of {sorted(PRESETS)}, or give a "
                             ".yaml/.json file")
        return cls(**PRESETS[name])

    @classmethod
    def coerce(cls, value: Thresholds | str | dict[str, Any] | None) -> Thresholds:
        """A Thresholds from an instance, a preset name, a dict of fields, the path of a YAML/JSON file
        (``.yaml``, ``.yml``, ``.json``) or None (balanced)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str | Path) and Path(value).suffix.lower() in (".json", ".yaml", ".yml"):
            return cls.from_file(value)
        if isinstance(value, str):
            return cls.preset(value)
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise TypeError(
            f"thresholds must be a Thresholds, a preset name {sorted(PRESETS)}, a dict or a .yaml/.json file path, "
            f"got {value!r}"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        """Fields from a dict; ``preset`` names a base the other keys override."""
        data = _renamed_fields(data)
        base = PRESETS.get(data.pop("preset", "balanced"))
        if base is None:
            raise ValueError(f"unknown thresholds preset in dict: choose one of {sorted(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown threshold field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**{**base, **data})

    @classmethod
    def from_file(cls, path: str | Path) -> Thresholds:
        """Load from a YAML (``.yaml``/``.yml``, needs PyYAML) or JSON file: a mapping of fields,
        optionally with ``preset`` naming the base the other keys override.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a mapping, an unknown field or a bad value.
            ImportError: YAML without PyYAML.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"thresholds file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ImportError("reading thresholds from YAML needs PyYAML: pip install pyyaml") from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"thresholds file {str(path)!r} is not valid YAML: {exc}") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"thresholds file {str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"thresholds file {str(path)!r} must hold a mapping of field: value, "
                             f"got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"thresholds file {str(path)!r}: {exc}") from None

    def to_yaml(self) -> str:
        """A commented YAML document of every field (what ``collapseguard thresholds --format yaml`` prints)."""
        lines = ["# collapseguard thresholds: load with Thresholds.from_file(path) or thresholds=path"]
        for f in fields(self):
            lines.append(f"# {f.metadata['doc']} (default {f.default})")
            lines.append(f"{f.name}: {getattr(self, f.name)}")
        return "\n".join(lines) + "\n"

    def replace(self, **changes: Any) -> Thresholds:
        """A copy with the given fields changed (renamed fields under their old names too)."""
        return dataclasses.replace(self, **_renamed_fields(changes))

    def __getattr__(self, name: str) -> Any:  # only called for names the instance lacks
        if name in RENAMED_FIELDS:
            warn_deprecated(f"Thresholds.{name}", f"Thresholds.{RENAMED_FIELDS[name]}")
            return getattr(self, RENAMED_FIELDS[name])
        raise AttributeError(f"'Thresholds' object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, as :meth:`from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(field, default, meaning) for every threshold, for docs and the CLI."""
        return [(f.name, f.default, f.metadata["doc"]) for f in fields(cls)]


PRESETS: dict[str, dict[str, Any]] = {
    "balanced": {},
    "strict": {
        "tail_coverage_warn": 0.8, "tail_coverage_critical": 0.55,
        "tail_ppl_rise_warn": 1.3, "tail_ppl_rise_critical": 2.0, "ppl_rise_warn": 1.1, "ppl_rise_critical": 1.35,
        "nll_rise_warn": 1.15, "nll_rise_critical": 1.35,
        "diversity_warn": 0.85, "diversity_critical": 0.65, "overconfidence_warn": 0.75, "overconfidence_critical": 1.25,
        "self_bleu_rise_warn": 0.1, "self_bleu_rise_critical": 0.25,
        "repetition_warn": 0.1, "repetition_critical": 0.25, "trend_drop_warn": 0.1,
        "distinct_k_warn": 0.85, "distinct_k_critical": 0.65, "within_similarity_warn": 0.15,
        "within_similarity_critical": 0.35, "entropy_warn": 0.65, "entropy_critical": 0.35,
        "pass_at_k_warn": 0.9, "pass_at_k_critical": 0.8, "mixed_groups_warn": 0.65, "mixed_groups_critical": 0.4,
    },
    "lenient": {
        "tail_coverage_warn": 0.5, "tail_coverage_critical": 0.25,
        "tail_ppl_rise_warn": 2.0, "tail_ppl_rise_critical": 3.5, "ppl_rise_warn": 1.3, "ppl_rise_critical": 2.0,
        "nll_rise_warn": 1.3, "nll_rise_critical": 2.0,
        "diversity_warn": 0.6, "diversity_critical": 0.35, "overconfidence_warn": 1.5, "overconfidence_critical": 2.5,
        "self_bleu_rise_warn": 0.25, "self_bleu_rise_critical": 0.5,
        "repetition_warn": 0.25, "repetition_critical": 0.5, "trend_drop_warn": 0.3, "alert_patience": 2,
        "distinct_k_warn": 0.6, "distinct_k_critical": 0.35, "within_similarity_warn": 0.35,
        "within_similarity_critical": 0.65, "entropy_warn": 0.35, "entropy_critical": 0.1,
        "pass_at_k_warn": 0.75, "pass_at_k_critical": 0.55, "mixed_groups_warn": 0.35, "mixed_groups_critical": 0.15,
    },
}


def _accept_renamed(init: Any) -> Any:
    @functools.wraps(init)
    def __init__(self: Thresholds, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **_renamed_fields(kwargs))

    return __init__


Thresholds.__init__ = _accept_renamed(Thresholds.__init__)  # type: ignore[method-assign]
