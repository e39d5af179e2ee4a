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
    assert top == ["__init__.py", "__main__.py", "_moved.py", "_validation.py", "cli.py"]
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


def test_integrations_hold_adapters_only():
    assert sorted(p.stem for p in (ROOT / "integrations").glob("*.py")) == \
        ["__init__", "_torch", "lightning", "profiling", "sharded", "transformers", "trl"]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_still_import_with_a_deprecation_warning(old):
    if old.startswith(("collapseguard.integrations.", "collapseguard.demos.recursive")):
        pytest.importorskip("torch")
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print(w)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"{old} moved to {MOVED[old]}" in done.stdout
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
