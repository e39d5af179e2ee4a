"""The alert trail: an append-only JSONL file, one line per check and one per alert.

Each line is written, flushed and fsynced on its own, so the trail is readable
after a crash up to the last completed check. A trail that cannot be written
(disk full, read-only) never stops training unless the guard runs with
``on_error="raise"``: the alerts still reach the ``collapseguard`` logger.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from collapseguard.detection.alerts import Alert, logger


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no NaN or Infinity).

    >>> json_safe({"a": [1.0, float("nan")], "b": (float("inf"), 2)})
    {'a': [1.0, None], 'b': [None, 2]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class AlertLog:
    """Append-only JSONL trail of checks and alerts.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "alerts.jsonl"
    >>> AlertLog(path).write({"type": "check", "step": 1})
    True
    >>> json.loads(path.read_text())["step"]
    1
    """

    def __init__(self, path: str | Path, *, raise_errors: bool = False) -> None:
        self.path = Path(path)
        self.raise_errors = raise_errors
        self.failed = False

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record; False (and one error in the log) when the file cannot be written."""
        line = json.dumps(json_safe({"time": time.time(), **record}), sort_keys=True, allow_nan=False, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if self.raise_errors:
                raise
            if not self.failed:
                logger.error("alert log %s cannot be written (%s: %s); alerts still go to the collapseguard "
                             "logger and training continues", self.path, type(exc).__name__, exc.strerror or exc)
            self.failed = True
            return False
        return True

    def write_check(self, *, step: int | None, epoch: int | None, rank: int, health: float | None,
                    severity: str | None, metrics: dict[str, float], alerts: list[Alert],
                    **extra: Any) -> None:
        """One ``check`` line (``extra``: reference, bounds, phase health, human share) and one per alert."""
        base = {"step": step, "epoch": epoch, "rank": rank}
        if "tier" in extra:  # the step schedule's tier ("full" / "sentinel") on the check and on each of its alerts
            base["tier"] = extra.pop("tier")
        self.write({"type": "check", **base, "health": health, "severity": severity, "metrics": metrics, **extra})
        for alert in alerts:
            self.write({"type": "alert", **base, **alert.to_dict()})


def read_alert_log(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a trail (a line cut short by a crash is skipped)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
