"""Adding a metric is one class and one registration: suites hand each metric its inputs by its update signature.

Also: the metrics' base module imports no suite (the import cycle is gone), and the gold split lives on the gold side
(the engine's prompts come from its :class:`~collapseguard.gold.prompts.GoldPrompts`, shared by both tiers).
"""

from __future__ import annotations

import ast
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from collapseguard import CheckSchedule, CollapseMonitor, GenerationSettings, GoldSet, Thresholds
from collapseguard.detection.detectors import Detector, Signal
from collapseguard.gold.tokenization import SimpleTokenizer
from collapseguard.guard.engine import GuardEngine
from collapseguard.metrics import (
    Metric,
    ModelStats,
    base,
    register_metric,
    registered_metrics,
    registry,
    unregister_metric,
)
from collapseguard.metrics._batch import TokenBatch
from collapseguard.metrics.suite import TextGoldContext, TextSuite
from tests.test_layout import _imports

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "river", "stone", "blue", "green", "ran", "quickly", "over",
         "under", "house", "light", "dark"]


@pytest.fixture
def isolated(monkeypatch):
    """Metrics a test defines and registers stay in the test: the registry and the direction table come back as
    they were (other tests check the whole table)."""
    monkeypatch.setattr(registry, "_REGISTRY", {kind: dict(regs) for kind, regs in registry._REGISTRY.items()})
    monkeypatch.setattr(base, "_DECLARED", dict(base._DECLARED))
    monkeypatch.setattr(base, "_PATTERNS", dict(base._PATTERNS))
    monkeypatch.setattr(base, "_LOOKUPS", {})


def _gold(n: int = 120) -> GoldSet:
    rng = random.Random(0)
    return GoldSet.from_texts([" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 60))) + f" end{i}"
                               for i in range(n)])


def _distinct_tokens_class() -> type[Metric]:
    """The new metric, exactly as a user writes it: distinct token ids over all outputs (a union of keys merges
    exactly across ranks)."""

    class DistinctTokens(Metric):
        name = "distinct_tokens"
        higher_is_better = True
        keys: np.ndarray

        def __init__(self) -> None:
            super().__init__()
            self.add_state("keys", np.empty(0, dtype=np.uint64), "union")

        def update(self, outputs: TokenBatch) -> None:  # "outputs": the name the text suite hands the batch under
            self._fold(keys=np.unique(outputs.flat.astype(np.uint64)))

        def compute(self) -> float:
            return float(self.keys.size)

    return DistinctTokens


class DistinctTokensDrop(Detector):
    """A detector for the new metric: judged, like every output metric, against gold's value at the check's size."""

    name = "DistinctTokensDrop"
    phase = "mid"
    advice: ClassVar[dict[str, str]] = {"text": "outputs use fewer distinct tokens than gold", "array": ""}

    def signals(self, th, kind, metrics):
        return [Signal("distinct_tokens", "ratio", 0.8, 0.5)]


def test_a_new_metric_is_one_class_and_one_registration(isolated):
    register_metric("text", _distinct_tokens_class())  # the one registration; no suite code changes
    monitor = CollapseMonitor(_gold(), tokenizer=SimpleTokenizer(), prompt_length=8, max_new_tokens=16,
                              detectors=[DistinctTokensDrop], thresholds=Thresholds(alert_patience=1))
    healthy = list(monitor.split.continuations[:40])

    # measured by the suite, on the outputs and on gold (the reference of the same size)
    result = monitor.check(healthy, step=1)
    want = len({int(t) for seq in healthy for t in seq})
    assert result.metrics["distinct_tokens"] == want
    assert result.reference["distinct_tokens"] == want  # the reference is those same gold continuations
    assert not result.alerts

    # merged exactly across ranks, like every built-in metric
    whole = monitor.measure(healthy).compute()
    merged = monitor.measure(healthy[::2]).merge(monitor.measure(healthy[1::2])).compute()
    assert merged["distinct_tokens"] == whole["distinct_tokens"] == want

    # judged: outputs that use a handful of tokens raise the new detector's alert on the new metric
    collapsed = monitor.check(["the cat sat on the mat"] * 40, step=2)
    alert = next(a for a in collapsed.alerts if a.metric == "distinct_tokens")
    assert alert.severity == "critical" and alert.detector == "DistinctTokensDrop"
    assert collapsed.bounds["distinct_tokens"]["direction"] == "low"


def test_registration_is_what_puts_a_metric_in_a_suite(isolated):
    cls = _distinct_tokens_class()
    context = TextGoldContext([np.arange(20) % 7 for _ in range(10)])
    assert "distinct_tokens" not in TextSuite(context).metrics
    register_metric("text", cls)
    assert "distinct_tokens" in registered_metrics("text") and "distinct_tokens" not in registered_metrics("array")
    assert isinstance(TextSuite(context).metrics["distinct_tokens"], cls)
    assert list(TextSuite(context).metrics)[-1] == "distinct_tokens"  # reported after the built-in ones
    with pytest.raises(ValueError, match="already measures 'distinct_tokens'"):
        register_metric("text", cls)
    unregister_metric("text", "distinct_tokens")
    assert "distinct_tokens" not in TextSuite(context).metrics


def test_suites_hand_inputs_by_the_update_signature(isolated):
    seen: dict[str, list] = {}

    class Both(Metric):
        name = "both_inputs"
        higher_is_better = None

        def __init__(self) -> None:
            super().__init__()
            self.add_state("n", 0, "sum")

        def update(self, outputs: TokenBatch, finished=None) -> None:  # optional inputs are passed where given
            seen.setdefault("both", []).append((len(outputs), finished))
            self._fold(n=len(outputs))

        def compute(self) -> float:
            return float(self.n)

    class Scored(Both):
        name = "scored_count"
        higher_is_better = None

        def update(self, stats: ModelStats) -> None:  # required: skipped in a batch without model statistics
            seen.setdefault("scored", []).append(len(stats.token_ids))
            self._fold(n=len(stats.token_ids))

    register_metric("text", Both)
    register_metric(("text", "sentinel"), Scored)
    context = TextGoldContext([np.arange(20) % 7 for _ in range(10)])
    outputs = [np.arange(5), np.arange(6)]
    TextSuite(context).update(outputs)
    assert seen == {"both": [(2, None)]}
    stats = ModelStats([np.arange(3)], [np.ones(3)], [np.ones(3)])
    out = TextSuite(context).update(outputs, finished=[True, False], model_stats=stats).compute()
    assert seen["both"][-1] == (2, [True, False]) and seen["scored"] == [1]
    assert out["both_inputs"] == 2.0 and out["scored_count"] == 1.0


def test_an_input_no_suite_gives_is_refused_at_registration(isolated):
    class Misspelt(Metric):
        name = "misspelt"
        higher_is_better = None

        def update(self, output: TokenBatch) -> None:  # "output", not "outputs": would never be updated
            pass

    with pytest.raises(TypeError, match=r"Misspelt.update takes \['output'\]; a text suite gives \['finished', "
                                        r"'groups', 'outputs', 'stats', 'x'\]"):
        register_metric("text", Misspelt)
    with pytest.raises(ValueError, match="unknown suite kind 'txt'"):
        register_metric("txt", Misspelt)
    with pytest.raises(ValueError, match="pass the name"):
        register_metric("text", lambda suite: Misspelt())


def test_metrics_base_imports_no_suite():
    """The cycle base <-> suite is gone: importing base (with the metrics package, not the whole library, whose
    top level imports the monitor) loads no suite, and every direction is declared all the same."""
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('collapseguard'); pkg.__path__ = [{str(ROOT / 'collapseguard')!r}]\n"
        "sys.modules['collapseguard'] = pkg  # the bare package: its __init__ would import everything\n"
        "from collapseguard.metrics.base import declared_directions, direction\n"
        "assert direction('mean_length') is None and direction('num_outputs') is None\n"
        "assert direction('distinct_k') is True and 'within_distinct_{n}' in declared_directions()\n"
        "print(sorted(m for m in sys.modules if m.startswith('collapseguard.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(done.stdout.strip()))
    assert "collapseguard.metrics.base" in loaded and "collapseguard.metrics.builtin" in loaded
    assert not {"collapseguard.metrics.suite", "collapseguard.detection.monitor"} & loaded, loaded


def test_the_metrics_modules_import_without_a_cycle():
    """No module of collapseguard/metrics imports (even inside a function) one that imports it back, directly or
    through others; ``collapseguard.metrics`` stands for the package's ``__init__``."""
    folder = ROOT / "collapseguard" / "metrics"
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        name = "collapseguard.metrics" + ("" if path.stem == "__init__" else f".{path.stem}")
        graph[name] = {m for m in _imports(path) if m.startswith("collapseguard.metrics")}
    assert "collapseguard.metrics.suite" not in graph["collapseguard.metrics.base"]

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*path, nxt]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, cycles


def test_the_engine_takes_its_prompts_from_the_gold_side():
    gold = _gold()
    engine = GuardEngine(gold, tokenizer=SimpleTokenizer(),
                         generation=GenerationSettings(prompt_length=8, max_new_tokens=16, num_samples=16),
                         schedule=CheckSchedule(sentinel_every_n_steps=5, check_on_train_start=False))
    engine.setup()
    cut = engine.gold_prompts
    # cut once and shared: the full check's monitor and the sentinel's judge the very same prompts
    assert engine.monitor.gold_prompts is cut and engine.sentinel.gold_prompts is cut
    assert [p.tolist() for p in engine.prompts(1, 2)] == [p.tolist() for p in cut.split.prompts[:16][1::2]]
    assert [c.tolist() for c in engine.gold_continuations(0, 2)] == \
        [c.tolist() for c in cut.split.continuations[:16][0::2]]
    assert len(engine.sentinel_prompts()) == engine.sentinel_size == min(16, len(cut))
    # the monitor's own view is the same object (kept for callers of monitor.split)
    assert engine.monitor.split is cut.split
    alone = CollapseMonitor(gold, tokenizer=SimpleTokenizer(), prompt_length=8, max_new_tokens=16)
    assert [p.tolist() for p in alone.split.prompts] == [p.tolist() for p in cut.split.prompts]
    with pytest.raises(ValueError, match="gold_prompts is cut from another gold set or at other lengths"):
        CollapseMonitor(gold, prompt_length=8, max_new_tokens=32, gold_prompts=cut)
    assert math.isfinite(engine.monitor.reference(16)["distinct_2"])
