"""on_collapse="reweight": the human share rises with alerts, relaxes on recovery, and is logged and saved."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from collapseguard import AnchorMixSampler, GenerationSettings, GoldSet, ModelHooks, ReweightPolicy
from collapseguard.gold.tokenization import SimpleTokenizer
from collapseguard.guard.engine import GeneratedBatch, GuardEngine

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")
TEXTS = [f"human text number {i} says something about topic {i % 5} in its own words" for i in range(40)]


def test_policy_steps_up_on_alerts_and_down_on_recovery():
    sampler = AnchorMixSampler(["human"] * 10 + ["synthetic"] * 30, 8, 0.2)
    engine = GuardEngine(GoldSet.from_texts(TEXTS), tokenizer=SimpleTokenizer(), on_collapse=ReweightPolicy(sampler, max_human_fraction=0.5), generation=GenerationSettings(prompt_length=4, max_new_tokens=8, num_samples=16))
    engine.setup()
    healthy = GeneratedBatch(sequences=list(engine.monitor.split.continuations[:16]))
    stuck = GeneratedBatch(sequences=[np.array([5, 6] * 4)] * 16)
    seen = []
    for gen in (stuck, stuck, healthy, healthy, healthy, healthy, healthy, healthy):
        outcome = engine.run_check(lambda g=gen: g, step=len(seen), epoch=len(seen))
        seen.append(outcome.log_metrics["collapseguard/human_fraction_target"])
    # critical: +0.2 twice (capped at 0.5); then one step down per 2 clean checks, never below the floor 0.2
    assert seen == [0.4, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3, 0.2]
    assert sampler.min_human_fraction == 0.2
    state = engine.state_dict()
    assert state["human_fraction"] == 0.2


def test_reweight_state_is_restored_into_the_sampler():
    labels = ["human"] * 10 + ["synthetic"] * 30
    first = GuardEngine(GoldSet.from_texts(TEXTS), tokenizer=SimpleTokenizer(), on_collapse=ReweightPolicy(AnchorMixSampler(labels, 8, 0.2)), generation=GenerationSettings(prompt_length=4, max_new_tokens=8, num_samples=16))
    first.setup()
    first.run_check(lambda: GeneratedBatch(sequences=[np.array([5, 6] * 4)] * 16), step=1, epoch=0)
    sampler = AnchorMixSampler(labels, 8, 0.2)
    resumed = GuardEngine(GoldSet.from_texts(TEXTS), tokenizer=SimpleTokenizer(), on_collapse=ReweightPolicy(sampler), generation=GenerationSettings(prompt_length=4, max_new_tokens=8, num_samples=16))
    resumed.load_state_dict(first.state_dict())  # before setup, as Lightning restores callbacks
    resumed.setup()
    assert resumed.human_fraction == first.human_fraction == sampler.min_human_fraction == 0.4


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, r"on_collapse='reweight' is invalid: .* on_collapse=ReweightPolicy\(anchor_sampler\)"),
    ({"max_human_fraction": 0.3},
     "ReweightPolicy: max_human_fraction=0.3 is invalid: it is below the sampler's min_human_fraction=0.5"),
    ({"step": 0}, "ReweightPolicy: step=0 is invalid: step must be"),
])
def test_reweight_configuration_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        policy = ReweightPolicy(AnchorMixSampler(["human", "synthetic"], 2, 0.5), **kwargs) if kwargs else "reweight"
        GuardEngine(GoldSet.from_texts(TEXTS), on_collapse=policy)


def test_lightning_reweights_and_logs_the_realized_share(tmp_path):
    pytest.importorskip("lightning")
    from collapseguard.demos.tiny import lightning_module
    from collapseguard.integrations.lightning import AnchorMixDataModule, CollapseGuard
    from tests import tiny_runs as tr

    dataset, labels = tr.mixed_blocks()
    data = AnchorMixDataModule(dataset, labels, batch_size=16, min_human_fraction=0.1, seed=0)
    sampler = data.sampler
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), on_collapse=ReweightPolicy(sampler), **tr.GUARD_KWARGS, hooks=ModelHooks(generate=tr.alarming))
    trainer = tr.lightning_trainer(tmp_path, 3, [guard], use_distributed_sampler=False)
    trainer.fit(lightning_module(tr.model()), datamodule=data)
    assert sampler.min_human_fraction == pytest.approx(0.7)  # three critical checks: 0.1 -> 0.3 -> 0.5 -> 0.7
    with open(f"{trainer.logger.log_dir}/metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("collapseguard/human_fraction")]
    targets = [float(r["collapseguard/human_fraction_target"]) for r in rows]
    realized = [float(r["collapseguard/human_fraction"]) for r in rows]
    assert targets == pytest.approx([0.3, 0.5, 0.7])
    # what each epoch actually drew: the floor in force for that epoch (0.1, 0.3, 0.5) or more
    assert all(r >= t - 1e-9 for r, t in zip(realized, [0.1, 0.3, 0.5], strict=True))
    assert realized[2] > realized[0]


def test_hf_anchor_trainer_reweights(tmp_path):
    pytest.importorskip("transformers")
    from transformers import TrainingArguments

    from collapseguard.integrations.transformers import AnchorMixTrainer, CollapseGuardCallback
    from tests import tiny_runs as tr

    dataset, labels = tr.mixed_blocks()
    sampler = AnchorMixSampler(labels, 16, 0.1, seed=0)
    guard = CollapseGuardCallback(tr.gold(), on_collapse=ReweightPolicy(sampler), **tr.GUARD_KWARGS, hooks=ModelHooks(generate=tr.alarming))
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, learning_rate=3e-3, use_cpu=True,
                             report_to=[], disable_tqdm=True, save_strategy="no", logging_strategy="epoch")
    trainer = AnchorMixTrainer(model=tr.model(), args=args, train_dataset=dataset, processing_class=tr.tokenizer(),
                               callbacks=[guard], anchor_sampler=sampler)
    trainer.train()
    rows = [h for h in trainer.state.log_history if "collapseguard/human_fraction_target" in h]
    assert [r["collapseguard/human_fraction_target"] for r in rows] == pytest.approx([0.3, 0.5])
    assert rows[1]["collapseguard/human_fraction"] >= 0.3 - 1e-9


@pytest.mark.slow
def test_iterative_retraining_collapses_without_anchors_and_holds_with_them(tmp_path):
    pytest.importorskip("lightning")
    from collapseguard.demos.recursive_text import run_anchored
    from tests import tiny_runs as tr

    results = run_anchored(tr.texts()[0], tr.gold(), tr.tokenizer(), tmp_path, generations=5, epochs=2,
                           samples=500, **tr.GUARD_KWARGS)
    ppl = {(r.regime, r.generation): r.metrics["gold_ppl"] / r.reference["gold_ppl"] for r in results}
    d2 = {(r.regime, r.generation): r.metrics["distinct_2"] / r.reference["distinct_2"] for r in results}
    replace = [ppl[("replace", g)] for g in range(1, 6)]
    assert replace[-1] > 1.8 and replace[-1] > replace[0]  # without anchors: collapse builds up
    for g in range(1, 6):  # a 20% human floor keeps the model near generation 0
        assert ppl[("reweight", g)] < 1.4 and abs(d2[("reweight", g)] - 1) < 0.1
    assert ppl[("reweight", 5)] < replace[-1] / 1.5
