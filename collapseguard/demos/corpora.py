"""Real human text that installs offline, split into train / gold / test parts for runs and benchmarks.

Two corpora, each of real human writing:

- ``"pydoc"``: the prose paragraphs of CPython's documentation topics (``pydoc_data.topics``, in every
  Python install; :func:`collapseguard.demos.data.pydoc_paragraphs`): technical writing, 708 paragraphs.
- ``"news"``: the Lee corpus of 350 Australian Broadcasting Corporation news articles (Lee, Pincombe and
  Welsh, 2005) that gensim ships inside its wheel as test data (``gensim/test/test_data/lee*.cor``;
  ``pip install gensim``, nothing downloaded at run time): news reporting, about 64,000 words.

A corpus is split by *document*, once and deterministically, so that gold texts -- whole documents or
their sentences -- never come from a document the model trains on.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from collapseguard.demos.data import pydoc_paragraphs

CORPORA = ("pydoc", "news")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def lee_news_documents() -> list[str]:
    """The 350 news articles of the Lee corpus, from gensim's installed test data (one article per line).

    Raises:
        ImportError: gensim is not installed (``pip install gensim``; the corpus ships inside its wheel).
    """
    try:
        import gensim
    except ImportError:
        raise ImportError("the 'news' corpus is the Lee corpus inside gensim's wheel: pip install gensim") from None
    folder = Path(gensim.__file__).parent / "test" / "test_data"
    docs: list[str] = []
    for name in ("lee_background.cor", "lee.cor"):
        with open(folder / name, encoding="utf-8", errors="replace") as fh:
            docs += [" ".join(line.split()) for line in fh if line.strip()]
    return docs


def sentences(text: str, min_chars: int = 40) -> list[str]:
    """The sentences of ``text`` (split after ``.``, ``!`` or ``?`` before a capital), at least ``min_chars`` long."""
    return [s for s in _SENTENCE_END.split(text) if len(s) >= min_chars]


@dataclass(frozen=True)
class CorpusSplit:
    """One corpus split by document: ``train`` (what models learn from), ``gold_documents`` (held out for
    gold sets) and ``test`` (held out from everything: the ground truth of held-out perplexity)."""

    name: str
    train: tuple[str, ...]
    gold_documents: tuple[str, ...]
    test: tuple[str, ...]

    def gold(self, size: int, unit: str = "document") -> list[str]:
        """``size`` gold texts: whole held-out documents (``unit="document"``) or their sentences."""
        if unit not in ("document", "sentence"):
            raise ValueError(f"unit={unit!r} is not supported: choose 'document' or 'sentence'")
        pool = list(self.gold_documents) if unit == "document" else \
            [s for doc in self.gold_documents for s in sentences(doc)]
        if size > len(pool):
            raise ValueError(f"the {self.name!r} corpus holds {len(pool)} gold {unit}s, fewer than size={size}")
        return pool[:size]


@functools.lru_cache(maxsize=4)
def corpus_split(name: str, gold_share: float = 0.4, test_share: float = 0.1) -> CorpusSplit:
    """Split corpus ``name`` (``"pydoc"`` or ``"news"``) by document with a fixed interleaving: of every ten
    documents, the first ``10 * test_share`` go to test, the next ``10 * gold_share`` to gold, the rest to train."""
    if name == "pydoc":
        docs = pydoc_paragraphs()
    elif name == "news":
        docs = lee_news_documents()
    else:
        raise ValueError(f"corpus {name!r} is not one of {list(CORPORA)}")
    n_test, n_gold = round(10 * test_share), round(10 * gold_share)
    part = [i % 10 for i in range(len(docs))]
    test = tuple(d for d, p in zip(docs, part, strict=True) if p < n_test)
    gold = tuple(d for d, p in zip(docs, part, strict=True) if n_test <= p < n_test + n_gold)
    train = tuple(d for d, p in zip(docs, part, strict=True) if p >= n_test + n_gold)
    return CorpusSplit(name, train, gold, test)
