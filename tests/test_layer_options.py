"""LayerOptions: the official PyTorch WRN's initialisers, BatchNorm settings and input normalisation."""

import keras
import numpy as np
import pytest

from tf_freetickets.experiments import paper_configs
from tf_freetickets.experiments.run_context import layer_options
from tf_freetickets.models import LayerOptions, build_model, wide_resnet

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_pytorch_options_follow_the_official_wrn():
    keras.utils.set_random_seed(0)
    model = wide_resnet(16, 4, num_classes=10, layer_options=LayerOptions.pytorch(MEAN, STD))
    for bn in _layers(model, keras.layers.BatchNormalization):
        assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    # Convolutions: N(0, 2 / (k * k * out_channels)), not truncated.
    conv = model.get_layer("group3_block2_conv2")
    kernel = conv.kernel.numpy()
    kh, kw, _, out = kernel.shape
    assert abs(kernel.std() / np.sqrt(2.0 / (kh * kw * out)) - 1.0) < 0.02
    assert np.abs(kernel).max() > 2.5 * kernel.std()  # a truncated normal would stop at 2 sd
    # Classifier: PyTorch's Linear default U(+-1/sqrt(fan_in)) and a zero bias.
    logits = model.get_layer("logits")
    fan_in = logits.kernel.shape[0]
    weights = logits.kernel.numpy()
    assert np.abs(weights).max() <= 1.0 / np.sqrt(fan_in)
    assert abs(weights.std() - 1.0 / np.sqrt(3 * fan_in)) < 0.1 / np.sqrt(3 * fan_in)
    assert not np.any(logits.bias.numpy())


def test_input_normalisation_is_inside_the_model():
    model = wide_resnet(10, 1, layer_options=LayerOptions.pytorch(MEAN, STD))
    normalisation = model.get_layer("input_normalization")
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    expected = (x - np.asarray(MEAN, "float32")) / np.asarray(STD, "float32")
    np.testing.assert_allclose(np.asarray(normalisation(x)), expected, rtol=1e-5, atol=1e-6)


def test_default_options_keep_keras_defaults():
    keras.utils.set_random_seed(0)
    a = wide_resnet(10, 1)
    keras.utils.set_random_seed(0)
    b = wide_resnet(10, 1, layer_options=LayerOptions())
    assert [layer.name for layer in a.layers[1:]] == [layer.name for layer in b.layers[1:]]
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in a.layers)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert {(bn.momentum, bn.epsilon) for bn in _layers(a, keras.layers.BatchNormalization)} == {(0.99, 1e-3)}


def test_bad_options_and_resnet50_are_refused():
    with pytest.raises(ValueError, match="Unknown kernel_initializer 'he'"):
        LayerOptions("he")
    with pytest.raises(ValueError, match="batchnorm_momentum=1.0"):
        LayerOptions(batchnorm_momentum=1.0)
    with pytest.raises(ValueError, match="give both or neither"):
        LayerOptions(input_mean=MEAN)
    with pytest.raises(ValueError, match="resnet50 .* takes normalised inputs"):
        build_model("resnet50", (32, 32, 3), 10, layer_options=LayerOptions.pytorch(MEAN, STD))


def test_resnet50_takes_freetickets_imagenet_fan_in_init_and_pytorch_batchnorm():
    # ImageNet/resnet.py with `-c fanin`: kaiming_normal_(mode='fan_in') convolutions, nn.Linear's default
    # classifier (bias included), nn.BatchNorm2d's momentum 0.1 / epsilon 1e-5.
    keras.utils.set_random_seed(0)
    model = build_model("resnet50", (32, 32, 3), 10, weight_decay=1e-4,
                        layer_options=LayerOptions("he_normal_fan_in", 0.9, 1e-5))  # fmt: skip
    kernel = model.get_layer("conv5_block1_2_conv").kernel.numpy()
    kh, kw, fan_in_channels, _ = kernel.shape
    assert abs(kernel.std() / np.sqrt(2.0 / (kh * kw * fan_in_channels)) - 1.0) < 0.01  # 2.4M draws
    assert np.abs(kernel).max() > 2.5 * kernel.std()  # not truncated
    stem = model.get_layer("conv1_conv").kernel.numpy()  # 7x7x3 -> 64: fan-in 147, fan-out 3136
    assert abs(stem.std() / np.sqrt(2.0 / 147) - 1.0) < 0.05
    for bn in _layers(model, keras.layers.BatchNormalization):
        assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    classifier = model.get_layer("predictions")
    bound = 1.0 / np.sqrt(2048)
    for values in (classifier.kernel.numpy(), classifier.bias.numpy()):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.5 * bound
    assert model.get_layer("conv1_conv").kernel_regularizer.weight_decay == 1e-4  # decay still set
    keras.utils.set_random_seed(0)
    plain = build_model("resnet50", (32, 32, 3), 10)  # Keras' defaults when no options are given
    assert {(bn.momentum, bn.epsilon) for bn in _layers(plain, keras.layers.BatchNormalization)} == {(0.99, 1.001e-5)}


def test_paper_configs_build_with_the_official_options():
    config = paper_configs.freetickets("cifar100", kind="dst")
    options = layer_options(config)
    assert options == LayerOptions("he_normal_fan_out", 0.9, 1e-5, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    assert layer_options(paper_configs.freetickets_imagenet()) == LayerOptions("he_normal_fan_in", 0.9, 1e-5)
    assert layer_options(paper_configs.fashion_mnist_defaults()) is None
