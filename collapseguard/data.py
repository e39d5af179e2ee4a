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
