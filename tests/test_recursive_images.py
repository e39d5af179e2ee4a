"""The vae-digits scenario: a VAE retrained on its own samples of real handwritten digits.

One seed, three generations after generation 0, each regime once (shared by the tests below; ~15 s on one
CPU thread), plus the example script as a subprocess (slow).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from collapseguard.demos.experiment import REGIMES, GenerationRecord
from collapseguard.demos.recursive_images import SCENARIO, digits_data, run_vae

ROOT = Path(__file__).resolve().parents[1]
GENERATIONS = 3
SIZE = {"samples": 800, "epochs": 60}  # 420 Adam steps per generation: ~1 s, as good as the default's 700


@pytest.fixture(scope="module")
def runs() -> dict[str, list[GenerationRecord]]:
    return {regime: run_vae(regime, seed=0, generations=GENERATIONS, **SIZE) for regime in REGIMES}


def _alerts(records: list[GenerationRecord], severity: str | None = None) -> list[str]:
    """``"metric@generation"`` of every alert at generation >= 1 (of one severity, if given)."""
    return [f"{a['metric']}@{r.generation}" for r in records if r.generation >= 1 for a in r.alerts
            if severity is None or a["severity"] == severity]


def test_digits_load_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("digits_data tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    data = digits_data.__wrapped__()  # not the cached copy: really load it here
    assert [len(part) for part in (data.train, data.val, data.gold, data.test)] == [997, 200, 300, 300]
    everything = np.concatenate([data.train, data.val, data.gold, data.test])
    assert everything.shape == (1797, 64)
    assert np.allclose(everything * 16, np.round(everything * 16))  # 17 grey levels, scaled to [0, 1]
    assert everything.min() == 0.0 and everything.max() == 1.0
    assert data.train.flags.writeable is False
    again = digits_data.__wrapped__()
    for part in ("train", "val", "gold", "test"):  # the split is fixed, not drawn anew
        assert np.array_equal(getattr(again, part), getattr(data, part))


def test_records_are_complete(runs: dict[str, list[GenerationRecord]]) -> None:
    for regime, records in runs.items():
        assert [r.generation for r in records] == list(range(GENERATIONS + 1))
        assert {(r.scenario, r.regime, r.seed) for r in records} == {(SCENARIO, regime, 0)}
        for r in records:
            assert np.isfinite([r.quality, r.val_loss, r.health]).all()
            assert 1.0 < r.quality < 17.0  # a per-pixel perplexity over 17 grey levels
            assert {"total_variance", "effective_rank", "vendi", "tail_mass", "gold_nll", "test_nll"} <= set(r.metrics)
            r.to_dict()
    # generation 0 is trained on the same human images in every regime
    assert len({records[0].quality for records in runs.values()}) == 1


def test_replace_degrades_while_fresh_holds(runs: dict[str, list[GenerationRecord]]) -> None:
    replace, fresh = runs["replace"], runs["fresh"]
    tv = [r.metrics["total_variance"] for r in replace]
    assert tv[-1] < 0.8 * tv[0], tv  # the samples' variance shrinks
    assert replace[-1].quality > 1.4 * replace[0].quality  # and held-out human digits fit worse
    assert replace[-1].val_loss < replace[0].val_loss  # while its own val loss looks better: no warning there
    assert max(r.quality for r in fresh) < 1.15 * fresh[0].quality
    assert min(r.metrics["total_variance"] for r in fresh) > 0.9 * fresh[0].metrics["total_variance"]


def test_guard_flags_replace_and_not_the_controls(runs: dict[str, list[GenerationRecord]]) -> None:
    assert _alerts(runs["replace"]), "the guard missed the collapse in replace"
    assert runs["replace"][-1].health < 0.75 < min(r.health for r in runs["fresh"][1:])
    for control in ("fresh", "accumulate"):
        assert not _alerts(runs[control], "critical"), f"critical false alarm on {control}"


def test_deterministic_and_validated() -> None:
    small = {"samples": 200, "epochs": 3}
    first, second = (run_vae("replace", seed=5, generations=1, **small) for _ in range(2))
    assert [r.to_dict() for r in first] == [r.to_dict() for r in second]
    with pytest.raises(ValueError, match="regime"):
        run_vae("mix", generations=0, **small)
    with pytest.raises(ValueError, match="samples"):
        run_vae("fresh", generations=0, samples=5000)


@pytest.mark.slow
def test_example_runs(tmp_path: Path) -> None:
    png = tmp_path / "samples.png"
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "image_collapse.py"), "--generations", "1", "--samples", "200",
         "--epochs", "3", "--plot", str(png)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "first critical" in out.stdout and "accumulate" in out.stdout
    pytest.importorskip("matplotlib")
    assert png.stat().st_size > 0
