"""Every alert the detectors can raise, with its message as users read it: the table in docs/alerts.md.

Each signal of each detector is judged on values just past its warn bound (and, for the rise signals,
a history that sets their baseline), so the messages below are the detectors' own text. A test keeps
the document in step; ``python -m tests.test_alert_catalog`` rewrites it.
"""

from __future__ import annotations

import math
from pathlib import Path

from collapseguard.detection.detectors import DEFAULT_DETECTORS
from collapseguard.detection.thresholds import Thresholds

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "alerts.md"

# what each alert means and what to do (the message gives the numbers)
ACTIONS = {
    "tail_coverage": "Outputs contain fewer of gold's rare word types than a gold sample of the same size. Raise the human share; cut synthetic data; check filters that drop rare content.",
    "gold_ppl_tail": "The model finds rare gold tokens less likely than at its best, faster than common ones: the earliest sign of collapse, before outputs change. Act now: more human data, or roll back.",
    "tail_mass": "Fewer samples reach gold's tails (outside the ellipsoid holding 90% of gold). Raise the share of real data.",
    "gold_ppl": "The model fits all of gold worse than at its best (or than the reference profile). Mix in human data or roll back; if the training loss still falls, the model is fitting data unlike gold.",
    "distinct_2": "Fewer distinct bigrams than gold: outputs are generic and alike. Mix in human anchor data, roll back.",
    "vendi": "The effective number of distinct outputs shrank against gold. As above.",
    "compression_ratio": "Outputs compress much better than gold: they repeat each other. As above.",
    "self_bleu": "Outputs share n-grams with each other more than gold texts do. As above.",
    "total_variance": "Samples spread less than gold. Mix in real data, roll back.",
    "effective_rank": "Samples span fewer directions than gold. As above.",
    "gold_nll": "The model's likelihood of held-out gold samples fell from its best. As above.",
    "seq_rep_4": "Outputs repeat their own 4-grams: loops. Stop; roll back to the last healthy checkpoint. If most outputs hit the length limit from the first check, suspect EOS handling instead.",
    "loop_fraction": "Outputs end in a span repeated 3 or more times. As above.",
    "duplicate_fraction": "Different prompts get identical outputs. As above.",
    "overconfidence": "The model is surer of its next tokens than human text warrants (its NLL of gold tokens exceeds its own entropy there): its distribution narrowed. Mix in human data or roll back; a model fine-tuned long on little data shows it too (overfitting).",
    "distinct_k": "The k samples of one prompt hold fewer functionally distinct answers than gold's k human answers (or than at the run's start). Keep exploration: an entropy bonus, a diversity-preserving reward, a higher temperature or a KL penalty; or roll back.",
    "within_distinct_2": "Fewer distinct word bigrams among the samples of one prompt. As above.",
    "within_similarity": "The samples of one prompt resemble each other more than the reference's. As above.",
    "policy_entropy": "The RL policy's entropy on its own completions (TRL's `entropy`) fell far below its start: it is turning deterministic, and once entropy nears 0 the attainable reward is set (Cui et al. 2025). Add an entropy bonus, raise epsilon_high, add a KL penalty, lower the learning rate.",
    "pass_at_k": "RL with correctness (`correct=`): pass@k at the group size fell well below the run's best at the two latest points while pass@1 held: the policy narrows onto fewer answers and stopped sampling ones that were sometimes right (Yue et al. 2025). Keep exploration (entropy bonus, clip-higher, KL penalty, lower learning rate) or roll back.",
    "frac_mixed": "RL with correctness: groups with some right and some wrong samples, the only ones GRPO learns from, thinned out while both all-correct and all-wrong groups piled up: the groups polarise, and learning signal is running out. (A policy that learns empties the all-wrong groups or leaves them as few as they were; then this stays silent.) As above.",
    "far_mass": "Samples land far outside the real data (beyond the ellipsoid holding 99% of gold): garbage. As above.",
}


def _past(sig_kind: str, bound: float, ref: float) -> tuple[float, dict[str, float]]:
    """A value just past the warn bound and the reference that puts it there."""
    if sig_kind == "ratio":
        return ref * (bound - 0.02), {}
    if sig_kind == "inverse_ratio":
        return ref / (bound - 0.02), {}
    if sig_kind == "excess":
        return ref + bound + 0.02, {}
    if sig_kind == "log_rise":
        return ref + math.log(bound + 0.05), {}
    return ref * (bound + 0.05), {}


def catalog() -> list[tuple[str, str, str, str, str, str]]:
    """(kind of gold, phase, detector, metric, bounds, message) for every signal."""
    th = Thresholds()
    rows = []
    for kind in ("text", "array"):
        for det_cls in DEFAULT_DETECTORS:
            det = det_cls()
            for sig in det.signals(th, kind, {}):
                ref = 100.0 if sig.kind in ("rise", "log_rise") else 0.5
                value, _ = _past(sig.kind, sig.warn, ref)
                metrics = {sig.metric: value, "length_limit_fraction": 0.0}
                history = [{sig.metric: ref}]
                if sig.metric == "gold_ppl_tail":  # the head band held: a rare-token-specific loss
                    metrics["gold_ppl_head"], history[0]["gold_ppl_head"] = 50.0, 50.0
                # signals counted from the model before training are judged against that check (the default,
                # check_on_train_start=True): overconfidence's gold value 0 is a definition, never its reference
                baseline = history[0] if sig.from_start else None
                if det.name == "PolicyNarrowing":  # judged on pooled points of groups: the best, then two latest
                    side = {"num_groups": 1000.0, "pass_at_1": 0.5, "frac_all_correct": 0.1, "frac_all_wrong": 0.2}
                    side.update({"pass_at_k": 0.5} if sig.metric != "pass_at_k" else {})
                    history = [{**side, **history[0]}, {**side, **metrics}]
                    metrics.update(side, frac_all_correct=0.3, frac_all_wrong=0.4)
                findings = [f for f in det.judge(metrics, {sig.metric: ref}, history, th, kind, baseline=baseline) if
                            f.signal.metric == sig.metric]
                assert findings and findings[0].severity == "warn", (kind, sig.metric, findings)
                unit = {"ratio": "share of gold", "inverse_ratio": "gold / value", "excess": "excess over gold",
                        "rise": "x baseline", "log_rise": "perplexity x baseline"}[sig.kind]
                rows.append((kind, det.phase, det.name, sig.metric, f"{sig.warn:g} / {sig.critical:g} ({unit})",
                             findings[0].message))
    return rows


def render() -> str:
    lines = ["# Reading the warnings: every alert", "",
             "Generated from the detectors by `python -m tests.test_alert_catalog` (a test keeps it current).",
             "Each row is one signal; the message is the one the guard logs when the signal crosses its warn bound",
             "with the `balanced` thresholds (a critical alert reads the same, with the critical bound). Every",
             "message says the value, what it was judged against, the bound, the change since the first check,",
             "and what to try. Alerts go to the `collapseguard` logger (WARNING / ERROR) at every check while",
             "they persist (one console line each; `CollapseWarningHandler` adds a `CollapseWarning` when one first",
             "appears), and to the JSONL trail.", "",
             "| gold | phase | detector | metric | warn / critical | meaning and what to do |", "|---|---|---|---|---|---|"]
    for kind, phase, det, metric, bounds, _ in catalog():
        lines.append(f"| {kind} | {phase} | {det} | `{metric}` | {bounds} | {ACTIONS[metric]} |")
    lines += ["", "## The messages", ""]
    for kind, phase, _, metric, _, message in catalog():
        lines.append(f"- **{metric}** ({kind}, {phase}): `[collapseguard warn | {phase}: ...] {message}`")
    lines += ["", "Each check line of the trail (`\"type\": \"check\"`) holds `bounds`: per judged metric, the",
              "`reference` it was judged against, the `warn` and `critical` bounds in the metric's own units, and `direction`, the side of",
              "the bounds where the bad values lie: `\"low\"` (below: the `share of gold` rows) or `\"high\"`",
              "(above: the excess and baseline rows, and `compression_ratio`, whose bounds are gold / 0.75 and",
              "gold / 0.5: more compressible outputs are more alike)."]
    lines += ["", "Faults (`phase: fault`) say why a check could not run -- the exception a generation raised, no",
              "outputs, NaN samples, a gold set that changed (critical) -- and that training continues",
              "(`on_error=\"warn\"`); `docs/bad-input.md` lists what is refused before training starts.", ""]
    return "\n".join(lines)


def test_every_signal_has_a_message_and_an_action():
    rows = catalog()
    assert len({(r[0], r[3]) for r in rows}) == len(rows) >= 14
    for _, _, _, metric, _, message in rows:
        assert metric in message and metric in ACTIONS
        assert any(w in message for w in ("gold reference", "baseline", "gold", "level before training", "run's best"))


def test_docs_alerts_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), "run `python -m tests.test_alert_catalog` to update"


if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")
