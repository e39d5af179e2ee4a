from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from collapseguard.demos.data import train_gold_split
from collapseguard.demos.tiny import tiny_gpt2, train_tokenizer
from collapseguard.integrations.trl import GRPOCollapseGuard

train, _ = train_gold_split()  # real human text that ships with CPython
tok, guard = train_tokenizer(train), GRPOCollapseGuard(on_collapse="halt")  # judges GRPO's own groups and entropy
prompts = Dataset.from_list([{"prompt": " ".join(text.split()[:8])} for text in train])
args = GRPOConfig("runs/grpo", max_steps=20, per_device_train_batch_size=16, num_generations=4, max_completion_length=16,
                  use_cpu=True, report_to=[], reward_weights=[1.0, 0.0])  # the guard's reward function weighs 0
GRPOTrainer(model=tiny_gpt2(tok), reward_funcs=[lambda completions, **kw: [len(c) / 100 for c in completions], guard.reward_func],
            args=args, train_dataset=prompts, processing_class=tok, callbacks=[guard]).train()
