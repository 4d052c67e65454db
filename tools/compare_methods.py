"""Runs several configs over several seeds and prints mean ± std of their metrics.

  python tools/compare_methods.py --configs=configs/fashion_mnist_rigl.py,configs/fashion_mnist_cigl.py \
      --seeds=0,1,2 --set=epochs=5 --workdir=out/rigl_vs_cigl

Each (config, seed) run is `tf_freetickets.experiment.run` in WORKDIR/<config>/seed_<s>/ (its
results.json holds the full config); WORKDIR/summary.json holds every figure and the table is printed
as markdown. A finished run (results.json present) is not run again, so an interrupted comparison
resumes where it stopped.
"""

import ast
import importlib.util
import json
import os
import sys

import numpy as np
from absl import app, flags

_CONFIGS = flags.DEFINE_list("configs", None, "Config files to compare.", required=True)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each config runs once per seed.")
_SET = flags.DEFINE_multi_string("set", [], "Override for every config, as dotted.key=value (repeatable).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)

METRICS = ("accuracy", "nll", "ece", "brier", "disagreement", "kl")


def load_config(path, overrides):
    """`get_config()` of the file at `path`, with `dotted.key=value` overrides applied."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in overrides:
        key, _, raw = item.partition("=")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def mean_std(values):
    return float(np.mean(values)), float(np.std(values))


def markdown_table(summary):
    """Rows: configs; cells: mean ± std over seeds."""
    present = [m for m in METRICS if any(m in runs[0] for runs in summary.values())]
    lines = ["| run | seeds | " + " | ".join(present) + " |", "|---|---|" + "---|" * len(present)]
    for name, runs in summary.items():
        cells = []
        for metric in present:
            values = [run[metric] for run in runs if metric in run]
            cells.append("{:.4f} ± {:.4f}".format(*mean_std(values)) if values else "-")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    from tf_freetickets import experiment

    summary = {}
    for path in _CONFIGS.value:
        name = os.path.splitext(os.path.basename(path))[0]
        summary[name] = []
        for seed in _SEEDS.value:
            workdir = os.path.join(_WORKDIR.value, name, f"seed_{seed}")
            results_file = os.path.join(workdir, "results.json")
            if not os.path.exists(results_file):
                config = load_config(path, [*_SET.value, f"seed={int(seed)}"])
                print(f"== {name} seed {seed}", flush=True)
                experiment.run(config, workdir)
            with open(results_file) as f:
                summary[name].append(json.load(f)["results"] | {"seed": int(seed)})
    os.makedirs(_WORKDIR.value, exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "summary.json"), "w") as f:
        json.dump({"overrides": _SET.value, "seeds": _SEEDS.value, "runs": summary}, f, indent=2)
    print(markdown_table(summary))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(app.run(main))
