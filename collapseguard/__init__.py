"""collapseguard: catch model collapse while a generative model trains.

The core is framework-free (numpy and scipy only). Framework adapters live in
``collapseguard.integrations.lightning`` and ``collapseguard.integrations.transformers``.
"""

from collapseguard.detection.alerts import Alert, CollapseWarning, CollapseWarningHandler
from collapseguard.detection.datastream import DataStreamMonitor
from collapseguard.detection.monitor import CheckResult, CollapseMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet, GoldSetModifiedError, GoldSplit
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.gold.tokenization import SimpleTokenizer
from collapseguard.guard.generation import GenerationSettings, ModelHooks
from collapseguard.guard.halting import HaltPolicy
from collapseguard.guard.reweighting import ReweightPolicy
from collapseguard.guard.sampling import AnchorMixSampler
from collapseguard.guard.schedule import CheckSchedule
from collapseguard.metrics import ModelStats

__version__ = "0.2.0"

from collapseguard import _moved

_moved.install()

__all__ = [
    "Alert",
    "AnchorMixSampler",
    "CheckResult",
    "CheckSchedule",
    "CollapseMonitor",
    "CollapseWarning",
    "CollapseWarningHandler",
    "DataStreamMonitor",
    "GenerationSettings",
    "GoldSet",
    "GoldSetModifiedError",
    "GoldSplit",
    "HaltPolicy",
    "ModelHooks",
    "ModelStats",
    "ReferenceProfile",
    "ReweightPolicy",
    "SimpleTokenizer",
    "Thresholds",
    "__version__",
]
