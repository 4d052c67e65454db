"""Weight decay means what the papers' code means: the gradient of the regularization term is `wd * w`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.experiments import fashion_mnist_defaults, paper_configs, validate
from tf_freetickets.experiments.config import ConfigError
from tf_freetickets.models import WeightDecay, build_model, decay_arguments

WD = 5e-4


def _regularization_gradients(model):
    with tf.GradientTape() as tape:
        total = tf.add_n(model.losses)
    return dict(zip([v.path for v in model.trainable_variables], tape.gradient(total, model.trainable_variables)))


def _check_gradients(model, decayed_kinds):
    """Every decayed variable's gradient is WD * w; every other variable's is None (or 0)."""
    gradients = _regularization_gradients(model)
    decayed = 0
    for variable in model.trainable_variables:
        kind = variable.path.rsplit("/", 1)[-1]
        gradient = gradients[variable.path]
        if kind in decayed_kinds:
            np.testing.assert_allclose(gradient.numpy(), WD * variable.numpy(), rtol=1e-5, atol=1e-10)
            decayed += 1
        else:
            assert gradient is None or not np.any(gradient.numpy()), variable.path
    return decayed


@pytest.mark.parametrize(
    "architecture, input_shape, kwargs",
    [
        ("small_cnn", (28, 28, 1), {"width": 0.25}),
        ("wide_resnet", (16, 16, 3), {"depth": 10, "width": 1}),
        ("cifar_resnet", (16, 16, 3), {"depth": 8, "width": 0.5}),
    ],
)
@pytest.mark.parametrize("scope", ["kernels", "all"])
def test_regularization_gradient_is_wd_times_weight(architecture, input_shape, kwargs, scope):
    keras.utils.set_random_seed(0)
    model = build_model(architecture, input_shape, 10, weight_decay=WD, weight_decay_scope=scope, **kwargs)
    for variable in model.trainable_variables:  # BatchNorm starts at gamma=1, beta=0: make every value distinct
        variable.assign(np.random.default_rng(0).normal(size=variable.shape).astype("float32"))
    kinds = {"kernel"} if scope == "kernels" else {"kernel", "bias", "gamma", "beta"}
    decayed = _check_gradients(model, kinds)
    expected = sum(1 for v in model.trainable_variables if v.path.rsplit("/", 1)[-1] in kinds)
    assert decayed == expected > 0
    if scope == "all":
        assert any(v.path.endswith("gamma") for v in model.trainable_variables)


def test_resnet50_scopes_reach_every_layer():
    model = build_model("resnet50", (32, 32, 3), 10, weight_decay=WD, weight_decay_scope="all")
    regularized = {v.path.rsplit("/", 1)[-1] for v in model.trainable_variables if v.regularizer is not None}
    assert regularized == {"kernel", "bias", "gamma", "beta"}
    assert all(v.regularizer.get_config() == {"weight_decay": WD} for v in model.trainable_variables)
    kernels_only = build_model("resnet50", (32, 32, 3), 10, weight_decay=WD)
    assert {v.path.rsplit("/", 1)[-1] for v in kernels_only.trainable_variables if v.regularizer is not None} == {"kernel"}


def test_weight_decay_value_by_hand_and_against_keras_l2():
    w = np.array([[1.0, -2.0], [3.0, 0.5]], "float32")
    assert float(WeightDecay(WD)(w)) == pytest.approx(WD * (1 + 4 + 9 + 0.25) / 2)
    # Keras' L2 of the same coefficient decays at twice the rate.
    assert float(keras.regularizers.L2(WD)(w)) == pytest.approx(2 * float(WeightDecay(WD)(w)))


def test_sparsified_model_keeps_decay_and_saves(tmp_path):
    model = tft.sparsify(tft.models.small_cnn(width=0.25, weight_decay=WD), 0.8, seed=0)
    _check_gradients(model, {"kernel"})
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("fc").kernel_regularizer.get_config() == {"weight_decay": WD}
    assert float(tf.add_n(loaded.losses)) == pytest.approx(float(tf.add_n(model.losses)), rel=1e-6)


def test_bad_scope_and_value_are_named():
    with pytest.raises(ValueError, match="'bias'.*kernels"):
        decay_arguments(WD, "bias")
    with pytest.raises(ValueError, match="-1"):
        WeightDecay(-1.0)
    assert decay_arguments(0.0, "all") == ({}, {})
    config = fashion_mnist_defaults()
    config.optimizer.weight_decay_scope = "everything"
    with pytest.raises(ConfigError, match="weight_decay_scope='everything'"):
        validate(config)


def test_freetickets_configs_decay_every_parameter():
    for kind in ("dense", "dst", "edst"):
        assert paper_configs.freetickets("cifar10", kind).optimizer.weight_decay_scope == "all"
    assert fashion_mnist_defaults().optimizer.weight_decay_scope == "kernels"


@pytest.mark.parametrize("architecture, kwargs", [("wide_resnet", {"depth": 10, "width": 1}), ("small_cnn", {"width": 0.25})])
def test_all_but_biases_decays_kernels_and_batchnorm_gamma_only(architecture, kwargs):
    keras.utils.set_random_seed(0)
    input_shape = (16, 16, 3) if architecture == "wide_resnet" else (28, 28, 1)
    model = build_model(architecture, input_shape, 10, weight_decay=WD, weight_decay_scope="all_but_biases", **kwargs)
    for variable in model.trainable_variables:
        variable.assign(np.random.default_rng(1).normal(size=variable.shape).astype("float32"))
    decayed = _check_gradients(model, {"kernel", "gamma"})
    kinds = [v.path.rsplit("/", 1)[-1] for v in model.trainable_variables]
    assert decayed == kinds.count("kernel") + kinds.count("gamma") and kinds.count("gamma") > 0
    assert kinds.count("beta") > 0 and kinds.count("bias") > 0  # present, and left alone


def test_each_paper_config_decays_what_its_official_code_decays():
    # CigL: train_helper._add_weight_decay skips every 1-D parameter (biases, BatchNorm).
    for dataset in ("cifar10", "cifar100"):
        assert paper_configs.cigl(dataset).optimizer.weight_decay_scope == "kernels"
        # Divide-and-Co-training: parameters named "bias"/"norm" skipped; BatchNorm is "bn", so gamma decays.
        for splits in (1, 2, 4):
            assert paper_configs.divide_and_cotrain(dataset, splits).optimizer.weight_decay_scope == "all_but_biases"
        assert paper_configs.freetickets(dataset, "dense_ensemble").optimizer.weight_decay_scope == "all"
    # FreeTickets ImageNet: parameters named "bn" skipped (kernels; see METHODS.md for its classifier bias).
    assert paper_configs.freetickets_imagenet().optimizer.weight_decay_scope == "kernels"
