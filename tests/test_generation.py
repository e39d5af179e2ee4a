"""Generation and teacher-forced scoring as real LLMs need them, on real tiny models (no mocks).

Continuation-only scoring must give the numbers of the full-logits computation it replaced; generation keeps
its KV cache under gradient checkpointing and stops once every row has ended; out-of-memory halves the batch;
PEFT models and bf16 / fp16 weights go through the same path. Speed is measured in
benchmarks/bench_generation.py, not here.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from collapseguard import GenerationSettings

pytest.importorskip("transformers")

from collapseguard.integrations import _torch as ct
from tests import tiny_runs as tr

PROMPT, NEW = 16, 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run many small forwards: on a shared CPU, threads waiting on each other made them ~10x
    slower. Restored afterwards for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return tr.tokenizer()


@pytest.fixture(scope="module")
def gold_rows(tokenizer) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real human gold prompts and continuations, with mixed prompt and continuation lengths, so that batches
    need right padding and the kept positions differ per row (one continuation is empty)."""
    prompts, continuations = [], []
    for k, text in enumerate(tr.texts()[1][:11]):
        ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
        p_len = PROMPT - 4 * (k % 2)
        c_len = 0 if k == 5 else NEW - 3 * (k % 4)
        prompts.append(ids[:p_len])
        continuations.append(ids[p_len:p_len + c_len])
    return prompts, continuations


def tiny_llama(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def tiny_model(kind: str, tokenizer):
    return tiny_llama(tokenizer) if kind == "llama" else tr.model(dropout=0.0).eval()


def reference_stats(model, prompts, continuations, batch_size):
    """The full-logits computation gold_model_stats did before (logits at every position, one log-softmax)."""
    ids_out, nll_out, ent_out = [], [], []
    for start in range(0, len(prompts), batch_size):
        rows = [np.concatenate([p, c]) for p, c in zip(prompts[start:start + batch_size],
                                                        continuations[start:start + batch_size], strict=True)]
        width = max(r.size for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : r.size] = torch.as_tensor(r)
            mask[i, : r.size] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        ent = -(logp.exp() * logp).sum(-1)
        for i, r in enumerate(rows):
            p_len = prompts[start + i].size
            sl = slice(p_len - 1, r.size - 1)
            ids_out.append(r[p_len:])
            nll_out.append(nll[i, sl].numpy())
            ent_out.append(ent[i, sl].numpy())
    return ids_out, nll_out, ent_out


def assert_same_stats(got, want, tol):
    ids, nll, ent = want
    assert len(got.token_ids) == len(ids)
    for k in range(len(ids)):
        np.testing.assert_array_equal(got.token_ids[k], ids[k])
        assert got.nll[k].dtype == np.float32 and got.entropy[k].dtype == np.float32
        np.testing.assert_allclose(got.nll[k], nll[k], rtol=tol, atol=tol)
        np.testing.assert_allclose(got.entropy[k], ent[k], rtol=tol, atol=tol)


def projected_lengths(model) -> list[int]:
    """Records how many positions each forward projects onto the vocabulary (the output embedding's input)."""
    seen: list[int] = []
    model.get_output_embeddings().register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    return seen


def forward_calls(model) -> list[dict]:
    """Records each forward's batch size, input length and cache arguments."""
    calls: list[dict] = []

    def hook(_m, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append({"batch": ids.shape[0], "length": ids.shape[1], "use_cache": kwargs.get("use_cache"),
                      "cache": kwargs.get("cache", kwargs.get("past_key_values"))})

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def generate(model, prompts, tokenizer, batch_size=4, max_new_tokens=NEW, eos=None, **kwargs):
    with ct.isolated_check(model, seed=0):
        return ct.generate_continuations(
            model.generate, prompts, device=torch.device("cpu"), max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id if eos is None else eos, pad_token_id=tokenizer.pad_token_id,
            batch_size=batch_size, generation_kwargs={"do_sample": False, **kwargs})


def score(model, gold_rows, batch_size=4, **kwargs):
    with ct.isolated_check(model, seed=0):
        return ct.gold_model_stats(model, *gold_rows, device=torch.device("cpu"), batch_size=batch_size, **kwargs)


# --- continuation-only scoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_continuation_only_scoring_matches_full_logits(kind, tokenizer, gold_rows):
    model = tiny_model(kind, tokenizer)
    widths = projected_lengths(model)
    # chunk_positions=7 splits every batch's log-softmax into several blocks that cross row boundaries
    got = score(model, gold_rows, batch_size=4, chunk_positions=7)
    projected = list(widths)
    assert_same_stats(got, reference_stats(model, *gold_rows, batch_size=4), tol=1e-5)
    # the vocabulary projection ran only from the shortest prompt's last token on, not over the prompts
    prompts, conts = gold_rows
    want = [max(p.size + c.size for p, c in zip(prompts[s:s + 4], conts[s:s + 4], strict=True))
            - min(p.size for p in prompts[s:s + 4]) + 1 for s in range(0, len(prompts), 4)]
    assert projected == want


def test_scoring_without_logits_to_keep_falls_back_to_full_logits(tokenizer, gold_rows):
    class PlainForward(torch.nn.Module):  # a forward that takes only ids and mask, as a hand-written LM might
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask)

    lm = tiny_llama(tokenizer)
    widths = projected_lengths(lm)
    got = score(PlainForward(lm), gold_rows, batch_size=5)
    assert_same_stats(got, reference_stats(lm, *gold_rows, batch_size=5), tol=1e-5)
    prompts, conts = gold_rows
    assert widths[0] == max(p.size + c.size for p, c in zip(prompts[:5], conts[:5], strict=True))  # every position


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_models_generate_and_score(dtype, tokenizer, gold_rows):
    model = tiny_llama(tokenizer).to(dtype)
    try:
        seqs, _ = generate(model, gold_rows[0][:4], tokenizer, max_new_tokens=8)
        got = score(model, gold_rows)
    except RuntimeError as exc:  # older CPU builds lack some half kernels
        if "not implemented for" in str(exc):
            pytest.skip(f"this CPU build of torch cannot run {dtype} here: {exc}")
        raise
    assert all(s.size <= 8 for s in seqs) and any(s.size for s in seqs)
    # the reference upcasts the same half-precision logits before its log-softmax; one left in half precision
    # is off by ~3e-2 here (bf16 keeps 3 significant digits), far beyond this tolerance
    assert_same_stats(got, reference_stats(model, *gold_rows, batch_size=4), tol=1e-5)
    assert all(np.isfinite(n).all() and np.isfinite(e).all() for n, e in zip(got.nll, got.entropy, strict=True))


# --- generation: KV cache, early stop ---------------------------------------------------------------------------


def test_generation_keeps_kv_cache_under_gradient_checkpointing(tokenizer, gold_rows):
    model = tiny_llama(tokenizer).train()
    # transformers 5 renamed it activation_checkpointing_enable; the old name still works with a FutureWarning
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    # what a run with checkpointing sets (HF Trainer sets config.use_cache = args.use_cache, False by default);
    # transformers 4 generated without the cache from that, transformers 5 reads generation_config's
    model.config.use_cache = False
    model.generation_config.use_cache = False
    calls = forward_calls(model)
    prompts = [p for p in gold_rows[0] if p.size == PROMPT][:4]
    generate(model, prompts, tokenizer, max_new_tokens=6, eos=tokenizer.pad_token_id)  # never emitted: no early end
    assert [c["length"] for c in calls] == [PROMPT] + [1] * 5  # prompt once, then one new token per step
    assert all(c["use_cache"] for c in calls) and all(c["cache"] is not None for c in calls[1:])
    assert model.training  # isolated_check restored training mode


def test_generation_respects_explicit_use_cache_false(tokenizer, gold_rows):
    model = tiny_llama(tokenizer)
    calls = forward_calls(model)
    generate(model, gold_rows[0][:1], tokenizer, max_new_tokens=3, eos=tokenizer.pad_token_id, use_cache=False)
    assert [c["length"] for c in calls] == [PROMPT, PROMPT + 1, PROMPT + 2]


def eos_at_once(tokenizer):
    """A real tiny GPT-2 whose final layer norm outputs EOS's (enlarged) embedding whatever the input, so the
    tied head puts EOS far above every other token: it ends every sequence at its first new token."""
    model = tr.model(dropout=0.0).eval()
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        model.transformer.wte.weight[eos] *= 20
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(model.transformer.wte.weight[eos])
    return model


def test_batch_stops_once_every_sequence_has_ended(tokenizer, gold_rows):
    model = eos_at_once(tokenizer)
    calls = forward_calls(model)
    prompts = [p for p in gold_rows[0] if p.size == PROMPT]
    seqs, finished = generate(model, prompts, tokenizer, batch_size=len(prompts), do_sample=True)
    assert all(finished) and all(s.size == 0 for s in seqs)
    assert len(calls) == 1, "generation went on after every sequence had ended"
    calls.clear()  # the same model with a stop token it never emits runs all max_new_tokens steps
    generate(model, prompts, tokenizer, batch_size=len(prompts), eos=tokenizer.pad_token_id)
    assert len(calls) == NEW


# --- out of memory ----------------------------------------------------------------------------------------------


def fail_above(model, limit: int, error=torch.OutOfMemoryError) -> list[int]:
    """Make the real model's forward run out of memory for batches above ``limit``; returns the failed sizes."""
    failed: list[int] = []

    def hook(_m, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids.shape[0] > limit:
            failed.append(ids.shape[0])
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB")

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return failed


def test_generation_halves_batch_on_out_of_memory_and_keeps_it(tokenizer, gold_rows, caplog):
    prompts = [p for p in gold_rows[0] if p.size == PROMPT]  # 6 prompts
    want, _ = generate(tiny_llama(tokenizer), prompts, tokenizer, batch_size=2, max_new_tokens=4)
    model = tiny_llama(tokenizer)
    failed = fail_above(model, 2)
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        got, _ = generate(model, prompts, tokenizer, batch_size=16, max_new_tokens=4)
    assert failed == [6, 6, 4]  # a batch of 16 or 8 holds all 6 prompts; halved to 4, then 2 fits
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    warnings = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(warnings) == 1 and "continuing with batch size 2" in warnings[0]
    caplog.clear()
    failed.clear()
    with caplog.at_level(logging.WARNING, logger="collapseguard"):  # a later check starts at the size that fit
        again, _ = generate(model, prompts, tokenizer, batch_size=16, max_new_tokens=4)
    assert failed == [] and not caplog.records
    assert all(np.array_equal(a, b) for a, b in zip(again, want, strict=True))


def test_scoring_halves_batch_on_cpu_out_of_memory(tokenizer, gold_rows, caplog):
    model = tiny_llama(tokenizer)
    want = reference_stats(model, *gold_rows, batch_size=4)
    failed = fail_above(model, 3, error=lambda _: RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate "
        "1073741824 bytes."))
    with caplog.at_level(logging.WARNING, logger="collapseguard"):
        got = score(model, gold_rows, batch_size=8)
    assert failed == [8, 4]
    assert_same_stats(got, want, tol=1e-5)
    assert sum("continuing with batch size 2" in r.getMessage() for r in caplog.records) == 1


def test_out_of_memory_is_raised_when_retry_is_off_or_at_batch_size_one(tokenizer, gold_rows):
    model = tiny_llama(tokenizer)
    failed = fail_above(model, 0)
    with pytest.raises(torch.OutOfMemoryError):  # forwards that are collectives: one rank cannot retry alone
        score(model, gold_rows, batch_size=8, retry_oom=False)
    assert failed == [8]
    failed.clear()
    with pytest.raises(torch.OutOfMemoryError):
        score(model, gold_rows, batch_size=4)
    assert failed == [4, 2, 1]


def test_other_errors_are_not_retried(tokenizer, gold_rows):
    model = tiny_llama(tokenizer)
    failed = fail_above(model, 1, error=lambda _: RuntimeError("shape mismatch in attention"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(model, [p for p in gold_rows[0] if p.size == PROMPT][:4], tokenizer, batch_size=4)
    assert failed == [4]


# --- PEFT -------------------------------------------------------------------------------------------------------


def test_peft_lora_model_generates_and_scores_in_hf_trainer(tmp_path, tokenizer):
    peft = pytest.importorskip("peft")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    from collapseguard.integrations.transformers import CollapseGuardCallback

    base = tr.model(dropout=0.0)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                      fan_in_fan_out=True, task_type="CAUSAL_LM"))
    widths = projected_lengths(base)
    guard = CollapseGuardCallback(tr.gold(), generation=GenerationSettings(num_samples=8, max_new_tokens=8, prompt_length=16))
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=16,
                             learning_rate=3e-3, logging_strategy="epoch", save_strategy="no", report_to=[],
                             disable_tqdm=True, use_cpu=True)
    data = torch.utils.data.Subset(tr.blocks("varied"), range(16))  # one step: the check at the epoch's end
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[guard])
    trainer.train()
    checks = guard.engine.monitor.checks
    assert checks, "no check ran"
    metrics = checks[-1]["metrics"]
    assert np.isfinite(metrics["gold_ppl"]) and metrics["gold_ppl"] > 1
    # generation (one new position per step, cached) and scoring (the projection cut to the continuation
    # positions: max_new_tokens gold tokens, predicted from the last prompt token on) both ran through PEFT
    assert 1 in widths and 8 + 1 in widths
