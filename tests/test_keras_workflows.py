"""Users' own Keras models and workflows: attention, recurrent, frozen, subclassed, mixed
precision, callback order, steps_per_execution, a second fit, clone_model."""

import warnings

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.sparse import densities
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.optimizer_slots import slots_for


def attention_lstm_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embed")(inputs)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = keras.layers.LSTM(5, name="lstm")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def mlp(units=16):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(units, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(units, activation="relu", name="fc2")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def toy_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 4, n)


def compiled(model, optimizer=None, **kwargs):
    optimizer = optimizer or keras.optimizers.SGD(0.05, momentum=0.9)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)
    return model


def masks_of(model):
    return {name: mask.copy() for name, mask in tft.sparse.report.model_masks(model).items()}


# -- 1. attention and recurrent models ----------------------------------------


def test_attention_projections_are_masked_and_recurrent_kernels_are_named_and_left_out(tmp_path):
    model = attention_lstm_model()
    with pytest.warns(UserWarning) as caught:
        sparse = tft.sparsify(model, 0.8, seed=0)
    message = str(caught[0].message)
    for path in ("embed/embeddings", "lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel"):
        assert path in message
    rows = tft.sparse.sparsity_rows(sparse)
    assert sorted(row.name for row in rows) == ["head", "mha/attention_output", "mha/key", "mha/query", "mha/value"]
    want = densities.layer_densities([(row.name, row.shape) for row in rows], 0.8, "erk")
    for row in rows:
        assert row.active == densities.active_count(row.total, want[row.name]), row.name
    # The sparsity asked for is the one measured over the masked kernels.
    assert tft.global_sparsity(sparse) == pytest.approx(0.8, abs=0.01)
    table = tft.sparsity_table(sparse).splitlines()
    notes = {line.split()[0]: line for line in table[1:-1]}
    assert "not masked: recurrent layer (LSTM)" in notes["lstm/lstm_cell/recurrent_kernel"]
    assert "not masked: embedding" in notes["embed/embeddings"]
    assert len(notes) == 8
    # The attention layer computes with its masked kernels, and they survive a .keras round trip.
    query = sparse.get_layer("mha")._query_dense
    assert masking.is_masked(query) and np.all(query.kernel_variable.numpy()[query.kernel_mask.numpy() == 0] == 0)
    x = np.random.default_rng(1).integers(0, 20, (4, 6))
    sparse.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x), sparse(x))
    for name, mask in masks_of(sparse).items():
        np.testing.assert_array_equal(masks_of(loaded)[name], mask)


def test_attention_masks_keep_exact_counts_while_training():
    sparse = tft.sparsify(attention_lstm_model(), 0.7, seed=0)
    compiled(sparse)
    before = masks_of(sparse)
    x, y = np.random.default_rng(0).integers(0, 20, (32, 6)), np.random.default_rng(1).integers(0, 3, 32)
    update = tft.MaskUpdate(tft.SET(update_every=2, drop_fraction=0.5, end_step=4, seed=0))
    sparse.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[update])
    after = masks_of(sparse)
    assert [step for step, _, _ in update.history] == [2, 4]
    assert {name: int(m.sum()) for name, m in after.items()} == {name: int(m.sum()) for name, m in before.items()}
    assert not np.array_equal(after["mha/query"], before["mha/query"])


def test_attention_layer_is_excluded_whole_or_not_at_all():
    model = attention_lstm_model()
    with pytest.raises(ValueError, match=r"\['mha/query'\].*exclude the whole layer \(\['mha'\]\)"):
        tft.sparsify(model, 0.5, exclude=["mha/query"])
    with pytest.warns(UserWarning):
        sparse = tft.sparsify(model, 0.5, exclude=["mha"], seed=0)
    assert type(sparse.get_layer("mha")) is keras.layers.MultiHeadAttention
    assert [row.name for row in tft.sparse.sparsity_rows(sparse)] == ["head"]
    notes = [line for line in tft.sparsity_table(sparse).splitlines() if line.startswith("mha/")]
    assert len(notes) == 4 and all(line.endswith("not masked: excluded (dense)") for line in notes)


# -- 2. mixed precision ----------------------------------------------------------


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_slots_of_dropped_weights_are_zero(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        sparse = compiled(tft.sparsify(mlp(), 0.8, seed=0))
        if policy == "mixed_float16":
            assert isinstance(sparse.optimizer, keras.optimizers.LossScaleOptimizer)
        x, y = toy_data()
        update = tft.MaskUpdate(tft.SET(update_every=2, drop_fraction=0.5, end_step=8, seed=0))
        sparse.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[update])
        assert len(update.history) == 4
        for layer in masking.masked_layers(sparse):
            slots = slots_for(sparse.optimizer, layer.kernel_variable)
            assert len(slots) == 1, layer.name  # the momentum of the wrapped SGD
            pruned = layer.kernel_mask.numpy() == 0
            assert np.count_nonzero(slots[0].numpy()[pruned]) == 0, layer.name
            assert np.count_nonzero(layer.kernel_variable.numpy()[pruned]) == 0, layer.name
    finally:
        keras.mixed_precision.set_global_policy("float32")


# -- 3. callback order, steps_per_execution, a second fit ------------------------


class CrashAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def _set_run(callbacks_before=(), callbacks_after=(), epochs=4):
    sparse = compiled(tft.sparsify(mlp(), 0.8, seed=0))
    update = tft.MaskUpdate(tft.SET(update_every=2, drop_fraction=0.5, end_fraction=0.75, seed=0))
    x, y = toy_data()
    callbacks = [*callbacks_before, update, *callbacks_after]
    sparse.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    return sparse, update


@pytest.mark.parametrize("mask_update_first", [True, False])
def test_backup_and_restore_in_any_order_resumes_the_schedule_exactly(tmp_path, mask_update_first):
    reference, reference_update = _set_run()
    assert [step for step, _, _ in reference_update.history] == [2, 4, 6, 8, 10, 12]

    def run(extra):
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        if mask_update_first:
            return _set_run(callbacks_after=[backup, *extra])
        return _set_run(callbacks_before=[backup], callbacks_after=extra)

    with pytest.raises(RuntimeError, match="simulated crash"):
        run([CrashAfterEpoch(1)])
    resumed, update = run([])
    assert [step for step, _, _ in update.history] == [10, 12]
    for name, mask in masks_of(reference).items():
        np.testing.assert_array_equal(masks_of(resumed)[name], mask)
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_steps_per_execution_that_does_not_divide_update_every_warns_once():
    sparse = compiled(tft.sparsify(mlp(), 0.8, seed=0), steps_per_execution=4)
    x, y = toy_data()
    update = tft.MaskUpdate(tft.SET(update_every=2, drop_fraction=0.5, end_step=8, seed=0))
    with pytest.warns(UserWarning, match="steps_per_execution=4 does not divide update_every=2") as caught:
        sparse.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[update])
    assert len([w for w in caught if "steps_per_execution" in str(w.message)]) == 1
    assert [step for step, _, _ in update.history] == [4, 8]


def test_steps_per_execution_dividing_update_every_keeps_the_exact_schedule():
    sparse = compiled(tft.sparsify(mlp(), 0.8, seed=0), steps_per_execution=2)
    x, y = toy_data()
    update = tft.MaskUpdate(tft.SET(update_every=4, drop_fraction=0.5, end_step=8, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sparse.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[update])
    assert [step for step, _, _ in update.history] == [4, 8]


def test_second_fit_without_initial_epoch_says_what_to_pass_and_with_it_continues():
    sparse, update = _set_run(epochs=2)
    assert [step for step, _, _ in update.history] == [2, 4, 6]  # end_fraction 0.75 of 8 steps
    x, y = toy_data()
    with pytest.raises(ValueError, match=r"taken 8 steps.*initial_epoch=2"):
        sparse.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[update])
    assert len(update.history) == 3
    # Continued as epochs 3-4 of a 4-epoch run: the schedule now ends at 0.75 * 16 = step 12.
    sparse.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, shuffle=False, verbose=0, callbacks=[update])
    assert [step for step, _, _ in update.history] == [2, 4, 6, 10, 12]
    assert update.updater.schedule.end_step == 12


def test_second_fit_with_an_absolute_end_step_runs_on():
    sparse = compiled(tft.sparsify(mlp(), 0.8, seed=0))
    x, y = toy_data()
    update = tft.MaskUpdate(tft.SET(update_every=2, drop_fraction=0.5, end_step=12, seed=0))
    for _ in range(2):
        sparse.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[update])
    assert [step for step, _, _ in update.history] == [2, 4, 6, 8, 10, 12]


def test_mask_update_rejects_an_updater_class():
    with pytest.raises(TypeError, match=r"instance.*class RigL.*tft.RigL\("):
        tft.MaskUpdate(tft.RigL)
    with pytest.raises(TypeError, match="MaskUpdater"):
        tft.MaskUpdate("rigl")


# -- 4. frozen layers -------------------------------------------------------------


def test_frozen_backbone_keeps_its_masks_and_weights_in_mobilenet_v2():
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    inputs = keras.Input((32, 32, 3))
    head = keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    sparse = tft.sparsify(keras.Model(inputs, head), 0.8, seed=0)
    sparse.layers[1].trainable = False
    compiled(sparse)
    before = masks_of(sparse)
    nonzero_before = sum(int(np.count_nonzero(w)) for w in sparse.layers[1].get_weights())
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 10
    update = tft.MaskUpdate(tft.RigL(update_every=1, drop_fraction=0.5, end_step=2), gradient_data=(x, y))
    sparse.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[update])
    after = masks_of(sparse)
    assert len(update.history) == 2 and len(update.history[0][2]) == 1  # only the head is updated
    assert not np.array_equal(after["head"], before["head"])
    assert all(np.array_equal(after[name], before[name]) for name in before if name != "head")
    assert sum(int(np.count_nonzero(w)) for w in sparse.layers[1].get_weights()) == nonzero_before
    notes = [row.note for row in tft.sparse.sparsity_rows(sparse)]
    assert notes.count("frozen: mask fixed") == len(before) - 1


def frozen_backbone_model():
    keras.utils.set_random_seed(0)
    backbone_inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="bb1")(backbone_inputs)
    backbone = keras.Model(backbone_inputs, keras.layers.Dense(16, activation="relu", name="bb2")(x), name="backbone")
    backbone.trainable = False
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(backbone(inputs)))


def test_unfreezing_a_nested_backbone_after_sparsify_trains_it_under_its_masks():
    sparse = tft.sparsify(frozen_backbone_model(), 0.5, seed=0)
    backbone = sparse.get_layer("backbone")
    assert not backbone.trainable and not backbone.get_layer("bb1").trainable  # frozen as the model was
    backbone.trainable = True  # the fine-tuning idiom: one assignment unfreezes every layer inside
    assert backbone.get_layer("bb1").trainable and backbone.get_layer("bb2").trainable
    compiled(sparse)
    masks = masks_of(sparse)
    kernels = {name: backbone.get_layer(name).kernel_variable.numpy().copy() for name in ("bb1", "bb2")}
    x, y = toy_data(16)
    sparse.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for name, before in kernels.items():
        after = backbone.get_layer(name).kernel_variable.numpy()
        assert not np.allclose(after, before), f"{name} did not train"
        np.testing.assert_array_equal(masks_of(sparse)[name], masks[name])
        assert np.count_nonzero(after[masks[name] == 0]) == 0


def test_cigl_random_mask_leaves_frozen_layers_deterministic():
    sparse = compiled(tft.sparsify(mlp(), 0.5, seed=0))
    sparse.get_layer("fc1").trainable = False
    cigl = tft.CigL(random_drop_rate=0.1, end_step=4, seed=0)
    assert cigl.attach(sparse)
    transforms = {layer.name: layer.training_kernel_transform for layer in masking.masked_layers(sparse)}
    assert transforms["fc1"] is None and transforms["fc2"] is not None and transforms["logits"] is not None
    cigl.detach(sparse)


def test_all_frozen_model_gets_a_clear_error():
    sparse = tft.sparsify(mlp(), 0.5, seed=0)
    sparse.trainable = False
    with pytest.raises(ValueError, match="Every masked layer.*frozen"):
        tft.sparse.MaskEngine(sparse, tft.SET(end_step=4))


# -- 5. subclassed models ----------------------------------------------------------


class TwoLayerNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = tft.masked_class_for(keras.layers.Dense)(32, activation="relu", name="hidden")
        self.out = tft.masked_class_for(keras.layers.Dense)(4, name="out")

    def call(self, x):
        return self.out(self.hidden(x))


def test_subclassed_model_gets_masks_from_init_masks_and_trains_sparse():
    keras.utils.set_random_seed(0)
    model = TwoLayerNet()
    model(np.zeros((1, 8), "float32"))
    with pytest.raises(TypeError, match="init_masks"):
        tft.sparsify(model, 0.5)
    given = tft.init_masks(model, 0.75, distribution="uniform", seed=0)
    assert given == {"hidden": 0.25, "out": 0.25}
    assert model.hidden.kernel_mask.numpy().sum() == 64 and model.out.kernel_mask.numpy().sum() == 32
    compiled(model)
    x, y = toy_data()
    update = tft.MaskUpdate(tft.SET(update_every=2, drop_fraction=0.5, end_step=4, seed=0))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[update])
    assert len(update.history) == 2
    assert model.hidden.kernel_mask.numpy().sum() == 64 and model.out.kernel_mask.numpy().sum() == 32
    assert np.count_nonzero(model.hidden.kernel_variable.numpy()) <= 64
    assert tft.global_sparsity(model) == pytest.approx(0.75)


# -- 6. clone_model -----------------------------------------------------------------


def test_clone_model_is_sparse_at_the_same_densities_and_set_weights_copies_the_masks():
    sparse = tft.sparsify(attention_lstm_model(), 0.8, seed=0)
    clone = keras.models.clone_model(sparse)
    rows = {row.name: row.active for row in tft.sparse.sparsity_rows(sparse)}
    assert {row.name: row.active for row in tft.sparse.sparsity_rows(clone)} == rows
    for layer in masking.masked_layers(clone):
        assert np.count_nonzero(layer.kernel_variable.numpy()[layer.kernel_mask.numpy() == 0]) == 0
    clone.set_weights(sparse.get_weights())
    for name, mask in masks_of(sparse).items():
        np.testing.assert_array_equal(masks_of(clone)[name], mask)
    x = np.random.default_rng(1).integers(0, 20, (4, 6))
    np.testing.assert_array_equal(clone(x), sparse(x))


# -- smaller -------------------------------------------------------------------------


class LayerWithoutConfig(keras.layers.Layer):
    def __init__(self, units):
        super().__init__()
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, x):
        return x @ self.kernel


def test_custom_layer_without_get_config_gets_an_error_naming_it_and_the_fix():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, LayerWithoutConfig(3)(inputs))
    with pytest.raises(TypeError, match=r"layer_without_config.*LayerWithoutConfig.*get_config\(\)"):
        tft.sparsify(model, 0.5)
