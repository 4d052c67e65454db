"""SavedModel export: members and ensemble reload in a fresh process with the same predictions."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.deploy.saved_model import check_pruned_weights_are_zero, export_member


def _sparse_member(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    return tft.sparsify(model, 0.7, seed=seed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    members = [_sparse_member(seed) for seed in range(3)]
    x = np.random.default_rng(0).random((7, 6, 6, 1), dtype=np.float32)  # in [0, 1): the serving contract
    paths = [export_member(m, str(root / f"member_{i}")) for i, m in enumerate(members)]
    ensemble = tft.EnsembleModel(members)
    ensemble.export(str(root / "ensemble"))
    np.save(root / "x.npy", x)
    np.save(root / "member_logits.npy", np.stack([m.predict(x, verbose=0) for m in members]))
    np.save(root / "ensemble_mean.npy", ensemble.predict(x, verbose=0))
    return root, paths, members, ensemble, x


def test_fresh_process_reload_matches_in_memory(exported):
    root, paths, _, _, _ = exported
    code = textwrap.dedent(
        f"""
        import json, numpy as np, tensorflow as tf
        root = {str(root)!r}
        x = np.load(root + "/x.npy")
        loaded = [tf.saved_model.load(p) for p in {paths!r}]  # keep references: variables live in them
        members = [m.serve(x).numpy() for m in loaded]
        ens = tf.saved_model.load(root + "/ensemble")
        out = {{
            "member_err": float(np.abs(np.stack(members) - np.load(root + "/member_logits.npy")).max()),
            "mean_err": float(np.abs(ens.serve(x).numpy() - np.load(root + "/ensemble_mean.npy")).max()),
            "mean_of_members_err": float(np.abs(ens.serve(x).numpy()
                                                - tf.nn.softmax(np.stack(members), -1).numpy().mean(0)).max()),
            "member_probs_shape": list(ens.member_probabilities(x).shape),
            "uncertainty": sorted(ens.uncertainty(x)),
        }}
        print(json.dumps(out))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["member_err"] < 1e-5
    assert out["mean_err"] < 1e-6
    assert out["mean_of_members_err"] < 1e-6
    assert out["member_probs_shape"] == [3, 7, 3]
    assert out["uncertainty"] == ["mean_probabilities", "mutual_information", "predictive_entropy"]


def test_saved_model_variables_hold_exact_zeros(exported):
    import tensorflow as tf

    _, paths, members, _, _ = exported
    loaded = tf.saved_model.load(paths[0])
    by_path = {v.path if hasattr(v, "path") else v.name: v.numpy() for v in loaded.variables}
    kernel = next(v for k, v in by_path.items() if k.endswith("logits/kernel") or k.startswith("logits/kernel"))
    mask = members[0].get_layer("logits").kernel_mask.numpy()
    assert np.all(kernel[mask == 0] == 0)
    assert np.count_nonzero(kernel) == mask.sum()


def test_ensemble_from_saved_model_folders_equals_in_memory(exported):
    _, paths, _, ensemble, x = exported
    reloaded = tft.EnsembleModel.from_saved_models(paths)
    np.testing.assert_allclose(reloaded(x), ensemble(x), rtol=1e-5, atol=1e-6)


def test_export_refuses_weights_outside_masks():
    member = _sparse_member(5)
    layer = member.get_layer("logits")
    layer.kernel_variable.assign(np.ones(layer.kernel_variable.shape, "float32"))
    with pytest.raises(ValueError, match="'logits' has .* nonzero kernel entries outside its mask"):
        check_pruned_weights_are_zero(member)


def _serve_variable_reads(path):
    import tensorflow as tf

    graph = tf.saved_model.load(str(path)).serve.concrete_functions[0].graph.as_graph_def()
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return sum(node.op == "ReadVariableOp" for node in nodes)


def test_serve_endpoints_do_not_read_the_masks(exported):
    # Pruned entries are zeros in the kernels, so serving reads kernels and biases only (no kernel * mask per call).
    root, paths, members, _, _ = exported
    weights = len(members[0].weights) - len(tft.sparse.masked_layers(members[0]))
    assert weights == 4
    assert _serve_variable_reads(paths[0]) == weights
    assert _serve_variable_reads(root / "ensemble") == 3 * weights
