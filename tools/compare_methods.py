"""Runs several configs over several seeds and prints mean ± std of their metrics.

  python tools/compare_methods.py --configs=configs/fashion_mnist_rigl.py,configs/fashion_mnist_cigl.py \
      --seeds=0,1,2 --set=epochs=5 --workdir=out/rigl_vs_cigl

Each (config, seed) run is `tf_freetickets.experiments.runner.run` in WORKDIR/<config>/seed_<s>/ (its
results.json holds the full config); WORKDIR/summary.json holds every figure and the table is printed
as markdown. A finished run (results.json present) is not run again, so an interrupted comparison
resumes where it stopped.
"""

import json
import os
import sys

from absl import app, flags

_CONFIGS = flags.DEFINE_list("configs", None, "Config files to compare.", required=True)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each config runs once per seed.")
_SET = flags.DEFINE_multi_string("set", [], "Override for every config, as dotted.key=value (repeatable).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)

METRICS = ("accuracy", "nll", "ece", "brier", "disagreement", "kl")


def main(argv):
    del argv
    from reporting import Column, load_config, markdown_table
    from tf_freetickets.experiments import runner as experiment

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
    print(markdown_table(summary, [Column(m, m) for m in METRICS]))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(app.run(main))
