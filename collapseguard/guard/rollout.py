"""A framework-neutral guard for RL rollouts: observe the groups, observe the policy's statistics, check.

RL post-training (GRPO and its kin, in TRL, verl, OpenRLHF) samples a *group* of completions for every prompt and
scores each one. The guard needs nothing else: the groups' within-prompt diversity, their correctness where a
verifiable reward says right or wrong (pass@k, and how groups split into all-correct, mixed and all-wrong), and the
statistics the trainer logs anyway (the policy's entropy, the share of groups with no reward spread). No generation
of its own.

Three calls, whatever the framework::

    guard = RolloutGuard(group_size=8, on_collapse="halt")
    guard.observe_groups(prompts, completions, correct=flags)   # every rollout batch (or rewards=, correct_above=)
    guard.observe_stats(entropy=4.1)                            # whatever the trainer logs
    outcome = guard.check(step)                                 # when it suits: outcome.should_stop, log_metrics

``group_ids`` (verl's ``uid``) groups completions that do not arrive one prompt after another. The TRL adapter
(:class:`~collapseguard.integrations.trl.GRPOCollapseGuard`) is these three calls on TRL's hooks; ``docs/rl.md``
shows them in verl's and OpenRLHF's places.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

from collapseguard._deprecation import deprecate_kwargs
from collapseguard._validation import InstanceOf, Interval, OneOf, validate
from collapseguard.guard.engine import CheckOutcome, GeneratedBatch, GuardEngine
from collapseguard.guard.generation import GenerationSettings
from collapseguard.guard.halting import HaltPolicy
from collapseguard.guard.options import merged_on_collapse
from collapseguard.guard.schedule import CheckSchedule

logger = logging.getLogger("collapseguard")

STATS = {"entropy": "policy_entropy", "policy_entropy": "policy_entropy",
         "frac_reward_zero_std": "frac_reward_zero_std"}
"""The statistics :meth:`RolloutGuard.observe_stats` takes (the trainer's name -> the guard's metric)."""


class RolloutGuard:
    """Judge an RL run's rollouts (groups of ``group_size`` samples per prompt) for collapse; warn or halt.

    Judged against the run's own start (there is no human answer for the trainer's prompts): within-group diversity
    (``distinct_k``, ``within_distinct_2``, ``within_similarity``), the policy's entropy, and, with correctness,
    pass@1 ... pass@``group_size`` (unbiased, from the groups themselves) and the split of groups into all-correct,
    mixed and all-wrong.

    Args:
        group_size: samples per prompt (GRPO's ``num_generations``, verl's ``rollout.n``).
        thresholds: a :class:`~collapseguard.Thresholds`, preset name, dict or file.
        on_collapse: ``"warn"``, or ``"halt"`` / :class:`~collapseguard.HaltPolicy` (:attr:`CheckOutcome.should_stop`
            after ``patience`` consecutive critical checks).
        on_error: ``"warn"`` (a check that fails becomes a fault alert) or ``"raise"``.
        alert_log: append the guard's JSONL trail here.
        tokenizer: decodes completions given as token ids (texts need none).
        caller: the name messages give the guard (an adapter passes its own).

    Raises:
        ValueError / TypeError: naming the argument, its value and the fix.
    """

    @deprecate_kwargs({"patience": "on_collapse.patience"}, merge={"on_collapse": merged_on_collapse})
    def __init__(self, group_size: int, *, thresholds: Any = None,
                 on_collapse: Literal["warn", "halt"] | HaltPolicy = "warn", on_error: Literal["warn", "raise"] = "warn",
                 alert_log: str | Path | None = None, tokenizer: Any = None, caller: str = "RolloutGuard") -> None:
        validate(caller, "group_size", group_size, Interval(int, 2, None),
                 fix="pass the number of samples of each prompt (GRPO's num_generations); a group of one has no "
                     "within-prompt diversity and no pass@k beyond pass@1")
        validate(caller, "on_collapse", on_collapse, OneOf("warn", "halt"), InstanceOf(HaltPolicy, name="a HaltPolicy"),
                 fix="an RL trainer draws its own samples: there is no data sampler to reweight")
        self.caller = caller
        self.group_size = group_size
        self.engine = GuardEngine(None, thresholds=thresholds, on_collapse=on_collapse, on_error=on_error,
                                  alert_log=alert_log, generation=GenerationSettings(samples_per_prompt=group_size),
                                  score_gold=False, schedule=CheckSchedule(check_on_train_start=False), caller=caller)
        self.tokenizer = tokenizer
        self._texts: list[Any] = []
        self._correct: list[bool] = []
        self._judged_correctness: bool | None = None  # fixed by the first observed batch: all groups, or none
        self._stats: dict[str, list[float]] = {}
        self._waiting: list[tuple[Any, Any, bool | None, Any]] = []  # (prompt, completion, correct, group id)
        self._by_id = False
        self._skipped = 0

    def setup(self, *, rank: int = 0, world_size: int = 1, max_new_tokens: int | None = None) -> RolloutGuard:
        """Build the monitor (called by the first check if not before). ``max_new_tokens``: the trainer's completion
        length cap, so outputs are measured as generated."""
        if self.engine.monitor is None:
            self.engine.max_new_tokens = int(max_new_tokens or 10**6)
            self.engine.setup(self.tokenizer, rank=rank, world_size=world_size)
        return self

    # ------------------------------------------------------------------ observing
    def observe_groups(self, prompts: Sequence[Any], completions: Sequence[Any], *,
                       correct: Sequence[bool] | None = None, rewards: Sequence[float] | None = None,
                       correct_above: float | None = None, group_ids: Sequence[Hashable] | None = None) -> None:
        """Keep one rollout batch until the next check.

        Args:
            prompts: each completion's prompt (any value that compares equal within a group: text, messages, ids).
            completions: the sampled completions, texts or token ids.
            correct: each completion judged right (True) or wrong; or give ``rewards`` and ``correct_above``.
            rewards: each completion's verifiable reward; with ``correct_above``, right means reward >= it.
            group_ids: each completion's group (verl's ``uid``); without them a group is ``group_size`` completions
                in a row with one prompt.

        A group cut across two calls (a trainer that scores micro-batches) is joined once its other part arrives; one
        that cannot be ``group_size`` completions of one prompt is skipped (said once). Give correctness for
        every batch or for none: pass@k is an average over groups, and a mix would weigh some batches twice.
        """
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"{self.caller}.observe_groups: {len(prompts)} prompts for {n} completions: pass each "
                             "completion's prompt")
        flags = self._flags(n, correct, rewards, correct_above)
        ids = list(group_ids) if group_ids is not None else None
        if ids is not None and len(ids) != n:
            raise ValueError(f"{self.caller}.observe_groups: {len(ids)} group_ids for {n} completions")
        if (ids is not None) != self._by_id and self._waiting:
            raise ValueError(f"{self.caller}.observe_groups: pass group_ids= for every batch or for none")
        if self._judged_correctness is not None and self._judged_correctness != (flags is not None):
            given = "earlier batches but not this one" if self._judged_correctness else "this batch but not earlier ones"
            raise ValueError(f"{self.caller}.observe_groups: correctness was given for {given}: pass correct= (or "
                             "rewards= with correct_above=) for every batch, or for none")
        self._judged_correctness = flags is not None
        self._by_id = ids is not None
        self._waiting.extend(zip(prompts, completions, flags or [None] * n, ids or [None] * n, strict=True))
        self._collect()

    def observe_stats(self, **stats: float) -> None:
        """Keep statistics the trainer logs (``entropy`` or ``policy_entropy``, ``frac_reward_zero_std``); each
        check judges their mean since the last one. Values that are not numbers are ignored."""
        unknown = sorted(set(stats) - set(STATS))
        if unknown:
            raise ValueError(f"{self.caller}.observe_stats: {unknown} are not known: pass {sorted(STATS)}")
        for name, value in stats.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._stats.setdefault(STATS[name], []).append(float(value))

    @property
    def pending_groups(self) -> int:
        """Whole groups observed since the last check."""
        return len(self._texts) // self.group_size

    # ------------------------------------------------------------------ checking
    def check(self, step: int | None, epoch: int | None = None) -> CheckOutcome:
        """Judge what was observed since the last check; act on :attr:`CheckOutcome.should_stop` and log
        :attr:`CheckOutcome.log_metrics` (``collapseguard/...``)."""
        self.setup()
        texts, correct, stats = self._texts, self._correct, self._stats
        self._texts, self._correct, self._stats = [], [], {}

        def produce() -> GeneratedBatch:
            return GeneratedBatch(sequences=texts, reported=stats or None,
                                  correct=correct if self._judged_correctness else None)

        return self.engine.run_check(produce, step=step, epoch=epoch)

    def own_start(self, metric: str) -> float | None:
        """The run's own start of ``metric``: the mean of its first ``own_start_checks`` checks (None until there
        are that many), e.g. the policy entropy at which the run still explored (the steer policy's ceiling)."""
        n = self.engine.thresholds.own_start_checks
        monitor = self.engine.monitor
        values = [h["metrics"][metric] for h in (monitor.checks if monitor else []) if metric in h["metrics"]][:n]
        return sum(values) / n if len(values) == n else None

    def state_dict(self) -> dict[str, Any]:
        """The guard's history and counters, JSON-ready: save it with the trainer's checkpoint."""
        return self.engine.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (the same thresholds and group size)."""
        self.setup()
        self.engine.load_state_dict(state)

    # ------------------------------------------------------------------ helpers
    def _flags(self, n: int, correct: Sequence[bool] | None, rewards: Sequence[float] | None,
               correct_above: float | None) -> list[bool] | None:
        if correct is not None and rewards is not None:
            raise ValueError(f"{self.caller}.observe_groups: pass correct= or rewards= with correct_above=, not both")
        if rewards is not None:
            if correct_above is None:
                raise ValueError(f"{self.caller}.observe_groups: rewards= needs correct_above=, the reward at which a "
                                 "completion counts as right (1.0 for an exact-answer reward)")
            correct = [float(r) >= correct_above for r in rewards]
        elif correct_above is not None:
            raise ValueError(f"{self.caller}.observe_groups: correct_above= reads rewards=: pass both")
        if correct is None:
            return None
        if len(correct) != n:
            raise ValueError(f"{self.caller}.observe_groups: {len(correct)} correctness values for {n} completions")
        return [bool(c) for c in correct]

    def _collect(self) -> None:
        """Move every whole group out of the waiting items; a group a batch cut in two (a trainer that scores
        micro-batches) waits for its other part. Without ``group_ids`` a group is ``group_size`` items in a row with
        one prompt; items that cannot be one (a prompt that changes early) are dropped, said once."""
        k, items = self.group_size, self._waiting
        whole: list[list[tuple[Any, Any, bool | None, Any]]] = []
        skipped = 0
        if self._by_id:
            by_id: dict[Hashable, list[tuple[Any, Any, bool | None, Any]]] = {}
            for item in items:
                by_id.setdefault(item[3], []).append(item)
            rest = []
            for group in by_id.values():
                if len(group) > k or (len(group) == k and any(it[0] != group[0][0] for it in group)):
                    skipped += 1
                elif len(group) == k:
                    whole.append(group)
                else:
                    rest.extend(group)
        else:
            i = 0
            while len(items) - i >= k:
                chunk = items[i:i + k]
                same = next((j for j, it in enumerate(chunk) if it[0] != chunk[0][0]), k)
                if same == k:
                    whole.append(chunk)
                    i += k
                else:  # a group shorter than group_size: drop it and start again at the next prompt
                    skipped += 1
                    i += same
            rest = items[i:]
        self._waiting = rest
        for group in whole:
            self._texts.extend(it[1] for it in group)
            if self._judged_correctness:
                self._correct.extend(bool(it[2]) for it in group)
        if skipped and not self._skipped:
            logger.warning("%s: %d group(s) were not %d completions of one prompt and are skipped%s", self.caller,
                           skipped, k, "" if self._by_id else
                           " (pass group_ids= when a group's completions do not arrive one after another)")
        self._skipped += skipped


__all__ = ["STATS", "RolloutGuard"]
