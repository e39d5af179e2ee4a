"""The one way collapseguard retires a name: a ``DeprecationWarning`` in one format, for one release.

Modelled on transformers' ``deprecate_kwarg``. Everything that still answers to an old spelling goes through
:func:`warn_deprecated`, so every such warning reads the same and names the new spelling:

- :func:`deprecate_kwargs` decorates a function or ``__init__``: old keyword arguments are renamed (``"old": "new"``)
  or moved into a grouped argument (``"num_samples": "generation.num_samples"``, folded in by that group's merge
  function). It also refuses a keyword the function does not take, naming the close match, since a decorated
  ``__init__`` cannot leave that to Python's own message;
- :func:`renamed_keys` does the same for the keys of a dict (a thresholds file, ``Thresholds(**fields)``);
- modules that moved (:mod:`collapseguard._moved`) and renamed module attributes call :func:`warn_deprecated`.

A name deprecated ``since`` a release goes away in the next one (:data:`REMOVAL`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from collapseguard._validation import describe

SINCE, REMOVAL = "0.2", "0.3"


def warn_deprecated(old: str, new: str, *, since: str = SINCE, removal: str = REMOVAL, stacklevel: int = 2) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (``stacklevel`` as in :func:`warnings.warn`, counted
    from the caller of this function)."""
    warnings.warn(f"{old} is deprecated since collapseguard {since} and goes away in {removal}: use {new} instead",
                  DeprecationWarning, stacklevel=stacklevel + 1)


def renamed_keys(owner: str, data: Mapping[str, Any], renamed: Mapping[str, str], *,
                 stacklevel: int = 3) -> dict[str, Any]:
    """``data`` with old keys under their new names, warning once per old key; both spellings given is an error."""
    out = dict(data)
    for old, new in renamed.items():
        if old in out:
            if new in out:
                raise TypeError(f"{owner}: got both {old} and {new}; {old} is the old name of {new}: give only {new}")
            warn_deprecated(f"{owner}: {old}", new, stacklevel=stacklevel)
            out[new] = out.pop(old)
    return out


def _versions(since: Mapping[str, str] | str, old: str) -> dict[str, str]:
    """``since`` and ``removal`` of one old name: deprecated in one minor release, gone in the next."""
    release = since if isinstance(since, str) else since.get(old, SINCE)
    major, minor = release.split(".")[:2]
    return {"since": release, "removal": f"{major}.{int(minor) + 1}"}


Merge = Callable[[str, Any, dict[str, Any]], Any]
"""A grouped argument's merge: ``(caller, current value, {field: old value}) -> new value``."""


def deprecate_kwargs(moved: Mapping[str, str], *, merge: Mapping[str, Merge] | None = None,
                     since: Mapping[str, str] | str = SINCE,
                     check_names: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate ``fn`` (an ``__init__`` or function) so that old keyword spellings keep working for one release.

    Args:
        moved: old name -> new name (``"sampler": "anchor_sampler"``) or ``"group.field"`` (``"num_samples":
            "generation.num_samples"``): the value is folded into the ``group`` argument by ``merge[group]``.
        merge: for each group named in ``moved``, how old values join what the caller passed for the group.
        since: the release that deprecated the old names (one for all, or old name -> release); each goes away in
            the release after it.
        check_names: refuse a keyword ``fn`` does not take with the close match (Python's own message would name
            the wrapper's ``**kwargs``, not the argument the user misspelt).

    The caller named in messages is the class owning ``__init__`` (or the function). ``inspect.signature`` of the
    result is ``fn``'s own (``functools.wraps``), so IDEs and LightningCLI read the new signature.
    """
    merge = dict(merge or {})
    for old, new in moved.items():
        group = new.partition(".")[0] if "." in new else None
        if group is not None and group not in merge:
            raise ValueError(f"deprecate_kwargs: {old!r} moves into {group!r}, which has no merge function")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        parameters = inspect.signature(fn).parameters
        accepted = [n for n, p in parameters.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        is_init = fn.__name__ == "__init__"

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            caller = type(args[0]).__name__ if is_init and args else fn.__qualname__
            groups: dict[str, dict[str, Any]] = {}
            for old in [k for k in kwargs if k in moved]:
                new = moved[old]
                value = kwargs.pop(old)
                group, _, field = new.partition(".")
                if not field:  # a plain rename
                    if new in kwargs:
                        raise TypeError(f"{caller}: got both {old}= and {new}=; {old} is the old name of {new}: "
                                        f"pass only {new}")
                    warn_deprecated(f"{caller}({old}=...)", f"{new}=", stacklevel=2, **_versions(since, old))
                    kwargs[new] = value
                else:
                    warn_deprecated(f"{caller}({old}=...)", f"{group}=... ({field})", stacklevel=2,
                                    **_versions(since, old))
                    groups.setdefault(group, {})[field] = value
            for group, fields in groups.items():
                kwargs[group] = merge[group](caller, kwargs.get(group, parameters[group].default), fields)
            if check_names and not open_ended:
                for key, value in kwargs.items():
                    if key not in accepted:
                        close = difflib.get_close_matches(key, [*accepted, *moved], n=1)
                        hint = f"; did you mean {close[0]}=?" if close else f"; it takes {', '.join(accepted)}"
                        raise TypeError(f"{caller}: unexpected argument {key}={describe(value)}{hint}")
            return fn(*args, **kwargs)

        return call

    return wrap
