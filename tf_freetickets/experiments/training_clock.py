"""The training time of a run, kept across resumes: wall seconds and this process's CPU seconds per epoch.

A run killed and resumed (a study longer than a machine's life, SIGTERM)
would otherwise report only the time since its last start. `TrainingClock`
writes the running totals after every epoch into `clock.json` beside the
run's epoch checkpoints, keyed by the number of finished epochs, and a
resume from checkpoint N continues from the totals after epoch N. Epochs
trained before the clock existed (a checkpoint with no entry, or an
unreadable file) are counted in `untimed_epochs`, saved with the totals so
that later resumes keep saying the totals miss them.

An epoch is timed from its first callback (`TrainingClock.start`, put first
in `fit`'s list) to the clock itself, put just before the epoch checkpoint:
the training steps, mask updates, validation and whatever the method's
callbacks do at epoch boundaries (EDST's exploration and its ticket saves
included); not the checkpoint write, and not the member export after `fit`.

CPU seconds are `time.process_time()`, every thread of this process: on a
shared machine they move far less than wall time with what else runs there.
"""

import json
import math
import os
import time

import keras

CLOCK_FILE = "clock.json"


def _read_entries(path):
    """{finished epochs: (wall seconds, CPU seconds, untimed epochs)} from `path`; {} when absent or unreadable.

    Entries of two values (files written before untimed epochs were saved) have 0 untimed epochs.
    """
    try:
        with open(path) as f:
            raw = json.load(f)
        entries = {}
        for epochs, values in raw.items():
            wall, cpu, untimed = (*values, 0) if len(values) == 2 else values
            if not (math.isfinite(wall) and math.isfinite(cpu) and wall >= 0 and cpu >= 0 and int(untimed) >= 0):
                return {}
            entries[int(epochs)] = (float(wall), float(cpu), int(untimed))
        return entries
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


class _EpochStart(keras.callbacks.Callback):
    """Starts the clock's epoch timer; first in `fit`'s callbacks so the whole epoch is timed."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def on_epoch_begin(self, epoch, logs=None):
        self.clock.started = (time.perf_counter(), time.process_time())


class TrainingClock(keras.callbacks.Callback):
    """Times each epoch of one `fit` (wall and process CPU seconds) and keeps the totals across resumes.

    Put `clock.start` first in `fit`'s callbacks and the clock itself just
    before the epoch checkpoint (module doc), so the totals after epoch N are
    on disk when checkpoint N is.

    Args:
      directory: the `fit`'s checkpoint folder; the totals go to `directory/clock.json`.
      initial_epoch: the epoch `fit` resumes after (0 for a fresh start).

    Attributes:
      wall_seconds, cpu_seconds: totals over the run's timed epochs so far.
      untimed_epochs: epochs of this run with no timing (trained before the
        clock existed): 0 when the totals are whole.
      start: the callback that starts each epoch's timer.
    """

    def __init__(self, directory, initial_epoch=0):
        super().__init__()
        self.path = os.path.join(directory, CLOCK_FILE)
        entries = _read_entries(self.path)
        start = entries.get(initial_epoch, (0.0, 0.0, 0) if initial_epoch == 0 else (0.0, 0.0, initial_epoch))
        self.wall_seconds, self.cpu_seconds, self.untimed_epochs = start
        # Entries past the resume point belong to epochs that will be trained again.
        self._entries = {epochs: totals for epochs, totals in entries.items() if epochs <= initial_epoch}
        self.start = _EpochStart(self)
        self.started = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.started is None:  # `start` is not in the callbacks: time from here
            self.started = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self.started
        self.started = None
        self.wall_seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        self._entries[epoch + 1] = (self.wall_seconds, self.cpu_seconds, self.untimed_epochs)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w") as f:
            json.dump({str(epochs): list(totals) for epochs, totals in sorted(self._entries.items())}, f)
        os.replace(temporary, self.path)


def clock_totals(clocks):
    """The training time of one run from the clocks of its `fit` calls.

    Args:
      clocks: `TrainingClock`s in call order; of several for one checkpoint
        folder (a `fit` called again on it) only the last counts, since each
        continues the totals of the one before.

    Returns:
      {"train_seconds": wall, "train_cpu_seconds": CPU, "untimed_epochs": epochs without timing}.
    """
    last = {clock.path: clock for clock in clocks}.values()
    return {
        "train_seconds": float(sum(c.wall_seconds for c in last)),
        "train_cpu_seconds": float(sum(c.cpu_seconds for c in last)),
        "untimed_epochs": int(sum(c.untimed_epochs for c in last)),
    }
