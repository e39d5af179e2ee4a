"""The package's layout: one folder per stage, adapters that are only adapters, old paths that still import."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from collapseguard._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("gold", "metrics", "detection", "guard", "reporting", "audit", "demos")


def test_core_is_one_folder_per_stage():
    top = sorted(p.name for p in (ROOT / "collapseguard").iterdir() if p.suffix == ".py")
    assert top == ["__init__.py", "__main__.py", "_deprecation.py", "_moved.py", "_validation.py", "cli.py"]
    assert sorted(p.name for p in (ROOT / "collapseguard").iterdir() if p.is_dir() and p.name != "__pycache__") == \
        sorted(STAGES)


def test_no_module_shadows_the_standard_library():
    names = {p.stem for p in ROOT.glob("collapseguard/**/*.py")} | {p.stem for p in ROOT.glob("integrations/*.py")}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_library_never_imports_the_demos():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith("collapseguard.demos"))
                 for p in [*ROOT.glob("collapseguard/**/*.py"), *ROOT.glob("integrations/*.py")]
                 if "demos" not in p.parts and p.name != "cli.py"}
    assert not {k: v for k, v in offenders.items() if v}


# What an adapter in integrations/ may import from collapseguard: the engine and its policies, the gold set and
# its companions (profiles, provenance), the thresholds and the data-stream monitor users hand the callbacks, the
# validator, and ModelStats, the container teacher-forced scoring fills for the engine. Not the metrics, the
# detectors, the monitor, the reporting or the demos: measuring and judging happen in the engine's stages.
ADAPTER_MAY_IMPORT = ("collapseguard.guard", "collapseguard.gold", "collapseguard.integrations", "collapseguard._validation",
                      "collapseguard._deprecation", "collapseguard.detection.thresholds",
                      "collapseguard.detection.datastream")
ADAPTER_MAY_IMPORT_NAMES = {"collapseguard.metrics": {"ModelStats"}}
# bases that make a class a metric, a judge or a model rather than an adapter
NOT_ADAPTER_BASES = {"Metric", "State", "Detector", "Signal", "MetricSuite", "CollapseMonitor", "Module",
                     "LightningModule", "PreTrainedModel", "GenerationMixin"}
NOT_ADAPTER_WORDS = ("demo", "scenario", "tiny", "toy", "trigram", "recursive", "synthetic_corpus")


def _metric_and_detector_names() -> set[str]:
    """Names that belong to collapseguard.metrics or collapseguard.detection.detectors (lowercased)."""
    import collapseguard.detection.detectors as detectors
    import collapseguard.metrics as metrics

    names = {n.lower() for n in metrics.__all__ if n not in ("ModelStats", "direction", "declared_directions")}
    names |= {n.lower() for n, v in vars(detectors).items() if isinstance(v, type) and issubclass(v, detectors.Detector)}
    return names | {n.lower() for n in metrics.declared_directions() if "{" not in n}


def _template_patterns() -> list:
    import re

    from collapseguard.metrics import declared_directions

    return [re.compile("^" + re.sub(r"\\\{\w+\\\}", r"\\d+", re.escape(n)) + "$")
            for n in declared_directions() if "{" in n]


def adapter_violations(path: Path) -> list[str]:
    """What in ``path`` is not an adapter's work (empty: it only translates framework hooks into engine calls)."""
    import collapseguard

    tree = ast.parse(path.read_text(encoding="utf-8"))
    owned, templates = _metric_and_detector_names(), _template_patterns()
    found = []

    def allowed(module: str, names: list[str]) -> bool:
        if module.startswith(ADAPTER_MAY_IMPORT):
            return True
        if module in ADAPTER_MAY_IMPORT_NAMES:
            return set(names) <= ADAPTER_MAY_IMPORT_NAMES[module]
        if module == "collapseguard":  # a top-level re-export: judged by where it lives
            return all(getattr(getattr(collapseguard, n, None), "__module__", "").startswith(ADAPTER_MAY_IMPORT)
                       for n in names)
        return not (module == "collapseguard" or module.startswith("collapseguard."))

    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [a.name for a in node.names]
            if not allowed(node.module, names):
                found.append(f"{where}: imports {names} from {node.module}")
        elif isinstance(node, ast.Import):
            found += [f"{where}: imports {a.name}" for a in node.names if not allowed(a.name, [])]
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = node.name.lower().strip("_")
            if name in owned or any(t.match(name) for t in templates):
                found.append(f"{where}: defines {node.name}, a metric's or detector's name")
            if any(w in name for w in NOT_ADAPTER_WORDS):
                found.append(f"{where}: defines {node.name}: demo, scenario or tiny-model code")
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                bad = sorted(b for b in bases if b in NOT_ADAPTER_BASES or b.endswith(("Metric", "Detector", "Suite")))
                if bad:
                    found.append(f"{where}: class {node.name} subclasses {bad}: a metric, judge or model")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            last = func.rsplit(".", 1)[-1]
            if (last.endswith("Config") and last != "GenerationConfig") or last == "from_config" or \
                    (func.startswith(("nn.", "torch.nn.")) and last[:1].isupper()):
                found.append(f"{where}: builds a model ({func}(...)): models come from the user's training code")
    return found


def test_integrations_hold_adapters_only():
    """Every module in integrations/ only translates framework hooks into engine calls (docs/architecture.md):
    no metric or detector of its own, no import of the metrics' or the detectors' internals, no demo, scenario or
    tiny model."""
    found = {p.name: adapter_violations(p) for p in sorted((ROOT / "integrations").glob("*.py"))}
    assert len(found) >= 7
    assert not {k: v for k, v in found.items() if v}


@pytest.mark.parametrize("added", [
    "from collapseguard.metrics import distinct_n\nscore = distinct_n([[1, 2, 3]], 2)\n",
    "from collapseguard.metrics.lexical import DistinctN\n",
    "import collapseguard.detection.detectors\n",
    "from collapseguard.detection.monitor import CollapseMonitor\n",
    "from collapseguard import TextSuite\n",
    "def distinct_2(texts):\n    grams = [tuple(t[i:i + 2]) for t in texts for i in range(len(t) - 1)]\n"
    "    return len(set(grams)) / max(len(grams), 1)\n",
    "def self_bleu(texts):\n    return 0.0\n",
    "class Diversity(Metric):\n    pass\n",
    "class Narrowing(Detector):\n    pass\n",
    "class TinyLM(torch.nn.Module):\n    pass\n",
    "def make_tiny_model():\n    return None\n",
    "def run_demo():\n    return None\n",
    "def _model():\n    from transformers import GPT2Config, GPT2LMHeadModel\n"
    "    return GPT2LMHeadModel(GPT2Config(n_layer=1))\n",
    "layer = torch.nn.Linear(4, 4)\n",
    "from collapseguard.demos.tiny import TinyCausalLM\n",
])
def test_the_adapter_rule_catches_what_an_adapter_must_not_hold(added, tmp_path):
    """Appended to a copy of an adapter (same file names: the old name-based check passed it), each is caught."""
    copy = tmp_path / "lightning.py"
    copy.write_text((ROOT / "integrations" / "lightning.py").read_text(encoding="utf-8") + "\n\n" + added)
    assert not adapter_violations(ROOT / "integrations" / "lightning.py")
    assert adapter_violations(copy), added


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_still_import_with_a_deprecation_warning(old):
    if old.startswith(("collapseguard.integrations.", "collapseguard.demos.recursive")):
        pytest.importorskip("torch")
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print(w)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"import {old} is deprecated since collapseguard 0.2 and goes away in 0.3: use import {MOVED[old]}" \
        in done.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_stages_import_only_from_earlier_stages():
    """The data flow runs one way (docs/architecture.md); the two documented exceptions are the logger that
    provenance logs through and the alert trail the engine writes."""
    order = {"gold": 1, "metrics": 2, "detection": 3, "guard": 4, "reporting": 5}
    against = set()
    for path in (ROOT / "collapseguard").rglob("*.py"):
        stage = path.relative_to(ROOT / "collapseguard").parts[0]
        if stage not in order:
            continue
        for module in _imports(path):
            other = module.split(".")[1] if module.startswith("collapseguard.") else None
            if other in order and order[other] > order[stage]:
                against.add((str(path.relative_to(ROOT)), module))
    assert against == {("collapseguard/gold/provenance.py", "collapseguard.detection.alerts"),
                       ("collapseguard/guard/engine.py", "collapseguard.reporting.alertlog")}
