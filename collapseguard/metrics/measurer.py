"""Measurer: one check's outputs -> the mergeable metric states of the suite for this gold set.

What a run's every check and every rank must do alike, so their numbers compare: cut outputs to the reference
continuations' length, turn texts into token ids and answer words, pick the suite for the gold set's kind (text,
array, or groups without gold) built on the gold context (frequency bands, n-gram tables, the gold ellipsoid)
computed here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.prompts import GoldPrompts
from collapseguard.gold.tokenization import TokenizerAdapter, to_sequences
from collapseguard.metrics.embedding import GoldEllipsoid, as_matrix
from collapseguard.metrics.model_side import ModelStats
from collapseguard.metrics.suite import ArraySuite, GroupSuite, MetricSuite, TextGoldContext, TextSuite
from collapseguard.metrics.within_prompt import normalize_answer


class Measurer:
    """Measures outputs against one gold set: text (with its :class:`GoldPrompts`), array, or none (``gold=None``:
    groups of samples of any prompts, as an RL trainer generates them).

    Args:
        gold: the gold set, or None for groups without gold.
        prompts: the text gold set's cut (gives the gold context and the tokenizer); None otherwise.
        tokenizer: for ``gold=None``: decodes token-id outputs into answer words.
        max_new_tokens: outputs are cut to this many tokens (the reference continuations' length); None: not cut.
        samples_per_prompt: each prompt's samples come in a row, this many (the within-prompt metrics read them).
    """

    def __init__(self, gold: GoldSet | None, prompts: GoldPrompts | None = None, *,
                 tokenizer: TokenizerAdapter | None = None, max_new_tokens: int | None = None,
                 samples_per_prompt: int = 1) -> None:
        self.gold = gold
        self.kind = gold.kind if gold is not None else "text"
        self.max_new_tokens = max_new_tokens
        self.samples_per_prompt = samples_per_prompt
        self.tokenizer = prompts.tokenizer if prompts is not None else tokenizer
        if gold is not None and self.kind == "text":
            if prompts is None:
                raise ValueError("Measurer: a text gold set is measured against its GoldPrompts: pass prompts")
            # bands and n-gram tables from all of gold, the rare tail from the half held out of the references
            self.context = TextGoldContext(prompts.split.full, prompts.tail)
        elif gold is not None:
            self.ellipsoid = GoldEllipsoid(gold.array)
            self.dim = gold.array.shape[1]

    def new_suite(self) -> MetricSuite:
        """An empty metric suite for this gold set: :meth:`measure` fills one; suites merge exactly."""
        if self.gold is None:
            return GroupSuite(self.samples_per_prompt)
        if self.kind == "text":
            return TextSuite(self.context, self.samples_per_prompt)
        return ArraySuite(self.ellipsoid, self.dim)

    def answers(self, outputs: Sequence[Any]) -> list[np.ndarray]:
        """The normalised answer words of each output (texts directly; token ids decoded with the tokenizer, or
        compared as ids where it cannot decode): what the within-prompt metrics compare."""
        out = []
        for o in outputs:
            text = o if isinstance(o, str) else self.tokenizer.decode(np.asarray(o).reshape(-1).tolist())
            out.append(normalize_answer(text) if text is not None else np.asarray(o, dtype=np.int64).reshape(-1))
        return out

    def measure(self, outputs: Any, *, finished: Sequence[bool] | None = None,
                model_stats: ModelStats | None = None, gold_loglik: Sequence[float] | None = None,
                reported: dict[str, Sequence[float]] | None = None,
                correct: Sequence[bool] | None = None) -> MetricSuite:
        """The mergeable metric states of ``outputs`` (texts, token-id lists or an (n, d) array).

        ``model_stats`` (text) and ``gold_loglik`` (arrays: the model's log-likelihood of held-out
        gold samples) add the model-side statistics; ``reported`` (no gold) the statistics
        a trainer reports, e.g. ``{"policy_entropy": [...], "frac_reward_zero_std": [...]}``, and ``correct`` each
        output judged right or wrong (pass@k; no gold).
        """
        suite = self.new_suite()
        if isinstance(suite, GroupSuite):
            items = list(outputs)
            if self.max_new_tokens is not None:
                items = [o if isinstance(o, str) else list(o)[: self.max_new_tokens] for o in items]
            return suite.update(self.answers(items), reported=reported, correct=correct)
        if reported or correct is not None:
            raise ValueError("reported statistics and correctness are judged by a monitor without gold (gold=None)")
        if self.kind == "array":
            matrix = as_matrix(outputs, "outputs")
            if matrix.shape[1] != self.dim:
                raise ValueError(f"outputs have {matrix.shape[1]} features but the gold set has {self.dim}")
            return suite.update(matrix, gold_loglik=gold_loglik)
        if isinstance(outputs, np.ndarray) and outputs.ndim == 2 and outputs.dtype.kind == "f":
            raise TypeError("outputs is a float (n, d) array but the gold set holds texts: use GoldSet.from_arrays for embeddings")
        sequences = [s[: self.max_new_tokens] for s in to_sequences(outputs, self.tokenizer)]
        answers = None
        if self.samples_per_prompt > 1:  # texts as given; token ids (cut like the cross-prompt metrics) decoded
            answers = self.answers([o if isinstance(o, str) else s for o, s in zip(outputs, sequences, strict=True)])
        return suite.update(sequences, finished=finished, model_stats=model_stats, answers=answers)
