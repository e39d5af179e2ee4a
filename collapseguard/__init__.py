"""collapseguard: catch model collapse while a generative model trains.

The core is framework-free (numpy and scipy only). Framework adapters live in
``collapseguard.integrations.lightning`` and ``collapseguard.integrations.transformers``.
"""

from collapseguard.alerts import Alert, CollapseWarning
from collapseguard.datastream import DataStreamMonitor
from collapseguard.goldset import GoldSet, GoldSetModifiedError, GoldSplit
from collapseguard.metrics import ModelStats
from collapseguard.monitor import CheckResult, CollapseMonitor
from collapseguard.profile import ReferenceProfile
from collapseguard.sampling import AnchorMixSampler
from collapseguard.thresholds import Thresholds
from collapseguard.tokenize import SimpleTokenizer

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AnchorMixSampler",
    "CheckResult",
    "CollapseMonitor",
    "CollapseWarning",
    "DataStreamMonitor",
    "GoldSet",
    "GoldSetModifiedError",
    "GoldSplit",
    "ModelStats",
    "ReferenceProfile",
    "SimpleTokenizer",
    "Thresholds",
    "__version__",
]
