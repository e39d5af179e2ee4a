"""Watch the training data itself: is the incoming stream narrowing?

Model collapse starts upstream, in the data: a scrape that fills with generated
text, a synthetic pipeline that converges. :class:`DataStreamMonitor` keeps a
rolling window of the token sequences the model trains on and, at each check,
compares it with the gold set. Its checks are one-sided -- narrowing, not mere
change: the window's distinct bigrams against gold text of the same token count,
a burst of exact duplicate sequences, and a realized human share below the floor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from collapseguard._validation import NONE, Interval, validate
from collapseguard.detection.alerts import Alert
from collapseguard.detection.thresholds import Thresholds
from collapseguard.metrics import distinct_n, duplicate_fraction
from collapseguard.metrics._batch import TokenBatch


class DataStreamMonitor:
    """Rolling diversity of the training batches against gold, duplicate bursts, and the human share.

    Args:
        window: how many recent sequences to keep.
        min_human_fraction: alert when the realized human share of the window falls below it
            (only for batches observed with provenance flags).
        thresholds: bounds (``diversity_warn``/``_critical`` for the distinct-2 ratio,
            ``repetition_warn``/``_critical`` for the duplicate share). ``None``: the thresholds of the guard it is
            given to (``data_monitor=``), so a guard at ``"strict"`` judges its data stream at ``"strict"`` too;
            ``"balanced"`` when used alone.

    ``observe`` takes each batch's token ids (and, optionally, which rows are human); the guard
    calls :meth:`evaluate` at every check, with the gold token sequences from its monitor.
    """

    name = "DataStreamMonitor"

    def __init__(self, window: int = 512, min_human_fraction: float | None = None,
                 thresholds: Thresholds | str | dict | None = None) -> None:
        validate("DataStreamMonitor", "window", window, Interval(int, 8, None),
                 fix="the rolling check keeps at least 8 sequences")
        validate("DataStreamMonitor", "min_human_fraction", min_human_fraction, Interval(float, 0, 1), NONE)
        self.window = window
        self.min_human_fraction = min_human_fraction
        self.thresholds_given = thresholds is not None
        self.thresholds = Thresholds.coerce(thresholds)
        self._seqs: deque[np.ndarray] = deque(maxlen=window)
        self._human: deque[bool | None] = deque(maxlen=window)

    def inherit_thresholds(self, thresholds: Thresholds) -> None:
        """Judge with the guard's thresholds unless this monitor was given its own."""
        if not self.thresholds_given:
            self.thresholds = thresholds

    def observe(self, token_ids: Any, is_human: Sequence[bool] | None = None) -> None:
        """Add a batch: a 2-D array/tensor of token ids (rows = sequences) or a list of sequences."""
        if hasattr(token_ids, "detach"):
            token_ids = token_ids.detach().cpu().numpy()
        rows = [np.asarray(r, dtype=np.int64).reshape(-1) for r in token_ids]
        flags = list(is_human) if is_human is not None else [None] * len(rows)
        if len(flags) != len(rows):
            raise ValueError(f"is_human has {len(flags)} flags for {len(rows)} sequences")
        self._seqs.extend(rows)
        self._human.extend(bool(f) if f is not None else None for f in flags)

    def metrics(self, gold_sequences: Sequence[np.ndarray]) -> dict[str, float]:
        """The window's distinct-2 (and gold's, at the same token count), duplicate share and human share."""
        if not self._seqs:
            return {}
        seqs = list(self._seqs)
        tokens = sum(s.size for s in seqs)
        gold = _same_token_count(gold_sequences, tokens, np.median([s.size for s in seqs]))
        out = {"incoming_distinct_2": distinct_n(TokenBatch(seqs), 2),
               "gold_distinct_2_same_size": distinct_n(TokenBatch(gold), 2),
               "incoming_duplicate_fraction": duplicate_fraction(TokenBatch(seqs))}
        flags = [f for f in self._human if f is not None]
        if flags:
            out["incoming_human_fraction"] = sum(flags) / len(flags)
        return out

    def evaluate(self, gold_sequences: Sequence[np.ndarray], step: int | None = None) -> tuple[dict[str, float], list[Alert]]:
        """(metrics, alerts) for the current window."""
        m = self.metrics(gold_sequences)
        if not m or len(self._seqs) < self.thresholds.min_outputs:
            return m, []
        th, alerts = self.thresholds, []
        ratio = m["incoming_distinct_2"] / m["gold_distinct_2_same_size"] if m["gold_distinct_2_same_size"] else 1.0
        if ratio < th.diversity_warn:
            sev = "critical" if ratio < th.diversity_critical else "warn"
            alerts.append(self._alert("incoming_distinct_2", sev, m["incoming_distinct_2"], m["gold_distinct_2_same_size"],
                                      th.diversity_critical if sev == "critical" else th.diversity_warn, step,
                                      f"the training data's distinct-2 is {ratio:.0%} of gold text of the same size "
                                      f"over the last {len(self._seqs)} sequences: the incoming data is narrowing; "
                                      "audit its sources for generated or duplicated text"))
        dup = m["incoming_duplicate_fraction"]
        if dup > th.repetition_warn:
            sev = "critical" if dup > th.repetition_critical else "warn"
            alerts.append(self._alert("incoming_duplicate_fraction", sev, dup, 0.0,
                                      th.repetition_critical if sev == "critical" else th.repetition_warn, step,
                                      f"{dup:.0%} of the last {len(self._seqs)} training sequences repeat an earlier "
                                      "one: a burst of duplicates; deduplicate the source"))
        share = m.get("incoming_human_fraction")
        if self.min_human_fraction is not None and share is not None and share < self.min_human_fraction:
            alerts.append(self._alert("incoming_human_fraction", "warn", share, self.min_human_fraction,
                                      self.min_human_fraction, step,
                                      f"human data is {share:.0%} of the last {len(self._seqs)} training sequences, "
                                      f"below the floor {self.min_human_fraction:.0%}: check the sampler and the "
                                      "provenance labels"))
        return m, alerts

    def _alert(self, metric: str, severity: str, value: float, reference: float, threshold: float,
               step: int | None, message: str) -> Alert:
        return Alert("mid", severity, metric, float(value), float(reference), float(threshold),  # type: ignore[arg-type]
                     message, self.name, step)

    def state_dict(self) -> dict[str, Any]:
        """The window (token ids and human flags) as JSON-ready lists, saved with the guard."""
        return {"window": [s.tolist() for s in self._seqs], "human": list(self._human)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the window from :meth:`state_dict`'s output."""
        self._seqs = deque((np.asarray(s, dtype=np.int64) for s in state["window"]), maxlen=self.window)
        self._human = deque(state["human"], maxlen=self.window)


def _same_token_count(gold: Sequence[np.ndarray], tokens: int, length: float) -> list[np.ndarray]:
    """Gold cut into pieces of the incoming sequences' length, up to the same token count."""
    width = max(int(length), 2)
    pieces: list[np.ndarray] = []
    total = 0
    for seq in gold:
        for start in range(0, seq.size - 1, width):
            piece = seq[start:start + width]
            pieces.append(piece)
            total += piece.size
            if total >= tokens:
                return pieces
    return pieces if pieces else [np.zeros(0, np.int64)]

