"""Reference profiles: what the guard measured for a trusted model, saved to compare later runs with.

Collapse usually builds up across runs -- the next fine-tune on freshly scraped
data, the next generation of a self-training loop -- so each run is judged not
only against gold and its own history but against a profile of a trusted earlier
model: its output metrics and its teacher-forced fit to gold, band by band.
A profile is a small JSON file with a schema version; it records the gold
fingerprint and the settings that make two profiles comparable, and a profile
made under other settings is refused with a message that lists what differs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from collapseguard._validation import message

PROFILE_SCHEMA_VERSION = 1


class ProfileMismatchError(ValueError):
    """A reference profile was made with another gold set, tokenizer or generation settings."""


@dataclass(frozen=True)
class ReferenceProfile:
    """Metrics of a trusted model on a gold set, and what makes them comparable.

    Attributes:
        gold_fingerprint: sha256 of the gold set the profile was measured on.
        settings: the comparable settings (gold kind, tokenizer identity, prompt and generation
            lengths, number of samples, generation settings).
        metrics: every metric of the profiled check (output metrics and model-side statistics).
        source: free text naming the model (a checkpoint path, a run name).
        created: UTC timestamp.
    """

    gold_fingerprint: str
    settings: dict[str, Any]
    metrics: dict[str, float]
    source: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = PROFILE_SCHEMA_VERSION

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """The profile as strict JSON (unmeasured metrics as null), as :meth:`save` writes it."""
        return {
            "schema_version": self.schema_version, "gold_fingerprint": self.gold_fingerprint,
            "settings": self.settings, "source": self.source, "created": self.created,
            # strict JSON has no NaN: a metric that was not measured is null
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON, atomically (a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True, allow_nan=False)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfile:
        """A profile from :meth:`to_dict`'s output (refused for another schema version)."""
        version = data.get("schema_version")
        if version != PROFILE_SCHEMA_VERSION:
            raise ValueError(f"reference profile schema_version={version!r} is not supported "
                             f"(this collapseguard reads version {PROFILE_SCHEMA_VERSION}); remake the profile")
        missing = [k for k in ("gold_fingerprint", "settings", "metrics") if k not in data]
        if missing:
            raise ValueError(f"reference profile lacks {missing}: it was not written by collapseguard")
        metrics = {k: (float(v) if v is not None else math.nan) for k, v in data["metrics"].items()}
        return cls(data["gold_fingerprint"], dict(data["settings"]), metrics, data.get("source", ""),
                   data.get("created", ""), version)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        """Read a profile JSON file (plain JSON: no pickle, nothing executed)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ReferenceProfile: reference_profile={str(path)!r} is invalid: no such profile "
                                    "file. Make one with save_profile_to=... or `collapseguard profile`.")
        with open(path, encoding="utf-8") as fh:
            try:
                return cls.from_dict(json.load(fh))
            except json.JSONDecodeError as exc:
                raise ValueError(f"ReferenceProfile: reference_profile={str(path)!r} is invalid: it is not JSON "
                                 f"({exc.msg}). Pass a file written with save_profile_to=....") from None

    @classmethod
    def coerce(cls, value: ReferenceProfile | str | Path | dict[str, Any] | None) -> ReferenceProfile | None:
        """A profile from an instance, the path of its JSON file or its dict; None stays None."""
        if value is None or isinstance(value, ReferenceProfile):
            return value
        if isinstance(value, str | Path):
            return cls.load(value)
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise TypeError(message("ReferenceProfile", "reference_profile", value,
                                "a ReferenceProfile, the path of a profile JSON or a dict", wrong_type=True))

    # ---------------------------------------------------------- comparability
    def differences(self, gold_fingerprint: str, settings: dict[str, Any]) -> list[str]:
        """What differs between this profile and a run (empty when comparable).

        Only settings both sides record are compared, so the monitor and the
        engine can each check the part they own.
        """
        out = []
        if gold_fingerprint != self.gold_fingerprint:
            out.append(f"gold set (fingerprint {gold_fingerprint[:12]}... vs the profile's "
                       f"{self.gold_fingerprint[:12]}...)")
        for key in sorted(set(settings) & set(self.settings)):
            if _normal(settings[key]) != _normal(self.settings[key]):
                out.append(f"{key} ({settings[key]!r} vs the profile's {self.settings[key]!r})")
        return out

    def require_compatible(self, gold_fingerprint: str, settings: dict[str, Any]) -> None:
        """Raise :class:`ProfileMismatchError` naming every difference."""
        diffs = self.differences(gold_fingerprint, settings)
        if diffs:
            raise ProfileMismatchError(
                "reference profile is not comparable with this run: it differs in " + "; ".join(diffs)
                + ". Make a new profile with the same gold set, tokenizer and generation settings")


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))  # tuples vs lists, key order
