"""Turn texts, token lists or a user's tokenizer into integer token sequences.

Every text metric works on sequences of integer token ids. A Hugging Face
tokenizer (``transformers`` or ``tokenizers``), any callable ``str -> list``,
or the built-in :class:`SimpleTokenizer` can produce them; string tokens are
mapped to ids with a stable 64-bit hash so that two processes (or two runs)
agree on ids without sharing a vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

_WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@lru_cache(maxsize=1 << 18)
def stable_token_id(token: str) -> int:
    """A process-independent non-negative 63-bit id for a string token."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SimpleTokenizer:
    """Fallback tokenizer: words and single punctuation marks, case kept.

    >>> SimpleTokenizer().tokenize("Hello, world!")
    ['Hello', ',', 'world', '!']
    """

    eos_token_id = None

    def tokenize(self, text: str) -> list[str]:
        """The text's words and punctuation marks, in order."""
        return _WORD_RE.findall(text)

    def encode(self, text: str) -> list[int]:
        """Stable integer ids of :meth:`tokenize`'s tokens (the same in every process and run)."""
        return [stable_token_id(t) for t in self.tokenize(text)]

    def __repr__(self) -> str:
        return "SimpleTokenizer()"


class TokenizerAdapter:
    """Uniform ``encode(text) -> np.ndarray[int64]`` over the tokenizers users have.

    Accepts a ``transformers`` tokenizer (``encode`` with ``add_special_tokens``),
    a ``tokenizers.Tokenizer`` (``encode`` returning an ``Encoding``), a callable
    returning ids or string tokens, or ``None`` for :class:`SimpleTokenizer`.
    """

    def __init__(self, tokenizer: Any = None) -> None:
        if tokenizer is None:
            tokenizer = SimpleTokenizer()
        if not (hasattr(tokenizer, "encode") or callable(tokenizer)):
            raise TypeError(
                f"tokenizer={tokenizer!r} has no encode() and is not callable; pass a Hugging Face "
                "tokenizer, a tokenizers.Tokenizer, a callable str -> list of tokens, or None"
            )
        self.tokenizer = tokenizer
        self._encode = self._pick_encoder(tokenizer)

    @staticmethod
    def _pick_encoder(tok: Any) -> Callable[[str], Any]:
        module = type(tok).__module__
        if module.startswith("transformers"):
            return lambda text: tok.encode(text, add_special_tokens=False)
        if module.startswith("tokenizers"):
            return lambda text: tok.encode(text, add_special_tokens=False).ids
        if hasattr(tok, "encode"):
            return tok.encode
        return tok

    @property
    def name(self) -> str:
        tok = self.tokenizer
        return str(getattr(tok, "name_or_path", "") or type(tok).__name__)

    @property
    def identity(self) -> str:
        """Class name plus a hash of the vocabulary where the tokenizer exposes one: two
        tokenizers with the same identity map text to the same ids."""
        tok = self.tokenizer
        vocab = tok.get_vocab() if callable(getattr(tok, "get_vocab", None)) else None
        if not vocab:
            return type(tok).__name__
        blob = json.dumps(sorted(vocab.items()), ensure_ascii=False).encode("utf-8")
        identity = f"{type(tok).__name__}:{len(vocab)}:{hashlib.sha256(blob).hexdigest()[:16]}"
        template = self.chat_template
        if template:  # the template decides how chat prompts become ids
            identity += f":chat:{hashlib.sha256(str(template).encode('utf-8')).hexdigest()[:12]}"
        return identity

    @property
    def chat_template(self) -> Any:
        """The tokenizer's chat template, or None."""
        return getattr(self.tokenizer, "chat_template", None) or None

    def render_prompt(self, messages: Sequence[dict[str, str]]) -> np.ndarray:
        """A chat prompt as ids: ``apply_chat_template(messages, add_generation_prompt=True)`` where the tokenizer
        has a chat template, else the messages' contents as plain text, one per line."""
        if self.chat_template and callable(getattr(self.tokenizer, "apply_chat_template", None)):
            ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
            if hasattr(ids, "keys") and "input_ids" in ids:  # transformers 5 returns a BatchEncoding
                ids = ids["input_ids"]
            return as_id_array(list(ids))
        if len(messages) == 1:
            return self.encode(messages[0]["content"])
        return self.encode("\n".join(m["content"] for m in messages) + "\n")

    def decode(self, ids: Sequence[int]) -> str | None:
        """The text of token ids (special tokens skipped), or None when the tokenizer cannot decode."""
        decode = getattr(self.tokenizer, "decode", None)
        if not callable(decode) or isinstance(self.tokenizer, SimpleTokenizer):
            return None
        ids = [int(i) for i in ids]
        try:
            return decode(ids, skip_special_tokens=True)
        except TypeError:  # a decoder without that keyword
            return decode(ids)

    def encode(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"expected a str to tokenize, got {type(text).__name__}")
        return as_id_array(self._encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]


def as_id_array(tokens: Any) -> np.ndarray:
    """A 1-D int64 array from ids, string tokens, or an ``Encoding``."""
    if hasattr(tokens, "ids"):
        tokens = tokens.ids
    if isinstance(tokens, np.ndarray):
        if tokens.ndim != 1:
            raise ValueError(f"a token sequence must be 1-D, got shape {tokens.shape}")
        if tokens.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {tokens.dtype}")
        return tokens.astype(np.int64, copy=False)
    try:
        seq = list(tokens)
    except TypeError:
        raise TypeError(f"each output must be a text or a sequence of tokens, got {type(tokens).__name__}") from None
    if seq and isinstance(seq[0], str):
        if not all(isinstance(t, str) for t in seq):
            raise TypeError(f"a token sequence mixes strings with other types: {seq[:3]!r}...")
        return np.fromiter((stable_token_id(t) for t in seq), dtype=np.int64, count=len(seq))
    arr = np.asarray(seq)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":  # floats, None, nested lists: never truncated silently
        raise TypeError(f"token ids must be a flat sequence of ints, got {seq[:3]!r}... (dtype {arr.dtype})")
    return arr.astype(np.int64, copy=False)


def to_sequences(outputs: Any, tokenizer: TokenizerAdapter | None = None) -> list[np.ndarray]:
    """Normalise text outputs or token-id lists into int64 token sequences.

    Raises:
        TypeError: when ``outputs`` is a 2-D float array (that is an embedding
            batch: use an array gold set) or holds neither strings nor ints.
    """
    if isinstance(outputs, np.ndarray) and outputs.dtype.kind == "f":
        raise TypeError(
            "outputs is a float array, which is an embedding batch; text metrics need texts "
            "or token ids (use GoldSet.from_arrays for embedding outputs)"
        )
    if isinstance(outputs, str):
        raise TypeError("outputs must be a sequence of texts, not a single str: wrap it in a list")
    items = list(outputs)
    if items and isinstance(items[0], str):
        adapter = tokenizer or TokenizerAdapter()
        bad = [type(x).__name__ for x in items if not isinstance(x, str)]
        if bad:
            raise TypeError(f"outputs mixes texts with {bad[0]}: pass all texts or all token lists")
        return adapter.encode_batch(items)
    return [as_id_array(x) for x in items]
