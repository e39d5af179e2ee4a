from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from collapseguard import GoldSet
from collapseguard.demos.data import pydoc_instructions
from collapseguard.demos.tiny import tiny_gpt2, train_tokenizer
from collapseguard.integrations.trl import CollapseGuardCallback

pairs = pydoc_instructions()  # (instruction, human answers) from CPython's docs; every third topic is gold
tok, gold = train_tokenizer([a for _, answers in pairs for a in answers], chat=True), GoldSet.from_pairs(*zip(*pairs[::3], strict=True))
data = Dataset.from_list([{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for i, (q, answers) in enumerate(pairs) if i % 3 for a in answers])
args = SFTConfig("runs/sft", num_train_epochs=2, learning_rate=3e-3, per_device_train_batch_size=32, max_length=128, use_cpu=True, report_to=[])
SFTTrainer(model=tiny_gpt2(tok), args=args, train_dataset=data, processing_class=tok,
           callbacks=[CollapseGuardCallback(gold, generation={"samples_per_prompt": 4, "num_samples": 16},
                                            on_collapse="halt")]).train()
