"""Built-in real human-written text that needs no download.

CPython ships the text of its documentation topics (``pydoc_data.topics``):
hundreds of prose paragraphs written by the Python documentation authors.
They serve the demo, the examples and the tests as a small, real corpus.
"""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")


def pydoc_paragraphs(min_chars: int = 120) -> list[str]:
    """Prose paragraphs of CPython's documentation topics, in a fixed order.

    Indented blocks (code, grammar) and headings are skipped; whitespace is
    collapsed. With the default ``min_chars`` there are several hundred.
    """
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for block in topics[key].split("\n\n"):
            if block.startswith(" ") or "***" in block or "===" in block:
                continue
            text = _SPACE.sub(" ", block).strip()
            if len(text) >= min_chars:
                paragraphs.append(text)
    return paragraphs


def train_gold_split(gold_every: int = 3, min_chars: int = 120) -> tuple[list[str], list[str]]:
    """(training texts, gold texts): every ``gold_every``-th paragraph is held out as gold."""
    paragraphs = pydoc_paragraphs(min_chars)
    gold = paragraphs[::gold_every]
    train = [p for i, p in enumerate(paragraphs) if i % gold_every]
    return train, gold


def pydoc_instructions(min_chars: int = 120) -> list[tuple[str, list[str]]]:
    """(instruction, human responses) pairs from CPython's documentation topics, one per topic in a fixed order.

    The instruction asks about the topic; each prose paragraph of the topic is a human response to it, so most
    prompts have several (the gold within-prompt reference for ``samples_per_prompt``). CPython's docs repeat some
    paragraphs under several topics: each answers only the first topic that has it, so that a split by topic (gold
    every third topic, training the rest) never puts one answer on both sides.

    >>> pairs = pydoc_instructions()
    >>> pairs[0][0].startswith("Explain the Python documentation topic") and len(pairs) > 50
    True
    """
    from pydoc_data.topics import topics

    out = []
    seen: set[str] = set()
    for key in sorted(topics):
        responses = [_SPACE.sub(" ", b).strip() for b in topics[key].split("\n\n")
                     if not (b.startswith(" ") or "***" in b or "===" in b)]
        responses = [r for r in dict.fromkeys(responses) if len(r) >= min_chars and r not in seen]
        seen.update(responses)
        if responses:
            out.append((f"Explain the Python documentation topic '{key}'.", responses))
    return out
