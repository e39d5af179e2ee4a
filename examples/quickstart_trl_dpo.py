from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from collapseguard import GoldSet
from collapseguard.demos.data import pydoc_instructions
from collapseguard.demos.tiny import tiny_gpt2, train_tokenizer
from collapseguard.integrations.trl import CollapseGuardCallback

pairs = pydoc_instructions()  # (instruction, human answers) from CPython's docs; every third topic is gold
tok, gold = train_tokenizer([a for _, answers in pairs for a in answers], chat=True), GoldSet.from_pairs(*zip(*pairs[::3], strict=True))
data = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a[0]}], "rejected": [{"role": "assistant", "content": "See the docs."}]} for i, (q, a) in enumerate(pairs) if i % 3])
args = DPOConfig("runs/dpo", num_train_epochs=1, learning_rate=1e-3, max_length=128, use_cpu=True, report_to=[])
DPOTrainer(model=tiny_gpt2(tok), ref_model=tiny_gpt2(tok), args=args, train_dataset=data, processing_class=tok,
           callbacks=[CollapseGuardCallback(gold, generation={"num_samples": 16}, on_collapse="halt")]).train()
