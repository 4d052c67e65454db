"""The training time of a run, kept across resumes: wall seconds and this process's CPU seconds per epoch.

A run killed and resumed (a study longer than a machine's life, SIGTERM)
would otherwise report only the time since its last start. `TrainingClock`
writes the running totals after every epoch into `clock.json` beside the
run's epoch checkpoints, keyed by the number of finished epochs, and a
resume from checkpoint N continues from the totals after epoch N. Epochs
trained before the clock existed (a checkpoint with no entry) are counted in
`untimed_epochs`, so a total that misses them says so instead of passing for
the whole run's time.

CPU seconds are `time.process_time()`, every thread of this process: on a
shared machine they move far less than wall time with what else runs there.
"""

import json
import os
import time

import keras

CLOCK_FILE = "clock.json"


def _read_entries(path):
    """{finished epochs: [wall seconds, CPU seconds]} from `path`; {} when absent or unreadable."""
    try:
        with open(path) as f:
            return {int(epochs): [float(v) for v in totals] for epochs, totals in json.load(f).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


class TrainingClock(keras.callbacks.Callback):
    """Times each epoch of one `fit` (wall and process CPU seconds) and keeps the totals across resumes.

    Put it after the callbacks whose epoch-end work counts as training (mask
    updates, best-validation evaluation) and before the epoch checkpoint, so
    the totals after epoch N are on disk when checkpoint N is.

    Args:
      directory: the `fit`'s checkpoint folder; the totals go to `directory/clock.json`.
      initial_epoch: the epoch `fit` resumes after (0 for a fresh start).

    Attributes:
      wall_seconds, cpu_seconds: totals over the run's epochs so far.
      untimed_epochs: epochs before `initial_epoch` with no saved totals
        (trained before this clock existed): 0 when the totals are whole.
    """

    def __init__(self, directory, initial_epoch=0):
        super().__init__()
        self.path = os.path.join(directory, CLOCK_FILE)
        entries = _read_entries(self.path)
        start = entries.get(initial_epoch, [0.0, 0.0] if initial_epoch == 0 else None)
        self.untimed_epochs = 0 if start is not None else initial_epoch
        self.wall_seconds, self.cpu_seconds = start or (0.0, 0.0)
        # Entries past the resume point belong to epochs that will be trained again.
        self._entries = {epochs: totals for epochs, totals in entries.items() if epochs <= initial_epoch}
        self._started = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self._started
        self.wall_seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        self._entries[epoch + 1] = [self.wall_seconds, self.cpu_seconds]
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w") as f:
            json.dump({str(epochs): totals for epochs, totals in sorted(self._entries.items())}, f)
        os.replace(temporary, self.path)


def clock_totals(clocks):
    """{"train_seconds", "train_cpu_seconds", "untimed_epochs"} summed over the `fit`s of one run (`TrainingClock`s)."""
    return {
        "train_seconds": float(sum(c.wall_seconds for c in clocks)),
        "train_cpu_seconds": float(sum(c.cpu_seconds for c in clocks)),
        "untimed_epochs": int(sum(c.untimed_epochs for c in clocks)),
    }
