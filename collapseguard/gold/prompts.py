"""GoldPrompts: a text gold set cut for checks -- prompts, their reference continuations, and the held-out tail half.

Every check draws from it: the adapter continues the prompts, the metrics compare the outputs with the reference
continuations of the same prompts, and the texts held out of the prompt half decide which token types count as rare.
Built once per run (tokenizing gold is the expensive part) and shared by whatever needs the same cut.
"""

from __future__ import annotations

import numpy as np

from collapseguard._validation import ArgumentTypeError, Interval, validate
from collapseguard.gold.goldset import GoldSet, GoldSplit
from collapseguard.gold.tokenization import TokenizerAdapter


class GoldPrompts:
    """A text gold set tokenized and split in halves for checks (:meth:`GoldSplit.halves`).

    Args:
        gold: a text gold set (texts, pairs or chats).
        tokenizer: the adapter every stage shares (the model's tokenizer).
        prompt_length: gold tokens given to the model as the prompt.
        max_new_tokens: length of the reference continuation (the outputs are cut to it too).
        caller: the name errors are reported under (the object the user built).

    Attributes:
        split: the prompt half: prompts, reference continuations, every gold text's tokens (``full``) and, for pairs,
            every human response of each prompt (``alternatives``).
        tail: the held-out half's texts, which estimate the rare tail (not used as references: choosing the rare
            types on the reference texts themselves would favour them).
    """

    def __init__(self, gold: GoldSet, tokenizer: TokenizerAdapter, prompt_length: int, max_new_tokens: int, *,
                 caller: str = "GoldPrompts") -> None:
        for arg, value in (("prompt_length", prompt_length), ("max_new_tokens", max_new_tokens)):
            # checked here, under the caller's name, before GoldSet.split checks them under its own
            validate(caller, arg, value, Interval(int, 1, None), fix=f"pass {arg} in tokens",
                     type_error=ArgumentTypeError)
        self.gold = gold
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.split: GoldSplit
        self.tail: tuple[np.ndarray, ...]
        self.split, self.tail = gold.split(tokenizer, prompt_length, max_new_tokens).halves()

    def __len__(self) -> int:
        """Prompts a check can draw (the prompt half)."""
        return len(self.split)

    @property
    def prompt_length(self) -> int:
        """Gold tokens of each prompt (a gold set of pairs renders its prompts whole)."""
        return self.split.prompt_length

    def prompts(self, count: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        """This process's share of the first ``count`` prompts: disjoint across ranks, together all ``count``."""
        return list(self.split.prompts[:count][rank::world_size])

    def continuations(self, count: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        """The reference continuations of :meth:`prompts` (same count, same share), for teacher-forced scoring."""
        return list(self.split.continuations[:count][rank::world_size])
