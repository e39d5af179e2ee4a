from transformers import Trainer, TrainingArguments

from collapseguard import GoldSet
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.tiny import TokenBlocks, tiny_gpt2, train_tokenizer
from collapseguard.integrations.transformers import CollapseGuardCallback

train, gold_texts = train_gold_split()  # real human text that ships with CPython
tok, gold = train_tokenizer(train), GoldSet.from_texts(gold_texts)
args = TrainingArguments("runs/hf", num_train_epochs=3, learning_rate=3e-3, use_cpu=True, report_to=[])
Trainer(model=tiny_gpt2(tok), args=args, train_dataset=TokenBlocks(train, tok), processing_class=tok,
        callbacks=[CollapseGuardCallback(gold, on_collapse="halt")]).train()
