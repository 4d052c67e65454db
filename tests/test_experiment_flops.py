"""Training and inference FLOPs that experiment.run records, against RigL's formulas by hand."""

import pytest

from tf_freetickets import models
from tf_freetickets.experiments.config import fashion_mnist_defaults
from tf_freetickets.experiments.flops import run_flops
from tf_freetickets.experiments.plan import RunPlan
from tf_freetickets.metrics import forward_flops, num_mask_updates
from tf_freetickets.sparse import sparsify

STEPS_PER_EPOCH = 50


def _config(method, kind="none", members=3, epochs=2):
    config = fashion_mnist_defaults()
    config.sparse.method = method
    config.sparse.sparsity = 0.8
    config.ensemble.kind = kind
    config.ensemble.num_members = members
    config.epochs = epochs
    return config


def _model(width=0.5, sparse=True, seed=0):
    model = models.build_model("small_cnn", (28, 28, 1), 10, width=width)
    return sparsify(model, 0.8, "erk", seed=seed) if sparse else model


def test_dense_single_model_costs_three_forward_passes_per_example():
    config = _config("dense")
    model = _model(sparse=False)
    dense, _ = forward_flops(model)
    flops = run_flops(RunPlan.from_config(config), [model], STEPS_PER_EPOCH)
    assert flops["training_flops"] == 3 * dense * 128 * 2 * STEPS_PER_EPOCH
    assert flops["inference_flops"] == flops["dense_inference_flops"] == dense


def test_rigl_ensemble_adds_one_dense_gradient_batch_per_update_for_each_member():
    config = _config("rigl", kind="independent", epochs=4)
    members = [_model(seed=i) for i in range(3)]
    dense, sparse = forward_flops(members[0])
    steps = 4 * STEPS_PER_EPOCH  # 200 steps, ΔT = 100, updates until 75%: one update (step 100)
    updates = num_mask_updates(steps, 100, end_fraction=0.75)
    assert updates == 1
    one_run = 3 * sparse * 128 * steps + updates * 128 * (2 * sparse + dense)
    flops = run_flops(RunPlan.from_config(config), members, STEPS_PER_EPOCH)
    assert flops["training_flops"] == 3 * one_run
    assert flops["inference_flops"] == 3 * sparse and flops["dense_inference_flops"] == 3 * dense


def test_edst_with_set_growth_costs_one_sparse_run_of_all_its_epochs():
    config = _config("set", kind="edst")
    config.ensemble.exploration_epochs, config.ensemble.refinement_epochs = 1, 2
    ticket = _model()
    _, sparse = forward_flops(ticket)
    flops = run_flops(RunPlan.from_config(config), [ticket, _model(seed=1), _model(seed=2)], STEPS_PER_EPOCH)
    # SET's random growth and global exploration cost no FLOPs: 7 epochs of sparse steps.
    assert flops["training_flops"] == 3 * sparse * 128 * 7 * STEPS_PER_EPOCH
    assert flops["training"]["num_global_explorations"] == 2


def test_divide_and_cotraining_sums_its_narrow_members():
    config = _config("dense", kind="dnc", members=2)
    members = [_model(width=0.5 / 2**0.5, sparse=False, seed=i) for i in range(2)]
    per_member = forward_flops(members[0])[0]
    flops = run_flops(RunPlan.from_config(config), members, STEPS_PER_EPOCH)
    assert flops["training_flops"] == 2 * 3 * per_member * 128 * 2 * STEPS_PER_EPOCH
    wide = forward_flops(_model(sparse=False))[0]
    assert flops["inference_flops"] / wide == pytest.approx(1.0, abs=0.1)  # S narrow nets ~ one wide net
