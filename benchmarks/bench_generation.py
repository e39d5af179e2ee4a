"""What each generation and scoring change of the guard's check gains on a real pretrained LLM.

On SmolLM2-135M-Instruct (``collapseguard.demos.pretrained.smollm2``: 30 layers, 576 dims, a 49,152-token
vocabulary, float32 on CPU), with real human gold text (CPython's documentation paragraphs), it times the two
passes of a check as ``collapseguard.integrations._torch`` runs them:

1. **KV cache under gradient checkpointing.** The model is set up as a checkpointed training run leaves it
   (``config.use_cache = generation_config.use_cache = False``). The check now passes ``use_cache=True`` to
   ``generate``; before, generation re-ran the whole sequence at every new token (``use_cache=False``).
2. **Early stop.** ``generate`` ends a batch once every row has emitted EOS. Measured on the gold workload
   (documentation continuations, which rarely end within the budget) and on chat prompts, short-answer and
   yes/no, where rows do end: with the model's EOS against a stop token it never emits (every batch runs all
   steps). A batch stops only once all its rows have ended.
3. **Continuation-only scoring.** The teacher-forced pass projects onto the vocabulary only from the last
   prompt token on (``logits_to_keep``) and upcasts / log-softmaxes in chunks of positions, against the
   full-logits computation it replaced (kept below as ``full_logits_stats``): time, the peak resident memory
   the pass adds (each variant in a fresh process, ``resource.getrusage``), and the largest difference.
4. **Batch sizes** for both passes.

Every forward is also counted (calls, and token positions fed), which does not depend on the machine's load.

    python benchmarks/bench_generation.py [--out benchmarks/results]   # ~9 min on 2 busy CPUs, less when idle
    python benchmarks/bench_generation.py --smoke --out /tmp/smoke      # correctness only, no timing claims
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from collapseguard.demos.data import pydoc_instructions, pydoc_paragraphs
from collapseguard.guard.generation import DEFAULT_SAMPLING as DEFAULT_GENERATION
from collapseguard.integrations import _torch as ct

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def load_model(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model, tok


def model_path() -> Path:
    ready = Path("/tmp/smollm2_ready")
    if ready.is_file() and Path(ready.read_text().strip()).is_dir():
        return Path(ready.read_text().strip())
    from collapseguard.demos.pretrained import smollm2

    return smollm2()


def gold_rows(tok: Any, n: int, prompt_len: int, new: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` gold prompts of ``prompt_len`` tokens and their human continuations of ``new`` tokens."""
    prompts, conts = [], []
    for text in pydoc_paragraphs():
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) >= prompt_len + new:
            prompts.append(np.asarray(ids[:prompt_len], dtype=np.int64))
            conts.append(np.asarray(ids[prompt_len:prompt_len + new], dtype=np.int64))
        if len(prompts) == n:
            break
    return prompts, conts


CHAT_QUESTIONS = {
    "short-answer chat": "In one or two words, what is the Python topic '{topic}' about?",
    "yes/no chat": "Answer only yes or no: is '{topic}' a Python keyword?",
}


def chat_prompts(tok: Any, n: int, question: str) -> list[np.ndarray]:
    """Chat prompts about the documentation topics, of one rendered length (so that they batch together)."""
    by_len: dict[int, list[np.ndarray]] = {}
    for instruction, _ in pydoc_instructions():
        topic = instruction.split("'")[1]
        msg = [{"role": "user", "content": question.format(topic=topic)}]
        ids = tok.apply_chat_template(msg, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        by_len.setdefault(len(ids), []).append(np.asarray(ids, dtype=np.int64))
    return max(by_len.values(), key=len)[:n]


def checkpointed(model: Any) -> Any:
    """The model as a training run with gradient checkpointing leaves it."""
    model.train()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.config.use_cache = False
    model.generation_config.use_cache = False
    return model


class ForwardCounter:
    """Counts forward calls, the token positions they are fed and the positions projected onto the vocabulary
    (the output embedding's input): what work was done, whatever the load."""

    def __init__(self, model: Any) -> None:
        self.calls = self.positions = self.projected = 0
        self.handles = [model.register_forward_pre_hook(self._forward, with_kwargs=True),
                        model.get_output_embeddings().register_forward_pre_hook(self._head)]

    def _forward(self, _m: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls += 1
        self.positions += int(ids.numel())

    def _head(self, _m: Any, args: tuple) -> None:
        self.projected += int(args[0].shape[:-1].numel())

    def reset(self) -> None:
        self.calls = self.positions = self.projected = 0

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def run_generation(model: Any, prompts: list[np.ndarray], *, new: int, batch: int, eos: int, pad: int,
                   **kwargs: Any) -> tuple[float, list[np.ndarray], list[bool]]:
    with ct.isolated_check(model, seed=0):
        t = time.perf_counter()
        seqs, finished = ct.generate_continuations(
            model.generate, prompts, device=CPU, max_new_tokens=new, eos_token_id=eos, pad_token_id=pad,
            batch_size=batch, generation_kwargs={**DEFAULT_GENERATION, **kwargs})
        return time.perf_counter() - t, seqs, finished


def full_logits_stats(model: Any, prompts: list[np.ndarray], conts: list[np.ndarray], batch_size: int) -> Any:
    """The teacher-forced scoring the check ran before: float32 logits at every position, one log-softmax."""
    from collapseguard.metrics import ModelStats

    ids_out, nll_out, ent_out = [], [], []
    for start in range(0, len(prompts), batch_size):
        rows = [np.concatenate([p, c]) for p, c in zip(prompts[start:start + batch_size],
                                                        conts[start:start + batch_size], strict=True)]
        width = max(r.size for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : r.size] = torch.as_tensor(r)
            mask[i, : r.size] = 1
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
    return ModelStats(ids_out, nll_out, ent_out)


def scorer(kind: str) -> Callable[..., Any]:
    if kind == "full":
        return full_logits_stats
    return lambda model, p, c, batch_size: ct.gold_model_stats(model, p, c, device=CPU, batch_size=batch_size)


def run_scoring(model: Any, kind: str, prompts: list, conts: list, batch: int) -> tuple[float, Any]:
    with ct.isolated_check(model, seed=0):
        t = time.perf_counter()
        stats = scorer(kind)(model, prompts, conts, batch_size=batch)
        return time.perf_counter() - t, stats


def max_diff(a: Any, b: Any) -> float:
    return max(float(np.max(np.abs(np.concatenate(x) - np.concatenate(y))))
               for x, y in ((a.nll, b.nll), (a.entropy, b.entropy)))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(path: str, kind: str, n: int, prompt_len: int, new: int, batch: int) -> None:
    """In a fresh process: the peak resident memory one scoring pass adds above the loaded, warmed-up model.

    torch's CPU allocator keeps no peak statistics, and tracemalloc does not see its allocations, so the
    kernel's peak resident set size is read: reset first (``/proc/self/clear_refs``), since loading the model
    peaks higher than a small pass does; where it cannot be reset, ``getrusage``'s lifetime peak is used.
    """
    import gc

    torch.set_num_threads(1)
    model, tok = load_model(Path(path))
    prompts, conts = gold_rows(tok, n, prompt_len, new)
    run_scoring(model, kind, prompts[:1], [c[:1] for c in conts[:1]], 1)  # warm up with a negligible pass
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS to the current RSS
        before, how = _status_kib("VmRSS"), "VmHWM after clear_refs"
    except OSError:
        before, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "getrusage ru_maxrss"
    seconds, _ = run_scoring(model, kind, prompts, conts, batch)
    after = _status_kib("VmHWM") if how.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_added_mib": (after - before) / 1024, "seconds": seconds, "how": how}))  # KiB


def measure_memory(path: Path, kind: str, n: int, prompt_len: int, new: int, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", str(path), kind, str(n), str(prompt_len), str(new), str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment(mode: str, start_load: float) -> dict:
    return {"mode": mode, "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "load_avg_1m_at_start": start_load,
            "load_avg_1m_at_end": os.getloadavg()[0],
            "versions": {p: version(p) for p in ("torch", "transformers", "numpy")}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--smoke", action="store_true", help="a few prompts, few tokens: correctness only")
    ap.add_argument("--prompts", type=int, default=58)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--no-cache-prompts", type=int, default=8,
                    help="prompts for the with/without KV cache pair (the uncached run is the slow one)")
    ap.add_argument("--chat-prompts", type=int, default=16, help="short-answer chat prompts (early stop)")
    ap.add_argument("--memory-child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        path, kind, *nums = args.memory_child
        memory_child(path, kind, *map(int, nums))
        return {}
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's checkpointing renames
    # one thread: on a CPU shared with other jobs, two threads waiting on each other ran 10-20x slower
    torch.set_num_threads(1)
    start_load = os.getloadavg()[0]
    if args.smoke:
        args.prompts, args.new_tokens, args.no_cache_prompts, args.chat_prompts = 6, 6, 3, 4
    n, new, plen = args.prompts, args.new_tokens, args.prompt_length
    path = model_path()
    model, tok = load_model(path)
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    never = len(tok) - 1  # a stop token the model does not emit here: batches run every step
    prompts, conts = gold_rows(tok, n, plen, new)
    counter = ForwardCounter(model)
    rows: list[dict] = []

    def row(section: str, variant: str, seconds: float, **extra: Any) -> None:
        rows.append({"section": section, "variant": variant, "seconds": round(seconds, 3),
                     "forward_calls": counter.calls, "positions_fed": counter.positions,
                     "positions_projected": counter.projected, **extra})
        print(f"{section:<40} {variant:<48} {seconds:8.2f}s  calls={counter.calls:<5} "
              f"positions={counter.positions:<7} projected={counter.projected:<6} {extra if extra else ''}", flush=True)
        counter.reset()

    # 1. KV cache, on a checkpointed model; greedy, so both runs should give the same tokens
    checkpointed(model)
    sub = prompts[:args.no_cache_prompts]
    cached: list[np.ndarray] = []
    for label, kw in (("with KV cache (use_cache=True)", {}), ("without KV cache (before)", {"use_cache": False})):
        secs, seqs, _ = run_generation(model, sub, new=new, batch=len(sub), eos=never, pad=pad, do_sample=False, **kw)
        row("generation: KV cache", f"{label}, {len(sub)}x{new}", secs)
        if kw:
            same = sum(np.array_equal(a, b) for a, b in zip(seqs, cached, strict=True))
            rows[-1]["greedy_rows_identical"] = f"{same}/{len(sub)}"
        else:
            cached = seqs
    assert rows[-2]["positions_fed"] < rows[-1]["positions_fed"]

    # 2. early stop: the model's EOS against a stop token never emitted, on the gold workload (sampled, as a
    # check samples; the first run is also the largest batch size of 4a) and on chat prompts in batches of 4
    # (a batch stops only once all its rows have ended, so small batches of short replies gain)
    workloads = [("gold continuations", prompts, n)]
    workloads += [(name, chat_prompts(tok, args.chat_prompts, q), 4) for name, q in CHAT_QUESTIONS.items()]
    for workload, items, batch in workloads:
        for label, stop in (("stops when all rows ended", eos), ("runs every step (no EOS)", never)):
            secs, _, finished = run_generation(model, items, new=new, batch=batch, eos=stop, pad=pad)
            row(f"generation: early stop, {workload}", f"{label}, batch {batch}, {len(items)}x{new}", secs,
                rows_ended=f"{sum(finished)}/{len(items)}")

    # 4a. generation batch size (KV cache, sampled); batch n is the first early-stop run above
    for batch in sorted({b for b in (8,) if b < n}):
        secs, _, _ = run_generation(model, prompts, new=new, batch=batch, eos=eos, pad=pad)
        row("generation: batch size", f"batch {batch}, {n}x{new}", secs)

    # 3 + 4b. scoring: full logits against continuation-only chunked, at two batch sizes
    for batch in sorted({min(8, n), n}):
        reference = None
        for kind, label in (("full", "full logits (before)"), ("chunked", "continuation-only, chunked")):
            secs, stats = run_scoring(model, kind, prompts, conts, batch)
            reference = stats if kind == "full" else reference
            row("scoring", f"{label}, batch {batch}, {n}x({plen}+{new})", secs,
                max_abs_diff=0.0 if kind == "full" else max_diff(stats, reference))
    worst = max(r.get("max_abs_diff", 0.0) for r in rows)
    assert worst < 1e-3, f"continuation-only scoring differs from full logits by {worst}"
    counter.remove()

    # peak memory of one scoring pass at the largest batch, each variant in a fresh process
    for kind in ("full", "chunked"):
        m = measure_memory(path, kind, n, plen, new, n)
        label = "full logits (before)" if kind == "full" else "continuation-only, chunked"
        rows.append({"section": "scoring: peak memory", "variant": f"{label}, batch {n}",
                     "seconds": round(m["seconds"], 3), "peak_added_mib": round(m["peak_added_mib"], 1),
                     "how": m["how"]})
        print(f"{'scoring: peak memory':<40} {label + f', batch {n}':<48} +{m['peak_added_mib']:.0f} MiB", flush=True)

    result = {"environment": environment("smoke" if args.smoke else "full", start_load),
              "model": "SmolLM2-135M-Instruct (float32, CPU)", "prompts": n, "new_tokens": new,
              "prompt_length": plen, "rows": rows}
    write(result, args.out)
    print("\n".join(f"{a:<45} {b:<16} {c}" for a, b, c in gains(rows)))
    return result


def _fmt(r: dict) -> str:
    extra = []
    for key in ("rows_ended", "greedy_rows_identical", "max_abs_diff"):
        if key in r:
            extra.append(f"{key.replace('_', ' ')}: {r[key]:.2g}" if isinstance(r[key], float) else
                         f"{key.replace('_', ' ')}: {r[key]}")
    calls, positions = r.get("forward_calls", ""), r.get("positions_fed", "")
    projected = r.get("positions_projected", "")
    mem = f"+{r['peak_added_mib']:.0f}" if "peak_added_mib" in r else ""
    return (f"| {r['section']} | {r['variant']} | {r['seconds']:.2f} | {calls} | {positions} | {projected} | {mem} "
            f"| {'; '.join(extra)} |")


def gains(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(change, measured gain, load-independent evidence): each change against what it replaced."""

    def pair(section: str, new: str, old: str) -> tuple[dict, dict] | None:
        a = [r for r in rows if r["section"] == section and r["variant"].startswith(new)]
        b = [r for r in rows if r["section"] == section and r["variant"].startswith(old)]
        return (a[-1], b[-1]) if a and b else None

    out = []
    p = pair("generation: KV cache", "with KV", "without KV")
    if p:
        out.append(("KV cache kept under gradient checkpointing", f"{p[1]['seconds'] / p[0]['seconds']:.1f}x faster",
                    f"{p[1]['positions_fed']} -> {p[0]['positions_fed']} positions fed"))
    for workload in ("gold continuations", *CHAT_QUESTIONS):
        p = pair(f"generation: early stop, {workload}", "stops", "runs")
        if p:  # with as many forwards either way, a time ratio would only show the load's noise
            gain = (f"{p[1]['seconds'] / p[0]['seconds']:.1f}x faster" if p[0]['forward_calls'] < p[1]['forward_calls']
                    else "none: no batch ended early")
            batch = p[0]["variant"].split("batch ")[1].split(",")[0]
            out.append((f"early stop ({workload}, batch {batch})", gain,
                        f"{p[1]['forward_calls']} -> {p[0]['forward_calls']} forward calls; rows ended "
                        f"{p[0]['rows_ended']}"))
    for r in [r for r in rows if r["section"] == "scoring" and r["variant"].startswith("continuation")]:
        batch = r["variant"].split("batch ")[1].split(",")[0]
        p = pair("scoring", f"continuation-only, chunked, batch {batch},", f"full logits (before), batch {batch},")
        if p:
            out.append((f"continuation-only scoring, batch {batch}",
                        f"{p[1]['seconds'] / p[0]['seconds']:.2f}x faster",
                        f"{p[1]['positions_projected']} -> {p[0]['positions_projected']} positions projected; "
                        f"max abs diff {p[0]['max_abs_diff']:.2g}"))
    p = pair("scoring: peak memory", "continuation", "full")
    if p:
        out.append(("continuation-only scoring, peak memory", f"{p[1]['peak_added_mib'] / p[0]['peak_added_mib']:.1f}x "
                    "less", f"+{p[1]['peak_added_mib']:.0f} -> +{p[0]['peak_added_mib']:.0f} MiB"))
    sizes = [r for r in rows if r["section"] == "generation: batch size"]
    biggest = [r for r in rows if r["section"] == "generation: early stop, gold continuations"
               and r["variant"].startswith("stops")]
    if sizes and biggest:
        b = biggest[0]["variant"].split("batch ")[1].split(",")[0]
        out.append((f"generation batch {b} instead of 8", f"{sizes[0]['seconds'] / biggest[0]['seconds']:.1f}x faster",
                    f"{sizes[0]['forward_calls']} -> {biggest[0]['forward_calls']} forward calls"))
    return out


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "generation.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    env = result["environment"]
    lines = []
    if env["mode"] == "smoke":
        lines += ["**Smoke run: correctness only, sizes too small for timing claims.**", ""]
    lines += [
        "# Generation and scoring on a real LLM",
        "",
        f"{result['model']}; {result['prompts']} gold prompts of {result['prompt_length']} tokens "
        f"(CPython documentation paragraphs) x {result['new_tokens']} new tokens; one run each. {env['cpu_count']} CPUs shared with other jobs (load average {env['load_avg_1m_at_start']:.1f} at "
        f"start, {env['load_avg_1m_at_end']:.1f} at end), {env['torch_threads']} torch threads, torch "
        f"{env['versions']['torch']}, transformers {env['versions']['transformers']}, {env['date_utc']}. Seconds "
        "depend on the load (on this shared machine identical work can differ by up to ~1.5x between runs); "
        "forward calls, token positions fed or projected onto the vocabulary, and memory do not. The model is "
        "set up as gradient-checkpointed training leaves it (`use_cache=False` in its configs).",
        "",
        "## Gains",
        "",
        "| change | gain | evidence that does not depend on the load |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in gains(result["rows"])),
        "",
        "## Every run",
        "",
        "| pass | variant | seconds | forward calls | positions fed | positions projected | peak MiB added | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        *(_fmt(r) for r in result["rows"]),
        "",
        "Command: `python benchmarks/bench_generation.py` (`--smoke` for a correctness-only run).",
        "",
    ]
    (out / "generation.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
