"""One input contract for every SavedModel the library writes: shape checked in the graph, raw pixels refused.

The writers: `export_member`, the members the experiment runner writes under
members/, EDST's tickets, `train_independent_ensemble`'s members,
`EnsembleModel.export` and the export binary's ensemble and members. Each is
called through its signatures, which (unlike the Python `serve` function)
feed a tensor of any shape to the graph.
"""

import json
import os
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.deploy import run_export
from tf_freetickets.deploy.saved_model import export_member
from tf_freetickets.experiments.run_context import RunContext

SHAPE_ERROR = r"inputs must be a batch of shape \(N, 28, 28, 1\); got shape\] \[{}\]"
RANGE_ERROR = r"inputs must be float32 values in \[0, 1\] \(raw 0..255 pixels"


def _member(seed=0):
    keras.utils.set_random_seed(seed)
    model = tft.sparsify(tft.models.small_cnn(width=0.25), 0.8, seed=seed)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _images(n=16):
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)


def _edst_ticket(folder):
    x, y = _images()
    edst = tft.EDST(
        tft.SET(update_every=2, drop_fraction=0.5, decay="constant", end_fraction=1.0, seed=0), num_tickets=1,
        exploration_epochs=0, refinement_epochs=2, export_dir=str(folder), verbose=0,
    )  # fmt: skip
    _member().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[edst])
    return edst.tickets[0].saved_model_path


def _independent_member(folder):
    x, y = _images()
    tft.train_independent_ensemble(lambda seed: _member(seed), x, 1, num_members=1, export_dir=str(folder), verbose=0,
                                   y=y, batch_size=8)  # fmt: skip
    return str(folder / "member_0")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """{writer: SavedModel path} for every writer of the library."""
    root = tmp_path_factory.mktemp("contract")
    member = _member()
    fashion_mnist_run = types.SimpleNamespace(config=types.SimpleNamespace(dataset="fashion_mnist"))
    workdir_run = types.SimpleNamespace(
        members_dir=str(root / "workdir" / "members"), input_range=RunContext.input_range.fget(fashion_mnist_run)
    )
    RunContext.write_members(workdir_run, [member], ["member_0"])  # what every training run calls
    ensemble = tft.EnsembleModel([member])
    run_export.write_saved_models(ensemble, str(root / "binary"), run_export.input_range_for("auto", str(root)))
    return {
        "export_member": export_member(member, str(root / "member")),
        "runner members/": str(root / "workdir" / "members" / "member_0"),
        "edst ticket": _edst_ticket(root / "edst"),
        "independent member": _independent_member(root / "independent"),
        "EnsembleModel.export": ensemble.export(str(root / "ensemble")),
        "export binary": str(root / "binary"),
        "export binary member": str(root / "binary_members" / "member_0"),
    }


WRITERS = [
    "export_member", "runner members/", "edst ticket", "independent member", "EnsembleModel.export", "export binary",
    "export binary member",
]  # fmt: skip


@pytest.fixture(scope="module")
def loaded(written):
    return {writer: tf.saved_model.load(path) for writer, path in written.items()}


@pytest.mark.parametrize("writer", WRITERS)
def test_every_signature_refuses_a_wrong_shape(loaded, writer):
    signatures = loaded[writer].signatures
    assert signatures, writer
    for shape in [(2, 28, 28, 2), (2, 28, 28, 4), (2, 27, 28, 1), (2, 28, 28, 1, 1)]:
        x = tf.constant(np.full(shape, 0.5, np.float32))
        for signature in signatures.values():
            with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_ERROR.format(" ".join(map(str, shape)))):
                signature(x)
    for name, signature in signatures.items():
        answers = signature(tf.fill((3, 28, 28, 1), 0.5)).values()  # the right shape is answered: 3 examples
        assert answers and all(3 in tuple(answer.shape) for answer in answers), name


def test_a_rank_3_batch_is_refused_without_crashing_the_process(written):
    # On TensorFlow's oneDNN kernels a rank-3 batch reaching the convolution aborts the process: a subprocess.
    code = textwrap.dedent(
        f"""
        import json, numpy as np, tensorflow as tf
        answers = {{}}
        for writer, path in {written!r}.items():
            loaded = tf.saved_model.load(path)
            try:
                loaded.signatures["serving_default"](tf.constant(np.full((2, 28, 28), 0.5, np.float32)))
                answers[writer] = "answered"
            except tf.errors.InvalidArgumentError as error:
                answers[writer] = next(line for line in str(error).splitlines() if "assertion failed" in line)
        print(json.dumps(answers))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers == {
        writer: "assertion failed: [inputs must be a batch of shape (N, 28, 28, 1); got shape] [2 28 28]" for writer in written
    }


@pytest.mark.parametrize(
    "writer",
    WRITERS,
)
def test_every_savedmodel_refuses_raw_pixels(loaded, writer):
    serve = loaded[writer].serve
    assert serve(np.full((2, 28, 28, 1), 0.5, np.float32)).shape[-1] == 10
    with pytest.raises(tf.errors.InvalidArgumentError, match=RANGE_ERROR):
        serve(np.full((2, 28, 28, 1), 200, np.uint8))


def test_input_range_none_serves_normalised_inputs(tmp_path):
    member = _member()
    loaded = tf.saved_model.load(export_member(member, str(tmp_path / "m"), input_range=None))
    x = np.random.default_rng(1).normal(size=(3, 28, 28, 1)).astype("float32")  # ImageNet-style mean/std inputs
    np.testing.assert_allclose(loaded.serve(x).numpy(), member(x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"input_range='0,1' must be 'auto', None or \(low, high\)"):
        export_member(member, str(tmp_path / "bad"), input_range="0,1")


def test_a_run_gives_its_savedmodels_the_range_of_its_dataset():
    def run_on(dataset):
        return RunContext.input_range.fget(types.SimpleNamespace(config=types.SimpleNamespace(dataset=dataset)))

    assert run_on("fashion_mnist") == "auto" and run_on("cifar10") == "auto"
    assert run_on("imagenet2012") is None  # its stream normalises by the channel mean/std before the model
