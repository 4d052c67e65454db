"""`tft.compact(padded_constants="offset")`: constant channels into "same"-padded convolutions removed, their
border-dependent share added back by an offset map, outputs unchanged (the carrier form: tests/test_compact.py)."""

import keras
import numpy as np
import pytest
from test_compact import _carrier_model, _lone_constant_model, _max_diff, _zero_out

from tf_freetickets.deploy.compact import compact


@pytest.mark.parametrize("second_reader", [False, True])
def test_constants_into_a_same_padded_conv_become_its_offset_map(second_reader):
    # All three nonzero constants go: each reader adds, per output position, what they gave there.
    model = _carrier_model(second_reader)
    small, report = compact(model, padded_constants="offset")
    row = report.row("c1")
    assert (row.after, row.dead, row.folded, row.kept_other) == (2, 1, 3, 0)
    constants = np.array([0, 0.4, 0, 0, 0.7, 0.2])
    for name in ("c2", "c3") if second_reader else ("c2",):
        assert report.row(name).inputs_after == 2
        offset = np.asarray(small.get_layer(f"{name}_offset").offset)
        kernel = model.get_layer(name).kernel.numpy().astype(np.float64)
        # Interior positions see the whole 3x3 window; the corner (0, 0) only its lower-right 2x2 taps.
        np.testing.assert_allclose(offset[5, 5], np.einsum("hwcf,c->f", kernel, constants), atol=1e-6)
        np.testing.assert_allclose(offset[0, 0], np.einsum("hwcf,c->f", kernel[1:, 1:], constants), atol=1e-6)
        np.testing.assert_allclose(offset[11, 4], np.einsum("hwcf,c->f", kernel[:2], constants), atol=1e-6)
    assert _max_diff(model, small, (12, 12, 3)) <= 1e-5


def test_a_lone_constant_into_a_same_padded_conv_goes_as_an_offset():
    model = _lone_constant_model()
    small, report = compact(model, padded_constants="offset")
    row = report.row("c1")
    assert (row.after, row.dead, row.folded, row.kept_other) == (2, 3, 1, 0)
    assert _max_diff(model, small, (12, 12, 3)) <= 1e-5


@pytest.mark.parametrize("case", ["nonlinear activation", "unknown input size"])
def test_offsets_fall_back_to_a_carrier(case):
    # An offset must go between the convolution and its activation, and its map needs the input's size.
    model = _carrier_model(c2_activation="relu") if case == "nonlinear activation" else _carrier_model(size=None)
    small, report = compact(model, padded_constants="offset")
    row = report.row("c1")
    assert (row.after, row.folded, row.kept_other) == (3, 2, 1) and "carries the constants of 2" in row.note
    assert not [layer.name for layer in small.layers if layer.name.endswith("_offset")]
    assert _max_diff(model, small, (12, 12, 3)) <= 1e-5


def test_offsets_leave_one_channel_when_every_channel_is_a_constant():
    # A layer keeps at least one unit: the constant of the channel that stays must stay out of the map.
    keras.utils.set_random_seed(13)
    inputs = keras.Input((9, 9, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3, padding="same", name="c2")(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    _zero_out(model.get_layer("c1"), [0, 1, 2, 3])
    model.get_layer("bn1").set_weights([np.ones(4), np.array([0.5, 0.6, 0.7, 0.8]), np.zeros(4), np.ones(4) - 1e-3])
    small, report = compact(model, padded_constants="offset")
    assert (report.row("c1").after, report.row("c1").folded) == (1, 3)
    assert _max_diff(model, small, (9, 9, 2)) <= 1e-5


def test_an_offset_map_keeps_a_channel_constant_only_where_it_is_uniform():
    keras.utils.set_random_seed(15)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="c0")(inputs)
    offset = np.zeros((6, 6, 3))
    offset[..., 1], offset[0, 0, 2] = 0.25, 1.0
    x = keras.layers.Rescaling(1.0, offset=offset.tolist(), name="shift")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
    _zero_out(model.get_layer("c0"), [1, 2], bias={1: 0.5, 2: 0.5})
    small, report = compact(model)
    # channel 1 holds 0.75 everywhere (folded into out's bias); channel 2 differs at (0, 0): it stays
    assert (report.row("c0").after, report.row("c0").folded, report.row("c0").kept_other) == (2, 1, 1)
    assert np.shape(small.get_layer("shift").offset) == (6, 6, 2)
    assert _max_diff(model, small, (6, 6, 2)) <= 1e-5


def test_a_compacted_model_compacts_to_itself():
    small, _ = compact(_carrier_model(second_reader=True), padded_constants="offset")
    again, report = compact(small, padded_constants="offset")
    assert [layer.name for layer in again.layers] == [layer.name for layer in small.layers]
    assert report.params_after == small.count_params() and _max_diff(small, again, (12, 12, 3)) <= 1e-6


def test_offsets_with_a_flattened_reader_of_the_same_channels():
    # c1's channels go to a "same" convolution and, flattened, to a Dense: the Dense takes the constants
    # into its bias, the convolution as an offset map.
    keras.utils.set_random_seed(16)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3, padding="same", name="c2")(x))
    z = keras.layers.Dense(3, name="d")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Concatenate()([y, z])))
    _zero_out(model.get_layer("c1"), [1, 3], bias={1: 0.5, 3: 0.25})
    small, report = compact(model, padded_constants="offset")
    assert (report.row("c1").after, report.row("c1").folded) == (2, 2) and report.row("d").inputs_after == 72
    assert "c2_offset" in [layer.name for layer in small.layers]
    assert _max_diff(model, small, (6, 6, 2)) <= 1e-5


def test_offsets_repeat_the_passes_until_nothing_more_goes():
    # dw's zero filter makes channel 3 a constant (0.7) into a "same" c2; once it goes as an offset, c1's
    # unit 3 is unread, and with it c0's channel 0, which only that unit read.
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c0")(inputs)
    x = keras.layers.DepthwiseConv2D(1, name="dw")(keras.layers.Conv2D(4, 1, name="c1")(x))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3, padding="same", name="c2")(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    c1 = model.get_layer("c1").get_weights()
    c1[0][:, :, 0, :3], c1[0][:, :, 1:, 3] = 0.0, 0.0
    model.get_layer("c1").set_weights(c1)
    dw = model.get_layer("dw").get_weights()
    dw[0][..., 3, 0], dw[1][3] = 0.0, 0.7
    model.get_layer("dw").set_weights(dw)
    small, report = compact(model, padded_constants="offset")
    assert (report.row("c0").after, report.row("c1").after, report.row("dw").after) == (3, 3, 3)
    again, _ = compact(small, padded_constants="offset")
    assert again.count_params() == small.count_params() and _max_diff(model, small, (6, 6, 2)) <= 1e-5


def test_a_convolution_that_gives_a_model_output_keeps_a_carrier():
    # An offset layer after it would rename the model's output; the carrier keeps the name.
    keras.utils.set_random_seed(17)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", name="c2")(x))
    _zero_out(model.get_layer("c1"), [0, 2], bias={0: 0.5, 2: 0.3})
    small, report = compact(model, padded_constants="offset")
    assert "carries the constants of 1 removed channel(s)" in report.row("c1").note
    assert small.output_names == model.output_names == ["c2"] and _max_diff(model, small, (6, 6, 2)) <= 1e-5


@pytest.mark.parametrize("kernel, strides, dilation, size", [
    (3, 1, 1, 7), (3, 2, 1, 8), (3, 2, 1, 7), (4, 1, 1, 6), (5, 2, 1, 9), (3, 1, 2, 8), (2, 2, 1, 5),
])  # fmt: skip
def test_constant_input_map_is_what_the_convolution_gives_a_constant_input(kernel, strides, dilation, size):
    from tf_freetickets.deploy.compact_decide import constant_input_map

    keras.utils.set_random_seed(14)
    layer = keras.layers.Conv2D(4, kernel, strides=strides, dilation_rate=dilation, padding="same", use_bias=False)
    keras.Sequential([keras.Input((size, size, 3)), layer])
    values = np.array([0.5, 0.0, -1.5])
    want = keras.ops.convert_to_numpy(layer(np.broadcast_to(values, (1, size, size, 3)).astype("float32")))[0]
    got = constant_input_map(layer, values)
    assert got.shape == want.shape and np.max(np.abs(got - want)) <= 1e-5
