"""DataStreamMonitor: the training stream narrowing against gold, duplicate bursts, the human share."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from collapseguard import DataStreamMonitor
from collapseguard.demos.data import train_gold_split
from collapseguard.gold.tokenization import SimpleTokenizer

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")


@pytest.fixture(scope="module")
def streams():
    tok = SimpleTokenizer()
    train, gold = train_gold_split()
    gold_seqs = [np.asarray(tok.encode(t)) for t in gold]
    human = [np.asarray(tok.encode(t))[:32] for t in train[:200]]
    return gold_seqs, human


def test_human_stream_raises_nothing(streams):
    gold, human = streams
    monitor = DataStreamMonitor(window=128)
    monitor.observe(human[:128], is_human=[True] * 128)
    metrics, alerts = monitor.evaluate(gold, step=1)
    assert alerts == []
    assert 0.8 < metrics["incoming_distinct_2"] / metrics["gold_distinct_2_same_size"] < 1.25


def test_narrowing_stream_and_duplicate_burst_are_flagged(streams):
    gold, human = streams
    monitor = DataStreamMonitor(window=128)
    few = human[:6]
    monitor.observe([few[i % 6] for i in range(128)])
    _, alerts = monitor.evaluate(gold, step=2)
    by = {a.metric: a for a in alerts}
    assert by["incoming_distinct_2"].severity == "critical"
    assert by["incoming_duplicate_fraction"].value == pytest.approx(1 - 6 / 128)
    assert "narrowing" in by["incoming_distinct_2"].message and "deduplicate" in by["incoming_duplicate_fraction"].message


def test_human_share_below_floor(streams):
    gold, human = streams
    monitor = DataStreamMonitor(window=64, min_human_fraction=0.2)
    monitor.observe(human[:64], is_human=[i < 6 for i in range(64)])
    _, alerts = monitor.evaluate(gold)
    alert = next(a for a in alerts if a.metric == "incoming_human_fraction")
    assert alert.value == pytest.approx(6 / 64) and alert.reference == 0.2


def test_bad_arguments():
    with pytest.raises(ValueError, match="window=2 is invalid: window must be an int >= 8"):
        DataStreamMonitor(window=2)
    monitor = DataStreamMonitor()
    with pytest.raises(ValueError, match="is_human has 1 flags for 2 sequences"):
        monitor.observe([[1, 2], [3, 4]], is_human=[True])


def test_lightning_feeds_it_from_the_batches(tmp_path, caplog):
    pytest.importorskip("lightning")
    from collapseguard.integrations.lightning import CollapseGuard
    from tests import tiny_runs as tr

    monitor = DataStreamMonitor(window=128)
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), data_monitor=monitor, **tr.GUARD_KWARGS)
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        tr.lightning_fit(tmp_path, "degenerate", 1, [guard])
    assert any("incoming data is narrowing" in r.getMessage() for r in caplog.records)
    assert guard.engine.last_outcome.log_metrics["collapseguard/incoming_duplicate_fraction"] > 0.5
