"""What one generation of a recursive-training experiment recorded.

Every scenario the benchmarks and examples run -- a Gaussian refit on its own
samples, a VAE retrained on its own images, a tiny language model retrained on
its own text -- reports one :class:`GenerationRecord` per generation, so one
summary (detected or not, first alerts, lead time, the validation-loss
baseline) serves them all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

REGIMES = ("replace", "fresh", "accumulate")
"""``replace``: each generation trains only on the previous generation's samples
(Shumailov et al.); ``fresh``: on a fresh draw of human data (a control);
``accumulate``: on the human data plus every generation's samples so far
(Gerstgrasser et al., 2024: a control whose error stays bounded)."""


@dataclass
class GenerationRecord:
    """One generation of one run.

    Attributes:
        scenario: e.g. ``"gaussian"``, ``"gmm"``, ``"vae-digits"``, ``"text-gpt2"``.
        regime: one of :data:`REGIMES`, or ``"reweight-<floor>"`` for a mitigated run.
        seed: the run's seed.
        generation: 0 is the model fit on human data.
        quality: the ground truth, lower is better and perplexity-like: the perplexity of held-out
            human text (text) or ``exp(mean NLL per dimension)`` of held-out real data (arrays).
        val_loss: the loss on held-out data drawn the way this generation's training data was drawn
            (what an ``EarlyStopping(monitor="val_loss")`` user watches).
        health: the guard's health at this generation's check.
        severity: the worst alert (``None``, ``"warn"`` or ``"critical"``).
        alerts: ``Alert.to_dict()`` of each alert.
        metrics: what the guard measured.
    """

    scenario: str
    regime: str
    seed: int
    generation: int
    quality: float
    val_loss: float
    health: float
    severity: str | None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("quality", "val_loss", "health"):
            if not math.isfinite(out[key]):
                out[key] = None
        out["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()}
        return out
