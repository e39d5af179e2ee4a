"""Old module paths, kept importable for one release after the move to the pipeline layout (0.2).

``import collapseguard.engine`` still works: a meta-path finder answers for every old name with the module
at its new home (the very same module object, so ``isinstance`` checks and monkeypatching agree) and a
``DeprecationWarning`` that names the new path. No stub files: the table below is the whole mechanism.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

from collapseguard._deprecation import warn_deprecated

MOVED: dict[str, str] = {
    "collapseguard.goldset": "collapseguard.gold.goldset",
    "collapseguard.tokenize": "collapseguard.gold.tokenization",
    "collapseguard.profile": "collapseguard.gold.profiles",
    "collapseguard.provenance": "collapseguard.gold.provenance",
    "collapseguard.suite": "collapseguard.metrics.suite",
    "collapseguard.thresholds": "collapseguard.detection.thresholds",
    "collapseguard.calibrate": "collapseguard.detection.calibration",
    "collapseguard.detectors": "collapseguard.detection.detectors",
    "collapseguard.trajectory": "collapseguard.detection.trajectory",
    "collapseguard.alerts": "collapseguard.detection.alerts",
    "collapseguard.monitor": "collapseguard.detection.monitor",
    "collapseguard.datastream": "collapseguard.detection.datastream",
    "collapseguard.engine": "collapseguard.guard.engine",
    "collapseguard.sampling": "collapseguard.guard.sampling",
    "collapseguard.alertlog": "collapseguard.reporting.alertlog",
    "collapseguard.runlog": "collapseguard.reporting.runlog",
    "collapseguard.report": "collapseguard.reporting.report",
    "collapseguard.audit_distributed": "collapseguard.audit.distributed",
    "collapseguard.leakage": "collapseguard.audit.leakage",
    "collapseguard.shingles": "collapseguard.audit.shingles",
    "collapseguard.data": "collapseguard.demos.data",
    "collapseguard.corpora": "collapseguard.demos.corpora",
    "collapseguard.recursion": "collapseguard.demos.recursion",
    "collapseguard.experiment": "collapseguard.demos.experiment",
    "collapseguard.demo": "collapseguard.demos.trigram",
    "collapseguard.integrations.recursive": "collapseguard.demos.recursive_text",
    "collapseguard.integrations.recursive_images": "collapseguard.demos.recursive_images",
    "collapseguard.integrations.tiny": "collapseguard.demos.tiny",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a throwaway placeholder: exec_module swaps in the real module

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[module.__name__]
        warn_deprecated(f"import {module.__name__}", f"import {new}")
        # the import system returns whatever sys.modules holds under the old name once this returns
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
