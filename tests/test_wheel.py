"""The built wheel holds every module, installs into a fresh virtual environment, and `collapseguard demo` runs there.

The environment is fresh but offline: it is created without the system site-packages, and the wheel's own
runtime requirements (numpy, scipy, threadpoolctl and what they need) are made visible to it from this
interpreter's installation, one symlink per installed top-level name, through a path line in a ``.pth`` file.
Nothing else is: not the editable install of this checkout, not torch or matplotlib. So the demo runs from the
wheel's files with the core dependencies only, as after ``pip install collapseguard``.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# source folder -> where its modules land in the wheel ([tool.setuptools.package-dir] in pyproject.toml)
SOURCES = {"collapseguard": "collapseguard", "integrations": "collapseguard/integrations"}
SUBPACKAGES = ("collapseguard", "collapseguard.gold", "collapseguard.metrics", "collapseguard.detection",
               "collapseguard.guard", "collapseguard.reporting", "collapseguard.audit", "collapseguard.demos",
               "collapseguard.integrations")


def _clean_env() -> dict[str, str]:
    """This process's environment without what would let the venv see other code (PYTHONPATH, a VIRTUAL_ENV)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of the sources, so that no build/ or *.egg-info is left in (or reused from) the checkout."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "NOTICE", "MANIFEST.in", "setup.py",
                 "setup.cfg"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    for folder in SOURCES:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    # a path, never a bare name (pip would look a bare name up on the index); --no-index: nothing is downloaded
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", dist, src.resolve()], cwd=tmp)
    (wheel,) = dist.glob("collapseguard-*.whl")
    return wheel


def _runtime_requirements(wheel: Path) -> list[str]:
    """Names of the distributions the wheel needs without extras, and what they need in turn (installed here)."""
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    todo = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    seen: list[str] = []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if (req.marker is not None and not req.marker.evaluate({"extra": ""})) or name in seen:
            continue
        seen.append(name)
        todo += [Requirement(r) for r in importlib.metadata.requires(name) or []]
    return seen


def _link_requirements(names: list[str], deps: Path) -> None:
    """Symlink each distribution's installed top-level names (package, .libs folder, dist-info) into ``deps``."""
    deps.mkdir()
    for name in names:
        dist = importlib.metadata.distribution(name)
        assert dist.files, f"{name} is installed without a RECORD: cannot tell its files"
        for top in sorted({f.parts[0] for f in dist.files}):
            if top in ("..", "__pycache__") or (deps / top).exists():
                continue
            target = Path(dist.locate_file(top))
            if target.exists():
                (deps / top).symlink_to(target, target_is_directory=target.is_dir())


def _expected_wheel_modules() -> set[str]:
    return {f"{dest}/{p.relative_to(ROOT / folder).as_posix()}"
            for folder, dest in SOURCES.items() for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_the_demo_runs_from_it(tmp_path):
    wheel = _build_wheel(tmp_path)

    # every module of the source tree is in the wheel: a package left out of [tool.setuptools] packages fails here
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    missing = sorted(_expected_wheel_modules() - names)
    assert not missing, f"modules missing from the wheel (add their package to pyproject.toml): {missing}"
    assert {f"{p.replace('.', '/')}/__init__.py" for p in SUBPACKAGES} <= names
    stray = sorted(n for n in names if not n.startswith(("collapseguard/", "collapseguard-")))
    assert not stray, f"the wheel installs files outside the collapseguard package: {stray}"
    assert "collapseguard = collapseguard.cli:main" in entry_points

    # a fresh venv (no system site-packages) that sees the runtime requirements and nothing else
    # (without pip of its own: this interpreter's pip installs into it through --python, pip >= 22.3; seeding the
    # venv with ensurepip would triple the test's time)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    requirements = _runtime_requirements(wheel)
    assert {"numpy", "scipy", "threadpoolctl"} <= set(requirements)
    _link_requirements(requirements, tmp_path / "deps")
    # a path line: the folder joins sys.path, but no .pth inside it runs (nor would one there reach the checkout)
    (site / "runtime_requirements.pth").write_text(f"{tmp_path / 'deps'}\n")
    # --no-index: the requirements must be met by what the venv sees; the wheel itself is the only thing installed
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "-q", wheel], cwd=tmp_path)

    # every subpackage imports from the venv's copy, never from this checkout (its editable install included)
    probe = ("import importlib, importlib.metadata, json, sys\n"
             f"mods = {{n: importlib.import_module(n).__file__ for n in {SUBPACKAGES!r}}}\n"
             "dists = [str(d.locate_file('')) for d in importlib.metadata.distributions() "
             "if d.metadata['Name'] == 'collapseguard']\n"
             "print(json.dumps({'modules': mods, 'dists': dists, 'numpy': sys.modules['numpy'].__file__}))")
    found = json.loads(_run([python, "-c", probe], cwd=tmp_path).stdout)
    site = site.resolve()
    for name, file in found["modules"].items():
        path = Path(file).resolve()
        assert path.is_relative_to(site), f"{name} imported from {path}, not from the venv's {site}"
        assert not path.is_relative_to(ROOT), f"{name} imported from the checkout: {path}"
    assert [Path(d).resolve() for d in found["dists"]] == [site], found["dists"]  # one collapseguard: the wheel's
    assert Path(found["numpy"]).is_relative_to(tmp_path / "deps")

    # the console script the wheel declares, run from outside the checkout
    exe = venv / "bin" / "collapseguard"
    assert exe.is_file()
    out = tmp_path / "demo"
    proc = _run([exe, "demo", "--generations", "1", "--out", out], cwd=tmp_path)
    lines = proc.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if line.split()[:2] == ["gen", "track"]), None)
    assert header is not None, proc.stdout
    assert "distinct-2" in lines[header] and "self-BLEU" in lines[header]
    rows = [line.split()[:2] for line in lines[header + 1:header + 5]]
    assert rows == [["0", "replace"], ["0", "reweight"], ["1", "replace"], ["1", "reweight"]], proc.stdout
    assert "final health" in proc.stdout
    # a core-only install has no matplotlib: the demo says the report was skipped instead of failing
    assert "report skipped" in proc.stdout, proc.stdout
    for track in ("replace", "reweight"):
        assert (out / track / "alerts.jsonl").is_file()
