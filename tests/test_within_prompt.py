"""Several samples per prompt, chat gold sets, and the judging of within-prompt and RL policy signals (core only).

Within-prompt metrics are checked against plain-Python implementations written from their definitions and
against hand-computed values, never against the library itself.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import unicodedata

import numpy as np
import pytest

from collapseguard import CheckSchedule, CollapseMonitor, GenerationSettings, GoldSet, Thresholds
from collapseguard.gold.goldset import GoldSetModifiedError
from collapseguard.guard.engine import GeneratedBatch, GuardEngine
from collapseguard.metrics import DistinctK, WithinDistinctN, WithinSimilarity, within_prompt_diversity
from collapseguard.metrics.within_prompt import as_groups

pytestmark = pytest.mark.filterwarnings("ignore::collapseguard.CollapseWarning")

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]


# ---------------------------------------------------------------- reference implementations
def _words(text: str) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())


def _grams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _shingles(words: list[str]) -> set:
    return set(_grams(words, 1)) | set(_grams(words, 2))


def _jac(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def naive(texts: list[str], k: int) -> dict[str, float]:
    groups = [[_words(t) for t in texts[i:i + k]] for i in range(0, len(texts), k)]
    d2, sim, dk = [], [], []
    for g in groups:
        grams = [x for w in g for x in _grams(w, 2)]
        if grams:
            d2.append(len(set(grams)) / len(grams))
        sim.append(sum(_jac(_shingles(a), _shingles(b)) for a, b in itertools.combinations(g, 2))
                   / math.comb(len(g), 2))
        reps: list[list[str]] = []
        for w in g:
            if not any(w == r or _jac(_shingles(w), _shingles(r)) >= 0.8 for r in reps):
                reps.append(w)
        dk.append(len(reps))
    return {"within_distinct_2": sum(d2) / len(d2), "within_similarity": sum(sim) / len(sim),
            "distinct_k": sum(dk) / len(dk)}


def random_texts(rng: random.Random, groups: int, k: int) -> list[str]:
    out = []
    for _ in range(groups):
        base = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        for _ in range(k):
            if rng.random() < 0.4:  # a copy, differently cased and punctuated: the same answer
                out.append(" ".join(base).upper() + rng.choice([".", "!", ""]))
            else:
                out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 4])
def test_within_metrics_equal_naive_definitions(seed, k):
    texts = random_texts(random.Random(seed), 12, k)
    got, want = within_prompt_diversity(texts, k), naive(texts, k)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_within_metrics_hand_values():
    # group 1: "Paris" twice (case, punctuation), "Lyon", "Nice"; group 2: one answer four times
    d = within_prompt_diversity(["Paris", "paris.", "Lyon", "Nice", "yes", "YES", "yes!", "yes"], k=4)
    assert d["distinct_k"] == 2.0  # (3 + 1) / 2
    assert d["within_similarity"] == pytest.approx((1 / 6 + 1) / 2)
    assert math.isnan(d["within_distinct_2"])  # one-word answers hold no bigram
    # near-duplicates: 9 shared of 10 word 1-2-grams -> one answer; a different answer -> two
    near = within_prompt_diversity(["a b c d e f", "a b c d e f g", "x y z", "x y z"], k=2)
    assert near["distinct_k"] == 1.0
    assert within_prompt_diversity(["a b c d", "a b x y"], k=2)["distinct_k"] == 2.0
    # directions are declared
    assert WithinDistinctN.direction == DistinctK.direction == "higher_is_better"
    assert WithinSimilarity.direction == "lower_is_better"


def test_merging_shards_of_whole_groups_is_exact():
    texts = random_texts(random.Random(7), 10, 4)
    groups = as_groups(texts, 4)
    for cls in (WithinDistinctN, WithinSimilarity, DistinctK):
        whole, a, b = cls(), cls(), cls()
        whole.update(groups)
        a.update(groups[1::2])
        b.update(groups[::2])
        assert a.merge(b).compute() == whole.compute()  # exactly: sorted values, fsum


def test_outputs_must_come_in_whole_groups():
    with pytest.raises(ValueError, match="samples_per_prompt=4"):
        within_prompt_diversity(["a", "b", "c"], k=4)


# ---------------------------------------------------------------- monitor with samples_per_prompt
def _gold_texts() -> list[str]:
    from collapseguard.demos.data import train_gold_split

    return train_gold_split()[1]


def test_metrics_across_prompts_read_each_groups_first_sample():
    gold = GoldSet.from_texts(_gold_texts())
    outs = _gold_texts()[100:140]
    grouped = [o if j == 0 else f"other {j} {o}" for o in outs for j in range(3)]
    one = CollapseMonitor(gold).measure(outs).compute()
    three = CollapseMonitor(gold, samples_per_prompt=3).measure(grouped).compute()
    same = [k for k in one if three[k] == one[k] or (math.isnan(three[k]) and math.isnan(one[k]))]
    assert same == list(one)  # identical values, not approximately
    assert set(three) - set(one) == {"within_distinct_2", "within_similarity", "distinct_k"}


def test_no_gold_reference_judges_against_the_runs_own_start():
    gold = GoldSet.from_texts(_gold_texts())
    monitor = CollapseMonitor(gold, samples_per_prompt=4, prompt_length=4)
    assert "distinct_k" not in monitor.reference(32)  # one human text per prompt: no within reference
    varied = [f"{w} {i} {j} text" for i in range(32) for j, w in enumerate(["red", "blue", "green", "pink"])]
    first = monitor.check(varied, step=1)
    assert not [a for a in first.alerts if a.metric == "distinct_k"]  # nothing to compare with yet
    same = [f"answer {i}" for i in range(32) for _ in range(4)]
    result = monitor.check(same, step=2)
    alert = next(a for a in result.alerts if a.metric == "distinct_k")
    # the run's earlier level (its start, or its best check, the same here), not gold's
    assert alert.severity == "critical" and alert.reference == 4.0 and "gold reference" not in alert.message


def test_gold_with_several_responses_gives_the_within_reference():
    rng = random.Random(0)
    prompts = [f"Question number {i}?" for i in range(40)]
    responses = [[" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(4)] for _ in prompts]
    gold = GoldSet.from_pairs(prompts, responses)
    monitor = CollapseMonitor(gold, samples_per_prompt=4, max_new_tokens=32)
    ref = monitor.reference(20)
    kept = [responses[i] for i in monitor.split.indices[:20]]  # the prompt half, first 20
    want = naive([r for rs in kept for r in rs], 4)
    assert ref["distinct_k"] == pytest.approx(want["distinct_k"])
    assert ref["within_similarity"] == pytest.approx(want["within_similarity"])
    same = [rs[0] for rs in kept for _ in range(4)]
    monitor.start_from_gold(20)  # judged against gold's human answers from the first check on
    result = monitor.check(same, step=1)
    alert = next(a for a in result.alerts if a.metric == "distinct_k")
    assert alert.severity == "critical" and "gold reference" in alert.message


def test_engine_keeps_groups_together_across_ranks_and_merges_exactly():
    gold = GoldSet.from_texts(_gold_texts())
    engine = GuardEngine(gold, tokenizer=lambda t: t.split(), generation=GenerationSettings(samples_per_prompt=3, num_samples=16), schedule=CheckSchedule(check_on_train_start=False))
    engine.setup()
    shares = [engine.prompts(r, 2) for r in range(2)]
    for share in shares:
        assert len(share) % 3 == 0
        assert all(np.array_equal(share[i], share[i + j]) for i in range(0, len(share), 3) for j in (1, 2))
    assert sum(len(s) for s in shares) == 48 and len(engine.prompts(0, 2, repeat=False)) == 8

    def fake(prompts):  # a deterministic "model": the j-th sample of a prompt differs from the others
        return [np.concatenate([p[:4], [int(p[0]) + j % 3, 7, j % 3]]) for j, p in enumerate(prompts)]

    whole = engine.monitor.measure(fake(engine.prompts(0, 1)))
    parts = [engine.monitor.measure(fake(s)) for s in shares]
    merged = parts[0].copy().merge(parts[1]).compute()
    single = whole.compute()
    for key in single:  # exact for the within metrics and counts; float sums to rounding elsewhere
        assert merged[key] == pytest.approx(single[key], rel=1e-9, abs=1e-12, nan_ok=True), key
    for key in ("distinct_k", "within_distinct_2", "within_similarity", "num_outputs"):
        assert merged[key] == single[key]


# ---------------------------------------------------------------- a guard without gold (GRPO groups)
def test_groups_and_reported_entropy_judged_against_the_runs_start():
    engine = GuardEngine(None, on_collapse="halt", generation=GenerationSettings(samples_per_prompt=4), schedule=CheckSchedule(check_on_train_start=False))
    engine.setup()
    # 24 prompts a check: the first check holds own_start_checks x min_outputs prompt groups, a start on its own
    healthy = [f"w{j} x{i} y{j}" for i in range(24) for j in range(4)]
    for step, entropy in enumerate([5.5, 5.4, 5.6, 5.3]):
        outcome = engine.run_check(lambda e=entropy: GeneratedBatch(
            sequences=healthy, reported={"policy_entropy": [e], "frac_reward_zero_std": [0.1]}), step=step, epoch=0)
        assert not outcome.result.alerts and not outcome.should_stop
    assert outcome.log_metrics["collapseguard/policy_entropy"] == 5.3
    collapsed = [f"the the x{i}" for i in range(24) for _ in range(4)]
    outcome = engine.run_check(lambda: GeneratedBatch(sequences=collapsed, reported={"policy_entropy": [0.03]}),
                               step=9, epoch=0)
    alerts = {a.metric: a for a in outcome.result.alerts}
    assert alerts["policy_entropy"].severity == "critical" and alerts["policy_entropy"].reference == 5.5
    assert alerts["distinct_k"].value == 1.0 and outcome.should_stop
    assert "entropy bonus" in alerts["policy_entropy"].message


def test_entropy_only_at_its_warn_bound_warns():
    th = Thresholds()
    monitor = CollapseMonitor(None, samples_per_prompt=2)
    for e in (4.0, 4.0, 4.0):  # checks of 24 prompt groups: each is judged alone, against a start of its own size
        monitor.evaluate(monitor.measure(["a", "b"] * 24, reported={"policy_entropy": [e]}))
    warn = monitor.evaluate(monitor.measure(["a", "b"] * 24, reported={"policy_entropy": [4.0 * th.entropy_warn - 0.1]}))
    assert [(a.metric, a.severity) for a in warn.alerts] == [("policy_entropy", "warn")]


# ---------------------------------------------------------------- chat gold sets
def chat_tokenizer():
    from collapseguard.demos.tiny import train_tokenizer

    pytest.importorskip("transformers")
    return train_tokenizer(_gold_texts(), vocab_size=300, chat=True)


def test_from_pairs_renders_prompts_with_the_chat_template():
    tok = chat_tokenizer()
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Topic {i}?"}]
               for i in range(10)]
    gold = GoldSet.from_pairs(prompts, _gold_texts()[:10])
    split = gold.split(tok, 16, 12)
    want = tok.apply_chat_template(prompts[0], add_generation_prompt=True, tokenize=True)
    want = want["input_ids"] if hasattr(want, "keys") else want
    assert split.prompts[0].tolist() == list(want)
    assert tok.decode(split.prompts[0].tolist()).endswith("assistant: ")
    assert split.continuations[0].tolist() == tok.encode(_gold_texts()[0], add_special_tokens=False)[:12]
    plain = GoldSet.from_pairs([f"Topic {i}?" for i in range(10)], _gold_texts()[:10]).split(None, 16, 12)
    assert len(plain.prompts[0]) == 3  # "Topic 0 ?" in words: no template, the prompt text itself


def test_from_chat_groups_responses_by_prompt_and_jsonl_round_trip(tmp_path):
    convs = [[{"role": "user", "content": f"q{i % 5}"}, {"role": "assistant", "content": f"answer {i}"}]
             for i in range(15)]
    gold = GoldSet.from_chat(convs)
    assert len(gold) == 5 and gold.responses[0] == ("answer 0", "answer 5", "answer 10")
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    loaded = GoldSet.from_chat_jsonl(path)
    assert loaded.fingerprint == gold.fingerprint and loaded.source == str(path)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"q": p[0][1], "a": list(r)}) + "\n"
                             for p, r in zip(gold.prompts, gold.responses, strict=True)))
    assert GoldSet.from_pairs_jsonl(pairs, prompt_field="q", response_field="a").fingerprint == gold.fingerprint
    assert GoldSet.from_texts(gold.texts).fingerprint != gold.fingerprint  # pairs hash their prompts too
    path.write_text(path.read_text().replace("answer 1", "answer Y"))  # the file changes under the run
    with pytest.raises(GoldSetModifiedError, match="changed on disk"):
        loaded.verify()


@pytest.mark.parametrize(("call", "match"), [
    (lambda: GoldSet.from_pairs(["a"] * 5, ["b"] * 4), r"GoldSet.from_pairs: prompts has 5 items but responses has 4"),
    (lambda: GoldSet.from_pairs(["a"] * 5, [["x", 3]] * 5), r"responses\[0\]\[1\] is int, expected a str"),
    (lambda: GoldSet.from_pairs([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]] * 5,
                                ["b"] * 5), r"prompts\[0\] ends with an assistant turn.*GoldSet.from_chat"),
    (lambda: GoldSet.from_pairs([[{"role": "bot", "content": "q"}]] * 5, ["b"] * 5), r"role 'bot'; use one of"),
    (lambda: GoldSet.from_pairs("question", ["b"]), r"prompts must be a list, got str"),
    (lambda: GoldSet.from_chat([[{"role": "user", "content": "q"}]] * 5), r"conversations\[0\] ends with 'user'"),
    (lambda: GoldSet.from_chat([[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": " "}]
                                for i in range(5)]), r"empty last assistant turn"),
    (lambda: GoldSet.from_pairs(["a", "b", "c"], ["x", "y", "z"]), r"3 distinct prompt\(s\); a gold set needs at least 4"),
    (lambda: CollapseMonitor(None), r"gold=None .* samples_per_prompt >= 2"),
    (lambda: GuardEngine(GoldSet.from_arrays(np.zeros((8, 2))), generation=GenerationSettings(samples_per_prompt=2)), r"an array gold set has no prompts to repeat"),
    (lambda: GuardEngine(None, generation=GenerationSettings(samples_per_prompt=0)), r"samples_per_prompt=0 is invalid: samples_per_prompt must be an int >= 1"),
])
def test_bad_input_is_refused_with_the_fix(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_pairs_jsonl_names_the_missing_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "q", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"no field 'response'; set response_field to the field that holds it"):
        GoldSet.from_pairs_jsonl(path)
