"""Make a reference profile of a Hugging Face causal LM, in code or from a saved checkpoint.

>>> profile = profile_model(model, tokenizer, gold)            # doctest: +SKIP
>>> profile.save("gen0.json")                                  # doctest: +SKIP
>>> CollapseGuard(gold, tokenizer=tokenizer, reference_profile="gen0.json")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.guard.engine import GuardEngine
from collapseguard.integrations._torch import produce_from_hf_model


def profile_model(model: Any, tokenizer: Any, gold: GoldSet, *, source: str = "", **engine_kwargs: Any) -> ReferenceProfile:
    """Run one guard check on ``model`` and return its profile.

    ``engine_kwargs`` are the guard's settings (``generation=GenerationSettings(num_samples=..., max_new_tokens=...,
    ...)``, ``score_gold``, ...); use the same ones as the runs that will load the profile, or they will refuse it.
    """
    engine = GuardEngine(gold, tokenizer=tokenizer, **engine_kwargs)
    engine.setup()
    outcome = engine.run_check(produce_from_hf_model(engine, model, tokenizer), step=None, epoch=None)
    if outcome.result is None:
        raise RuntimeError("profiling failed: " + "; ".join(f.message for f in outcome.faults))
    return engine.monitor.profile(outcome.result, settings=engine.settings(), source=source)


def profile_checkpoint(checkpoint: str | Path, gold: GoldSet, **engine_kwargs: Any) -> ReferenceProfile:
    """Profile a checkpoint saved with ``save_pretrained`` (model and tokenizer in one folder).

    Loads offline only (``local_files_only=True``), never runs remote code, and prefers safetensors.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint={str(path)!r} is not a folder saved with save_pretrained()")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    return profile_model(model, tokenizer, gold, source=str(path), **engine_kwargs)
