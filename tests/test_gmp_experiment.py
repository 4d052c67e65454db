"""Gradual magnitude pruning in configs, the run driver and the training-FLOPs accounting."""

import math

import keras
import pytest

import tf_freetickets as tft
from tf_freetickets import models
from tf_freetickets.experiments.config import ConfigError, fashion_mnist_defaults, validate
from tf_freetickets.experiments.flops import run_flops
from tf_freetickets.experiments.plan import RunPlan
from tf_freetickets.metrics import forward_flops, gmp_training_flops, layer_forward_flops


def _two_dense_layers():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="a")(inputs)
    return tft.sparsify(keras.Model(inputs, keras.layers.Dense(2, name="b")(x)), 0.0, distribution="uniform")


def test_gmp_flops_by_hand():
    # Prunings after steps 2, 4, 6 to s = 0, 0.4375, 0.5; a step uses the masks of the prunings before it.
    schedule = tft.PolynomialDecay(0.0, 0.5, begin_step=2, end_step=6, frequency=2)
    updater = tft.GradualMagnitudePruning(schedule, step_convention="after_step")
    model = _two_dense_layers()
    assert [row.dense_flops for row in layer_forward_flops(model)] == [64, 32]
    dense = 96
    at_04375 = 64 * (32 - math.floor(0.4375 * 32)) / 32 + 32 * (16 - math.floor(0.4375 * 16)) / 16  # 36 + 18
    at_05 = 48
    per_example = 4 * dense + 2 * at_04375 + 4 * at_05  # steps 1-4, 5-6, 7-10
    cost = gmp_training_flops(updater, model, total_steps=10, batch_size=4)
    assert cost.total_flops == cost.step_flops == 3 * 4 * per_example == 8208
    assert (cost.gradient_flops, cost.num_mask_updates, cost.method) == (0, 3, "gmp")


def test_gmp_flops_count_the_step_zero_pruning():
    updater = tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, begin_step=0, end_step=0), step_convention="after_step")
    cost = gmp_training_flops(updater, _two_dense_layers(), total_steps=5, batch_size=1)
    assert cost.total_flops == 3 * 5 * 48 and cost.num_mask_updates == 1


def _config(**sparse):
    config = fashion_mnist_defaults()
    config.sparse.method = "gmp"
    config.sparse.sparsity = 0.8
    for key, value in sparse.items():
        setattr(config.sparse.gmp if key in ("initial_sparsity", "begin_fraction", "power") else config.sparse, key, value)
    return config


def test_config_builds_the_fraction_schedule_and_a_dense_start():
    config = validate(_config(update_every=10, end_fraction=0.5, begin_fraction=0.2, initial_sparsity=0.1))
    plan = RunPlan.from_config(config)
    assert plan.sparsity.initial == 0.0
    updater = plan.sparsity.make_updater(0)
    assert isinstance(updater, tft.GradualMagnitudePruning) and updater.distribution == "erk"
    schedule = updater.schedule.resolved(1000).pruning_schedule
    assert schedule == tft.PolynomialDecay(0.1, 0.8, begin_step=200, end_step=500, power=3.0, frequency=10)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(initial_sparsity=0.9), "initial_sparsity"),
        (dict(begin_fraction=0.8), "begin_fraction"),
        (dict(power=0), "power"),
    ],
)
def test_bad_gmp_config_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(_config(**overrides))


def test_edst_with_gmp_is_refused():
    config = _config()
    config.ensemble.kind = "edst"
    with pytest.raises(ConfigError, match="needs a dynamic sparse method"):
        validate(config)


def test_run_flops_of_a_gmp_run_lie_between_sparse_and_dense():
    config = _config()
    config.epochs = 4
    steps_per_epoch = 50  # 200 steps: prune every 100 from step 20 to 150, i.e. at 20 and 120 (+150, the end)
    model = tft.sparsify(models.build_model("small_cnn", (28, 28, 1), 10, width=0.5), 0.0, "erk")
    plan = RunPlan.from_config(config)
    updater = plan.sparsity.make_updater(0)
    flops = run_flops(plan, [model], steps_per_epoch)
    dense, _ = forward_flops(model)
    expected = gmp_training_flops(updater, model, total_steps=200, batch_size=128)
    assert flops["training_flops"] == expected.total_flops
    assert flops["training"]["method"] == "dst_ensemble:gmp" and flops["training"]["num_mask_updates"] == 3
    final = updater.schedule.resolved(200)
    assert [s for s in range(1, 201) if final.is_update_step(s)] == [20, 120, 150]
    assert 3 * 128 * 200 * 0.2 * dense < flops["training_flops"] < 3 * 128 * 200 * dense


@pytest.mark.slow
def test_train_a_gmp_model_end_to_end(tmp_path):
    from tf_freetickets.experiments.runner import run

    config = _config(update_every=4)
    config.train_examples, config.batch_size, config.epochs, config.width, config.verbose = 512, 64, 2, 0.25, 0
    results = run(config, str(tmp_path))
    assert results["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert results["training"]["method"] == "dst_ensemble:gmp"
