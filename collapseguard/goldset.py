"""Immutable, content-hashed gold sets of human-written texts or reference arrays."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collapseguard.tokenize import TokenizerAdapter

MIN_GOLD_SIZE = 4
_TEXT_TAG = b"collapseguard-gold-v1\x00text\x00"
_ARRAY_TAG = b"collapseguard-gold-v1\x00array\x00"


class GoldSetModifiedError(RuntimeError):
    """The gold set's content no longer matches the fingerprint recorded at creation."""


@dataclass(frozen=True)
class GoldSplit:
    """Gold texts tokenized and cut into prompt and reference continuation.

    Attributes:
        prompts: the first ``prompt_length`` tokens of each kept text.
        continuations: the next (up to) ``continuation_length`` tokens.
        indices: index in the gold set of each kept text.
        full: every gold text's tokens (for frequency statistics).
    """

    prompts: tuple[np.ndarray, ...]
    continuations: tuple[np.ndarray, ...]
    indices: tuple[int, ...]
    full: tuple[np.ndarray, ...]
    prompt_length: int
    continuation_length: int

    def __len__(self) -> int:
        return len(self.prompts)

    def halves(self) -> tuple[GoldSplit, tuple[np.ndarray, ...]]:
        """(prompt half, tail half): even-position texts give prompts and reference
        continuations; the odd-position texts are held out to estimate which types are rare.

        Choosing the rare types on the very texts that serve as the reference
        would favour the reference (it contains them by construction).
        """
        pos = slice(0, None, 2)
        kept = GoldSplit(self.prompts[pos], self.continuations[pos], self.indices[pos], self.full,
                         self.prompt_length, self.continuation_length)
        return kept, tuple(self.full[i] for i in self.indices[1::2])


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


class GoldSet:
    """A held-out, human-written reference set. Never written to.

    Create it with :meth:`from_texts`, :meth:`from_jsonl` or :meth:`from_arrays`.
    Its :attr:`fingerprint` is the sha256 of its canonical content;
    :meth:`verify` checks the content (and the source file, when there is one)
    still matches it.

    >>> gold = GoldSet.from_texts(["one human text", "another", "a third", "and a fourth"])
    >>> len(gold), gold.kind, len(gold.fingerprint)
    (4, 'text', 64)
    """

    def __init__(self, *, texts: Sequence[str] | None = None, array: np.ndarray | None = None,
                 source: str | None = None, name: str | None = None) -> None:
        if (texts is None) == (array is None):
            raise ValueError("a GoldSet holds either texts or an array: use GoldSet.from_texts or GoldSet.from_arrays")
        self._texts = tuple(texts) if texts is not None else None
        self._array = _readonly(np.array(array, dtype=np.float64, copy=True)) if array is not None else None
        self.source = source
        self.name = name or (Path(source).name if source else "gold")
        self._source_sha = _file_sha256(source) if source else None
        self.fingerprint = self._content_hash()

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_texts(cls, texts: Iterable[str], *, name: str | None = None) -> GoldSet:
        """A text gold set. Raises TypeError for non-str items, ValueError when too small or empty texts."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not one str: wrap it in a list")
        items = list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        nonempty = [t for t in items if t.strip()]
        if len(nonempty) < MIN_GOLD_SIZE:
            raise ValueError(
                f"texts holds {len(nonempty)} non-empty text(s); a gold set needs at least {MIN_GOLD_SIZE} "
                "(a few hundred are recommended for stable references)"
            )
        return cls(texts=nonempty, name=name)

    @classmethod
    def from_jsonl(cls, path: str | Path, text_field: str = "text", *, name: str | None = None) -> GoldSet:
        """Read texts from the ``text_field`` of each JSON line (the file is only opened for reading)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path={str(path)!r}: no such gold file")
        texts = _read_jsonl_texts(path, text_field)
        gold = cls.from_texts(texts, name=name or path.name)
        gold.source = str(path)
        gold._source_sha = _file_sha256(str(path))
        return gold

    @classmethod
    def from_hub(cls, repo_id: str, filename: str, *, revision: str, repo_type: str = "dataset",
                 text_field: str = "text", allow_mutable: bool = False, fingerprint: str | None = None,
                 local_files_only: bool | None = None, cache_dir: str | Path | None = None) -> GoldSet:
        """A text gold set from a JSONL file in a Hugging Face Hub repository, pinned to a commit.

        ``revision`` must be a 40-hex commit sha: a branch or tag can move, and a gold set must not
        (``allow_mutable=True`` accepts one anyway). Works offline from the local cache
        (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``). ``fingerprint`` (from an earlier
        ``gold.fingerprint``) is checked against the content; online, the file's sha256 is also
        checked against the Hub's record of it.

        Raises:
            ValueError: for a movable revision; GoldSetModifiedError: for content that differs.
        """
        if not isinstance(revision, str) or (not _is_commit(revision) and not allow_mutable):
            raise ValueError(f"revision={revision!r} is not a 40-hex commit sha: a branch or tag can change under "
                             "you; pin the commit (allow_mutable=True accepts it anyway)")
        try:
            from huggingface_hub import constants, hf_hub_download
        except ImportError:
            raise ValueError("GoldSet.from_hub needs huggingface_hub: pip install huggingface_hub") from None
        # read the variable now: huggingface_hub's constant is fixed when it is first imported
        env_offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        offline = bool(local_files_only) or bool(constants.HF_HUB_OFFLINE) or env_offline
        path = hf_hub_download(repo_id, filename, revision=revision, repo_type=repo_type,
                               local_files_only=offline, cache_dir=cache_dir)
        gold = cls.from_jsonl(path, text_field=text_field, name=f"{repo_id}/{filename}@{revision[:12]}")
        if fingerprint is not None and gold.fingerprint != fingerprint:
            raise GoldSetModifiedError(f"gold set {repo_id}/{filename}@{revision} has fingerprint "
                                       f"{gold.fingerprint[:12]}..., not the recorded {fingerprint[:12]}...")
        if not offline:
            _check_hub_sha256(repo_id, filename, revision, repo_type, gold._source_sha)
        return gold

    @classmethod
    def from_arrays(cls, x: Any, *, name: str | None = None) -> GoldSet:
        """A gold set of samples or embeddings, shape (n, d) (1-D input is one feature)."""
        arr = np.asarray(x)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"x must be numeric, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"x must have shape (n, d), got {arr.shape}")
        if arr.shape[0] < MIN_GOLD_SIZE:
            raise ValueError(f"x has {arr.shape[0]} rows; a gold set needs at least {MIN_GOLD_SIZE}")
        if not np.isfinite(arr).all():
            raise ValueError("x holds NaN or inf: a gold set must be finite")
        return cls(array=arr, name=name)

    # --------------------------------------------------------------- content
    @property
    def kind(self) -> str:
        return "text" if self._texts is not None else "array"

    @property
    def texts(self) -> tuple[str, ...]:
        if self._texts is None:
            raise AttributeError("this is an array gold set: use .array")
        return self._texts

    @property
    def array(self) -> np.ndarray:
        """Read-only view of the gold array."""
        if self._array is None:
            raise AttributeError("this is a text gold set: use .texts")
        return self._array

    def __len__(self) -> int:
        return len(self._texts) if self._texts is not None else int(self._array.shape[0])

    def __repr__(self) -> str:
        return f"GoldSet(kind={self.kind!r}, n={len(self)}, name={self.name!r}, fingerprint={self.fingerprint[:12]}...)"

    def _content_hash(self) -> str:
        h = hashlib.sha256()
        if self._texts is not None:
            h.update(_TEXT_TAG)
            h.update(json.dumps(list(self._texts), ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        else:
            arr = np.ascontiguousarray(self._array, dtype="<f8")
            h.update(_ARRAY_TAG + json.dumps(list(arr.shape)).encode("ascii"))
            h.update(arr.tobytes())
        return h.hexdigest()

    def verify(self) -> None:
        """Raise :class:`GoldSetModifiedError` if content or source file changed since creation."""
        now = self._content_hash()
        if now != self.fingerprint:
            raise GoldSetModifiedError(
                f"gold set {self.name!r} changed in memory: fingerprint {now[:12]}... != recorded {self.fingerprint[:12]}..."
            )
        if self.source is not None:
            sha = _file_sha256(self.source) if Path(self.source).is_file() else "missing"
            if sha != self._source_sha:
                raise GoldSetModifiedError(
                    f"gold file {self.source!r} changed on disk since it was loaded (sha256 {sha[:12]}... != "
                    f"{str(self._source_sha)[:12]}...); restore it or build a new GoldSet on purpose"
                )

    # ----------------------------------------------------------------- split
    def split(self, tokenizer: Any = None, prompt_length: int = 16, continuation_length: int = 32,
              min_continuation: int | None = None) -> GoldSplit:
        """Tokenize every text and cut it into a prompt and a reference continuation.

        Texts with fewer than ``prompt_length + min_continuation`` tokens are
        skipped (``min_continuation`` defaults to a quarter of
        ``continuation_length``, at least 1).

        Raises:
            ValueError: for non-positive lengths, or when fewer than 4 texts are long enough.
        """
        if self._texts is None:
            raise TypeError("split() is for text gold sets; an array gold set has no prompts")
        for arg, v in (("prompt_length", prompt_length), ("continuation_length", continuation_length)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{arg} must be a positive int, got {v!r}")
        min_cont = min_continuation if min_continuation is not None else max(1, continuation_length // 4)
        adapter = tokenizer if isinstance(tokenizer, TokenizerAdapter) else TokenizerAdapter(tokenizer)
        full = tuple(_readonly(adapter.encode(t)) for t in self._texts)
        keep = [i for i, ids in enumerate(full) if ids.size >= prompt_length + min_cont]
        if len(keep) < MIN_GOLD_SIZE:
            longest = max((ids.size for ids in full), default=0)
            raise ValueError(
                f"only {len(keep)} of {len(full)} gold texts have prompt_length + {min_cont} = "
                f"{prompt_length + min_cont} tokens (longest: {longest}); lower prompt_length or use longer gold texts"
            )
        return GoldSplit(
            prompts=tuple(full[i][:prompt_length] for i in keep),
            continuations=tuple(full[i][prompt_length:prompt_length + continuation_length] for i in keep),
            indices=tuple(keep),
            full=full,
            prompt_length=prompt_length,
            continuation_length=continuation_length,
        )


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower())


def _check_hub_sha256(repo_id: str, filename: str, revision: str, repo_type: str, sha: str | None) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision, repo_type=repo_type))
    etag = (meta.etag or "").strip('"')
    if len(etag) == 64 and etag != sha:  # LFS files carry their sha256 as the etag
        raise GoldSetModifiedError(f"{repo_id}/{filename}@{revision}: local sha256 {str(sha)[:12]}... differs "
                                   f"from the Hub's {etag[:12]}...")


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_lines(path: Path, opener: Any = open) -> Iterator[tuple[int, Any]]:
    """(line number, record) of each non-blank line of a JSONL file, read as a stream.

    Raises:
        ValueError: a line that is not JSON (named by file and line).
    """
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            yield lineno, record


def _read_jsonl_texts(path: Path, text_field: str) -> list[str]:
    texts: list[str] = []
    for lineno, record in json_lines(path):
        if not isinstance(record, dict) or text_field not in record:
            raise ValueError(f"{path}:{lineno}: no field text_field={text_field!r}; set text_field to the field holding the text")
        if not isinstance(record[text_field], str):
            raise ValueError(f"{path}:{lineno}: field {text_field!r} is {type(record[text_field]).__name__}, expected str")
        texts.append(record[text_field])
    return texts
