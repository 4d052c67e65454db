"""EDST: schedule layout, tickets at the scheduled steps, distinct masks at target sparsity."""

import warnings

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.ensembles import EDSTSchedule
from tf_freetickets.sparse import densities
from tf_freetickets.sparse.report import mask_overlap


def test_paper_layout_150_plus_3_by_100():
    schedule = EDSTSchedule(num_tickets=3, exploration_epochs=150, refinement_epochs=100)
    assert schedule.total_epochs == 450
    assert schedule.ticket_epochs == [249, 349, 449]
    assert schedule.global_exploration_epochs == [250, 350]
    # lr x1 in exploration; x0.1 then x0.01 in each refinement half (0.1 -> 0.01 -> 0.001).
    factors = {e: schedule.lr_factor(e) for e in (0, 149, 150, 199, 200, 249, 250, 299, 300, 449)}
    assert factors == {0: 1.0, 149: 1.0, 150: 0.1, 199: 0.1, 200: 0.01, 249: 0.01, 250: 0.1, 299: 0.1, 300: 0.01, 449: 0.01}
    assert [schedule.phase(e) for e in (0, 149, 150, 249, 250, 449)] == [-1, -1, 0, 0, 1, 2]


def test_imagenet_layout_warmup_and_three_learning_rate_steps():
    # FreeTickets' ImageNet code: 5 warm-up epochs, 30 exploration epochs at 0.1, then 4 phases of
    # 70 epochs at 0.01 (30), 0.001 (30), 0.0001 (10); tickets at epochs 100, 170, 240, 310.
    schedule = EDSTSchedule(4, 30, 70, (0.1, 0.01, 0.001), (30, 30, 10), warmup_epochs=5)
    assert schedule.total_epochs == 310
    assert schedule.ticket_epochs == [99, 169, 239, 309]
    assert schedule.global_exploration_epochs == [100, 170, 240]
    factors = [schedule.lr_factor(e) for e in (0, 4, 5, 29, 30, 59, 60, 89, 90, 99, 100, 309)]
    assert factors == pytest.approx([1 / 6, 5 / 6, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.1, 0.001])
    # Without explicit step lengths the phase is split evenly, the last step taking the remainder.
    even = EDSTSchedule(1, 0, 7, (0.1, 0.01, 0.001))
    assert [even.lr_factor(e) for e in range(7)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_tickets=0), "num_tickets"),
        (dict(refinement_epochs=1), "refinement_epochs"),
        (dict(exploration_epochs=-1), "exploration"),
        (dict(refinement_lr_factors=()), "at least one"),
        (dict(refinement_epochs=70, refinement_lr_factors=(0.1, 0.01, 0.001), refinement_lr_epochs=(30, 30)), "summing"),
        (dict(refinement_epochs=70, refinement_lr_factors=(0.1, 0.01), refinement_lr_epochs=(70, 0)), "positive"),
        (dict(exploration_epochs=3, warmup_epochs=4), "warmup_epochs"),
    ],
)
def test_bad_schedules_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EDSTSchedule(**kwargs)


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16,))
    x = keras.layers.Dense(64, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(64, activation="relu", name="fc2")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def _data(n=128):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype("float32")
    return x, (x[:, :4].argmax(1)).astype("int64")


class LearningRateLog(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.rates = getattr(self, "rates", []) + [float(self.model.optimizer.learning_rate.numpy())]


@pytest.mark.parametrize("updater_cls", [tft.SET, tft.RigL])
def test_edst_produces_m_distinct_tickets_at_scheduled_steps(tmp_path, updater_cls):
    x, y = _data()
    model = tft.sparsify(_mlp(), 0.8, seed=0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    updater = updater_cls(update_every=4, drop_fraction=0.5, decay="constant", end_fraction=1.0, seed=1)
    edst = tft.EDST(
        updater, num_tickets=3, exploration_epochs=2, refinement_epochs=2, export_dir=str(tmp_path),
        gradient_data=(x, y), verbose=0,
    )  # fmt: skip
    lrs = LearningRateLog()
    history = model.fit(x, y, batch_size=16, epochs=8, shuffle=False, verbose=0, callbacks=[edst, lrs])

    steps_per_epoch = 8
    assert [(t.index, t.epoch, t.step) for t in edst.tickets] == [(0, 3, 32), (1, 5, 48), (2, 7, 64)]
    assert history.history["edst_phase"] == [0, 0, 1, 1, 2, 2, 3, 3]
    np.testing.assert_allclose(lrs.rates, [0.1, 0.1, 0.01, 0.001, 0.01, 0.001, 0.01, 0.001], rtol=1e-6)
    assert steps_per_epoch * 8 == int(model.optimizer.iterations.numpy())

    shapes = [(name, mask.shape) for name, mask in edst.tickets[0].masks.items()]
    want = densities.layer_densities(shapes, 0.8)
    for ticket in edst.tickets:
        for name, mask in ticket.masks.items():
            assert mask.sum() == densities.active_count(mask.size, want[name])
        saved = keras.models.load_model(ticket.keras_path)
        assert mask_overlap(saved, ticket.masks) == 1.0
    overlaps = edst.ticket_overlaps()
    off_diagonal = overlaps[~np.eye(3, dtype=bool)]
    assert np.all(off_diagonal < 0.9), overlaps
    np.testing.assert_allclose(overlaps, overlaps.T)
    # The global exploration moves most of the mask: more changes in its epoch than in a plain epoch.
    changes = history.history["mask_changes"]
    assert changes[4] > changes[3] and changes[6] > changes[5]


def test_edst_checks_epochs_and_learning_rate_type():
    x, y = _data(32)
    model = tft.sparsify(_mlp(), 0.5)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    edst = tft.EDST(tft.SET(), num_tickets=2, exploration_epochs=1, refinement_epochs=2, verbose=0)
    with pytest.raises(ValueError, match=r"needs fit\(epochs=5\), got epochs=3"):
        model.fit(x, keras.utils.to_categorical(y, 4), epochs=3, verbose=0, callbacks=[edst])
    model.compile(keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, 10)), "mse")
    edst = tft.EDST(tft.SET(), num_tickets=2, exploration_epochs=1, refinement_epochs=2, verbose=0)
    with pytest.raises(ValueError, match="manage_learning_rate=False"):
        model.fit(x, keras.utils.to_categorical(y, 4), epochs=5, verbose=0, callbacks=[edst])


def _restart_run(initial_epoch=0, history=None):
    """An EDST run of 7 epochs x 4 steps (t_ex=1, t_re=2, M=3) with SET every 3 steps and restarts."""
    x, y = _data(64)
    model = tft.sparsify(_mlp(), 0.8, seed=0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    updater = tft.SET(update_every=3, drop_fraction=0.5, min_drop_fraction=0.005, end_fraction=1.0, seed=1)
    edst = tft.EDST(
        updater, num_tickets=3, exploration_epochs=1, refinement_epochs=2, restart_schedule_after_exploration=True,
        verbose=0,
    )  # fmt: skip
    if initial_epoch:
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(4 * initial_epoch)
    model.fit(x, y, batch_size=16, epochs=7, initial_epoch=initial_epoch, shuffle=False, verbose=0, callbacks=[edst])
    return edst


def test_imagenet_style_restarts_give_a_fresh_cosine_after_each_global_exploration():
    # FreeTickets' ImageNet/main.py: one cosine (0.5 -> 0.005) over exploration + the first refinement
    # phase (epochs 0-3 here, steps 1-12), then a fresh cosine over each later phase after its global
    # exploration (steps 13-20 and 21-28), updates every 3 steps to the end of training.
    edst = _restart_run()
    assert edst.updater.schedule.restart_steps == (12, 20)
    steps = [step for step, _, _ in edst.history]
    assert steps == [3, 6, 9, 12, 15, 18, 21, 24, 27]
    # 0.005 + 0.495 * (1 + cos(pi * t / T)) / 2 with (t, T) = (3, 12), (6, 12), (9, 12), (12, 12),
    # (3, 8), (6, 8), (1, 8), (4, 8), (7, 8).
    want = [0.427509, 0.2525, 0.077491, 0.005, 0.347214, 0.077491, 0.481160, 0.2525, 0.023840]
    assert [round(fraction, 6) for _, fraction, _ in edst.history] == want
    # Each update moves floor(fraction * active) weights per layer (at most: some regrow in place).
    assert all(sum(changed) > 0 for _, _, changed in edst.history)
    # Resuming at epoch 4 (step 16) with a new callback continues the same schedule.
    resumed = _restart_run(initial_epoch=4)
    assert [(s, round(f, 6)) for s, f, _ in resumed.history] == [(s, round(f, 6)) for s, f, _ in edst.history[5:]]


def test_restart_needs_a_cosine_updater_that_runs_to_the_end():
    with pytest.raises(ValueError, match="decay='cosine'"):
        tft.EDST(tft.SET(decay="constant"), num_tickets=2, restart_schedule_after_exploration=True)
    x, y = _data(32)
    model = tft.sparsify(_mlp(), 0.5)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    edst = tft.EDST(
        tft.SET(end_fraction=0.5), num_tickets=2, exploration_epochs=1, refinement_epochs=2,
        restart_schedule_after_exploration=True, verbose=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="end_fraction=1.0"):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[edst])


class _Snapshot(keras.callbacks.Callback):
    """Keeps weights, optimizer variables and the EDST state at the end of one epoch (a checkpoint)."""

    def __init__(self, edst, epoch):
        super().__init__()
        self.edst, self.epoch = edst, epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.weights = [v.numpy() for v in self.model.weights]
            self.optimizer = [v.numpy() for v in self.model.optimizer.variables]
            self.state = self.edst.get_state()


def _official_edst_run(snapshot_epoch=None, restore=None):
    x, y = _data(64)
    model = tft.sparsify(_mlp(), 0.8, seed=0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    updater = tft.sparse.freetickets_official(tft.RigL, update_every=3, drop_fraction=0.5, decay="constant", end_fraction=1.0)
    edst = tft.EDST(updater, num_tickets=2, exploration_epochs=1, refinement_epochs=2, verbose=0)
    callbacks = [edst]
    if snapshot_epoch is not None:
        callbacks.append(_Snapshot(edst, snapshot_epoch))
    initial_epoch = 0
    if restore is not None:
        model.optimizer.build(model.trainable_variables)
        for variable, value in zip(model.weights, restore.weights):
            variable.assign(value)
        for variable, value in zip(model.optimizer.variables, restore.optimizer):
            variable.assign(value)
        if restore.state is not None:
            edst.set_state(restore.state)
        initial_epoch = restore.epoch + 1
    model.fit(x, y, batch_size=16, epochs=5, initial_epoch=initial_epoch, shuffle=False, verbose=0, callbacks=callbacks)
    return model, callbacks[-1]


def test_step_batch_growth_resumes_exactly_at_a_global_exploration():
    # The global exploration at the start of epoch 3 grows by the last batch of epoch 2 (FreeTickets'
    # main_EDST.py reads weight.grad there); a checkpoint after epoch 2 carries that gradient.
    full, snapshot = _official_edst_run(snapshot_epoch=2)
    assert "step_gradient/0" in snapshot.state and float(snapshot.state["step_gradient/filled"]) > 0
    resumed, _ = _official_edst_run(restore=snapshot)
    for a, b in zip(tft.sparse.masked_layers(full), tft.sparse.masked_layers(resumed)):
        np.testing.assert_array_equal(a.kernel_mask.numpy(), b.kernel_mask.numpy())
        np.testing.assert_allclose(a.kernel_variable.numpy(), b.kernel_variable.numpy(), rtol=1e-5, atol=1e-6)
    snapshot.state = {k: v for k, v in snapshot.state.items() if not k.startswith("step_gradient/")}
    with pytest.raises(RuntimeError, match="last training batch"):
        _official_edst_run(restore=snapshot)


# -- BatchNorm statistics of the tickets --------------------------------------------


def _bn_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(32, name="fc1")(inputs))
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(keras.layers.Activation("relu")(x)))


def _tiny_bn_edst_run(tmp_path, **edst_kwargs):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(256, 16)) * 3 + 4).astype("float32")  # BatchNorm inputs far from the initial 0 / 1
    y = rng.integers(0, 4, 256)
    model = tft.sparsify(_bn_model(), 0.5, seed=0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    updater = tft.SET(update_every=2, drop_fraction=0.5, decay="constant", end_fraction=1.0, seed=0)
    edst = tft.EDST(updater, num_tickets=2, exploration_epochs=1, refinement_epochs=2, export_dir=str(tmp_path),
                    export_saved_model=False, verbose=0, **edst_kwargs)  # fmt: skip
    model.fit(x, y, batch_size=64, epochs=5, verbose=0, shuffle=False, callbacks=[edst])
    return edst, x


def test_edst_warns_once_when_a_ticket_keeps_stale_batchnorm_statistics(tmp_path):
    # 4 steps per epoch: ticket_0 after 12 steps keeps 0.99**12 = 89% of the initial statistics.
    with pytest.warns(UserWarning, match=r"ticket_0 is saved 12 steps after the start.*89%.*batchnorm_data") as record:
        _tiny_bn_edst_run(tmp_path)
    assert sum("BatchNorm moving statistics" in str(w.message) for w in record) == 1


def test_edst_recomputes_batchnorm_statistics_before_each_ticket_is_saved(tmp_path):
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices(np.zeros((8, 16), "float32")).batch(4).repeat()
    with pytest.raises(ValueError, match="endless dataset; pass batchnorm_batches"):
        tft.EDST(tft.SET(), batchnorm_data=batches)
    with pytest.raises(ValueError, match="batchnorm_batches must be a positive int"):
        tft.EDST(tft.SET(), batchnorm_data=batches, batchnorm_batches=0)
    rng = np.random.default_rng(1)
    data = [(rng.normal(size=(64, 16)) * 3 + 4).astype("float32") for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no stale-statistics warning
        edst, _ = _tiny_bn_edst_run(tmp_path, batchnorm_data=data + data, batchnorm_batches=3)
    for ticket in edst.tickets:
        saved = keras.models.load_model(ticket.keras_path)
        bn = saved.get_layer("bn")
        before_bn = keras.Model(saved.input, bn.input)
        means = [before_bn(x).numpy().mean(axis=0) for x in data]  # equal weight per batch, SWA's bn_update
        variances = [before_bn(x).numpy().var(axis=0) for x in data]
        np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(means, axis=0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean(variances, axis=0), rtol=1e-4, atol=1e-4)
