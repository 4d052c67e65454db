"""A sparse method defined in this file alone: registered, configured, trained by the binary, killed,
resumed exactly and costed, with no package file changed for it.

The method scores the *drop* with the dense gradient, as MEST does (Yuan et al. 2021: keep by
|w| + lambda |g|), and grows by |g| as RigL. Before the method registry this needed edits to
MaskEngine, the config validation, the runner and the FLOPs accounting.

This file is also the ml_collections config file of the binary runs (`get_config` below), so the
subprocess registers the method the same way a user's config file would.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from keras import ops

from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.sparse import ConfigField, MaskedLayerSet, RigL, get_method, register_method, unregister_method
from tf_freetickets.sparse.drop_grow import drop_and_grow_indices
from tf_freetickets.sparse.methods.common import dst_updater_kwargs, gradient_growth_costs
from tf_freetickets.sparse.updater import masks_from_indices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "gradient_drop"


class GradientAwareDrop(RigL):
    """Keeps the active weights of largest |w| + drop_gradient_weight * |g|; grows by |g|."""

    def __init__(self, *args, drop_gradient_weight=0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop_gradient_weight = drop_gradient_weight

    def new_mask(self, layer_index, old_mask, weights, scores, step, drop_fraction):
        num_drop = ops.floor(drop_fraction * ops.sum(old_mask))
        keep_scores = ops.abs(weights) + self.drop_gradient_weight * ops.abs(scores)
        dropped, grown_at = drop_and_grow_indices(old_mask, keep_scores, ops.abs(scores), num_drop)
        return masks_from_indices(old_mask, dropped, grown_at, self.reinit_when_same)


def _check_weight(value, sparse):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"config.sparse.drop_gradient_weight={value!r} must be a number >= 0.")


def _register():
    register_method(
        NAME,
        summary="Drop by |w| + lambda |g| (MEST-style), grow by |g| (RigL).",
        make_updater=lambda sparse, seed: GradientAwareDrop(
            drop_gradient_weight=float(sparse.drop_gradient_weight), **dst_updater_kwargs(sparse, seed)
        ),
        cost_facts=gradient_growth_costs,
        config_fields=(ConfigField("drop_gradient_weight", 0.1, "gradient_drop: lambda of the drop score", _check_weight),),
        updater_class=GradientAwareDrop,
        dynamic=True,
        replace=True,
    )


@pytest.fixture(autouse=True)
def registered():
    """The method is registered for each test here and removed after, so other tests see the built-in registry."""
    _register()
    yield
    unregister_method(NAME)


def get_config():
    """The binary's config: the Fashion-MNIST defaults on a small, deterministic run of this method."""
    from tf_freetickets.experiments.config import fashion_mnist_defaults

    _register()  # in the binary's process, loading this file as the config registers the method
    config = fashion_mnist_defaults()  # after registration: it carries sparse.drop_gradient_weight
    config.sparse.method = NAME
    config.sparse.sparsity = 0.8
    config.sparse.update_every = 3
    config.sparse.end_fraction = 1.0
    config.train_examples = 512
    config.batch_size = 64
    config.epochs = 4
    config.width = 0.5
    config.deterministic = True
    config.verbose = 0
    return config


def test_the_registry_drives_config_validation_and_help():
    from tf_freetickets.experiments.config import ConfigError, config_help, validate

    config = get_config()
    assert get_method(NAME).updater_class is GradientAwareDrop
    assert "config.sparse.drop_gradient_weight" in config_help(config)
    assert f"| {NAME}" in config_help(config)  # listed beside the built-in methods
    config.sparse.drop_gradient_weight = -1.0
    with pytest.raises(ConfigError, match=r"drop_gradient_weight=-1.0 must be a number >= 0"):
        validate(config)
    config.sparse.drop_gradient_weight = 0.5
    config.sparse.method = "set"  # another method's field away from its default is refused, not ignored
    with pytest.raises(ConfigError, match=f"read only by sparse.method {NAME}, not sparse.method='set'"):
        validate(config)
    config.sparse.method = "no_such_method"
    with pytest.raises(ConfigError, match=f"registered methods: dense, static, set, rigl, snfs, cigl, gmp.*{NAME}"):
        validate(config)


def test_a_removed_method_leaves_the_registry_and_the_defaults():
    from tf_freetickets.experiments.config import fashion_mnist_defaults

    unregister_method(NAME)
    assert "drop_gradient_weight" not in fashion_mnist_defaults().sparse
    with pytest.raises(ValueError, match=f"Unknown sparse method '{NAME}'"):
        get_method(NAME)
    with pytest.raises(ValueError, match="'rigl' is built in"):
        unregister_method("rigl")
    _register()  # the fixture removes it again


def test_a_method_without_cost_facts_is_refused_at_registration():
    with pytest.raises(TypeError, match="declares no cost_facts"):
        register_method("no_costs", summary="", make_updater=lambda sparse, seed: None, cost_facts=None)
    with pytest.raises(ValueError, match="Unknown sparse method 'no_costs'"):
        get_method("no_costs")


def test_the_hook_keeps_exact_counts_and_drops_by_the_gradient_score():
    import keras

    import tf_freetickets as tft
    from tf_freetickets.sparse.mask_engine import MaskEngine

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="d"), keras.layers.Dense(3, name="out")])
    model = tft.sparsify(model, 0.5, distribution="uniform", seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(32, 6)).astype("float32"), np.arange(32) % 3
    updater = GradientAwareDrop(update_every=1, drop_fraction=0.5, decay="constant", end_step=10, seed=0)
    layers = MaskedLayerSet(model)
    updater.attach(model, layers)
    engine = MaskEngine(model, updater, gradient_data=(x, y), gradient_batch_size=32, layers=layers)
    before = [ops.convert_to_numpy(m) for m in layers.masks]
    engine.update(1)
    after = [ops.convert_to_numpy(m) for m in layers.masks]
    for old, new, kernel in zip(before, after, layers.kernels):
        assert new.sum() == old.sum()  # exact active count
        assert np.all(ops.convert_to_numpy(kernel)[new == 0] == 0)  # pruned weights are zero

    # The hook alone, against a numpy reference: keep the n - k active weights of largest
    # |w| + 0.1 |g|, then grow the k positions of largest |g| among those not kept.
    rng = np.random.default_rng(1)
    old = (rng.random((8, 6)) < 0.5).astype("float32")
    weights = rng.normal(size=(8, 6)).astype("float32") * old
    gradient = rng.normal(size=(8, 6)).astype("float32")
    new, grown = updater.new_mask(0, old, weights, gradient, 1, 0.5)
    n, k = int(old.sum()), int(np.floor(0.5 * old.sum()))
    keep_scores = np.where(old > 0, np.abs(weights) + 0.1 * np.abs(gradient), -np.inf).ravel()
    kept = np.zeros(old.size)
    kept[np.argsort(-keep_scores)[: n - k]] = 1
    grow_scores = np.where(kept > 0, -np.inf, np.abs(gradient).ravel())
    expected = kept.copy()
    expected[np.argsort(-grow_scores)[:k]] = 1
    np.testing.assert_array_equal(ops.convert_to_numpy(new).ravel(), expected)
    assert grown is None  # reinit_when_same is off: the engine needs no grown mask


def _command(workdir):
    return [
        sys.executable, "-m", "tf_freetickets.train", f"--config={os.path.abspath(__file__)}",
        f"--config.sparse.method={NAME}", "--config.sparse.drop_gradient_weight=0.2", f"--workdir={workdir}",
    ]  # fmt: skip


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")
def test_the_binary_trains_kills_resumes_exactly_and_costs_the_method(tmp_path):
    import keras

    import tf_freetickets as tft  # noqa: F401  (registers the masked layers for loading)
    from tf_freetickets.costs import forward_flops, num_mask_updates

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    done = subprocess.run(_command(straight), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    process = subprocess.Popen(_command(interrupted), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = interrupted / "checkpoints" / "member_0" / "ckpt-2.index"  # after epoch 2 of 4
    deadline = time.time() + 600
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "results.json").exists()
    resumed = subprocess.run(_command(interrupted), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming member_0 after epoch 2" in resumed.stdout

    models = [keras.models.load_model(str(run / "members" / "member_0.keras")) for run in (straight, interrupted)]
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # weights, masks, BN statistics: bit for bit
    results = [json.loads((run / "results.json").read_text()) for run in (straight, interrupted)]
    timing = ("train_seconds", "train_cpu_seconds")  # wall and CPU time differ between any two runs
    assert {k: v for k, v in results[0]["results"].items() if k not in timing} == {
        k: v for k, v in results[1]["results"].items() if k not in timing
    }
    assert results[1]["results"]["untimed_epochs"] == 0  # the killed process's epochs are in the resumed run's time
    assert results[0]["config"]["sparse"]["drop_gradient_weight"] == 0.2

    # Training FLOPs from the declared cost facts: 3 f_S per step, plus one extra batch of
    # (2 f_S + f_D) per mask update (RigL's accounting).
    cost = results[0]["results"]["training"]
    dense, sparse = forward_flops(models[0])
    steps, batch = 4 * (512 // 64), 64
    updates = num_mask_updates(steps, 3, end_fraction=1.0)
    assert (cost["method"], cost["num_mask_updates"]) == (f"dst_ensemble:{NAME}", updates)
    assert cost["total_flops"] == 3 * sparse * batch * steps + updates * batch * (2 * sparse + dense)
    assert results[0]["results"]["sparsity"] == pytest.approx(0.8, abs=1e-3)
