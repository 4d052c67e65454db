"""FLOPs accounting: per-layer forward FLOPs by hand, RigL training formulas, DST/EDST/DNC totals.

Convention under test: one multiply-add = 2 FLOPs, kernel multiply-adds only.
"""

import json

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.costs import forward as F
from tf_freetickets.costs import training as FS
from tf_freetickets.ensembles.edst import EDSTSchedule
from tf_freetickets.sparse.schedules import UpdateSchedule

# The two-layer model: Conv2D 3x3, 1 -> 4 channels on a 6x6 'valid' input gives a
# 4x4x4 output (16 positions x 36 weights), Flatten gives 64, Dense 64 -> 3.
CONV_DENSE = 2 * 16 * (3 * 3 * 1 * 4)  # 1152
FC_DENSE = 2 * 64 * 3  # 384
F_D = CONV_DENSE + FC_DENSE  # 1536
# Uniform 50%: 18 of 36 conv weights, 96 of 192 dense weights.
F_S = 2 * 16 * 18 + 2 * 96  # 576 + 192 = 768


def two_layer(channels=4, name="two_layer"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(channels, 3, padding="valid", name="conv")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x), name=name)


@pytest.fixture(scope="module")
def dense_model():
    return two_layer()


@pytest.fixture(scope="module")
def sparse_model(dense_model):
    return tft.sparsify(dense_model, 0.5, distribution="uniform", seed=0)


def test_per_layer_flops_by_hand_dense_and_sparse(dense_model, sparse_model):
    rows = F.layer_forward_flops(dense_model)
    assert [(r.name, r.dense_flops, r.sparse_flops, r.density) for r in rows] == [
        ("conv", 1152, 1152, 1.0),
        ("fc", 384, 384, 1.0),
    ]
    rows = F.layer_forward_flops(sparse_model)
    assert [(r.name, r.dense_flops, r.sparse_flops, r.density, r.layer_type) for r in rows] == [
        ("conv", 1152, 576, 0.5, "MaskedConv2D"),
        ("fc", 384, 192, 0.5, "MaskedDense"),
    ]
    assert F.forward_flops(sparse_model) == (F_D, F_S)
    assert F.inference_flops(sparse_model) == F_S
    assert F.inference_flops(dense_model) == F_D
    assert [r.sparse_flops for r in F.layer_forward_flops(sparse_model, batch_size=4)] == [4 * 576, 4 * 192]
    assert F.relative_to_dense(F.inference_flops(sparse_model), F_D) == 0.5


def test_other_kernel_layers_by_hand():
    keras.utils.set_random_seed(0)
    image = keras.Input((6, 6, 1))
    seq = keras.Input((5, 3))
    signal = keras.Input((10, 2))
    outputs = [
        keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", name="tconv")(image),  # 36 inputs x 27
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(image),  # 16 outputs x 18
        keras.layers.SeparableConv2D(4, 3, name="sep")(image),  # 16 outputs x (9 + 4)
        keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 8), name="einsum")(seq),  # 5 x 24
        keras.layers.Dense(8, name="dense3d")(seq),  # 5 positions x 24
        keras.layers.Conv1D(4, 3, name="conv1d")(signal),  # 8 outputs x 24
    ]
    model = keras.Model([image, seq, signal], outputs)
    got = {r.name: r.dense_flops for r in F.layer_forward_flops(model)}
    assert got == {
        "tconv": 2 * 36 * 27,
        "dw": 2 * 16 * 18,
        "sep": 2 * 16 * 13,
        "einsum": 2 * 5 * 24,
        "dense3d": 2 * 5 * 24,
        "conv1d": 2 * 8 * 24,
    }
    sparse = tft.sparsify(model, 0.5, distribution="uniform", seed=0)
    rows = {r.name: r for r in F.layer_forward_flops(sparse)}
    assert rows["tconv"].sparse_flops == 2 * 36 * 14  # active_count(27, 0.5): floor(13.5) = 13 zeros, 14 active
    assert rows["einsum"].sparse_flops == 2 * 5 * 12
    assert rows["sep"].sparse_flops == rows["sep"].dense_flops  # never masked


def test_nested_models_count_every_call_and_ensembles_sum_members(sparse_model):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, name="c")], name="inner")
    x = keras.Input((6, 6, 1))
    model = keras.Model(x, keras.layers.Add()([inner(x), inner(x)]))
    assert [(r.name, r.dense_flops) for r in F.layer_forward_flops(model)] == [("inner/c", 2 * 1152)]

    other = tft.sparsify(two_layer(), 0.5, distribution="uniform", seed=1)
    ensemble = tft.EnsembleModel([sparse_model, other])
    rows = F.layer_forward_flops(ensemble)
    assert [r.name for r in rows] == ["members[0]/conv", "members[0]/fc", "members[1]/conv", "members[1]/fc"]
    assert F.inference_flops(ensemble) == F.inference_flops([sparse_model, other]) == 2 * F_S


def test_unsupported_layers_and_methods_raise_clear_errors(dense_model):
    inputs = keras.Input((4, 2))
    with pytest.raises(ValueError, match=r"'lstm'.*LSTM"):
        F.layer_forward_flops(keras.Model(inputs, keras.layers.LSTM(3, name="lstm")(inputs)))
    with pytest.raises(ValueError, match="Unknown sparse method 'prune'; registered methods: dense, static, set, rigl"):
        FS.training_flops("prune", dense_model, total_steps=10, batch_size=1)

    class UnregisteredRigL(tft.RigL):  # a subclass is a method of its own, never costed as RigL
        pass

    with pytest.raises(ValueError, match="UnregisteredRigL is not a registered method"):
        FS.training_flops(UnregisteredRigL(), dense_model, total_steps=10, batch_size=1)
    with pytest.raises(ValueError, match="sparse forward FLOPs"):
        FS.training_flops("rigl", dense_flops=10, total_steps=10, batch_size=1)
    with pytest.raises(ValueError, match="positive"):
        F.relative_to_dense(1, 0)


@pytest.mark.parametrize(
    "total, kwargs",
    [(1000, {}), (1000, {"end_fraction": 1.0}), (95, {"update_every": 10, "begin_step": 5, "end_step": 60}), (50, {})],
)
def test_num_mask_updates_matches_update_schedule(total, kwargs):
    schedule = UpdateSchedule(**kwargs).resolved(total)
    want = sum(schedule.is_update_step(s) for s in range(total + 1))
    assert FS.num_mask_updates(total, **kwargs) == want


RUN = {"total_steps": 1000, "batch_size": 32}  # ΔT = 100, end 0.75 -> updates at 100..700: 7


def test_single_run_training_flops_by_hand(sparse_model):
    dense = FS.training_flops("dense", sparse_model, **RUN)
    assert dense.total_flops == 3 * 1536 * 32 * 1000 == 147_456_000
    assert dense.num_mask_updates == 0
    static = FS.training_flops("static", sparse_model, **RUN)
    assert static.total_flops == 3 * 768 * 32 * 1000 == 73_728_000
    set_run = FS.training_flops("set", sparse_model, **RUN)
    assert (set_run.total_flops, set_run.num_mask_updates) == (73_728_000, 7)
    rigl = FS.training_flops("rigl", sparse_model, **RUN)
    # 7 updates x 1 extra batch of 32 x (2 f_S + f_D) = 7 * 32 * 3072.
    assert (rigl.step_flops, rigl.gradient_flops) == (73_728_000, 688_128)
    assert rigl.total_flops == 74_416_128
    assert FS.training_flops("cigl", sparse_model, **RUN).total_flops == 74_416_128
    # The same from an updater, and from explicit per-example FLOPs.
    updater = tft.RigL(update_every=100, end_fraction=0.75)
    assert FS.training_flops(updater, sparse_model, **RUN) == rigl
    assert FS.training_flops("rigl", dense_flops=F_D, sparse_flops=F_S, **RUN) == rigl
    # Dense gradient on the update step's own batch: +(f_D - f_S) * B per update.
    assert FS.training_flops("rigl", sparse_model, gradient_batches=0, **RUN).gradient_flops == 7 * 32 * 768
    assert FS.training_flops("rigl", sparse_model, gradient_batches=2, gradient_batch_size=128, **RUN).gradient_flops == (
        7 * 2 * 128 * 3072
    )
    # SNFS as in the paper: dense gradient every step, (2 f_S + f_D) per example.
    assert FS.training_flops("snfs", sparse_model, **RUN).total_flops == 3072 * 32 * 1000
    # The library's SNFS updater: 5 extra dense-gradient batches per update.
    assert FS.training_flops(tft.SNFS(update_every=100), sparse_model, **RUN).total_flops == (73_728_000 + 7 * 5 * 32 * 3072)
    assert FS.training_flops(tft.Static(), sparse_model, **RUN).total_flops == 73_728_000
    # Updaters whose growth takes the update step's own batch cost as gradient_batches=0.
    step_batch = tft.RigL(update_every=100, end_fraction=0.75, growth_gradient="step_batch")
    assert FS.training_flops(step_batch, sparse_model, **RUN).gradient_flops == 7 * 32 * 768
    # FreeTickets' rules: a dense weight gradient every step, (2 f_S + f_D) per example, nothing more.
    official = tft.sparse.freetickets_official(tft.RigL, update_every=100, end_fraction=0.75)
    run = FS.training_flops(official, sparse_model, **RUN)
    assert (run.step_flops, run.gradient_flops) == (3072 * 32 * 1000, 0)


def test_rigl_matches_the_papers_per_iteration_average():
    # Updates every ΔT until the end: T + U iterations at (3 f_S ΔT + 2 f_S + f_D) / (ΔT + 1) each.
    run = FS.training_flops("rigl", dense_flops=F_D, sparse_flops=F_S, end_fraction=1.0, **RUN)
    assert run.num_mask_updates == 10
    average = (3 * F_S * 100 + 2 * F_S + F_D) / 101
    assert run.total_flops == pytest.approx(average * (1000 + 10) * 32)


def test_dst_edst_and_dnc_totals_by_hand(sparse_model):
    rigl_run = 74_416_128
    dst = FS.dst_ensemble_training_flops("rigl", sparse_model, num_members=3, **RUN)
    assert (dst.total_flops, dst.runs) == (3 * rigl_run, 3)
    other = tft.sparsify(two_layer(), 0.5, distribution="uniform", seed=1)
    assert FS.dst_ensemble_training_flops("rigl", [sparse_model, other], **RUN).total_flops == 2 * rigl_run

    # EDST: M=3, t_ex=2, t_re=2 -> 8 epochs x 25 steps = 200 steps; ΔT=20 to the end -> 10 updates.
    schedule = EDSTSchedule(num_tickets=3, exploration_epochs=2, refinement_epochs=2)
    edst_kwargs = {"schedule": schedule, "steps_per_epoch": 25, "batch_size": 32, "update_every": 20}
    edst_set = FS.edst_training_flops("set", sparse_model, **edst_kwargs)
    assert edst_set.total_flops == 3 * 768 * 32 * 200 == 14_745_600
    assert (edst_set.num_mask_updates, edst_set.num_global_explorations) == (10, 2)
    # RigL growth: 10 updates + 2 global explorations, each 32 x (2 f_S + f_D).
    edst_rigl = FS.edst_training_flops("rigl", sparse_model, **edst_kwargs)
    assert edst_rigl.gradient_flops == 12 * 32 * 3072
    assert edst_rigl.total_flops == 14_745_600 + 1_179_648

    # DNC: members with 2 and 3 conv channels cost 384 c per example each: 768 and 1152.
    members = [two_layer(2, "member_0"), two_layer(3, "member_1")]
    assert [F.inference_flops(m) for m in members] == [768, 1152]
    dnc = FS.dnc_training_flops("dense", members, total_steps=100, batch_size=8)
    assert (dnc.total_flops, dnc.runs, dnc.method) == (3 * (768 + 1152) * 8 * 100, 2, "dnc:dense")
    assert FS.dnc_training_flops("dense", [(768, 768), (1152, 1152)], total_steps=100, batch_size=8) == dnc


def test_edst_on_small_cnn_against_freetickets_dense_baselines():
    keras.utils.set_random_seed(0)
    model = tft.sparsify(tft.models.small_cnn(), 0.8, distribution="erk", seed=0)
    # By hand: (output positions, kernel weights) per layer of the 28x28x1 small CNN.
    layout = {
        "conv1_1": (28 * 28, 3 * 3 * 1 * 32),
        "conv1_2": (28 * 28, 3 * 3 * 32 * 32),
        "conv2_1": (14 * 14, 3 * 3 * 32 * 64),
        "conv2_2": (14 * 14, 3 * 3 * 64 * 64),
        "fc": (1, 7 * 7 * 64 * 128),
        "logits": (1, 128 * 10),
    }
    f_d = sum(2 * p * w for p, w in layout.values())
    assert f_d == 37_383_680
    active = {name: int(model.get_layer(name).kernel_mask.numpy().sum()) for name in layout}
    f_s = sum(2 * layout[name][0] * active[name] for name in layout)
    assert F.forward_flops(model) == (f_d, f_s)

    # FreeTickets' CIFAR layout: M=3, t_ex=150, t_re=100 (450 epochs), SET growth, ΔT=1000,
    # batch 128, 391 steps per epoch; the dense baseline trains 250 epochs.
    steps, batch = 391, 128
    edst = FS.edst_training_flops(
        "set", model, schedule=EDSTSchedule(3, 150, 100), steps_per_epoch=steps, batch_size=batch, update_every=1000
    )
    assert edst.total_flops == 3 * f_s * batch * 450 * steps
    dense_250 = FS.training_flops("dense", model, total_steps=250 * steps, batch_size=batch)
    dense_450 = FS.training_flops("dense", model, total_steps=450 * steps, batch_size=batch)
    ratio = F.relative_to_dense(edst, dense_250)
    assert ratio == pytest.approx(450 * f_s / (250 * f_d))
    assert ratio < 0.6
    assert F.relative_to_dense(edst, dense_450) == pytest.approx(f_s / f_d)


def test_report_is_json_and_table_prints(sparse_model):
    run = FS.training_flops("rigl", sparse_model, **RUN)
    dense = FS.training_flops("dense", sparse_model, **RUN)
    report = F.flops_report(sparse_model, training=run, dense_training=dense)
    decoded = json.loads(json.dumps(report))
    assert decoded["sparse_forward_flops"] == F_S
    assert decoded["layers"][0] == {
        "name": "conv",
        "dense_flops": 1152,
        "sparse_flops": 576,
        "density": 0.5,
        "layer_type": "MaskedConv2D",
    }
    assert decoded["training"]["total_flops"] == 74_416_128
    assert decoded["training_relative_to_dense"] == pytest.approx(74_416_128 / 147_456_000)
    table = F.flops_table(sparse_model)
    assert "conv" in table and "1,536" in table and np.isfinite(decoded["forward_relative_to_dense"])
