"""tfmot's `PruneForLatencyOnXNNPack` as a report: which pruned layers XNNPACK's sparse path can use."""

import keras

import tf_freetickets as tft


def _mobilenet_like(head_padding="valid", depthwise_strides=1):
    """Start conv (3x3/2 on 3 channels after ZeroPadding2D(1)), a depthwise + 1x1 block, GAP(keepdims), Dense."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.ZeroPadding2D(1)(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, padding=head_padding, name="stem")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.DepthwiseConv2D(3, strides=depthwise_strides, padding="same", name="dw")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Conv2D(16, 1, activation="relu", name="pw")(h)
    h = keras.layers.Add()([h, keras.layers.Conv2D(16, 1, name="pw_skip")(h)])
    h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    outputs = keras.layers.Dense(4, name="fc")(keras.layers.Flatten()(h))
    return tft.sparsify(keras.Model(inputs, outputs), 0.8, seed=0)


def test_1x1_convs_inside_the_xnnpack_subgraph_qualify_and_others_say_why():
    lines = []
    rows = {row.layer: row for row in tft.sparse.xnnpack_sparse_report(_mobilenet_like(), print_fn=lines.append)}
    assert rows["pw"].usable and rows["pw_skip"].usable
    assert not rows["stem"].usable and rows["stem"].reason == "a Conv2D (3, 3): XNNPACK's sparse path runs only 1x1 Conv2D"
    assert not rows["dw"].usable and not rows["fc"].usable and "only 1x1 Conv2D" in rows["fc"].reason
    assert "xnn_is_chw_compatible_config" in lines[-1] and "AVX" in lines[-1]
    assert any(line.startswith("pw ") and "sparse path" in line for line in lines)


def test_a_model_without_the_start_layer_or_with_an_unsupported_layer_is_named():
    rows = {row.layer: row for row in tft.sparse.xnnpack_sparse_report(_mobilenet_like(head_padding="same"), None)}
    assert not rows["pw"].usable
    assert rows["pw"].reason.startswith("the model has no sparse subgraph: no 3x3 stride-2 'valid' Conv2D on 3 channels")
    rows = {row.layer: row for row in tft.sparse.xnnpack_sparse_report(_mobilenet_like(depthwise_strides=2), None)}
    # A stride-2 depthwise conv needs "valid" padding after ZeroPadding2D(1) in XNNPACK's CHW layout.
    assert not rows["pw"].usable
    assert "layer 'dw' (MaskedDepthwiseConv2D) between start and end has no CHW (sparse) kernel" in rows["pw"].reason
