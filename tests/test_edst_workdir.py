"""An EDST workdir moved or copied mid-run resumes from any folder with its own tickets, never the original's."""

import glob
import os
import shutil

import numpy as np
import pytest

from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.deploy import saved_model
from tf_freetickets.experiments import runner, workdir
from tf_freetickets.experiments.config import fashion_mnist_defaults

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}"),
]


def _config():
    """EDST, 2 tickets, 0 + 2 x 2 epochs of 4 steps: ticket_0 after epoch 2, ticket_1 after epoch 4."""
    config = fashion_mnist_defaults()
    config.train_examples, config.batch_size, config.width, config.verbose = 256, 64, 0.25, 0
    config.optimizer.schedule = "constant"
    config.sparse.update(method="set", sparsity=0.8, update_every=2, drop_fraction=0.5, decay="constant", end_fraction=1.0)
    config.ensemble.update(kind="edst", num_members=2, exploration_epochs=0, refinement_epochs=2)
    return config


def _stop_at_the_second_ticket(monkeypatch):
    real, calls = saved_model.export_member, []

    def export(model, path, input_range=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is stopped after ticket_0 and the epoch-3 checkpoint
        return real(model, path, input_range)

    monkeypatch.setattr(saved_model, "export_member", export)
    return calls


def test_a_copied_workdir_resumes_from_another_folder_with_its_own_tickets(tmp_path, monkeypatch):
    launch, elsewhere = tmp_path / "launch", tmp_path / "elsewhere"
    launch.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(launch)
    calls = _stop_at_the_second_ticket(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        runner.run(_config(), "run")  # a relative --workdir, as typed on a command line
    copy = tmp_path / "copies" / "run"
    shutil.copytree(launch / "run", copy)
    # The original's ticket is damaged: a copy that read it (or any path under the launch folder) fails.
    (launch / "run" / "members" / "ticket_0.keras").write_bytes(b"not this run's ticket")

    monkeypatch.chdir(elsewhere)
    runner.run(_config(), os.path.join("..", "copies", "run"))
    assert [os.path.basename(p) for p in calls] == ["ticket_0", "ticket_1", "ticket_1"]
    members = workdir.manifest_members(str(copy))
    assert [os.path.relpath(p, copy) for p in members] == ["members/ticket_0.keras", "members/ticket_1.keras"]
    # The checkpointed state names the tickets by file name only, and the copy made no new files under launch/.
    newest = max(glob.glob(str(copy / "checkpoints" / "edst" / "callback_state-*.npz")))
    with np.load(newest) as state:
        stored = [str(p) for key in state.files if key.endswith("/paths") for p in state[key]]
    assert sorted(stored) == ["ticket_0", "ticket_0.keras", "ticket_1", "ticket_1.keras"]
    assert not (launch / "copies").exists() and not (elsewhere / "run").exists()
