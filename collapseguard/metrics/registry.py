"""Which metrics each suite measures, and how a suite hands a metric its inputs: by the metric's update signature.

A suite (:mod:`collapseguard.metrics.suite`) prepares one check's inputs under fixed names (:data:`SUITE_INPUTS`) and
gives each metric the ones its ``update`` names, as torchmetrics' ``MetricCollection`` does -- never by the metric's
name. So a new metric is one class and one :func:`register_metric` call; no suite code changes:

>>> from collapseguard.metrics import DistinctN
>>> register_metric("text", lambda suite: DistinctN(5), name="distinct_5")  # DistinctN.update(outputs): the batch
>>> list(registered_metrics("text"))[-1]
'distinct_5'
>>> unregister_metric("text", "distinct_5")

A new metric class is registered the same way: ``register_metric("text", MyMetric)`` (docs/development.md).

Only :mod:`base` is imported here: the registry sits below the suites, so nothing in the metrics imports in a cycle.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from collapseguard.metrics.base import Metric

SUITE_INPUTS: dict[str, dict[str, str]] = {
    "text": {
        "outputs": "the outputs as a TokenBatch (with several samples per prompt: each prompt's first sample)",
        "x": "the same outputs as hashed n-gram feature rows (an (n, 256) float array)",
        "finished": "per output, whether it ended before the length limit",
        "stats": "ModelStats: the model's teacher-forced statistics on the gold continuations",
        "groups": "each prompt's samples as normalised answer words (only with samples_per_prompt > 1)",
    },
    "array": {
        "x": "the samples, an (n, d) float array",
        "outputs": "each sample's exact bit pattern as a TokenBatch (to count exact duplicates)",
        "loglik": "the model's log-likelihood of each held-out gold sample",
    },
    "groups": {
        "groups": "each prompt's samples as normalised answer words",
        "correct": "each group's samples judged right (True) or wrong",
        "reported": "the statistics the trainer reports, by name",
        "num_outputs": "how many samples the batch holds",
    },
    "sentinel": {
        "stats": "ModelStats: the model's teacher-forced statistics on the gold continuations",
        "num_outputs": "how many gold texts were scored",
    },
}
"""Every kind of suite with the inputs it hands its metrics, by the parameter name a metric's ``update`` takes it
under. An input a batch lacks (``finished`` and ``stats`` are optional) is None, and a metric that needs it is not
updated with that batch."""


@dataclass(frozen=True)
class Registration:
    """One metric of a kind of suite: its name in the suite and how a suite builds it.

    ``build`` gets the suite that measures (its gold context and sizes: ``suite.context``, ``suite.ellipsoid``,
    ``suite.dim``, ``suite.samples_per_prompt``) and returns a fresh metric.
    """

    name: str
    build: Callable[[Any], Metric]


_REGISTRY: dict[str, dict[str, Registration]] = {kind: {} for kind in SUITE_INPUTS}
_SIGNATURES: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # class -> (required, optional) inputs


def register_metric(suites: str | Iterable[str], metric: type[Metric] | Callable[[Any], Metric], *,
                    name: str | None = None) -> None:
    """Measure ``metric`` in every suite of the kinds ``suites`` (``"text"``, ``"array"``, ``"groups"``,
    ``"sentinel"``) from now on.

    ``metric`` is a :class:`Metric` class that builds without arguments (named by its :attr:`Metric.name`), or a
    function of the suite that returns one (then ``name`` is required): ``lambda suite:
    TailCoverage(suite.context.tail_bands)``. Its ``update`` names the inputs it takes (:data:`SUITE_INPUTS`).

    Raises:
        ValueError: for an unknown kind, a name the kind already measures, or a missing name.
        TypeError: for an ``update`` that takes an input the kind does not give.
    """
    kinds = [suites] if isinstance(suites, str) else list(suites)
    if isinstance(metric, type):
        cls, build, name = metric, (lambda _suite, c=metric: c()), name or metric.name
    else:
        cls, build = None, metric
    if not name or "{" in name:
        raise ValueError(f"register_metric: name={name!r}: pass the name the metric's value is reported under")
    for kind in kinds:
        if kind not in _REGISTRY:
            raise ValueError(f"register_metric: unknown suite kind {kind!r}; kinds: {sorted(_REGISTRY)}")
        if name in _REGISTRY[kind]:
            raise ValueError(f"register_metric: the {kind} suite already measures {name!r}: pick another name, or "
                             "unregister_metric() it first")
        if cls is not None:
            check_inputs(cls, kind)
    for kind in kinds:
        _REGISTRY[kind][name] = Registration(name, build)


def unregister_metric(suites: str | Iterable[str], name: str) -> None:
    """Stop measuring ``name`` in the suites of those kinds (suites built before keep it). Raises KeyError when a
    kind does not measure it."""
    for kind in [suites] if isinstance(suites, str) else list(suites):
        del _REGISTRY[kind][name]


def registered_metrics(kind: str) -> dict[str, Registration]:
    """The metrics a suite of ``kind`` measures, by name, in registration order (the order a check reports them)."""
    return dict(_REGISTRY[kind])


def update_inputs(metric: Metric | type[Metric]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The inputs a metric's ``update`` takes: (required, optional) parameter names (read once per class)."""
    cls = metric if isinstance(metric, type) else type(metric)
    if cls not in _SIGNATURES:
        params = [p for p in list(inspect.signature(cls.update).parameters.values())[1:]  # after self
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        _SIGNATURES[cls] = (tuple(p.name for p in params if p.default is p.empty),
                            tuple(p.name for p in params if p.default is not p.empty))
    return _SIGNATURES[cls]


def check_inputs(metric: Metric | type[Metric], kind: str) -> None:
    """Refuse a metric a suite of ``kind`` could never update: a misspelt input would otherwise leave it out of
    every check without a word.

    Raises:
        TypeError: for an ``update`` that requires an input the kind does not give, or takes none.
    """
    required, optional = update_inputs(metric)
    unknown = [p for p in required if p not in SUITE_INPUTS[kind]]
    if unknown or not (required or optional):
        name = metric.__name__ if isinstance(metric, type) else type(metric).__name__
        raise TypeError(f"register_metric: {name}.update takes {unknown or 'no inputs'}; a {kind} suite gives "
                        f"{sorted(SUITE_INPUTS[kind])}: name the update's parameters after them")


def can_measure(metric: Metric, available: Iterable[str]) -> bool:
    """Whether a suite that gives the inputs ``available`` can ever update ``metric`` (the within-prompt metrics
    need ``groups``, which a text suite of one sample per prompt does not give)."""
    return set(update_inputs(metric)[0]) <= set(available)


def update_from(metric: Metric, inputs: Mapping[str, Any]) -> None:
    """Update ``metric`` with the inputs its ``update`` names; not at all when one it requires is None (a batch
    without ``finished`` or ``stats`` leaves the metrics that read them as they were)."""
    required, optional = update_inputs(metric)
    if any(inputs.get(p) is None for p in required):
        return
    metric.update(**{p: inputs[p] for p in required},
                  **{p: inputs[p] for p in optional if inputs.get(p) is not None})
