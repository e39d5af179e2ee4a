"""The guards in real TRL trainers (SFTTrainer, DPOTrainer, GRPOTrainer) with a real tiny GPT-2 on CPU (no mocks)."""

from __future__ import annotations

import copy
import functools
import json
import logging

import pytest
import torch

from collapseguard import GenerationSettings

pytest.importorskip("trl")

from collapseguard import GoldSet
from collapseguard.demos.data import pydoc_instructions, train_gold_split
from collapseguard.demos.tiny import TokenBlocks, tiny_gpt2, train_tokenizer
from collapseguard.integrations.trl import CollapseGuardCallback, GRPOCollapseGuard

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")]
COMMON = {"use_cpu": True, "report_to": [], "save_strategy": "no", "disable_tqdm": True}


@functools.lru_cache(maxsize=1)
def chat_setup() -> tuple:
    pairs = pydoc_instructions()
    tok = train_tokenizer([r for _, rs in pairs for r in rs], vocab_size=400, chat=True)
    held, train = pairs[::3], [p for i, p in enumerate(pairs) if i % 3]
    gold = GoldSet.from_pairs([p for p, _ in held], [rs for _, rs in held])
    return tok, gold, train


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def test_sft_trainer_takes_the_callback_with_chat_gold_and_several_samples(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok, gold, train = chat_setup()
    rows = [{"messages": [*_messages(p), {"role": "assistant", "content": r}]} for p, rs in train[:20] for r in rs[:3]]
    guard = CollapseGuardCallback(gold, generation=GenerationSettings(samples_per_prompt=2, num_samples=8, max_new_tokens=16))
    args = SFTConfig(str(tmp_path), num_train_epochs=2, learning_rate=3e-3, per_device_train_batch_size=16,
                     max_length=96, logging_strategy="epoch", **COMMON)
    trainer = SFTTrainer(model=tiny_gpt2(tok), args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         callbacks=[guard])
    trainer.train()
    monitor = guard.engine.monitor
    assert len(monitor.checks) == 2
    # prompts are the chat template's rendering, ending in the generation prompt
    assert tok.decode(monitor.split.prompts[0].tolist()).endswith("assistant: ")
    rows = [h for h in trainer.state.log_history if "collapseguard/distinct_k" in h]
    assert len(rows) == 2 and all(1.0 <= r["collapseguard/distinct_k"] <= 2.0 for r in rows)
    assert "distinct_k" in monitor.reference(8)  # several human answers per prompt: a gold within-prompt reference


def test_dpo_trainer_takes_the_callback(tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok, gold, train = chat_setup()
    rows = [{"prompt": _messages(p), "chosen": [{"role": "assistant", "content": rs[0]}],
             "rejected": [{"role": "assistant", "content": "I do not know."}]} for p, rs in train[:24]]
    guard = CollapseGuardCallback(gold, generation=GenerationSettings(num_samples=8, max_new_tokens=16))
    args = DPOConfig(str(tmp_path), num_train_epochs=1, learning_rate=1e-3, per_device_train_batch_size=8,
                     max_length=96, logging_strategy="epoch", **COMMON)
    model = tiny_gpt2(tok)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, callbacks=[guard])
    trainer.train()
    assert len(guard.engine.monitor.checks) == 1
    assert any("collapseguard/health" in h for h in trainer.state.log_history)


@functools.lru_cache(maxsize=1)
def pretrained() -> tuple:
    """A 2-layer GPT-2 trained on human text first, so that rewards vary within a group."""
    from transformers import Trainer, TrainingArguments

    train, _ = train_gold_split()
    tok = train_tokenizer(train, vocab_size=400)
    model = tiny_gpt2(tok, dropout=0.0)
    args = TrainingArguments("/tmp/collapseguard-test-pretrain", num_train_epochs=3, learning_rate=3e-3,
                             per_device_train_batch_size=16, logging_strategy="no", **COMMON)
    Trainer(model=model, args=args, train_dataset=TokenBlocks(train, tok)).train()
    return tok, {k: v.clone() for k, v in model.state_dict().items()}


def reward_the(completions: list[str], **kwargs) -> list[float]:
    """Pays for one frequent word: the policy collapses onto it."""
    return [sum(w == "the" for w in c.lower().split()) / max(len(c.split()), 1) for c in completions]


def grpo(tmp_path, steps: int, callbacks: list, reward_funcs: list, **kwargs) -> object:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    tok, state = pretrained()
    model = tiny_gpt2(tok, dropout=0.0)
    model.load_state_dict(state)
    prompts = Dataset.from_list([{"prompt": " ".join(t.split()[:8])} for t in train_gold_split()[0]])
    args = GRPOConfig(str(tmp_path), max_steps=steps, per_device_train_batch_size=16, num_generations=4,
                      max_completion_length=16, learning_rate=2e-3, beta=0.0, logging_steps=1, seed=0,
                      **{**COMMON, **kwargs})
    return GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=prompts, processing_class=tok,
                       callbacks=callbacks)


def test_grpo_guard_halts_a_collapsing_policy_before_one_answer_per_group(tmp_path, caplog):
    guard = GRPOCollapseGuard(on_collapse="halt", every_n_steps=5)
    trainer = grpo(tmp_path, 100, [guard], [reward_the, guard.reward_func], reward_weights=[1.0, 0.0])
    with caplog.at_level(logging.ERROR, logger="collapseguard"):
        trainer.train()
    assert trainer.state.global_step < 100, "the guard should have halted training"
    assert sum("halted training" in r.getMessage() for r in caplog.records) == 1
    rows = [h for h in trainer.state.log_history if "collapseguard/health" in h]
    # logged through TRL's own logging: in the rows that hold TRL's entropy
    assert all("entropy" in r and r["collapseguard/policy_entropy"] > 0 for r in rows)
    assert rows[0]["collapseguard/distinct_k"] >= 3.0
    last = guard.engine.monitor.checks[-1]
    critical = {a["metric"] for a in last["alerts"] if a["severity"] == "critical"}
    assert critical and critical <= {"distinct_k", "within_distinct_2", "within_similarity", "policy_entropy",
                                     "frac_reward_zero_std"}
    assert last["metrics"]["distinct_k"] > 1.0  # flagged before one answer per group


def test_grpo_guard_in_warn_mode_trains_like_no_guard(tmp_path):
    plain = grpo(tmp_path / "a", 3, [], [reward_the])
    plain.train()
    guard = GRPOCollapseGuard()
    guarded = grpo(tmp_path / "b", 3, [guard], [reward_the, guard.reward_func], reward_weights=[1.0, 0.0])
    guarded.train()
    assert len(guard.engine.monitor.checks) == 3
    a, b = plain.model.state_dict(), guarded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_grpo_guard_refuses_what_it_cannot_judge(tmp_path):
    with pytest.raises(ValueError, match="GRPOCollapseGuard: on_collapse='reweight' is invalid: on_collapse must be one of 'warn', 'halt'"):
        GRPOCollapseGuard(on_collapse="reweight")
    with pytest.raises(ValueError, match="every_n_steps must be an int >= 1"):
        GRPOCollapseGuard(every_n_steps=0)


def contains_the(completions: list[str], **kwargs) -> list[float]:
    """A verifiable 0/1 reward: right when the completion holds the word "the"."""
    return [float("the" in c.lower().split()) for c in completions]


@pytest.mark.parametrize("form", ["name", "callable"])
def test_grpo_guard_reads_correctness_and_logs_pass_at_k(tmp_path, form):
    """pass@1 of a 0/1 reward is its mean: the guard's pass_at_1 equals TRL's own rewards/contains_the/mean at every
    check (one check per step), whether it reads that reward's outputs or judges completions itself."""
    if form == "name":
        guard = GRPOCollapseGuard(correct=("contains_the", 1.0))
        funcs = guard.reward_funcs([reward_the, contains_the])
    else:
        guard = GRPOCollapseGuard(correct=lambda prompts, completions, **kw: [bool(r) for r in contains_the(completions)])
        funcs = [reward_the, contains_the, guard.reward_func]
    trainer = grpo(tmp_path, 3, [guard], funcs, reward_weights=[1.0, 0.0, 0.0])
    trainer.train()
    rows = [h for h in trainer.state.log_history if "collapseguard/pass_at_1" in h]
    assert len(rows) == 3
    for row in rows:
        assert row["collapseguard/pass_at_1"] == pytest.approx(row["rewards/contains_the/mean"], abs=1e-6)
        assert row["collapseguard/pass_at_1"] <= row["collapseguard/pass_at_k"] <= 1.0
        assert row["collapseguard/frac_all_correct"] + row["collapseguard/frac_mixed"] \
            + row["collapseguard/frac_all_wrong"] == pytest.approx(1.0)


def test_a_grpo_guard_left_out_of_reward_funcs_says_so_at_the_first_log(tmp_path):
    guard = GRPOCollapseGuard()
    trainer = grpo(tmp_path, 2, [guard], [reward_the])  # guard.reward_func forgotten: it would judge nothing
    with pytest.raises(ValueError, match=r"seen no groups .* reward_funcs=\[\.\.\., guard\.reward_func\]"):
        trainer.train()
    assert trainer.state.global_step == 1


def test_grpo_guard_correct_names_a_reward_it_must_see():
    guard = GRPOCollapseGuard(correct=("accuracy", 1.0))
    with pytest.raises(ValueError, match=r"correct=\('accuracy', 1.0\) names no reward function among \['reward_the'\]"):
        guard.reward_funcs([reward_the])
    with pytest.raises(TypeError, match=r"GRPOCollapseGuard: correct=3 is invalid: correct must be a \(reward function"):
        GRPOCollapseGuard(correct=3)


def test_grpo_guard_steers_the_entropy_target_while_the_policy_collapses(tmp_path, caplog):
    guard = GRPOCollapseGuard(on_collapse="steer", every_n_steps=2)
    trainer = grpo(tmp_path, 40, [guard], [reward_the, guard.reward_func], reward_weights=[1.0, 0.0],
                   use_adaptive_entropy=True, entropy_target=0.2)
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        trainer.train()
    assert trainer.state.global_step == 40  # steering never halts
    moves = [r.getMessage() for r in caplog.records if r.getMessage().startswith("collapseguard steer: entropy_target")]
    assert moves and guard.steering.changes
    rows = [h for h in trainer.state.log_history if "collapseguard/steer/entropy_target" in h]
    assert max(r["collapseguard/steer/entropy_target"] for r in rows) > 0.2
    assert trainer.args.entropy_target == guard.steering.value <= guard.steering.ceiling  # what TRL reads


def test_a_resumed_run_steers_on_from_where_its_checkpoint_left_the_target(tmp_path):
    settings = {"use_adaptive_entropy": True, "entropy_target": 0.2, "save_strategy": "steps", "save_steps": 20,
                "reward_weights": [1.0, 0.0]}
    guard = GRPOCollapseGuard(on_collapse="steer", every_n_steps=2)
    grpo(tmp_path, 20, [guard], [reward_the, guard.reward_func], **settings).train()
    assert guard.steering.value > 0.2  # it steered before the checkpoint
    saved = json.loads((tmp_path / "checkpoint-20" / "collapseguard_GRPOCollapseGuard.json").read_text())
    assert saved["steer_state"]["value"] == guard.steering.value

    again = GRPOCollapseGuard(on_collapse="steer", every_n_steps=2)
    trainer = grpo(tmp_path, 21, [again], [reward_the, again.reward_func], restore_callback_states_from_checkpoint=True,
                   **settings)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-20"))
    assert again.steering.changes[:len(guard.steering.changes)] == guard.steering.changes
    assert trainer.args.entropy_target == again.steering.value >= guard.steering.value - again.steering.step


def test_grpo_guard_says_once_when_it_cannot_steer(tmp_path, caplog):
    guard = GRPOCollapseGuard(on_collapse="steer")
    trainer = grpo(tmp_path, 1, [guard], [reward_the, guard.reward_func], reward_weights=[1.0, 0.0])
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        trainer.train()
    said = [r.getMessage() for r in caplog.records if "cannot steer" in r.getMessage()]
    assert len(said) == 1 and "GRPOConfig(use_adaptive_entropy=True, entropy_target=...)" in said[0]
    assert guard.steering is None
