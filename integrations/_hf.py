"""What the Hugging Face ``Trainer`` does not offer a callback, in one place: where checkpoints go, where the guard's
state rides along with them, and running before the ``report_to`` integrations.

Two limits of HF's callback API force these, and ``tests/test_transformers.py`` holds a test for each that fails
when HF changes the behaviour they rely on:

- HF restores a stateful callback (``ExportableState``) by building a new one from JSON arguments,
  ``type(cb)(**stored_args)``. A guard holds a gold set, a tokenizer and a sampler, which no JSON rebuilds, so the
  guards keep their state in a file of their own inside each checkpoint folder and load it back into the instance the
  user passed. HF names the folder but tells callbacks neither its path when saving nor the one it resumes from:
  :func:`checkpoint_folder` derives it as the Trainer does (``output_dir/checkpoint-<step>``).
- HF calls callbacks in list order and puts the ``report_to`` integrations before the user's callbacks, so metrics a
  callback adds to ``logs`` in ``on_log`` reach ``state.log_history`` but not those integrations. HF has no API to
  order callbacks; :func:`run_before_reporters` moves the guard to the front of ``trainer.callback_handler.callbacks``
  (a public attribute) when the user hands the guard its trainer (``guard.attach(trainer)``, as TRL's callbacks take
  ``trainer=``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from transformers import TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

log = logging.getLogger("collapseguard")

STATE_FILE = "collapseguard_{name}.json"


def checkpoint_folder(args: TrainingArguments, step: int) -> str:
    """The folder the Trainer saves the checkpoint of optimizer step ``step`` in (``output_dir/checkpoint-<step>``)."""
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")


def save_state(args: TrainingArguments, state: TrainerState, name: str, payload: dict[str, Any]) -> None:
    """Write a guard's state into the checkpoint just saved (``on_save``; the main process writes it)."""
    if not state.is_world_process_zero:
        return
    folder = checkpoint_folder(args, state.global_step)
    if not os.path.isdir(folder):  # a Trainer that saved elsewhere: say so rather than lose the state silently
        log.warning("%s: no checkpoint folder at %s to save its state in; a resumed run starts its guard afresh",
                    name, folder)
        return
    path = os.path.join(folder, STATE_FILE.format(name=name))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f)
    os.replace(tmp, path)  # a run killed mid-write leaves the previous file whole


def load_state(args: TrainingArguments, state: TrainerState, name: str) -> dict[str, Any] | None:
    """The state a guard saved in the checkpoint this run resumes from (``on_train_begin``), or None when the run
    starts fresh or ``restore_callback_states_from_checkpoint`` is off (HF's switch for every callback's state)."""
    if state.global_step == 0 or not getattr(args, "restore_callback_states_from_checkpoint", False):
        return None
    path = os.path.join(checkpoint_folder(args, state.global_step), STATE_FILE.format(name=name))
    if not os.path.isfile(path):
        log.warning("%s: resuming at step %d, but %s holds no guard state (a checkpoint from another output_dir, or "
                    "one saved without the guard): the guard starts afresh", name, state.global_step, path)
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_before_reporters(trainer: Any, callback: Any) -> None:
    """Put ``callback`` first in ``trainer``'s callback list, so the metrics it adds in ``on_log`` reach the
    ``report_to`` integrations (which HF registers before user callbacks) in the same log."""
    callbacks = trainer.callback_handler.callbacks
    if callback in callbacks:
        callbacks.remove(callback)
    callbacks.insert(0, callback)


class Attachable:
    """``attach(trainer)`` for a guard's HF callback (both guards share it)."""

    _attached = False

    def attach(self, trainer: Any) -> Any:
        """Run this guard first among ``trainer``'s callbacks (adding it if it is not there yet), so its metrics
        reach the ``report_to`` integrations in the same log. Returns the guard."""
        run_before_reporters(trainer, self)
        self._attached = True
        return self


def warn_unattached(args: TrainingArguments, name: str, attached: bool) -> None:
    """Say once, at train begin, that ``report_to`` integrations will miss the guard's metrics."""
    reporters = [r for r in (args.report_to or []) if r != "none"]
    if reporters and not attached:
        log.warning("%s: report_to=%s integrations run before user callbacks in the Trainer, so they miss the "
                    "guard's collapseguard/* metrics (state.log_history and evaluation metrics have them). Call "
                    "guard.attach(trainer) after building the trainer to put the guard first", name, reporters)
