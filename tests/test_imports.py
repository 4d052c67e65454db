"""Importing tf_freetickets must not change what tf.keras resolves to."""

import subprocess
import sys
import textwrap


def _run(code):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_import_leaves_tf_keras_and_legacy_flag_alone():
    out = _run(
        """
        import os, sys
        import tensorflow as tf
        before = tf.keras.Model.__module__
        import tf_freetickets
        after = tf.keras.Model.__module__
        print(before == after, "tf_keras" in sys.modules,
              "tensorflow_model_optimization" in sys.modules, os.environ.get("TF_USE_LEGACY_KERAS"))
        """
    )
    assert out == "True False False None"


def test_masked_layers_are_keras3_layers():
    out = _run(
        """
        import keras, tf_freetickets as tft
        print(issubclass(tft.sparse.layers.MaskedDense, keras.layers.Dense), keras.__version__[0])
        """
    )
    assert out == "True 3"
