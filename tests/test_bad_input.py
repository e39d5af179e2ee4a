"""The catalog of malformed inputs: each is refused early, naming the argument, the value and the fix.

The same catalog is the table in docs/bad-input.md (a test keeps the two in step).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from collapseguard import (
    AnchorMixSampler,
    CheckSchedule,
    CollapseMonitor,
    GenerationSettings,
    GoldSet,
    HaltPolicy,
    ModelHooks,
    ReweightPolicy,
    Thresholds,
)
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.gold.tokenization import SimpleTokenizer, TokenizerAdapter
from collapseguard.guard.engine import GuardEngine

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")

TEXTS = [f"human text number {i} says something about topic {i % 5} in its own words" for i in range(12)]
ROOT = Path(__file__).resolve().parents[1]


def text_gold() -> GoldSet:
    return GoldSet.from_texts(TEXTS * 2)  # 12 prompts: a monitor refuses a gold set too small to judge min_outputs


def array_gold() -> GoldSet:
    return GoldSet.from_arrays(np.random.default_rng(0).normal(size=(30, 4)))


def jsonl(tmp: Path, body: str) -> Path:
    path = tmp / "gold.jsonl"
    path.write_text(body)
    return path


def lightning_guard(**kwargs):
    pytest.importorskip("lightning")
    from collapseguard.integrations.lightning import CollapseGuard

    return CollapseGuard(**kwargs)


def mismatched() -> None:
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel

    from collapseguard.integrations._torch import check_tokenizer_fits
    from tests import tiny_runs as tr

    check_tokenizer_fits(GPT2LMHeadModel(GPT2Config(vocab_size=100, n_layer=1, n_embd=8, n_head=1)), tr.tokenizer())


def profile_for(gold: GoldSet, **settings) -> ReferenceProfile:
    return ReferenceProfile(gold.fingerprint, settings, {"gold_ppl": 10.0})


# id, what is wrong, call(tmp_path), error type, fragments the message must hold (argument, value, fix)
CATALOG = [
    ("gold-empty", "no gold texts", lambda t: GoldSet.from_texts([]), ValueError, ["texts", "0 non-empty", "at least 4"]),
    ("gold-too-small", "fewer than 4 gold texts", lambda t: GoldSet.from_texts(["a", "b", "c"]), ValueError,
     ["texts", "3 non-empty", "at least 4"]),
    ("gold-one-string", "a single str instead of a list", lambda t: GoldSet.from_texts("one text"), TypeError,
     ["texts", "wrap it in a list"]),
    ("gold-wrong-type", "a non-str item among gold texts", lambda t: GoldSet.from_texts([*TEXTS, 3]), TypeError,
     ["texts[12]", "int", "expected str"]),
    ("gold-shorter-than-prompt", "gold texts shorter than prompt_length", lambda t: CollapseMonitor(text_gold(), prompt_length=40),
     ValueError, ["prompt_length", "longest", "lower prompt_length"]),
    ("jsonl-missing-file", "gold file does not exist", lambda t: GoldSet.from_jsonl(t / "none.jsonl"), FileNotFoundError,
     ["path=", "none.jsonl", "no such gold file"]),
    ("jsonl-missing-field", "a JSONL line without the text field",
     lambda t: GoldSet.from_jsonl(jsonl(t, '{"body": "x"}\n')), ValueError, ["gold.jsonl:1", "text_field='text'", "set text_field"]),
    ("jsonl-not-json", "a JSONL line that is not JSON", lambda t: GoldSet.from_jsonl(jsonl(t, "{oops\n")), ValueError,
     ["gold.jsonl:1", "not valid JSON"]),
    ("array-gold-nan", "NaN in an array gold set", lambda t: GoldSet.from_arrays(np.full((8, 2), np.nan)), ValueError,
     ["x", "NaN or inf", "finite"]),
    ("array-gold-3d", "array gold of the wrong shape", lambda t: GoldSet.from_arrays(np.zeros((8, 2, 2))), ValueError,
     ["x", "(8, 2, 2)", "(n, d)"]),
    ("threshold-out-of-range", "a threshold outside its range", lambda t: Thresholds(diversity_warn=1.5), ValueError,
     ["diversity_warn=1.5", "[0, 1]"]),
    ("threshold-contradictory", "warn bound beyond the critical one", lambda t: Thresholds(diversity_warn=0.4, diversity_critical=0.5),
     ValueError, ["diversity_critical=0.5", "diversity_warn=0.4", "Lower diversity_critical or raise diversity_warn"]),
    ("threshold-wrong-type", "a float where an int is needed", lambda t: Thresholds(alert_patience=1.5), TypeError,
     ["patience", "1.5", "must be an int"]),
    ("threshold-unknown-preset", "an unknown preset name", lambda t: Thresholds.preset("paranoid"), ValueError,
     ["paranoid", "choose one of", "strict"]),
    ("threshold-unknown-field", "a misspelt threshold field", lambda t: Thresholds.from_dict({"diversity": 0.5}), ValueError,
     ["diversity", "valid fields"]),
    ("monitor-gold-type", "texts passed where a GoldSet is needed", lambda t: CollapseMonitor(TEXTS), TypeError,
     ["gold must be a GoldSet", "list", "GoldSet.from_texts"]),
    ("text-gold-array-outputs", "embeddings checked against a text gold set",
     lambda t: CollapseMonitor(text_gold(), prompt_length=4, max_new_tokens=8).check(np.zeros((10, 4))), TypeError,
     ["outputs", "float (n, d) array", "GoldSet.from_arrays"]),
    ("array-gold-tokenizer", "a tokenizer given for an array gold set", lambda t: CollapseMonitor(array_gold(), tokenizer=SimpleTokenizer()),
     ValueError, ["tokenizer", "holds arrays", "drop tokenizer"]),
    ("array-outputs-wrong-dim", "outputs with another feature count than gold",
     lambda t: CollapseMonitor(array_gold()).check(np.zeros((10, 3))), ValueError, ["outputs", "3 features", "has 4"]),
    ("tokenizer-not-a-tokenizer", "something that cannot tokenize", lambda t: TokenizerAdapter(42), TypeError,
     ["tokenizer=42", "no encode()", "pass a Hugging Face tokenizer"]),
    ("every-n-epochs-negative", "every_n_epochs=-1", lambda t: CheckSchedule(every_n_epochs=-1), ValueError,
     ["CheckSchedule", "every_n_epochs=-1", ">= 0"]),
    ("patience-negative", "a negative patience", lambda t: HaltPolicy(patience=-1), ValueError,
     ["HaltPolicy", "patience=-1", ">= 1"]),
    ("num-samples-one", "one sample per check", lambda t: GenerationSettings(num_samples=1), ValueError,
     ["num_samples", "num_samples=1", ">= 2"]),
    ("on-collapse-unknown", "an unknown on_collapse action", lambda t: GuardEngine(text_gold(), on_collapse="explode"), ValueError,
     ["on_collapse='explode'", "must be one of", "halt"]),
    ("on-error-unknown", "an unknown on_error policy", lambda t: GuardEngine(text_gold(), on_error="ignore"), ValueError,
     ["on_error='ignore'", "must be one of", "raise"]),
    ("generation-kwargs-type", "generation settings that are not a dict", lambda t: GuardEngine(text_gold(), generation=GenerationSettings(generation_kwargs="greedy")),
     TypeError, ["generation_kwargs", "str", "must be a dict"]),
    ("text-gold-no-tokenizer", "a text gold set with no tokenizer at setup", lambda t: GuardEngine(text_gold()).setup(), ValueError,
     ["tokenizer", "text gold set", "pass tokenizer="]),
    ("reference-missing", "a reference profile that does not exist", lambda t: GuardEngine(text_gold(), reference_profile=t / "gen0.json"),
     FileNotFoundError, ["reference_profile=", "gen0.json", "save_profile_to"]),
    ("reference-mismatch", "a reference profile made with other settings",
     lambda t: GuardEngine(text_gold(), reference_profile=profile_for(text_gold(), num_samples=32), generation=GenerationSettings(num_samples=64)), ValueError,
     ["num_samples", "64 vs the profile's 32", "Make a new profile"]),
    ("save-profile-type", "save_profile_to that is not a path", lambda t: GuardEngine(text_gold(), save_profile_to=3), TypeError,
     ["save_profile_to", "int", "file path"]),
    ("alert-log-type", "alert_log that is not a path", lambda t: GuardEngine(text_gold(), alert_log=["a"]), TypeError,
     ["alert_log", "list", "file path"]),
    ("callback-both-hooks", "generate and sample hooks together",
     lambda t: ModelHooks(generate=print, sample=print), ValueError, ["ModelHooks", "generate", "sample", "not both"]),
    ("callback-hook-not-callable", "a generate hook that is not callable", lambda t: ModelHooks(generate=3), TypeError,
     ["ModelHooks", "generate=3", "int", "must be callable"]),
    ("callback-array-gold-no-sampler", "an array gold set without a sample hook",
     lambda t: lightning_guard(gold=array_gold()), ValueError, ["array gold set", "hooks=ModelHooks(sample=fn)"]),
    ("callback-sample-fn-text-gold", "sample_fn with a text gold set",
     lambda t: lightning_guard(gold=text_gold(), tokenizer=SimpleTokenizer(), hooks=ModelHooks(sample=print)), ValueError,
     ["hooks.sample", "holds texts", "ModelHooks(generate=fn)"]),
    ("tokenizer-model-mismatch", "a tokenizer with more tokens than the model's vocabulary", lambda t: mismatched(), ValueError,
     ["tokenizer has 512 tokens", "vocabulary has 100", "pass the tokenizer the model was trained with"]),
    ("floor-above-one", "a human floor above 1", lambda t: AnchorMixSampler(["human", "synthetic"], 2, 1.5), ValueError,
     ["min_human_fraction=1.5", "[0, 1]", "at least 20% human"]),
    ("sampler-bad-labels", "provenance labels outside human/synthetic/unknown",
     lambda t: AnchorMixSampler(["human", "bot"], 2, 0.5), ValueError, ["labels hold ['bot']", "unknown is never counted as human"]),
    ("reweight-without-sampler", "on_collapse='reweight' with no sampler to steer",
     lambda t: GuardEngine(text_gold(), on_collapse="reweight"), ValueError,
     ["on_collapse='reweight'", "on_collapse=ReweightPolicy(anchor_sampler)"]),
    ("reweight-ceiling-below-floor", "max_human_fraction below the sampler's floor",
     lambda t: GuardEngine(text_gold(), on_collapse=ReweightPolicy(AnchorMixSampler(["human", "synthetic"], 2, 0.5), max_human_fraction=0.3)), ValueError, ["max_human_fraction=0.3", "min_human_fraction=0.5", "Raise max_human_fraction"]),
    ("hub-mutable-revision", "a Hub gold set pinned to a branch", lambda t: GoldSet.from_hub("org/gold", "g.jsonl", revision="main"),
     ValueError, ["revision='main'", "40-hex commit sha", "allow_mutable=True"]),
    ("callback-score-hook-alone", "a score hook without a sample hook", lambda t: ModelHooks(score=print), ValueError,
     ["ModelHooks", "score", "pass it with sample"]),
    ("generation-kwargs-own-setting", "max_new_tokens given in generation_kwargs",
     lambda t: lightning_guard(gold=text_gold(), generation={"generation_kwargs": {"max_new_tokens": 64}}), ValueError,
     ["GenerationSettings", "generation_kwargs=", "GenerationSettings(max_new_tokens=64)"]),
    ("chat-gold-dataset-rows", "TRL dataset rows given to GoldSet.from_chat instead of their conversations",
     lambda t: GoldSet.from_chat([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]),
     TypeError, ["GoldSet.from_chat", "conversations[0]", "[row['messages'] for row in rows]"]),
    ("grpo-guard-given-gold", "a gold set passed to the GRPO guard", lambda t: grpo_guard(text_gold()), TypeError,
     ["GRPOCollapseGuard takes no gold set", "CollapseGuardCallback(gold)"]),
    ("lightning-guard-in-hf-trainer", "the Lightning callback given to a transformers.Trainer", lambda t: hf_trainer_with(
        lightning_guard(gold=text_gold()), t), TypeError, ["CollapseGuard is the Lightning callback", "CollapseGuardCallback"]),
]


def grpo_guard(*args):
    pytest.importorskip("trl")
    from collapseguard.integrations.trl import GRPOCollapseGuard

    return GRPOCollapseGuard(*args)


def hf_trainer_with(callback, tmp: Path):
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_layer=1, n_embd=8, n_head=1))
    return Trainer(model=model, args=TrainingArguments(str(tmp), use_cpu=True, report_to=[]), callbacks=[callback])


@pytest.mark.parametrize(("case", "what", "call", "error", "fragments"), CATALOG, ids=[c[0] for c in CATALOG])
def test_malformed_input_is_refused_clearly(case, what, call, error, fragments, tmp_path):
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{case}: message {message!r} lacks {missing}"
    assert "\n" not in message  # one line


def test_catalog_is_large_and_documented():
    assert len(CATALOG) >= 25
    doc = (ROOT / "docs" / "bad-input.md").read_text()
    ids = re.findall(r"^\| `([a-z0-9-]+)` \|", doc, re.M)
    assert ids == [c[0] for c in CATALOG]
    assert doc == render_doc(), "docs/bad-input.md is stale: run python -m tests.test_bad_input"


def render_doc() -> str:
    """The docs table from the catalog (run this module to regenerate docs/bad-input.md)."""
    rows = ["# Bad input: what collapseguard refuses, and how it says so", "",
            "Each case is refused at construction or setup (or at the first check, for outputs), with one line",
            "that names the argument, the value and the fix. `tests/test_bad_input.py` runs every row.", "",
            "| case | what is wrong | error | the message holds |", "|---|---|---|---|"]
    rows += [f"| `{c[0]}` | {c[1]} | `{c[3].__name__}` | {'; '.join(json.dumps(f)[1:-1] for f in c[4])} |"
             for c in CATALOG]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "bad-input.md").write_text(render_doc())
