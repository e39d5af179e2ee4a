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

from collapseguard._validation import ArgumentTypeError, InstanceOf, Interval, Satisfies, validate
from collapseguard.gold.tokenization import TokenizerAdapter

MIN_GOLD_SIZE = 4
_TEXT_TAG = b"collapseguard-gold-v1\x00text\x00"
_ARRAY_TAG = b"collapseguard-gold-v1\x00array\x00"
_PAIRS_TAG = b"collapseguard-gold-v1\x00pairs\x00"
ROLES = ("system", "user", "assistant", "tool")

Messages = tuple[tuple[str, str], ...]
"""A chat prompt, canonical and hashable: ((role, content), ...)."""


class GoldSetModifiedError(RuntimeError):
    """The gold set's content no longer matches the fingerprint recorded at creation."""


@dataclass(frozen=True)
class GoldSplit:
    """Gold texts tokenized and cut into prompt and reference continuation.

    Attributes:
        prompts: the first ``prompt_length`` tokens of each kept text.
        continuations: the next (up to) ``continuation_length`` tokens.
        indices: index in the gold set of each kept text.
        full: every gold text's tokens (for frequency statistics); for a gold set of pairs, each prompt's
            first human response.
        alternatives: for a gold set of pairs, every human response of each kept prompt, cut like
            ``continuations`` (the gold within-prompt reference); empty otherwise.
    """

    prompts: tuple[np.ndarray, ...]
    continuations: tuple[np.ndarray, ...]
    indices: tuple[int, ...]
    full: tuple[np.ndarray, ...]
    prompt_length: int
    continuation_length: int
    alternatives: tuple[tuple[np.ndarray, ...], ...] = ()

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
                         self.prompt_length, self.continuation_length, self.alternatives[pos])
        return kept, tuple(self.full[i] for i in self.indices[1::2])


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


class GoldSet:
    """A held-out, human-written reference set. Never written to.

    Create it with :meth:`from_texts`, :meth:`from_jsonl` or :meth:`from_arrays`; for chat and instruction
    models with :meth:`from_pairs` / :meth:`from_chat` (and their JSONL readers): (prompt, human response)
    pairs whose prompts are rendered with the tokenizer's chat template. Its :attr:`fingerprint` is the sha256 of its canonical content;
    :meth:`verify` checks the content (and the source file, when there is one)
    still matches it.

    >>> gold = GoldSet.from_texts(["one human text", "another", "a third", "and a fourth"])
    >>> len(gold), gold.kind, len(gold.fingerprint)
    (4, 'text', 64)
    """

    def __init__(self, *, texts: Sequence[str] | None = None, array: np.ndarray | None = None,
                 source: str | None = None, name: str | None = None,
                 pairs: Sequence[tuple[Messages, tuple[str, ...]]] | None = None) -> None:
        if sum(x is not None for x in (texts, array, pairs)) != 1:
            raise ValueError("GoldSet: a GoldSet holds texts, (prompt, responses) pairs or an array: use "
                             "GoldSet.from_texts, GoldSet.from_pairs / from_chat or GoldSet.from_arrays")
        self._pairs = tuple((tuple(p), tuple(r)) for p, r in pairs) if pairs is not None else None
        if self._pairs is not None:  # the human text of a pair gold set is its responses
            texts = [r for _, responses in self._pairs for r in responses]
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
        where = "GoldSet.from_texts"
        validate(where, "texts", texts, Satisfies(lambda t: isinstance(t, Iterable) and not isinstance(t, str),
                                                  "a sequence of str (not one str)"), fix="to pass one text, wrap it in a list")
        items = list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"{where}: texts[{i}] is {type(t).__name__}, expected str; convert it to str or drop it")
        nonempty = [t for t in items if t.strip()]
        if len(nonempty) < MIN_GOLD_SIZE:
            raise ValueError(
                f"{where}: texts holds {len(nonempty)} non-empty text(s); a gold set needs at least {MIN_GOLD_SIZE} "
                "(a few hundred are recommended for stable references)"
            )
        return cls(texts=nonempty, name=name)

    @classmethod
    def from_jsonl(cls, path: str | Path, text_field: str = "text", *, name: str | None = None) -> GoldSet:
        """Read texts from the ``text_field`` of each JSON line (the file is only opened for reading)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GoldSet.from_jsonl: path={str(path)!r}: no such gold file; pass the path of an "
                                    "existing JSONL file")
        texts = _read_jsonl_texts(path, text_field, "GoldSet.from_jsonl")
        gold = cls.from_texts(texts, name=name or path.name)
        gold.source = str(path)
        gold._source_sha = _file_sha256(str(path))
        return gold

    @classmethod
    def from_pairs(cls, prompts: Sequence[Any], responses: Sequence[Any], *, name: str | None = None) -> GoldSet:
        """A gold set of (prompt, human response) pairs, for instruction and chat models.

        Each prompt is a str (one user turn) or a list of ``{"role", "content"}`` messages; each response is a
        str or a list of str (several human responses to one prompt give the gold within-prompt reference for
        ``samples_per_prompt``). Prompts are rendered with the tokenizer's chat template
        (``apply_chat_template(..., add_generation_prompt=True)``) where it has one, else as plain text; the first
        response is the reference continuation.

        >>> gold = GoldSet.from_pairs([f"Question {i}?" for i in range(4)], [["yes", "Yes."], "no", "maybe", "ok"])
        >>> len(gold), gold.is_chat, gold.responses[0]
        (4, True, ('yes', 'Yes.'))

        Raises:
            TypeError / ValueError: naming the argument, the item and the fix.
        """
        where = "GoldSet.from_pairs"
        prompts, responses = _as_list(prompts, "prompts", where), _as_list(responses, "responses", where)
        if len(prompts) != len(responses):
            raise ValueError(f"{where}: prompts has {len(prompts)} items but responses has {len(responses)}; pass "
                             "one response (or a list of responses) per prompt")
        pairs = [(_prompt_messages(p, f"prompts[{i}]", where), _responses(r, f"responses[{i}]", where))
                 for i, (p, r) in enumerate(zip(prompts, responses, strict=True))]
        return cls._from_pair_list(pairs, where, name)

    @classmethod
    def from_chat(cls, conversations: Sequence[Any], *, name: str | None = None) -> GoldSet:
        """A gold set of conversations: lists of ``{"role", "content"}`` messages ending in an assistant turn.

        The last assistant turn is the human reference response; the messages before it are the prompt.
        Conversations with the same prompt are one prompt with several human responses (the gold within-prompt
        reference for ``samples_per_prompt``).

        Raises:
            TypeError / ValueError: naming the conversation, the message and the fix.
        """
        where = "GoldSet.from_chat"
        grouped: dict[Messages, list[str]] = {}
        for i, conv in enumerate(_as_list(conversations, "conversations", where)):
            messages = _prompt_messages(conv, f"conversations[{i}]", where, allow_assistant_last=True)
            if len(messages) < 2 or messages[-1][0] != "assistant":
                last = messages[-1][0] if messages else "nothing"
                raise ValueError(f"{where}: conversations[{i}] ends with {last!r}: a conversation needs a prompt and "
                                 "must end with the assistant turn that is the human reference; drop trailing turns")
            prompt, response = messages[:-1], messages[-1][1]
            if not response.strip():
                raise ValueError(f"{where}: conversations[{i}] has an empty last assistant turn; a gold response "
                                 "must be human-written text")
            grouped.setdefault(prompt, []).append(response)
        return cls._from_pair_list([(p, tuple(r)) for p, r in grouped.items()], where, name)

    @classmethod
    def from_pairs_jsonl(cls, path: str | Path, prompt_field: str = "prompt", response_field: str = "response", *,
                         name: str | None = None) -> GoldSet:
        """:meth:`from_pairs` from a JSONL file: one ``{prompt_field: ..., response_field: ...}`` object a line
        (a response may be a list of responses)."""
        path = Path(path)
        records = _read_jsonl_records(path, {"prompt_field": prompt_field, "response_field": response_field},
                                      "GoldSet.from_pairs_jsonl")
        gold = cls.from_pairs([r[prompt_field] for r in records], [r[response_field] for r in records],
                              name=name or path.name)
        return gold._with_source(path)

    @classmethod
    def from_chat_jsonl(cls, path: str | Path, messages_field: str = "messages", *,
                        name: str | None = None) -> GoldSet:
        """:meth:`from_chat` from a JSONL file: one ``{messages_field: [{"role", "content"}, ...]}`` object a line."""
        path = Path(path)
        records = _read_jsonl_records(path, {"messages_field": messages_field}, "GoldSet.from_chat_jsonl")
        return cls.from_chat([r[messages_field] for r in records], name=name or path.name)._with_source(path)

    @classmethod
    def _from_pair_list(cls, pairs: list[tuple[Messages, tuple[str, ...]]], where: str, name: str | None) -> GoldSet:
        if len(pairs) < MIN_GOLD_SIZE:
            raise ValueError(f"{where}: {len(pairs)} distinct prompt(s); a gold set needs at least {MIN_GOLD_SIZE} "
                             "(a few hundred are recommended for stable references)")
        return cls(pairs=pairs, name=name)

    def _with_source(self, path: Path) -> GoldSet:
        self.source = str(path)
        self._source_sha = _file_sha256(str(path))
        return self

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
        pinned = Satisfies(_is_commit, "a 40-hex commit sha", types=(str,))
        validate("GoldSet.from_hub", "revision", revision, InstanceOf(str, name="a str") if allow_mutable else pinned,
                 fix="a branch or tag can change under you: pin the commit (allow_mutable=True accepts it anyway)",
                 type_error=ArgumentTypeError)
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
        where = "GoldSet.from_arrays"
        arr = np.asarray(x)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"{where}: x must be numeric, got dtype {arr.dtype}; pass the samples as numbers")
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"{where}: x must have shape (n, d), got {arr.shape}; pass one row per sample")
        if arr.shape[0] < MIN_GOLD_SIZE:
            raise ValueError(f"{where}: x has {arr.shape[0]} rows; a gold set needs at least {MIN_GOLD_SIZE}: pass "
                             "more samples")
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: x holds NaN or inf: a gold set must be finite; drop or repair those rows")
        return cls(array=arr, name=name)

    # --------------------------------------------------------------- content
    @property
    def kind(self) -> str:
        """``"text"`` (texts, pairs or chats) or ``"array"`` (reference arrays)."""
        return "text" if self._texts is not None else "array"

    @property
    def texts(self) -> tuple[str, ...]:
        """The human texts (for a gold set of pairs: every response)."""
        if self._texts is None:
            raise AttributeError("this is an array gold set: use .array")
        return self._texts

    @property
    def is_chat(self) -> bool:
        """True for a gold set of (prompt, response) pairs (:meth:`from_pairs`, :meth:`from_chat`)."""
        return self._pairs is not None

    @property
    def prompts(self) -> tuple[Messages, ...]:
        """Each prompt as ((role, content), ...) messages (gold sets of pairs only)."""
        if self._pairs is None:
            raise AttributeError("this gold set holds no prompts: build it with GoldSet.from_pairs or from_chat")
        return tuple(p for p, _ in self._pairs)

    @property
    def responses(self) -> tuple[tuple[str, ...], ...]:
        """The human responses of each prompt (gold sets of pairs only)."""
        if self._pairs is None:
            raise AttributeError("this gold set holds no responses: build it with GoldSet.from_pairs or from_chat")
        return tuple(r for _, r in self._pairs)

    @property
    def array(self) -> np.ndarray:
        """Read-only view of the gold array."""
        if self._array is None:
            raise AttributeError("this is a text gold set: use .texts")
        return self._array

    def __len__(self) -> int:
        if self._pairs is not None:
            return len(self._pairs)
        return len(self._texts) if self._texts is not None else int(self._array.shape[0])

    def __repr__(self) -> str:
        return f"GoldSet(kind={self.kind!r}, n={len(self)}, name={self.name!r}, fingerprint={self.fingerprint[:12]}...)"

    def _content_hash(self) -> str:
        h = hashlib.sha256()
        if self._pairs is not None:
            h.update(_PAIRS_TAG)
            h.update(json.dumps([[[list(m) for m in p], list(r)] for p, r in self._pairs], ensure_ascii=False,
                                separators=(",", ":")).encode("utf-8"))
        elif self._texts is not None:
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
        ``continuation_length``, at least 1). A gold set of pairs keeps every response of one token or more by
        default: a response is a whole human answer ("5" to "What is 2+3?"), not a text cut short. Where gold's answers
        are that short, the bigram diversity (distinct-2) is reported and not judged; duplicates, loops and the
        within-prompt answers are.

        Raises:
            ValueError: for non-positive lengths, or when fewer than 4 texts are long enough.
        """
        where = "GoldSet.split"
        if self._texts is None:
            raise TypeError(f"{where}: split() is for text gold sets; an array gold set has no prompts")
        for arg, v in (("prompt_length", prompt_length), ("continuation_length", continuation_length)):
            validate(where, arg, v, Interval(int, 1, None), fix=f"pass {arg} in tokens", type_error=ArgumentTypeError)
        min_cont = min_continuation if min_continuation is not None else max(1, continuation_length // 4)
        adapter = tokenizer if isinstance(tokenizer, TokenizerAdapter) else TokenizerAdapter(tokenizer)
        if self._pairs is not None:
            # short-answer tasks (arithmetic, classification, yes/no) are common in post-training: keep them
            return self._split_pairs(adapter, prompt_length, continuation_length,
                                     min_continuation if min_continuation is not None else 1)
        full = tuple(_readonly(adapter.encode(t)) for t in self._texts)
        keep = [i for i, ids in enumerate(full) if ids.size >= prompt_length + min_cont]
        if len(keep) < MIN_GOLD_SIZE:
            longest = max((ids.size for ids in full), default=0)
            raise ValueError(
                f"{where}: only {len(keep)} of {len(full)} gold texts have prompt_length + {min_cont} = "
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


    def _split_pairs(self, adapter: TokenizerAdapter, prompt_length: int, continuation_length: int,
                     min_cont: int) -> GoldSplit:
        """Prompts rendered whole (chat template where the tokenizer has one; ``prompt_length`` does not cut
        them), the first response as the reference continuation, every response as the within-prompt reference."""
        assert self._pairs is not None
        responses = [tuple(_readonly(adapter.encode(r)) for r in rs) for _, rs in self._pairs]
        keep = [i for i, rs in enumerate(responses) if rs[0].size >= min_cont]
        if len(keep) < MIN_GOLD_SIZE:
            raise ValueError(f"GoldSet.split: only {len(keep)} of {len(self._pairs)} gold responses have {min_cont} "
                             "tokens or more; use longer responses or a lower max_new_tokens")
        prompts = [_readonly(adapter.render_prompt([{"role": r, "content": c} for r, c in self._pairs[i][0]]))
                   for i in keep]
        return GoldSplit(
            prompts=tuple(prompts),
            continuations=tuple(responses[i][0][:continuation_length] for i in keep),
            indices=tuple(keep),
            full=tuple(rs[0] for rs in responses),
            prompt_length=prompt_length,
            continuation_length=continuation_length,
            alternatives=tuple(tuple(r[:continuation_length] for r in responses[i]) for i in keep),
        )


def _as_list(items: Any, arg: str, where: str) -> list[Any]:
    validate(where, arg, items, Satisfies(lambda v: isinstance(v, Iterable) and not isinstance(v, str | bytes | dict),
                                          "a list"), fix="wrap a single item in a list")
    return list(items)


def _prompt_messages(prompt: Any, arg: str, where: str, allow_assistant_last: bool = False) -> Messages:
    """A prompt (str or list of {"role", "content"} messages) as canonical messages."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"{where}: {arg} is an empty prompt; drop it or give its text")
        return (("user", prompt),)
    if isinstance(prompt, dict) and isinstance(prompt.get("messages"), list):
        # a dataset row (TRL's conversational format), not its conversation
        raise TypeError(f"{where}: {arg} is a dataset row with a 'messages' field; pass the conversations "
                        "themselves: [row['messages'] for row in rows]")
    if isinstance(prompt, dict) or not isinstance(prompt, Sequence) or not prompt:
        raise TypeError(f"{where}: {arg} must be a str or a non-empty list of {{'role', 'content'}} messages, got "
                        f"{type(prompt).__name__}")
    out = []
    for j, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TypeError(f"{where}: {arg}[{j}] must be a message {{'role': str, 'content': str}}, got {m!r:.80}")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}: {arg}[{j}] has role {m['role']!r}; use one of {list(ROLES)}")
        out.append((m["role"], m["content"]))
    if not allow_assistant_last and out[-1][0] == "assistant":
        raise ValueError(f"{where}: {arg} ends with an assistant turn; a prompt ends where the model answers: move "
                         "that turn into responses, or use GoldSet.from_chat for whole conversations")
    return tuple(out)


def _responses(response: Any, arg: str, where: str) -> tuple[str, ...]:
    items = [response] if isinstance(response, str) else response
    if isinstance(items, dict) or not isinstance(items, Sequence) or not items:
        raise TypeError(f"{where}: {arg} must be a str or a non-empty list of str, got {type(response).__name__}")
    for j, r in enumerate(items):
        if not isinstance(r, str):
            raise TypeError(f"{where}: {arg}[{j}] is {type(r).__name__}, expected a str (a human response)")
        if not r.strip():
            raise ValueError(f"{where}: {arg} holds an empty response; drop it (a gold response is human text)")
    return tuple(items)


def _read_jsonl_records(path: Path, fields: dict[str, str], where: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; ``fields`` maps each argument naming a field to the field it names."""
    if not path.is_file():
        raise FileNotFoundError(f"{where}: path={str(path)!r}: no such gold file; pass the path of an existing JSONL "
                                "file")
    records = []
    for lineno, record in json_lines(path, prefix=f"{where}: "):
        missing = [(arg, f) for arg, f in fields.items() if not isinstance(record, dict) or f not in record]
        if missing:
            arg, f = missing[0]
            raise ValueError(f"{where}: {path}:{lineno}: no field {f!r}; set {arg} to the field that holds it")
        records.append(record)
    return records


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


def json_lines(path: Path, opener: Any = open, prefix: str = "") -> Iterator[tuple[int, Any]]:
    """(line number, record) of each non-blank line of a JSONL file, read as a stream.

    Raises:
        ValueError: a line that is not JSON (named by ``prefix``, file and line).
    """
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{prefix}{path}:{lineno}: not valid JSON ({exc.msg}); repair or drop that line") from None
            yield lineno, record


def _read_jsonl_texts(path: Path, text_field: str, where: str) -> list[str]:
    texts: list[str] = []
    for lineno, record in json_lines(path, prefix=f"{where}: "):
        if not isinstance(record, dict) or text_field not in record:
            raise ValueError(f"{where}: {path}:{lineno}: no field text_field={text_field!r}; set text_field to the "
                             "field holding the text")
        if not isinstance(record[text_field], str):
            raise ValueError(f"{where}: {path}:{lineno}: field {text_field!r} is {type(record[text_field]).__name__}, "
                             "expected str; set text_field to the field holding the text")
        texts.append(record[text_field])
    return texts
