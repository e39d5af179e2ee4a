"""Where each training sample came from: provenance labels, their sources, and an append-only ledger.

Every sample or source is ``human``, ``synthetic`` or ``unknown``; unknown is never
counted as human. Labels come from a dataset column, from a per-source manifest
(JSON or YAML), from Hugging Face dataset-card metadata (``language_creators``), or
from Croissant ``prov:`` properties. The ledger records each source once per
registration, with its content hash, label and size, as JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from collapseguard.detection.alerts import logger

LABELS = ("human", "synthetic", "unknown")
_ALIASES = {
    "human": "human", "human-written": "human", "real": "human", "organic": "human",
    "synthetic": "synthetic", "machine-generated": "synthetic", "generated": "synthetic", "model": "synthetic",
    "unknown": "unknown", "": "unknown", "none": "unknown", "mixed": "unknown",
}
HUMAN_CREATORS = {"found", "crowdsourced", "expert-generated"}
MACHINE_CREATORS = {"machine-generated"}


def normalize_label(value: Any) -> str:
    """``human`` / ``synthetic`` / ``unknown`` from a label or a common alias; None is unknown.

    >>> normalize_label("machine-generated"), normalize_label(None), normalize_label("Human")
    ('synthetic', 'unknown', 'human')
    """
    if value is None:
        return "unknown"
    key = str(value).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"provenance label {value!r} is not one of {list(LABELS)} (or an alias such as "
                         "'machine-generated'); fix the column or manifest")
    return _ALIASES[key]


@dataclass(frozen=True)
class Provenance:
    """A label and the origin metadata of one sample or source."""

    label: str
    generator: str | None = None
    generator_version: str | None = None
    generation_index: int | None = None
    source_uri: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", normalize_label(self.label))


def labels_from_column(rows: Any, column: str = "provenance") -> list[str]:
    """Labels from a column of a Hugging Face ``datasets.Dataset``, a dict of lists, or a list of dicts."""
    if hasattr(rows, "column_names"):  # datasets.Dataset
        if column not in rows.column_names:
            raise ValueError(f"column={column!r} is not in the dataset (columns: {rows.column_names})")
        values = rows[column]
    elif isinstance(rows, Mapping):
        if column not in rows:
            raise ValueError(f"column={column!r} is not in the data (keys: {sorted(rows)})")
        values = rows[column]
    else:
        values = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"rows[{i}] is {type(row).__name__}; pass dicts, a dict of lists or a datasets.Dataset")
            values.append(row.get(column))  # a missing value is unknown, never human
    return [normalize_label(v) for v in values]


def _read_structured(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path} is YAML: install pyyaml, or write the manifest as JSON") from None
        return yaml.safe_load(text)  # safe_load: no arbitrary objects
    return json.loads(text)


def load_manifest(path: str | Path) -> dict[str, Provenance]:
    """A per-source manifest: ``{source: label}`` or ``{source: {"label": ..., "generator": ..., ...}}``."""
    path = Path(path)
    data = _read_structured(path)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a manifest maps each source to its label or to a dict with a 'label'")
    out = {}
    for source, entry in data.items():
        if isinstance(entry, Mapping):
            fields = {k: entry.get(k) for k in ("generator", "generator_version", "generation_index",
                                                "source_uri", "sha256")}
            out[str(source)] = Provenance(entry.get("label"), **fields)
        else:
            out[str(source)] = Provenance(entry)
    return out


def label_from_dataset_card(card: str | Path) -> str:
    """A source label from a Hugging Face dataset card's ``language_creators`` (README front matter).

    ``machine-generated`` alone -> synthetic; only ``found`` / ``crowdsourced`` / ``expert-generated``
    -> human; a mix, anything else, or no field -> unknown (never silently human).
    """
    text = Path(card).read_text(encoding="utf-8") if isinstance(card, Path) or (
        isinstance(card, str) and "\n" not in card and os.path.exists(card)) else str(card)
    match = re.match(r"\A---\s*\n(.*?)\n---", text, re.S)
    if not match:
        return "unknown"
    import yaml

    meta = yaml.safe_load(match.group(1)) or {}
    creators = meta.get("language_creators") or []
    creators = {str(c).strip().lower() for c in ([creators] if isinstance(creators, str) else creators)}
    if creators and creators <= MACHINE_CREATORS:
        return "synthetic"
    if creators and creators <= HUMAN_CREATORS:
        return "human"
    return "unknown"


def label_from_croissant(metadata: Mapping[str, Any] | str | Path) -> str:
    """A source label from Croissant JSON-LD ``prov:wasGeneratedBy`` / ``prov:wasAttributedTo``.

    Generated by an activity that names a model or generation -> synthetic; attributed to a person
    or organisation with no generating activity -> human; otherwise unknown.
    """
    data = metadata if isinstance(metadata, Mapping) else json.loads(Path(metadata).read_text(encoding="utf-8"))
    generated = data.get("prov:wasGeneratedBy")
    attributed = data.get("prov:wasAttributedTo")
    if generated:
        blob = json.dumps(generated).lower()
        if any(word in blob for word in ("model", "generat", "synthetic", "llm", "softwareagent")):
            return "synthetic"
        return "unknown"
    if attributed:
        blob = json.dumps(attributed).lower()
        if any(word in blob for word in ("person", "organization", "organisation")):
            return "human"
    return "unknown"


def content_sha256(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


class ProvenanceLedger:
    """Append-only JSONL record of training sources: label, origin, content hash, samples and tokens.

    >>> import tempfile, pathlib
    >>> ledger = ProvenanceLedger(pathlib.Path(tempfile.mkdtemp()) / "ledger.jsonl")
    >>> ledger.record("docs", Provenance("human"), texts=["a b", "c"])["samples"]
    2
    >>> ledger.summary()["human"]["tokens"]
    3
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def record(self, source: str, provenance: Provenance, *, texts: Sequence[str] | None = None,
               samples: int | None = None, tokens: int | None = None) -> dict[str, Any]:
        """Append one source. With ``texts``, samples, tokens (whitespace) and sha256 are computed."""
        if texts is not None:
            samples, tokens = len(texts), sum(len(t.split()) for t in texts)
            sha = provenance.sha256 or content_sha256(texts)
        else:
            sha = provenance.sha256
        entry = {"source": source, **asdict(provenance), "sha256": sha, "samples": int(samples or 0),
                 "tokens": int(tokens or 0)}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def summary(self) -> dict[str, dict[str, int]]:
        """Sources, samples and tokens by label (every label present, zero where none)."""
        out = {label: {"sources": 0, "samples": 0, "tokens": 0} for label in LABELS}
        for e in self.entries():
            row = out[normalize_label(e.get("label"))]
            row["sources"] += 1
            row["samples"] += int(e.get("samples", 0))
            row["tokens"] += int(e.get("tokens", 0))
        return out

    def log_summary(self) -> dict[str, dict[str, int]]:
        """Log the summary (INFO; WARNING when some data has unknown provenance) and return it."""
        summary = self.summary()
        total = sum(row["samples"] for row in summary.values()) or 1
        line = ", ".join(f"{label} {row['samples']} samples / {row['tokens']} tokens ({row['samples'] / total:.0%})"
                         for label, row in summary.items())
        level = "warning" if summary["unknown"]["samples"] else "info"
        getattr(logger, level)("training data provenance (%s): %s%s", self.path.name, line,
                               "; unknown provenance is not counted as human" if level == "warning" else "")
        return summary
