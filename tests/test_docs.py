"""The documentation site builds strictly, and every public object its API pages show has a docstring.

``mkdocs build --strict`` fails on a broken link or anchor, a missing page or snippet, and a docstring griffe
cannot parse; mkdocstrings itself silently leaves out an object without a docstring, so the second test
checks those against what the API pages (``docs/api/*.md``) are set to show.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))


def _hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    # the API reference was generated from the docstrings, and the quickstarts were included from examples/
    lightning = (site / "api" / "lightning" / "index.html").read_text(encoding="utf-8")
    assert 'id="collapseguard.integrations.lightning.CollapseGuard"' in lightning and "gold" in lightning
    assert "GRPOCollapseGuard" in (site / "api" / "trl" / "index.html").read_text(encoding="utf-8")
    started = (site / "getting-started" / "index.html").read_text(encoding="utf-8")
    assert "--8&lt;--" not in started and "train_gold_split" in started
    # repository files that pages link to are part of the site
    assert (site / "repo" / "examples" / "lightning_cli.py").is_file()


def _directives() -> list[tuple[str, dict]]:
    """(identifier, options) of every ``::: identifier`` in the API pages."""
    found = []
    for page in API_PAGES:
        for match in re.finditer(r"^::: (\S+)\n((?:    .*\n|\n)*)", page.read_text(encoding="utf-8"), re.M):
            block = match.group(2)
            options = (yaml.safe_load(textwrap.dedent(block)) or {}).get("options", {}) if block.strip() else {}
            found.append((match.group(1), options))
    return found


def _kept(name: str, filters: list[str]) -> bool:
    """mkdocstrings' filter rule: the last matching regex decides; '!' excludes."""
    keep, rules = None, set()
    for f in filters:
        exclude = f.startswith("!")
        rules.add(exclude)
        if re.search(f.lstrip("!"), name):
            keep = not exclude
    return (rules != {False}) if keep is None else keep


def _shown(obj, filters: list[str]) -> list:
    """The public classes, methods and functions a ``:::`` directive shows (given docstrings), obj included."""
    obj = obj.final_target if obj.is_alias else obj
    shown = [obj]
    if obj.is_module:
        exported = obj.exports if obj.exports is not None else [n for n in obj.members if not n.startswith("_")]
        for name in exported:
            member = obj.members[str(name)]
            if _kept(member.name, filters) and not member.final_target.is_module:
                shown += _shown(member, filters)
    elif obj.is_class:
        for name, member in obj.members.items():
            target = member.final_target if member.is_alias else member
            if _kept(name, filters) and (target.is_function or target.is_class or "property" in target.labels):
                shown += _shown(target, filters) if target.is_class else [target]
    return shown


def test_every_object_in_the_api_pages_has_a_docstring():
    hooks = _hooks()
    pkg = hooks.load_collapseguard(ROOT)
    plugins = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["plugins"]
    handler = next(p["mkdocstrings"] for p in plugins if isinstance(p, dict) and "mkdocstrings" in p)
    default_filters = handler["handlers"]["python"]["options"]["filters"]
    directives = _directives()
    documented = {ident for ident, _ in directives}
    public = {"collapseguard", "collapseguard.metrics", "collapseguard.audit",
              "collapseguard.integrations.lightning.CollapseGuard",
              "collapseguard.integrations.transformers.CollapseGuardCallback",
              "collapseguard.integrations.transformers.AnchorMixTrainer",
              "collapseguard.integrations.trl.GRPOCollapseGuard"}
    assert public <= documented, f"the API pages lack {sorted(public - documented)}"
    checked, missing = set(), []
    for ident, options in directives:
        obj = pkg.modules_collection.get_member(ident)
        for shown in _shown(obj, options.get("filters", default_filters)):
            if shown.path not in checked:
                checked.add(shown.path)
                if not (shown.docstring and shown.docstring.value.strip()):
                    missing.append(f"{shown.path} ({shown.relative_filepath}:{shown.lineno})")
    assert not missing, "public objects in the API pages without a docstring:\n  " + "\n  ".join(sorted(missing))
    # the check saw what the pages show: every export of the package and of metrics / audit, and their methods
    exports = {f"collapseguard.{n}" for n in pkg.exports if n != "__version__"}
    assert {pkg[n.split(".", 1)[1]].final_target.path for n in exports} <= checked
    assert {"collapseguard.metrics.base.Metric.merge", "collapseguard.audit.dataset.audit_path",
            "collapseguard.gold.goldset.GoldSet.from_jsonl"} <= checked
    assert len(checked) > 150


def test_readme_links_to_docs_pages_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 5
    for path, anchor in links:
        assert (ROOT / path).exists(), path
        if anchor and path.endswith(".md"):
            text = (ROOT / path).read_text(encoding="utf-8")
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.+)$", text, re.M)}
            assert anchor in slugs, f"README links to {path}#{anchor}, which has no such heading"
