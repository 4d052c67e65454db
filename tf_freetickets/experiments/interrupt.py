"""SIGTERM stops a run at the end of the current epoch, after its checkpoint, so that a rerun resumes exactly.

Preemptible machines send SIGTERM and then, some seconds later, SIGKILL. The
training binary installs `install_sigterm_handler`; the handler only records
the signal (and says so on stderr), and `StopAtEpochEnd`, the last callback of
every `fit`, ends training once the epoch's checkpoint is written. The epoch is
the safe point because checkpoints, the data order and every schedule are
indexed by epoch: a mid-epoch checkpoint could not be resumed exactly. A
second SIGTERM ends the process at once (the default action), losing only the
current epoch, as a kill does.
"""

import os
import signal

import keras


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM at a safe point; the message says where and how to resume."""


_received = []  # names of the signals received, in order
_NOTICE = b"SIGTERM received: training stops after the current epoch's checkpoint is saved (send it again to stop at once).\n"


def install_sigterm_handler():
    """Makes SIGTERM stop training after the current epoch's checkpoint (see the module docstring).

    Call it in the main thread of the process (the training binary does);
    library users who call `experiments.run` directly may call it too.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame):
    del frame
    _received.append(signal.Signals(signum).name)
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    # os.write: a signal handler may interrupt a print on the same buffered stream.
    os.write(2, _NOTICE)


def received():
    """The name of the stop signal received ("SIGTERM"), or None."""
    return _received[0] if _received else None


class StopAtEpochEnd(keras.callbacks.Callback):
    """Raises `TrainingInterrupted` at the first epoch end (after its checkpoint) once SIGTERM was received.

    Put it last in `fit`'s callbacks, after the epoch checkpoint. It also stops
    a `fit` that would start after the signal, before its first epoch.

    Args:
      name: what is training, for the message (e.g. "member_1").
      directory: the checkpoint folder of this `fit`, for the message.
    """

    def __init__(self, name, directory):
        super().__init__()
        self.name = name
        self.directory = directory

    def on_train_begin(self, logs=None):
        if received():
            raise TrainingInterrupted(
                f"{received()} received before {self.name} trained on; its checkpoints are in {self.directory}: "
                "rerun the same command to resume exactly."
            )

    def on_epoch_end(self, epoch, logs=None):
        if received():
            raise TrainingInterrupted(
                f"{received()} received: {self.name} stopped at the end of epoch {epoch + 1}, after its checkpoint "
                f"({os.path.join(self.directory, f'ckpt-{epoch + 1}')}) was saved; rerun the same command to resume "
                "exactly from there."
            )
