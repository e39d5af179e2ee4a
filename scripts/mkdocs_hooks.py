"""The documentation site's build helpers (``mkdocs.yml``): a MkDocs hook module and a griffe extension.

MkDocs hooks (``hooks:`` in ``mkdocs.yml``): a page in ``docs/`` may link to the repository's own files
outside it -- an example script, a benchmark plot, the results folder. Each such target must exist (a
missing one is a warning, so ``mkdocs build --strict`` fails as for any broken link); it is copied into the
site under ``repo/`` (a folder gets a page listing its files) and the link points at the copy, so the built
site is self-contained.

Griffe extension (``CollapseguardDocs``, in mkdocstrings' ``extensions:``), for the API reference:

- ``collapseguard.integrations`` lives in ``integrations/`` (``package-dir`` in ``pyproject.toml``): it is
  loaded as that subpackage, so the reference shows the import paths users type;
- a method without a docstring that overrides a documented method of a base class in the package shares
  that docstring, as ``inspect.getdoc`` does;
- the docstrings' reST becomes Markdown: roles (``:class:`X```) become code, ``.. math::`` a code block,
  and bare doctest blocks (``>>>``) ``pycon`` code blocks.

``tests/test_docs.py`` builds the site strictly and checks, through the same extension, that every public
object the API pages show has a docstring.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path
from typing import Any

import griffe

log = logging.getLogger("mkdocs.hooks.collapseguard")

REPO_DIR = "repo"  # the site folder holding copies of repository files that the pages link to
ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- MkDocs hooks

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _outside_links(markdown: str) -> list[str]:
    """Relative link targets of a page (outside fenced code), as written."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            found += [t for t in _LINK.findall(line) if not re.match(r"^([a-z][a-z0-9+.-]*:|/|#)", t, re.I)]
    return found


def _resolve(target: str, page_src: str, docs_dir: Path) -> tuple[Path, str] | None:
    """(repository path, anchor) of a link that leaves ``docs/``; None for links inside it."""
    path, _, anchor = target.partition("#")
    where = Path(os.path.normpath(docs_dir / posixpath.dirname(page_src) / path))
    if where == docs_dir or docs_dir in where.parents:
        return None
    return where, anchor


def _site_path(repo_path: Path) -> str:
    rel = repo_path.relative_to(ROOT).as_posix()
    return f"{REPO_DIR}/{rel}/index.md" if repo_path.is_dir() else f"{REPO_DIR}/{rel}"


def on_files(files: Any, config: Any) -> Any:
    """Add the repository files that pages link to (outside ``docs/``) to the site, under ``repo/``."""
    from mkdocs.structure.files import File

    docs_dir = Path(config["docs_dir"]).resolve()
    wanted: set[Path] = set()
    for page in files.documentation_pages():
        for target in _outside_links(Path(page.abs_src_path).read_text(encoding="utf-8")):
            resolved = _resolve(target, page.src_uri, docs_dir)
            if resolved and resolved[0].exists() and ROOT in resolved[0].parents:
                wanted.add(resolved[0])
    for path in sorted(wanted):
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            rel = path.relative_to(ROOT).as_posix()
            listing = [f"# `{rel}/`", "", f"The files in `{rel}/` of the repository:", ""]
            listing += [f"- [`{p.name}`]({p.name})" for p in entries]
            files.append(File.generated(config, _site_path(path), content="\n".join(listing) + "\n"))
            for entry in entries:
                if files.get_file_from_path(_site_path(entry)) is None:
                    files.append(File.generated(config, _site_path(entry), abs_src_path=str(entry)))
        elif files.get_file_from_path(_site_path(path)) is None:
            files.append(File.generated(config, _site_path(path), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Point links that leave ``docs/`` at the copies; a missing target is a warning (an error when strict)."""
    docs_dir = Path(config["docs_dir"]).resolve()
    src = page.file.src_uri
    if src.startswith(f"{REPO_DIR}/"):
        return markdown  # a copied repository file: its links are relative to its own folder, copied with it

    def relink(match: re.Match[str]) -> str:
        target = match.group(1)
        if re.match(r"^([a-z][a-z0-9+.-]*:|/|#)", target, re.I):
            return match.group(0)
        resolved = _resolve(target, src, docs_dir)
        if resolved is None:
            return match.group(0)
        path, anchor = resolved
        if ROOT not in path.parents or not path.exists():
            log.warning("Doc file '%s' links to '%s', which is not a file of the repository", src, target)
            return match.group(0)
        new = posixpath.relpath(_site_path(path), posixpath.dirname(src) or ".")
        return f"]({new}{'#' + anchor if anchor else ''})"

    out, fenced = [], False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        out.append(line if fenced else _LINK.sub(relink, line))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------- griffe extension

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|obj|exc|const|ref):`~?([^`]+)`")
_MATH = re.compile(r"^(\s*)\.\. math::\s*(.*)$")


def markdown_docstring(text: str) -> str:
    """A docstring's reST made Markdown: roles as code, ``.. math::`` and doctest blocks as code blocks.

    >>> print(markdown_docstring("See :class:`~a.B`.\\n\\n>>> 1 + 1\\n2"))
    See `a.B`.
    <BLANKLINE>
    ```pycon
    >>> 1 + 1
    2
    ```
    """
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        math = _MATH.match(line)
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if math:
            body, i = [math.group(2)] if math.group(2) else [], i + 1
            while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(indent):
                body.append(lines[i].strip())
                i += 1
            out += [f"{indent}```text", *(f"{indent}{b}" for b in body), f"{indent}```"]
        elif stripped.startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].strip())
                i += 1
            out += [f"{indent}```pycon", *(f"{indent}{b}" for b in block), f"{indent}```"]
        else:
            out.append(line)
            i += 1
    return "\n".join(out)


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _graft_integrations(pkg: griffe.Module, loader: griffe.GriffeLoader) -> None:
    """Load ``integrations/`` as ``collapseguard.integrations``, as the installed package lays it out."""
    if "integrations" in pkg.members or pkg.filepath is None:
        return
    folder = Path(str(pkg.filepath)).parent.parent / "integrations"
    if not (folder / "__init__.py").is_file():
        return

    def visit(name: str, path: Path, parent: griffe.Module) -> griffe.Module:
        code = path.read_text(encoding="utf-8")
        loader.lines_collection[path] = code.splitlines()
        module = griffe.visit(name, path, code, extensions=loader.extensions, parent=parent,
                              docstring_parser=loader.docstring_parser, docstring_options=loader.docstring_options,
                              lines_collection=loader.lines_collection, modules_collection=loader.modules_collection)
        parent.set_member(name, module)
        return module

    package = visit("integrations", folder / "__init__.py", pkg)
    for path in sorted(folder.glob("*.py")):
        if path.name != "__init__.py":
            visit(path.stem, path, package)


def _inherit_docstrings(pkg: griffe.Module) -> None:
    """An undocumented method that overrides a documented one of a base class (in the package) shares its docstring."""
    for obj in _walk(pkg):
        if not obj.is_class:
            continue
        for name, member in obj.members.items():
            if member.is_alias or not member.is_function or member.docstring:
                continue
            for base in obj.mro():
                inherited = base.members.get(name)
                if inherited is not None and not inherited.is_alias and inherited.docstring:
                    member.docstring = griffe.Docstring(inherited.docstring.value, parent=member,
                                                        parser=inherited.docstring.parser,
                                                        parser_options=inherited.docstring.parser_options)
                    break


class CollapseguardDocs(griffe.Extension):
    """Griffe extension for the collapseguard API reference (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Graft the integrations, inherit docstrings, make the docstrings Markdown."""
        if pkg.name != "collapseguard":
            return
        _graft_integrations(pkg, loader)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = markdown_docstring(obj.docstring.value)
        _inherit_docstrings(pkg)

    on_package_loaded = on_package  # the name of this event before griffe 2


def load_collapseguard(root: Path = ROOT) -> griffe.Module:
    """The ``collapseguard`` package as the API reference sees it (sources under ``root``, this extension)."""
    loader = griffe.GriffeLoader(search_paths=[str(root)], extensions=griffe.load_extensions(CollapseguardDocs),
                                 docstring_parser=griffe.Parser.google)
    pkg = loader.load("collapseguard", try_relative_path=False)
    loader.resolve_aliases(implicit=False, external=False)
    return pkg
