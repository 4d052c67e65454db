"""Only the run that wrote a member file may certify it in the manifest.

EDST writes its tickets while it trains, possibly in an earlier process than
the one that finishes the run (a resume), and a finished run's rerun reloads
them from disk. Hashing whatever lies in `members/` at the end would certify a
ticket someone replaced with another valid one and recompute results.json
from it. `TicketLedger` records each ticket file's size and SHA-256 in the
epoch at which EDST writes it, in the checkpointed callback state, and
`verify` refuses any ticket that differs before it is loaded or listed.
"""

import os

import keras
import numpy as np

from tf_freetickets.experiments import workdir as workdirs


class TicketLedger(keras.callbacks.Callback):
    """Records the size and SHA-256 of each ticket file an `EDST` callback writes, as it writes it.

    Put it after the EDST callback (and before the epoch checkpoint), so that
    its state, saved with every checkpoint, holds exactly the tickets that
    checkpoint's EDST state names.

    Args:
      edst: the run's `ensembles.EDST` callback (its `tickets` give the files).
    """

    def __init__(self, edst):
        super().__init__()
        self.edst = edst
        self.entries = {}  # file name -> (bytes, sha256)

    def on_epoch_end(self, epoch, logs=None):
        for ticket in self.edst.tickets:
            name = os.path.basename(ticket.keras_path or "")
            if name and name not in self.entries:
                self.entries[name] = (os.path.getsize(ticket.keras_path), workdirs.file_sha256(ticket.keras_path))

    def get_state(self):
        """The recorded files, sizes and digests as arrays (for `checkpointing.EpochCheckpoint`)."""
        names = sorted(self.entries)
        return {
            "files": np.asarray(names, dtype=str),
            "bytes": np.asarray([self.entries[n][0] for n in names], dtype=np.int64),
            "sha256": np.asarray([self.entries[n][1] for n in names], dtype=str),
        }

    def set_state(self, state):
        """Restores the entries a checkpoint saved (none in a checkpoint written before the ledger existed)."""
        files = state.get("files", ())
        self.entries = {str(f): (int(b), str(s)) for f, b, s in zip(files, state.get("bytes", ()), state.get("sha256", ()))}

    def verify(self, paths, workdir):
        """Raises `WorkdirError` unless every ticket file in `paths` is the one this run wrote.

        A ticket the ledger never saw (a checkpoint written before it
        existed) is checked against the finished run's manifest instead; with
        neither, it cannot be certified and is refused.
        """
        manifest = workdirs.manifest_entries(os.path.join(workdir, "members"))
        for path in paths:
            name = os.path.basename(path)
            expected = self.entries.get(name) or manifest.get(name)
            if expected is None:
                raise workdirs.WorkdirError(
                    f"Ticket {path} was not written by this run's checkpointed state (no size or SHA-256 recorded), "
                    f"so its results cannot be certified; use a new --workdir (or delete {workdir}) to start fresh."
                )
            size = os.path.getsize(path) if os.path.isfile(path) else None
            if size != expected[0] or workdirs.file_sha256(path) != expected[1]:
                found = "missing" if size is None else f"{size} bytes, the run wrote {expected[0]}, SHA-256 differs"
                raise workdirs.WorkdirError(
                    f"Ticket {path} is not the file this run wrote ({found}): it was replaced or damaged after it was "
                    f"saved; put the run's own file back, or use a new --workdir (or delete {workdir}) to start fresh. "
                    "Nothing was rewritten."
                )
