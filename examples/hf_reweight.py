"""Hugging Face Trainer: fine-tuning on mostly synthetic data, with the guard steering the human share.

A base model is trained on human paragraphs and its guard saves a reference profile. The fine-tune's
training set is mostly synthetic text -- two sentences repeated, what a collapsed generator emits -- plus a
small pool of human paragraphs from CPython's documentation, labelled by provenance. An
``AnchorMixSampler`` guarantees a floor of human data in every batch (none to start); the guard, with
``on_collapse=ReweightPolicy(sampler)``, raises that floor after each epoch that alerts (a step for a warn, two for a
critical) and lowers it after clean epochs; it judges each epoch against the base model's profile.
The run folder gets the guard's trail, the Trainer's ``trainer_state.json`` and an HTML report.

    python examples/hf_reweight.py [--epochs 6] [--out runs/hf_reweight]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from collapseguard import AnchorMixSampler, CheckSchedule, GenerationSettings, GoldSet, ReweightPolicy
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.tiny import TokenBlocks, tiny_gpt2, train_tokenizer
from collapseguard.integrations.transformers import AnchorMixTrainer, CollapseGuardCallback
from collapseguard.reporting.report import write_report

DEGENERATE = ["The function returns the value of the attribute.", "This object is not callable."] * 5000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the fine-tune")
    parser.add_argument("--base-epochs", type=int, default=4, help="epochs of the base model on human text")
    parser.add_argument("--human", type=int, default=30, help="human paragraphs in the anchor pool")
    parser.add_argument("--synthetic", type=int, default=6000, help="synthetic sentences")
    parser.add_argument("--floor", type=float, default=0.0, help="starting human floor per batch")
    parser.add_argument("--out", default="runs/hf_reweight")
    args = parser.parse_args()
    out = Path(args.out)
    (out / "alerts.jsonl").unlink(missing_ok=True)
    train, gold_texts = train_gold_split()
    tok = train_tokenizer(train)
    synthetic, human = TokenBlocks(DEGENERATE[: args.synthetic], tok), TokenBlocks(train[: args.human], tok)
    labels = ["synthetic"] * len(synthetic) + ["human"] * len(human)
    # anchors may repeat: the HF Trainer expects every epoch to have the same number of batches
    gold = GoldSet.from_texts(gold_texts)
    model = tiny_gpt2(tok)

    def arguments(folder: Path, epochs: int) -> TrainingArguments:
        return TrainingArguments(str(folder), num_train_epochs=epochs, learning_rate=3e-3, use_cpu=True, report_to=[],
                                 logging_strategy="epoch", save_strategy="no", disable_tqdm=True, seed=0)

    # the base model: trained on human paragraphs; its guard saves a reference profile at the end
    profile = out / "base_profile.json"
    Trainer(model=model, args=arguments(out / "base", args.base_epochs), processing_class=tok,
            train_dataset=TokenBlocks(train, tok),
            callbacks=[CollapseGuardCallback(gold, save_profile_to=profile, generation=GenerationSettings(num_samples=32), schedule=CheckSchedule(every_n_epochs=args.base_epochs))]).train()
    # the fine-tune: mostly synthetic data, judged against the base model's profile
    sampler = AnchorMixSampler(labels, batch_size=16, min_human_fraction=args.floor, seed=0,
                               allow_repeat_anchors=True)
    guard = CollapseGuardCallback(gold, on_collapse=ReweightPolicy(sampler, max_human_fraction=0.8), reference_profile=profile, alert_log=out / "alerts.jsonl", generation=GenerationSettings(num_samples=32))
    trainer = AnchorMixTrainer(model=model, args=arguments(out, args.epochs), processing_class=tok, callbacks=[guard],
                               train_dataset=torch.utils.data.ConcatDataset([synthetic, human]), anchor_sampler=sampler)
    trainer.train()
    trainer.save_state()  # trainer_state.json, which `collapseguard report` reads
    print(f"\n{len(synthetic)} synthetic and {len(human)} human blocks; human share per epoch:")
    rows = [h for h in trainer.state.log_history if "collapseguard/health" in h]
    for h in rows:
        alerts = "critical" if h["collapseguard/severity"] == 2 else "warn" if h["collapseguard/severity"] == 1 else "-"
        print(f"epoch {h['epoch']:>4.1f}  drew {h.get('collapseguard/human_fraction', float('nan')):.0%} human  "
              f"health {h['collapseguard/health']:.2f} ({alerts})  next floor "
              f"{h['collapseguard/human_fraction_target']:.0%}")
    print(f"report: {write_report(out)}")


if __name__ == "__main__":
    main()
