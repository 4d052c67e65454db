"""Models on integer inputs (token ids) export as members, as ensembles and as EDST tickets; a failed ticket save is retried."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.deploy import saved_model
from tf_freetickets.deploy.saved_model import export_member
from tf_freetickets.experiments import runner, workdir
from tf_freetickets.experiments.config import fashion_mnist_defaults

needs_data = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")
VOCABULARY, LENGTH = 20, 5


def _token_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(VOCABULARY, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(x)))
    with pytest.warns(UserWarning, match="embedding not masked"):
        return tft.sparsify(model, 0.5, seed=seed)


def _tokens(n=6):
    return np.random.default_rng(0).integers(0, VOCABULARY, (n, LENGTH)).astype("int32")


def test_member_with_integer_inputs_exports_and_checks_its_range(tmp_path):
    model, x = _token_model(), _tokens()
    loaded = tf.saved_model.load(export_member(model, str(tmp_path / "member"), input_range=(0, VOCABULARY - 1)))
    np.testing.assert_allclose(loaded.serve(x).numpy(), model.predict(x, verbose=0), atol=1e-6)
    assert loaded.serve(x[:0]).shape == (0, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inputs must be integers in \[0, 19\]"):
        loaded.serve(x + VOCABULARY)


def test_float_inputs_are_still_checked_for_nan():
    x = tf.constant([[np.nan]], tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        saved_model.checked_inputs(x)
    assert saved_model.checked_inputs(tf.constant([[7]], tf.int64)).dtype == tf.int64


def test_ensemble_with_integer_inputs_exports(tmp_path):
    members, x = [_token_model(0), _token_model(1)], _tokens()
    ensemble = tft.EnsembleModel(members)
    loaded = tf.saved_model.load(ensemble.export(str(tmp_path / "ensemble")))
    np.testing.assert_allclose(loaded.serve(x).numpy(), ensemble.predict(x, verbose=0), atol=1e-6)
    assert loaded.member_probabilities(x).shape == (2, 6, 3)


def test_edst_exports_integer_input_tickets(tmp_path):
    model, x = _token_model(), _tokens(32)
    y = x[:, 0] % 3
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    edst = tft.EDST(
        tft.SET(update_every=2, drop_fraction=0.5, decay="constant", end_fraction=1.0, seed=0), num_tickets=2,
        exploration_epochs=0, refinement_epochs=2, export_dir=str(tmp_path), verbose=0,
    )  # fmt: skip
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[edst])
    assert [os.path.basename(t.saved_model_path) for t in edst.tickets] == ["ticket_0", "ticket_1"]
    loaded = tf.saved_model.load(edst.tickets[1].saved_model_path)
    np.testing.assert_allclose(loaded.serve(x).numpy(), model.predict(x, verbose=0), atol=1e-5)


def small_edst_config():
    """EDST, 2 tickets, 0 + 2 x 2 epochs of 4 steps: ticket_0 after epoch 2, ticket_1 after epoch 4."""
    config = fashion_mnist_defaults()
    config.train_examples, config.batch_size, config.width, config.verbose = 256, 64, 0.25, 0
    config.optimizer.schedule = "constant"
    config.sparse.update(method="set", sparsity=0.8, update_every=2, drop_fraction=0.5, decay="constant", end_fraction=1.0)
    config.ensemble.update(kind="edst", num_members=2, exploration_epochs=0, refinement_epochs=2)
    return config


@pytest.mark.slow
@needs_data
def test_a_failed_ticket_save_is_retried_by_the_rerun(tmp_path, monkeypatch, capsys):
    calls = []

    def fail_on_the_second_ticket(model, path, input_range=None):
        calls.append(os.path.basename(path))
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        return export_member(model, path, input_range)

    monkeypatch.setattr(saved_model, "export_member", fail_on_the_second_ticket)
    with pytest.raises(OSError, match="injected"):
        runner.run(small_edst_config(), str(tmp_path))
    assert not os.path.exists(tmp_path / "members" / workdir.MANIFEST_NAME)
    results = runner.run(small_edst_config(), str(tmp_path))
    assert "Resuming edst after epoch 3" in capsys.readouterr().out  # the ticket epoch is trained again, then saved
    assert calls == ["ticket_0", "ticket_1", "ticket_1"]
    assert [os.path.basename(p) for p in workdir.manifest_members(str(tmp_path))] == ["ticket_0.keras", "ticket_1.keras"]
    assert os.path.exists(tmp_path / "members" / "ticket_1" / "saved_model.pb") and results["accuracy"] > 0
