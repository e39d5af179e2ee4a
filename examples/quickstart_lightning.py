import lightning
import torch

from collapseguard import GoldSet
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.tiny import TokenBlocks, lightning_module, tiny_gpt2, train_tokenizer
from collapseguard.integrations.lightning import CollapseGuard

train, gold_texts = train_gold_split()  # real human text that ships with CPython
tok, gold = train_tokenizer(train), GoldSet.from_texts(gold_texts)
guard = CollapseGuard(gold, tokenizer=tok, on_collapse="halt")
lightning.Trainer(max_epochs=3, callbacks=[guard]).fit(lightning_module(tiny_gpt2(tok)), torch.utils.data.DataLoader(TokenBlocks(train, tok), batch_size=16))
