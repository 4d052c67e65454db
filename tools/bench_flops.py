"""Training FLOPs of EDST, DST ensembles and RigL against dense training (RigL's accounting).

  python tools/bench_flops.py --models=wrn28_10,small_cnn --output=out/bench

FreeTickets' CIFAR layout (VITA-Group/FreeTickets, as in tf_freetickets.experiments.paper_configs): batch 128,
391 steps per epoch (50,000 images, last partial batch kept), dense baseline 250 epochs; EDST M=3 tickets
from one run of t_ex=150 + M x t_re=100 = 450 epochs at S=0.8 (ERK), DST updates every ΔT=1000 steps
through the whole run (end_fraction 1.0) with gradient growth (RigL) or random growth (SET), plus M-1
global explorations. f_D and f_S come from `tf_freetickets.costs.forward.forward_flops` on the built
models (2 FLOPs per multiply-add, kernel multiply-adds only). The totals are
`flops_schedule.edst_training_flops(...)` over `flops_schedule.training_flops("dense", ...)` of ONE dense
model trained for 250 epochs, the comparison FreeTickets' training-FLOPs column makes.
Writes flops.json / flops.md under --output.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_MODELS = flags.DEFINE_list("models", ["wrn28_10", "small_cnn"], "Models (see bench_common.MODELS).")
_SPARSITY = flags.DEFINE_float("sparsity", 0.8, "EDST / DST sparsity S.")
_DISTRIBUTION = flags.DEFINE_enum("distribution", "erk", ["erk", "er", "uniform"], "Layer-wise densities (FreeTickets: ERK).")
_MEMBERS = flags.DEFINE_integer("members", 3, "M, ensemble members / EDST tickets.")
_STEPS_PER_EPOCH = flags.DEFINE_integer("steps_per_epoch", 391, "Steps per epoch (CIFAR at batch 128: 391).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_OUTPUT = flags.DEFINE_string("output", "out/bench", "Output folder.")


def measure(model_name, sparsity, members, steps_per_epoch, batch_size, distribution="erk"):
    import keras

    import tf_freetickets as tft
    from tf_freetickets.costs import forward as F
    from tf_freetickets.costs import training as FS
    from tf_freetickets.ensembles.edst import EDSTSchedule

    keras.utils.set_random_seed(0)
    model = tft.sparsify(common.build_model(model_name), sparsity, distribution=distribution, seed=0)
    f_d, f_s = F.forward_flops(model)
    schedule = EDSTSchedule(members, 150, 100)
    dense_steps = 250 * steps_per_epoch
    dense = FS.training_flops("dense", model, total_steps=dense_steps, batch_size=batch_size)
    run = {"total_steps": dense_steps, "batch_size": batch_size}
    dst_kwargs = dict(run, update_every=1000, end_fraction=1.0)
    edst = {"schedule": schedule, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "update_every": 1000}
    rows = {
        "dense (1 model, 250 epochs)": dense,
        f"dense ensemble (M={members}, 250 epochs each)": FS.dst_ensemble_training_flops(
            "dense", model, num_members=members, **run
        ),
        f"DST ensemble RigL (M={members}, S={sparsity}, ΔT=1000)": FS.dst_ensemble_training_flops(
            "rigl", model, num_members=members, **dst_kwargs
        ),
        f"EDST RigL growth (M={members}, S={sparsity}, {schedule.total_epochs} epochs)": FS.edst_training_flops(
            "rigl", model, **edst
        ),
        f"EDST SET growth (M={members}, S={sparsity}, {schedule.total_epochs} epochs)": FS.edst_training_flops(
            "set", model, **edst
        ),
        f"RigL one model (S={sparsity}, ΔT=100, end 0.75)": FS.training_flops("rigl", model, update_every=100, **run),
    }
    return {
        "dense_forward_flops": int(f_d),
        "sparse_forward_flops": int(f_s),
        "forward_ratio": f_s / f_d,
        "params": int(common.build_model(model_name).count_params()),
        "global_sparsity": float(tft.global_sparsity(model)),
        "runs": {
            label: dict(flops.to_dict(), relative_to_one_dense=F.relative_to_dense(flops, dense)) for label, flops in rows.items()
        },
    }


def markdown(result):
    cfg = result["config"]
    lines = [
        f"Training FLOPs relative to ONE dense model trained 250 epochs (batch {cfg['batch_size']}, "
        f"{cfg['steps_per_epoch']} steps/epoch; 2 FLOPs per multiply-add; RigL accounting).",
        "",
    ]
    rows = []
    for model_name, r in result["models"].items():
        for label, run in r["runs"].items():
            rows.append(
                [
                    model_name,
                    label,
                    f"{run['total_flops']:.3e}",
                    f"{run['gradient_flops'] / max(run['total_flops'], 1):.4f}",
                    common.fmt_ratio(run["relative_to_one_dense"]),
                ]
            )
        label = f"forward f_S / f_D at S={cfg['sparsity']} {cfg['distribution'].upper()}"
        rows.append([model_name, label, "-", "-", common.fmt_ratio(r["forward_ratio"])])
    lines.append(
        common.markdown_table(["model", "run", "training FLOPs", "share in dense gradients", "vs one dense model"], rows)
    )
    return "\n".join(lines)


def main(argv):
    del argv
    common.quiet_tensorflow()
    config = {
        "models": list(_MODELS.value),
        "sparsity": _SPARSITY.value,
        "distribution": _DISTRIBUTION.value,
        "members": _MEMBERS.value,
        "steps_per_epoch": _STEPS_PER_EPOCH.value,
        "batch_size": _BATCH.value,
    }
    started = time.perf_counter()
    result = {"config": config, "machine": common.machine_info(), "models": {}}
    for name in config["models"]:
        result["models"][name] = measure(
            name, _SPARSITY.value, _MEMBERS.value, _STEPS_PER_EPOCH.value, _BATCH.value, _DISTRIBUTION.value
        )
    result["seconds"] = time.perf_counter() - started
    table = markdown(result)
    json_path, _ = common.write_outputs(_OUTPUT.value, "flops", result, table)
    print(table)
    print(f"\n({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
