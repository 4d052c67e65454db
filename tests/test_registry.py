"""Every registered method, read from the registry (no list of names here): it builds from the default
config, keeps the invariants through compiled updates, and is costed from its declared facts."""

import keras
import numpy as np
import pytest
from keras import ops

import tf_freetickets as tft
from tf_freetickets.costs import training_flops
from tf_freetickets.experiments.config import fashion_mnist_defaults
from tf_freetickets.experiments.plan import RunPlan
from tf_freetickets.sparse import MaskedLayerSet, get_method, method_names
from tf_freetickets.sparse.mask_engine import MaskEngine

METHODS = method_names()


def _plan(name):
    config = fashion_mnist_defaults()
    config.sparse.method = name
    config.sparse.sparsity = 0.5
    config.sparse.update_every = 1
    config.sparse.end_fraction = 1.0
    return RunPlan.from_config(config)


def _model(sparsity):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(),
        keras.layers.Dense(5, name="dense"),
    ])  # fmt: skip
    model = tft.sparsify(model, sparsity, distribution="uniform", seed=0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_the_builtin_methods_are_registered_in_order():
    assert METHODS[:8] == ("dense", "static", "set", "rigl", "snfs", "cigl", "gmp", "srigl")


@pytest.mark.parametrize("name", METHODS)
def test_every_method_builds_from_the_defaults_and_declares_its_costs(name):
    plan = _plan(name)
    method = get_method(name)
    updater = plan.sparsity.make_updater(seed=0)
    assert (updater is None) == (method.updater_class is None)
    if updater is not None:
        assert type(updater) is method.updater_class
    facts = method.cost_facts(updater, None)
    assert isinstance(facts, tft.sparse.CostFacts)
    if not facts.density_follows_schedule:  # gradual pruning is costed step by step (costs.pruning)
        cost = training_flops(updater or name, dense_flops=100, sparse_flops=50, total_steps=10, batch_size=2)
        assert cost.method == name and cost.total_flops > 0


@pytest.mark.parametrize("name", [n for n in METHODS if get_method(n).updater_class is not None])
def test_every_method_keeps_counts_and_zeros_through_two_updates(name):
    plan = _plan(name)
    model = _model(plan.sparsity.initial)
    x = np.random.default_rng(0).normal(size=(16, 6, 6, 1)).astype("float32")
    y = np.arange(16) % 5
    updater = plan.sparsity.make_updater(seed=0)
    updater.schedule = updater.schedule.resolved(4)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # slots exist
    layers = MaskedLayerSet(model)
    updater.attach(model, layers)
    engine = MaskEngine(model, updater, gradient_data=(x, y), gradient_batch_size=8, layers=layers)
    counts = [int(ops.sum(m)) for m in layers.masks]
    for step in (1, 2):
        if updater.updates_masks and updater.schedule.is_update_step(step):
            engine.update(step)
        for layer, before in zip(layers, counts):
            mask = ops.convert_to_numpy(layer.kernel_mask)
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert np.all(ops.convert_to_numpy(layer.kernel_variable)[mask == 0] == 0)  # pruned weights are zero
            if not get_method(name).cost_facts(updater, None).density_follows_schedule and name != "srigl":
                assert int(mask.sum()) == before  # DST keeps every layer's count (SRigL rounds to its fan-in)
    updater.detach(model)
