"""SRigL (Lasby et al., ICLR 2024): constant fan-in per output unit, neuron ablation, the initial masks,
the hook against a numpy reference, replicas, config and the binary."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import tf_freetickets as tft
from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.sparse import MaskedLayerSet, unit_fan_ins
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.mask_engine import MaskEngine
from tf_freetickets.sparse.methods.srigl import constant_fan_in_mask, constant_fan_in_update, unit_layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(sparsity=0.8):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return tft.sparsify(keras.Model(inputs, keras.layers.Dense(4, name="logits")(x)), sparsity, seed=1)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 8, 8, 2)).astype("float32"), rng.integers(0, 4, 64)


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(value))


def _compiled(model):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    return model


def _active_fan_ins(layer):
    fan_ins = unit_fan_ins(layer)
    return fan_ins[fan_ins > 0]


# -- the numpy reference of one update ----------------------------------------------------------
def _top(scores, candidates, k):
    """0/1 of the k candidates of largest score, ties to the lower flat index."""
    chosen = [i for i in np.argsort(-scores.ravel(), kind="stable") if candidates.ravel()[i]][:k]
    out = np.zeros(scores.size)
    out[chosen] = 1
    return out.reshape(scores.shape)


def _reference(mask, weights, gradient, drop_fraction, budget, gamma_sal):
    """The paper's steps written with loops: RigL's kept set, ablation, per-unit cap and per-unit growth."""
    fan_in_dim, units = mask.shape
    magnitude, growth = np.abs(weights), np.abs(gradient)
    num_drop = int(np.floor(drop_fraction * mask.sum()))
    num_keep = int(mask.sum()) - num_drop
    kept = _top(magnitude, mask > 0, num_keep)
    ablated = np.zeros(units, bool)
    if gamma_sal > 0 and budget // fan_in_dim < units:
        counts = np.maximum(kept, _top(growth, np.ones_like(mask, bool), num_drop)).sum(axis=0)
        threshold = min(max(1, int(gamma_sal * (budget // units))), sorted(counts, reverse=True)[budget // fan_in_dim])
        ablated = counts < threshold
        if ablated.any():
            kept = _top(magnitude, (mask > 0) & ~ablated[None, :], num_keep)
    fan_in = budget // (units - ablated.sum())
    new = np.zeros_like(mask)
    for unit in np.flatnonzero(~ablated):
        keep = [i for i in np.argsort(-magnitude[:, unit], kind="stable") if kept[i, unit]][:fan_in]
        new[keep, unit] = 1
        grow = [i for i in np.argsort(-growth[:, unit], kind="stable") if new[i, unit] == 0]
        new[grow[: fan_in - len(keep)], unit] = 1
    return new


def _constant_mask(rng, fan_in_dim, units, fan_in):
    return constant_fan_in_mask(np.zeros((fan_in_dim, units)), fan_in, rng)


@pytest.mark.parametrize("gamma_sal", [0.0, 0.3, 0.8])
def test_the_update_matches_the_numpy_reference(gamma_sal):
    rng = np.random.default_rng(3)
    for fan_in_dim, units, fan_in, fraction in [(12, 5, 4, 0.5), (20, 8, 6, 0.3), (9, 6, 2, 0.75)]:
        mask = _constant_mask(rng, fan_in_dim, units, fan_in)
        weights = (rng.normal(size=mask.shape) * mask).astype("float32")
        gradient = rng.normal(size=mask.shape).astype("float32")
        budget = fan_in * units + int(rng.integers(0, units))  # a remainder the fan-in leaves unused
        new, grown = constant_fan_in_update(mask, weights, gradient, fraction, budget, gamma_sal, need_grown=True)
        expected = _reference(mask, weights, gradient, fraction, budget, gamma_sal)
        np.testing.assert_array_equal(_numpy(new), expected)
        # grown: the positions filled by growth (a weight dropped and regrown counts as grown).
        kept = _numpy(new) - _numpy(grown)
        assert kept.min() == 0 and np.all(kept <= mask)


def test_constant_fan_in_exact_counts_and_zero_slots_across_updates():
    model = _compiled(_model())
    x, y = _data()
    updater = tft.SRigL(update_every=1, drop_fraction=0.5, decay="constant", end_step=10, seed=0, ablation=False)
    layers = MaskedLayerSet(model)
    budgets = [int(_numpy(ops.sum(layer.kernel_mask))) for layer in layers]
    updater.attach(model, layers)
    units = [unit_layout(layer).units for layer in layers]
    expected = [budget // n * n for budget, n in zip(budgets, units)]  # k0 = floor(B / U) per unit
    engine = MaskEngine(model, updater, gradient_data=_data(), gradient_batch_size=32, layers=layers)
    assert [int(_numpy(ops.sum(m))) for m in layers.masks] == expected
    for step in range(1, 5):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        before = [_numpy(m) for m in layers.masks]
        result = engine.update(step)
        assert sum(result["changed"]) > 0
        for layer, count, n in zip(layers, expected, units):
            mask = _numpy(layer.kernel_mask)
            assert mask.sum() == count  # exact and constant
            np.testing.assert_array_equal(unit_fan_ins(layer), np.full(n, count // n))  # every unit, one fan-in
            assert np.all(_numpy(layer.kernel_variable)[mask == 0] == 0)
            slots = tft.sparse.optimizer_slots.slots_for(model.optimizer, layer.kernel_variable)
            assert slots and all(np.all(_numpy(slot)[mask == 0] == 0) for slot in slots)
        assert any(not np.array_equal(old, _numpy(m)) for old, m in zip(before, layers.masks))


def test_with_ablation_every_active_unit_shares_the_fan_in_of_the_budget():
    model = _compiled(_model(sparsity=0.9))
    x, y = _data()
    updater = tft.SRigL(update_every=1, drop_fraction=0.5, decay="constant", end_step=10, seed=0, gamma_sal=0.9)
    layers = MaskedLayerSet(model)
    updater.attach(model, layers)
    engine = MaskEngine(model, updater, gradient_data=_data(), gradient_batch_size=32, layers=layers)
    ablated_any = False
    for step in range(1, 4):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        engine.update(step)
        for layer, plan in zip(layers, updater.plans):
            fan_ins = _active_fan_ins(layer)
            alive = len(fan_ins)
            np.testing.assert_array_equal(fan_ins, np.full(alive, plan.budget // alive))
            assert _numpy(ops.sum(layer.kernel_mask)) == plan.budget // alive * alive
            ablated_any |= alive < plan.layout.units
            assert np.all(_numpy(layer.kernel_variable)[_numpy(layer.kernel_mask) == 0] == 0)
    assert ablated_any
    assert len(_active_fan_ins(layers[-1])) == 4  # the classifier is never ablated


def _ablation_case():
    """F = 10 inputs, U = 4 units at fan-in 4; unit 3 has the smallest weights and gradients."""
    rng = np.random.default_rng(0)
    mask = _constant_mask(rng, 10, 4, 4)
    weights = rng.uniform(1.0, 2.0, size=mask.shape) * mask
    gradient = rng.uniform(1.0, 2.0, size=mask.shape)
    weights[:, 3] *= 1e-3
    gradient[:, 3] *= 1e-3
    return mask, weights.astype("float32"), gradient.astype("float32")


def test_a_unit_with_few_salient_weights_is_ablated_and_its_budget_goes_to_the_others():
    mask, weights, gradient = _ablation_case()
    # 16 weights, drop 8: the 8 kept and the 8 of largest |g| all lie in units 0-2, so unit 3 has no
    # salient weight (threshold max(1, floor(0.3 * 4)) = 1) and is ablated; fan-in 16 // 3 = 5.
    new = _numpy(constant_fan_in_update(mask, weights, gradient, 0.5, 16, gamma_sal=0.3)[0])
    np.testing.assert_array_equal(new.sum(axis=0), [5, 5, 5, 0])
    assert not new[:, 3].any()
    np.testing.assert_array_equal(new, _reference(mask, weights, gradient, 0.5, 16, 0.3))
    # gamma_sal = 0: no ablation, every unit keeps fan-in 4.
    new = _numpy(constant_fan_in_update(mask, weights, gradient, 0.5, 16, gamma_sal=0.0)[0])
    np.testing.assert_array_equal(new.sum(axis=0), [4, 4, 4, 4])


def test_the_hook_ablates_by_layer_and_switch():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4, name="hidden"), keras.layers.Dense(4, name="out")])
    model = _compiled(tft.sparsify(model, 0.6, distribution="uniform", seed=0))  # hidden: 16 weights, fan-in 4
    hidden = _ablation_case()
    # The classifier (7 weights, fan-in 1): unit 3 would be ablated if the last layer could be.
    out_mask = np.eye(4, dtype="float32")
    out_weights, out_gradient = out_mask * [2.0, 3.0, 4.0, 1e-3], np.ones((4, 4), "float32") * [2.0, 3.0, 4.0, 1e-3]
    step, fraction = tf.constant(1, tf.int64), tf.constant(0.5)
    for ablation, expected in [(True, [5, 5, 5, 0]), (False, [4, 4, 4, 4])]:
        updater = tft.SRigL(seed=0, ablation=ablation)
        updater.attach(model)
        assert [plan.ablate for plan in updater.plans] == [True, False]  # the last layer never ablates
        new, grown = updater.new_mask(0, *hidden, step, fraction)
        assert grown is None  # reinit_when_same is off
        np.testing.assert_array_equal(_numpy(new).sum(axis=0), expected)
        new, _ = updater.new_mask(1, out_mask, out_weights.astype("float32"), out_gradient.astype("float32"), step, fraction)
        np.testing.assert_array_equal(_numpy(new).sum(axis=0), [1, 1, 1, 1])
    ablating = _numpy(constant_fan_in_update(out_mask, out_weights, out_gradient, 0.5, 7, gamma_sal=0.3)[0])
    assert ablating.sum(axis=0)[3] == 0


def test_initial_masks_are_constant_fan_in_seeded_and_drawn_only_at_step_0():
    draws = []
    for _ in range(2):
        model = _compiled(_model())
        layers = MaskedLayerSet(model)
        before = [_numpy(m) for m in layers.masks]
        updater = tft.SRigL(seed=5)
        updater.attach(model, layers)
        after = [_numpy(m) for m in layers.masks]
        draws.append(after)
        for layer, old, new, plan in zip(layers, before, after, updater.plans):
            layout = unit_layout(layer)
            np.testing.assert_array_equal(unit_fan_ins(layer), np.full(layout.units, plan.initial_fan_in))
            kernel = _numpy(layer.kernel_variable)
            assert np.all(kernel[new == 0] == 0) and np.all(kernel[new > 0] != 0)  # new positions initialised
            # Each unit keeps min(its active count, k0) of the positions sparsify gave it.
            old_counts = _numpy(ops.sum(layout.to_matrix(old), axis=0))
            kept_counts = _numpy(ops.sum(layout.to_matrix(old * new), axis=0))
            np.testing.assert_array_equal(kept_counts, np.minimum(old_counts, plan.initial_fan_in))
        tft.SRigL(seed=6).attach(model, layers)  # idempotent on a constant fan-in mask
        for mask, drawn in zip(layers.masks, after):
            np.testing.assert_array_equal(_numpy(mask), drawn)
    for a, b in zip(*draws):
        np.testing.assert_array_equal(a, b)  # a pure function of the seeds
    # After step 0 (a resumed run) the masks are left alone; budgets come from target_density.
    model = _compiled(_model())
    model.optimizer.iterations.assign(7)
    before = [_numpy(layer.kernel_mask) for layer in masking.masked_layers(model)]
    updater = tft.SRigL(seed=5)
    updater.attach(model)
    for layer, old in zip(masking.masked_layers(model), before):
        np.testing.assert_array_equal(_numpy(layer.kernel_mask), old)
    assert [plan.budget for plan in updater.plans] == [int(old.sum()) for old in before]


def test_a_run_restored_from_its_checkpoint_continues_with_the_same_masks(tmp_path):
    from tf_freetickets.experiments.checkpointing import EpochCheckpoint, restore_latest

    x, y = _data()

    def train(directory, epochs):
        model = _model(sparsity=0.9)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        start = restore_latest(model, str(directory))
        updater = tft.SRigL(update_every=1, drop_fraction=0.5, decay="constant", end_step=8, seed=3, gamma_sal=0.9)
        update = tft.MaskUpdate(updater, gradient_data=(x, y), gradient_batch_size=32)
        model.fit(
            x, y, batch_size=32, epochs=epochs, initial_epoch=start, shuffle=False, verbose=0,
            callbacks=[update, EpochCheckpoint(str(directory))],
        )  # fmt: skip
        return model

    straight = train(tmp_path / "straight", 4)
    train(tmp_path / "resumed", 2)
    resumed = train(tmp_path / "resumed", 4)  # restored at step 4: attach must not redraw the masks
    for a, b in zip(masking.masked_layers(straight), masking.masked_layers(resumed)):
        np.testing.assert_array_equal(_numpy(a.kernel_mask), _numpy(b.kernel_mask))
        np.testing.assert_allclose(_numpy(a.kernel_variable), _numpy(b.kernel_variable), rtol=1e-5, atol=1e-6)


def test_unit_layouts_of_keras_kernels():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(inputs)
    x = keras.layers.Conv2DTranspose(5, 3, name="transpose")(x)
    x = keras.layers.Reshape((36, 5))(x)
    x = keras.layers.MultiHeadAttention(2, 3, name="mha")(x, x)
    model = tft.sparsify(keras.Model(inputs, x), 0.5, distribution="uniform", seed=0)
    layouts = {layer.name: unit_layout(layer) for layer in masking.masked_layers(model)}
    assert (layouts["depthwise"].fan_in, layouts["depthwise"].units) == (9, 8)
    assert (layouts["transpose"].fan_in, layouts["transpose"].units) == (3 * 3 * 8, 5)
    assert (layouts["query"].fan_in, layouts["query"].units) == (5, 6)  # (dim, heads, head_dim)
    assert (layouts["attention_output"].fan_in, layouts["attention_output"].units) == (6, 5)
    rng = np.random.default_rng(0)
    for layout in layouts.values():
        x = rng.normal(size=layout.shape).astype("float32")
        np.testing.assert_array_equal(_numpy(layout.from_matrix(layout.to_matrix(x))), x)
    # Conv2DTranspose kernel (kh, kw, out, in): output channel c is [:, :, c, :].
    transpose = next(layer for layer in masking.masked_layers(model) if layer.name == "transpose")
    kernel = np.zeros(layouts["transpose"].shape, "float32")
    kernel[:, :, 2, :] = 1
    np.testing.assert_array_equal(_numpy(ops.sum(layouts["transpose"].to_matrix(kernel), axis=0)), [0, 0, 72, 0, 0])
    assert transpose is not None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"gamma_sal must be a number in \[0, 1\], got 1.5"):
        tft.SRigL(gamma_sal=1.5)
    with pytest.raises(ValueError, match="ablation must be True or False, got 'yes'"):
        tft.SRigL(ablation="yes")
    model = _compiled(_model())
    with pytest.raises(ValueError, match=r"no_ablation_layers names \['nope'\]"):
        tft.SRigL(no_ablation_layers=("nope",)).attach(model)
    keras.utils.set_random_seed(0)
    wide = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64, name="wide"), keras.layers.Dense(2)])
    wide = _compiled(tft.sparsify(wide, 0.9, distribution="uniform", seed=0))  # 26 weights for 64 units
    with pytest.raises(ValueError, match="'wide' may hold 26 weights for 64 output units"):
        tft.SRigL().attach(wide)
    with pytest.raises(ValueError, match="not attached"):
        tft.SRigL().new_mask(0, np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), 1, 0.5)


def test_masks_identical_on_both_replicas():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (configured in conftest.py before TF starts)")
    # Reduced through one device, not collectives: a second MirroredStrategy in a process whose
    # earlier strategy ran collectives can reuse their instance keys with other shapes (TF aborts).
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in devices[:2]], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        model = _model()
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    update = tft.MaskUpdate(tft.SRigL(update_every=2, drop_fraction=0.5, end_step=8, seed=3, gamma_sal=0.9), gradient_data=data)
    model.fit(data.repeat(4), epochs=1, verbose=0, callbacks=[update])
    assert [step for step, _, _ in update.history] == [2, 4, 6, 8]
    for layer in masking.masked_layers(model):
        masks = [v.numpy() for v in layer.kernel_mask.value.values]
        kernels = [v.numpy() for v in layer.kernel_variable.value.values]
        np.testing.assert_array_equal(masks[0], masks[1])
        np.testing.assert_array_equal(kernels[0], kernels[1])
        assert np.all(kernels[0][masks[0] == 0] == 0)
        assert len(set(_active_fan_ins(layer))) == 1


def test_config_fields_are_registered_and_checked():
    from tf_freetickets.experiments.config import ConfigError, config_help, fashion_mnist_defaults, validate
    from tf_freetickets.experiments.plan import RunPlan

    config = fashion_mnist_defaults()
    config.sparse.method = "srigl"
    validate(config)
    updater = RunPlan.from_config(config).sparsity.make_updater(seed=0)
    assert (type(updater), updater.gamma_sal, updater.ablation, updater.growth_gradient) == (
        tft.SRigL, 0.3, True, "extra_batch"
    )  # fmt: skip
    assert "config.sparse.srigl_gamma_sal" in config_help(config)
    config.sparse.srigl_gamma_sal = 2.0
    with pytest.raises(ConfigError, match=r"srigl_gamma_sal=2.0 must be a number in \[0, 1\]"):
        validate(config)
    config.sparse.srigl_gamma_sal = 0.3
    config.sparse.srigl_ablation = False
    config.sparse.method = "rigl"  # another method's field away from its default is refused
    with pytest.raises(ConfigError, match="srigl_ablation"):
        validate(config)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")
def test_the_binary_trains_srigl_and_costs_it(tmp_path):
    from tf_freetickets.costs import forward_flops, num_mask_updates

    command = [
        sys.executable, "-m", "tf_freetickets.train", "--config=configs/fashion_mnist_srigl.py",
        "--config.train_examples=512", "--config.epochs=2", "--config.verbose=0", "--config.sparse.update_every=2",
        f"--workdir={tmp_path}",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    model = keras.models.load_model(str(tmp_path / "members" / "member_0.keras"))
    layers = masking.masked_layers(model)
    for layer in layers:
        assert len(set(_active_fan_ins(layer))) == 1
    total = sum(int(np.prod(layer.kernel_mask.shape)) for layer in layers)
    active = sum(int(_numpy(ops.sum(layer.kernel_mask))) for layer in layers)
    assert results["results"]["sparsity"] == pytest.approx(1 - active / total, abs=1e-6)
    assert 0.9 <= results["results"]["sparsity"] < 0.91  # ERK counts floored to whole fan-ins
    # RigL's accounting: 3 f_S per step plus one extra batch of (2 f_S + f_D) per update.
    cost = results["results"]["training"]
    dense, sparse = forward_flops(model)
    steps, batch = 2 * (512 // 128), 128
    updates = num_mask_updates(steps, 2, end_fraction=0.75)
    assert cost["method"].endswith("srigl") and cost["num_mask_updates"] == updates > 0
    assert cost["total_flops"] == 3 * sparse * batch * steps + updates * batch * (2 * sparse + dense)
    assert results["config"]["sparse"]["srigl_gamma_sal"] == 0.3
