"""`tft.compact`: dead and unread units removed, constants folded, outputs unchanged, a plain Keras model."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.deploy.compact import compact

RNG = np.random.default_rng(0)


def _zero(layer, index):
    """Zeroes `layer`'s kernel at `index` (and its mask there, if it has one)."""
    masked = tft.sparse.layers.is_masked(layer)
    for variable in (layer.kernel_variable, layer.kernel_mask) if masked else (layer.kernel,):
        value = variable.numpy()
        value[index] = 0.0
        variable.assign(value)


def _zero_out(layer, channels, bias=None):
    """Zeroes the kernel slices of `layer`'s output `channels`; `bias`: {channel: value} to set."""
    _zero(layer, (..., channels))
    if bias is not None:
        b = layer.bias.numpy()
        b[list(bias)] = list(bias.values())
        layer.bias.assign(b)


def _zero_in(layer, channels):
    """Zeroes `layer`'s weights on its input channels `channels` (the channels become unread)."""
    _zero(layer, (..., channels, slice(None)))


def _set_beta(model, name, values):
    bn = model.get_layer(name)
    beta = bn.beta.numpy()
    beta[list(values)] = list(values.values())
    bn.beta.assign(beta)


def _randomize_batchnorm(model):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([RNG.uniform(0.5, 1.5, n), RNG.normal(0, 0.3, n), RNG.normal(0, 0.3, n), RNG.uniform(0.5, 2, n)])


def _max_diff(a, b, shape, n=8):
    x = RNG.standard_normal((n, *shape)).astype("float32")
    return float(np.max(np.abs(keras.ops.convert_to_numpy(a(x)) - keras.ops.convert_to_numpy(b(x)))))


def conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def dense(cin, cout):
    return cin * cout + cout


# -- a Dense MLP ------------------------------------------------------------------------------------


def mlp():
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((20,)), keras.layers.Dense(16, activation="relu", name="d1"), keras.layers.Dropout(0.3),
        keras.layers.Dense(12, activation="relu", name="d2"), keras.layers.Dense(5, name="out"),
    ])  # fmt: skip


def test_mlp_dead_folded_and_unread_units():
    model = mlp()
    _zero_out(model.get_layer("d1"), [1, 4], bias={1: 0.5, 4: -1.0})  # 1: relu(0.5) folded; 4: relu(-1) = 0, dead
    _zero_in(model.get_layer("d2"), [7])  # d1's unit 7 is read by no one
    _zero_out(model.get_layer("d2"), [2], bias={2: 0.3})  # folded into "out"
    small, report = compact(model)
    assert isinstance(small, keras.Model) and not isinstance(small, keras.Sequential)
    assert small.count_params() == dense(20, 13) + dense(13, 11) + dense(11, 5)
    assert report.params_before == model.count_params() and report.params_after == small.count_params()
    assert _max_diff(model, small, (20,)) <= 1e-5
    d1, d2, out = (report.row(n) for n in ("d1", "d2", "out"))
    assert (d1.before, d1.after, d1.dead, d1.folded, d1.unread) == (16, 13, 1, 1, 1)
    assert (d2.before, d2.after, d2.inputs_before, d2.inputs_after, d2.folded) == (12, 11, 16, 13, 1)
    assert "folded constants added to the bias" in d2.note
    assert (out.before, out.after, out.inputs_after) == (5, 5, 11)


def test_removals_cascade_over_passes():
    model = mlp()
    _zero_out(model.get_layer("d1"), [0], bias={0: 0.7})
    kernel = model.get_layer("d2").kernel.numpy()
    kernel[1:, 3], kernel[0, 3] = 0.0, 1.0  # d2's unit 3 reads only d1's unit 0, a constant: dead once that is folded
    model.get_layer("d2").kernel.assign(kernel)
    small, report = compact(model)
    assert report.passes == 2
    assert (report.row("d2").after, report.row("d2").folded) == (11, 1)
    assert small.count_params() == dense(20, 15) + dense(15, 11) + dense(11, 5)
    assert _max_diff(model, small, (20,)) <= 1e-5


# -- small_cnn with BatchNormalization and Flatten --------------------------------------------------


def _small_cnn_ticket(model):
    _zero_out(model.get_layer("conv1_1"), [0, 1])
    _set_beta(model, "bn1_1", {0: -3.0, 1: 3.0})  # 0: relu(< 0) = 0, removable; 1: a constant into a "same" conv
    _zero_in(model.get_layer("conv2_1"), [4])  # conv1_2's channel 4 is unread
    _zero_out(model.get_layer("conv2_2"), [2, 5])
    _set_beta(model, "bn2_2", {2: 3.0, 5: -3.0})  # 2: folded through pool and Flatten into fc; 5: dead
    _zero_out(model.get_layer("fc"), [3], bias={3: 0.2})


def _small_cnn_params(padded="carrier"):
    """The compacted `_small_cnn_ticket`'s parameters: conv1_1 keeps 6 channels, or 7 with its lone constant kept."""
    c11 = 7 if padded == "carrier" else 6
    return (conv(3, 1, c11) + 4 * c11 + conv(3, c11, 7) + 4 * 7 + conv(3, 7, 16) + 4 * 16 + conv(3, 16, 14) + 4 * 14
            + dense(7 * 7 * 14, 31) + dense(31, 10))  # fmt: skip


def _small_cnn(layer_options=None):
    keras.utils.set_random_seed(2)
    return tft.models.small_cnn(width=0.25, layer_options=layer_options)


@pytest.mark.parametrize("padded", ["offset", "carrier"])
def test_small_cnn_with_batchnorm_and_flatten(padded):
    model = _small_cnn()
    _randomize_batchnorm(model)
    _small_cnn_ticket(model)
    small, report = compact(model, padded_constants=padded)
    assert small.count_params() == _small_cnn_params(padded)
    assert _max_diff(model, small, (28, 28, 1)) <= 1e-5
    c11, c12, c22, fc = (report.row(n) for n in ("conv1_1", "conv1_2", "conv2_2", "fc"))
    if padded == "carrier":  # a lone constant into a "same" convolution: nothing to merge it with
        assert (c11.before, c11.after, c11.dead, c11.folded, c11.kept_other) == (8, 7, 1, 0, 1)
        assert "constant into 'same'-padded Conv2D 'conv1_2'" in c11.note
        assert "conv1_2_offset" not in [layer.name for layer in small.layers]
    else:  # it goes; conv1_2's offset map adds relu(3.0) x its kernel slice, border windows cut
        assert (c11.before, c11.after, c11.dead, c11.folded, c11.kept_other) == (8, 6, 1, 1, 0)
        assert "'conv1_2_offset' adds the border-dependent share of 1 removed constant input channel(s)" in c12.note
        offset = small.get_layer("conv1_2_offset")
        assert type(offset) is keras.layers.Rescaling and np.shape(offset.offset) == (28, 28, 7)
        assert small.get_layer("bn1_2").input is offset.output
    assert (c12.after, c12.unread) == (7, 1) and report.row("bn1_2").after == 7
    assert (c22.after, c22.dead, c22.folded) == (14, 1, 1)
    assert (fc.inputs_before, fc.inputs_after, fc.after, fc.folded) == (784, 686, 31, 1)  # 2 x 49 flattened features


def test_masked_ticket_through_sparsify_and_strip():
    model = tft.sparsify(_small_cnn(), 0.5, distribution="uniform", seed=3)
    _randomize_batchnorm(model)
    _small_cnn_ticket(model)
    small, report = compact(model)
    stripped, report_stripped = compact(tft.strip_masks(model))
    assert small.count_params() == stripped.count_params() == _small_cnn_params()
    assert _max_diff(model, small, (28, 28, 1)) <= 1e-5 and _max_diff(model, stripped, (28, 28, 1)) <= 1e-5
    assert [r.after for r in report.rows] == [r.after for r in report_stripped.rows]
    assert not tft.sparse.layers.masked_layers(small)


# -- residual networks: an Add keeps a channel unless every branch lets it go -----------------------


def residual_cnn():
    keras.utils.set_random_seed(4)
    x = inputs = keras.Input((12, 12, 3))
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.Conv2D(6, 3, padding="same", name="stem")(x))
    y = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv_b")(x)
    y = keras.layers.BatchNormalization(name="bn_b")(y)
    x = keras.layers.ReLU()(keras.layers.Add(name="add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def test_a_channel_into_an_add_goes_only_where_every_branch_allows():
    model = residual_cnn()
    _randomize_batchnorm(model)
    _zero_out(model.get_layer("conv_b"), [1, 2])  # 1: dead in one branch only
    _zero_out(model.get_layer("stem"), [2, 4], bias={2: -1.0, 4: -1.0})  # 2: dead in both; 4: in the stem only
    _set_beta(model, "bn_b", {2: 0.4})
    small, report = compact(model)
    assert small.count_params() == conv(3, 3, 5, bias=True) + conv(3, 5, 5) + 4 * 5 + dense(5, 4)
    assert _max_diff(model, small, (12, 12, 3)) <= 1e-5
    stem, branch = report.row("stem"), report.row("conv_b")
    assert (stem.after, stem.folded + stem.dead, stem.kept_add) == (5, 1, 1)
    assert (branch.after, branch.folded, branch.kept_add) == (5, 1, 1)


@pytest.mark.parametrize("padded", ["offset", "carrier"])
def test_cifar_resnet_depth_8(padded):
    keras.utils.set_random_seed(5)
    model = tft.models.cifar_resnet(depth=8, width=0.5, input_shape=(16, 16, 3))
    _zero_out(model.get_layer("stage1_block1_conv1"), [3])  # BN at its start: the constant is 0
    _zero_out(model.get_layer("stage2_block1_conv1"), [5])
    _set_beta(model, "stage2_block1_bn1", {5: 0.5})  # a nonzero constant into a "same" conv: an offset, or kept
    for name in ("stage2_block1_shortcut", "stage2_block1_conv2"):
        _zero_out(model.get_layer(name), [7])  # both branches of the add: goes
    for name in ("stage3_block1_shortcut", "stage3_block1_conv2"):
        _zero_out(model.get_layer(name), [9])
    _set_beta(model, "stage3_block1_bn2", {9: 0.3})
    _set_beta(model, "stage3_block1_shortcut_bn", {9: 0.2})  # relu(0.5) through the pool into the logits' bias
    _zero_out(model.get_layer("stage3_block1_conv2"), [11])  # one branch only: kept
    small, report = compact(model, padded_constants=padded)
    lone = 16 if padded == "carrier" else 15  # stage2_block1_conv1's channels
    want = (conv(3, 3, 8) + 32 + conv(3, 8, 7) + 28 + conv(3, 7, 8) + 32
            + conv(1, 8, 15) + 60 + conv(3, 8, lone) + 4 * lone + conv(3, lone, 15) + 60
            + conv(1, 15, 31) + 124 + conv(3, 15, 32) + 128 + conv(3, 32, 31) + 124 + dense(31, 10))  # fmt: skip
    assert small.count_params() == want
    assert _max_diff(model, small, (16, 16, 3)) <= 1e-5
    assert (report.row("stage1_block1_conv1").after, report.row("stage1_block1_conv1").dead) == (7, 1)
    lone_row = report.row("stage2_block1_conv1")
    if padded == "carrier":
        assert lone_row.after == 16 and lone_row.kept_other == 1 and "'same'-padded" in lone_row.note
    else:
        assert (lone_row.after, lone_row.folded, lone_row.kept_other) == (15, 1, 0)
        assert "'stage2_block1_conv2_offset' adds" in report.row("stage2_block1_conv2").note
    assert report.row("stage2_block1_shortcut").dead == 1 and report.row("stage2_block1_conv2").dead == 1
    assert report.row("stage3_block1_shortcut").folded == 1
    assert (report.row("stage3_block1_conv2").folded, report.row("stage3_block1_conv2").kept_add) == (1, 1)
    assert report.row("logits").inputs_after == 31


def test_depthwise_passes_channels_through():
    keras.utils.set_random_seed(6)
    x = inputs = keras.Input((10, 10, 3))
    x = keras.layers.BatchNormalization(name="bn0")(keras.layers.Conv2D(6, 3, use_bias=False, name="c0")(x))
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)  # "valid": constants stay constant
    x = keras.layers.Conv2D(5, 1, name="pw")(keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x)))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling2D()(x)))
    _randomize_batchnorm(model)
    _set_beta(model, "bn0", {2: 3.0})
    _set_beta(model, "bn1", {2: 3.0, 4: 3.0})
    _zero_out(model.get_layer("c0"), [2])  # a constant through the depthwise into pw's bias
    _zero(model.get_layer("dw"), (slice(None), slice(None), 4))  # c0's channel 4 reaches nothing that varies: unread
    small, report = compact(model)
    assert small.count_params() == conv(3, 3, 4) + 16 + (9 * 4 + 4) + 16 + conv(1, 4, 5, bias=True) + dense(5, 3)
    assert _max_diff(model, small, (10, 10, 3)) <= 1e-5
    assert (report.row("c0").folded, report.row("c0").unread, report.row("dw").after) == (1, 1, 4)


def test_bias_free_consumer_folds_into_the_next_batchnorm():
    keras.utils.set_random_seed(7)
    x = inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c0")(x)
    x = keras.layers.Conv2D(5, 3, use_bias=False, name="c1")(keras.layers.ReLU()(x))  # "valid"
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x)))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    _randomize_batchnorm(model)
    _zero_out(model.get_layer("c0"), [1], bias={1: 0.8})
    small, report = compact(model)
    assert small.count_params() == conv(3, 2, 3, bias=True) + conv(3, 3, 5) + 20 + dense(5, 2)
    assert _max_diff(model, small, (8, 8, 2)) <= 1e-5
    assert "moving mean absorbs" in report.row("bn1").note


def test_a_1x1_same_padded_conv_takes_a_constant():
    keras.utils.set_random_seed(10)
    x = inputs = keras.Input((6, 6, 2))
    x = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, padding="same", name="c0")(x))
    x = keras.layers.Conv2D(3, 1, strides=2, padding="same", name="pw")(x)  # a 1x1 window never reaches the padding
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, padding="same", name="c2")(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    _zero_out(model.get_layer("c0"), [1], bias={1: 0.8})
    small, report = compact(model)
    assert small.count_params() == conv(3, 2, 3, bias=True) + conv(1, 3, 3, bias=True) + conv(3, 3, 2, bias=True) + dense(2, 2)
    assert _max_diff(model, small, (6, 6, 2)) <= 1e-5 and report.row("c0").folded == 1


def _carrier_model(second_reader=False, c2_activation=None, size=12):
    """size x size x 3 -> c1 (6, no bias) -> BN -> ReLU -> c2 (3x3 "same") [-> c3 (3x3 "same") on the ReLU too]
    -> pool -> out; c1's channels 1, 2, 4, 5 are dead, with constants 0.4, 0, 0.7, 0.2 after the ReLU."""
    keras.utils.set_random_seed(12)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    y = keras.layers.Conv2D(5, 3, padding="same", activation=c2_activation, name="c2")(x)
    if second_reader:
        y = keras.layers.Add()([y, keras.layers.Conv2D(5, 3, padding="same", name="c3")(x)])
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(keras.layers.GlobalAveragePooling2D()(y)))
    _randomize_batchnorm(model)
    _zero_out(model.get_layer("c1"), [1, 2, 4, 5])
    bn = model.get_layer("bn1")  # constants relu(beta): 0.4, 0 (a dead channel), 0.7, 0.2
    gamma, beta, mean, variance = (v.numpy() for v in bn.weights)
    beta[[1, 2, 4, 5]], mean[[1, 2, 4, 5]], variance[[1, 2, 4, 5]] = [0.4, -0.3, 0.7, 0.2], 0.0, 1.0 - 1e-3
    bn.set_weights([gamma, beta, mean, variance])
    return model


@pytest.mark.parametrize("second_reader", [False, True])
def test_constants_into_a_same_padded_conv_merge_into_one_carrier(second_reader):
    # The padding cuts the border windows, so no bias can take a constant channel; but the
    # convolution is linear in its channels: channels 1 and 5 go into the kernel slice of channel 4.
    model = _carrier_model(second_reader)
    small, report = compact(model, padded_constants="carrier")
    row = report.row("c1")
    assert (row.after, row.dead, row.folded, row.kept_other) == (3, 1, 2, 1)
    assert "carries the constants of 2 removed channel(s)" in row.note
    readers = ("c2", "c3") if second_reader else ("c2",)
    assert all(report.row(name).inputs_after == 3 for name in readers)
    assert _max_diff(model, small, (12, 12, 3)) <= 1e-5


def _lone_constant_model():
    model = _carrier_model()
    bn = model.get_layer("bn1")
    gamma, beta, mean, variance = (v.numpy() for v in bn.weights)
    beta[[1, 5]] = -1.0  # only channel 4 holds a nonzero constant: merging it with itself gains nothing
    bn.set_weights([gamma, beta, mean, variance])
    return model


def test_a_lone_constant_into_a_same_padded_conv_stays_without_offsets():
    model = _lone_constant_model()
    small, report = compact(model, padded_constants="carrier")
    row = report.row("c1")
    assert (row.after, row.dead, row.folded, row.kept_other) == (3, 3, 0, 1) and "'same'-padded" in row.note
    assert _max_diff(model, small, (12, 12, 3)) <= 1e-5


@pytest.mark.parametrize("pool", [keras.layers.MaxPooling2D, keras.layers.AveragePooling2D])
def test_same_padded_pooling_keeps_a_constant_constant(pool):
    keras.utils.set_random_seed(9)
    x = inputs = keras.Input((7, 7, 2))
    x = keras.layers.Flatten()(pool(3, 2, padding="same")(keras.layers.Conv2D(4, 3, name="c0")(x)))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    _zero_out(model.get_layer("c0"), [1], bias={1: -2.0})  # TensorFlow's pools leave the padding out
    small, report = compact(model)
    assert small.count_params() == conv(3, 2, 3, bias=True) + dense(9 * 3, 3)
    assert _max_diff(model, small, (7, 7, 2)) <= 1e-5 and report.row("c0").folded == 1


# -- what compact refuses or keeps -----------------------------------------------------------------


def padded_cnn():
    keras.utils.set_random_seed(8)
    x = inputs = keras.Input((8, 8, 2))
    x = keras.layers.ZeroPadding2D(name="pad")(keras.layers.Conv2D(4, 3, name="c0")(x))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3, name="c1")(x))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))


def test_unsupported_layer_between_prunable_layers_is_refused_in_one_line():
    model = padded_cnn()
    assert compact(model)[1].params_after == model.count_params()  # nothing to remove: no refusal
    _zero_out(model.get_layer("c0"), [1], bias={1: 0.5})
    with pytest.raises(ValueError, match="'pad' \\(ZeroPadding2D\\)") as error:
        compact(model)
    assert "\n" not in str(error.value)
    small, report = compact(model, unsupported="keep")
    assert small.count_params() == model.count_params()
    assert report.row("c0").kept_other == 1 and "unsupported ZeroPadding2D 'pad'" in report.row("c0").note


def test_model_outputs_keep_every_unit():
    model = padded_cnn()
    _zero_out(model.get_layer("out"), [0], bias={0: 0.1})  # a dead logit into the softmax: kept
    small, report = compact(model)
    assert small.count_params() == model.count_params() and report.row("out").kept_other == 1


def test_refuses_subclassed_models_and_unknown_modes():
    with pytest.raises(TypeError, match="Functional or Sequential"):
        compact(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="unsupported="):
        compact(mlp(), unsupported="skip")
    with pytest.raises(ValueError, match="padded_constants='border'; use one of \\('offset', 'carrier'\\)"):
        compact(mlp(), padded_constants="border")


def test_verbose_prints_the_table(capsys):
    model = mlp()
    _zero_out(model.get_layer("d1"), [1])
    tft.compact(model, verbose=True)
    out = capsys.readouterr().out
    assert "units before -> after" in out and "d1 | Dense | 16 -> 15" in out


# -- a plain Keras file ----------------------------------------------------------------------------


def test_keras_file_loads_without_the_library(tmp_path):
    options = tft.models.LayerOptions(input_mean=(0.3,), input_std=(0.2,))  # a Normalization layer on the input
    model = tft.models.with_fused_batchnorm(_small_cnn(options))  # its BatchNormalization class is the library's
    _randomize_batchnorm(model)
    _small_cnn_ticket(model)
    ticket = tft.sparsify(model, 0.5, seed=0)
    small, _ = compact(ticket, padded_constants="offset")  # its Rescaling offset map loads in safe mode too
    normalization = sum(int(np.prod(w.shape)) for w in small.get_layer("input_normalization").weights)
    assert small.count_params() == _small_cnn_params("offset") + normalization
    assert type(small.get_layer("conv1_2_offset")) is keras.layers.Rescaling
    assert _max_diff(ticket, small, (28, 28, 1)) <= 1e-5
    path, probe = str(tmp_path / "compact.keras"), tmp_path / "probe.npz"
    small.save(path)
    x = RNG.standard_normal((4, 28, 28, 1)).astype("float32")
    np.savez(probe, x=x, y=keras.ops.convert_to_numpy(small(x)))
    code = f"""
        import sys
        import keras, numpy as np
        model = keras.models.load_model({path!r}, safe_mode=True)
        data = np.load({str(probe)!r})
        diff = float(np.max(np.abs(model.predict(data["x"], verbose=0) - data["y"])))
        print("tf_freetickets" in sys.modules, diff <= 1e-6, model.count_params())
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                            env=env, cwd=str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True", str(small.count_params())]
