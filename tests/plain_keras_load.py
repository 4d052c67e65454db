"""Test helper: does a saved .keras file load and predict with plain Keras, without tf_freetickets?"""

import os
import subprocess
import sys
import textwrap

import numpy as np


def max_abs_diff_loaded_without_library(path, x, expected, folder):
    """Loads `path` in a fresh Python with only Keras, predicts on `x`; returns max |output - expected|.

    The child asserts that tf_freetickets was never imported. Raises AssertionError if the child fails.
    """
    inputs, want = os.path.join(folder, "x.npy"), os.path.join(folder, "want.npy")
    np.save(inputs, x)
    np.save(want, expected)
    script = textwrap.dedent(f"""
        import sys
        import keras, numpy as np
        model = keras.models.load_model({str(path)!r})
        got = np.asarray(model(np.load({inputs!r}), training=False))
        assert "tf_freetickets" not in sys.modules, "the library was imported"
        print(float(np.abs(got - np.load({want!r})).max()))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=folder, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])
