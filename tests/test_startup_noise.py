"""What a user's own script prints besides its results: the README's quick start and several sparse
models trained in one process (issue 28, start-up noise)."""

import os
import re
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_UP_LINES = ("All log messages before absl::InitializeLog", "cpu_feature_guard", "oneDNN custom operations")


def _run(code, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as in a user's shell
    env["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def quick_start_block():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Using the library") :]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_quick_start_prints_no_start_up_lines_and_no_shuffle_warning(tmp_path):
    block = quick_start_block()
    assert block.index("import tf_freetickets") < block.index("import keras")
    # The same script on 256 examples for one epoch.
    loading = 'x, y = tft.data.load_fashion_mnist("train")\n'
    assert loading in block and "epochs=5" in block
    script = block.replace(loading, loading + "x, y = x[:256], y[:256]\n").replace("epochs=5", "epochs=1")
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "rigl.keras").exists()
    noise = [line for line in result.stderr.splitlines() if any(mark in line for mark in START_UP_LINES)]
    assert not noise, noise
    assert "`shuffle=True` was passed" not in result.stderr


def test_several_sparse_models_in_one_process_log_no_retracing_warning(tmp_path):
    # Each fit builds a new mask engine whose functions trace once; TensorFlow counts traces per code
    # object, so 3 models fitted twice each (6 engines) used to cross its threshold of 5.
    script = textwrap.dedent(
        """
        import logging
        import tf_freetickets as tft
        import keras
        import numpy as np

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("tensorflow").addHandler(handler)
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 4, 64)
        for seed in range(3):
            keras.utils.set_random_seed(seed)
            inputs = keras.Input((8,))
            hidden = keras.layers.Dense(16, activation="relu")(inputs)
            model = tft.sparsify(keras.Model(inputs, keras.layers.Dense(4)(hidden)), 0.5, seed=seed)
            model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            for _ in range(2):
                update = tft.MaskUpdate(tft.SET(update_every=4, end_step=8, seed=seed))
                model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[update])
                assert len(update.history) >= 1, update.history
        print("RETRACING:", [r.getMessage()[:120] for r in records if "retracing" in r.getMessage()])
        """
    )
    result = _run(script, ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RETRACING: []" in result.stdout, result.stdout[-3000:]
