"""Train a sparse model or a sparse ensemble from an ml_collections config.

  python -m tf_freetickets.train --config=configs/fashion_mnist_edst.py --workdir=out/edst \
      [--config.sparse.sparsity=0.8 --config.ensemble.num_members=4 ...]

Writes WORKDIR/members/ (each member as .keras and SavedModel) and
WORKDIR/results.json, and prints the per-layer sparsity table and the
evaluation table (accuracy, NLL, ECE, Brier, diversity). A bad config value or
missing data, a damaged file, a workdir holding another run or in use by
another process, a full disk and a diverged (NaN/Inf) run end with one error
line and exit code 2 (README, "Reliability"). SIGTERM stops training at the
end of the current epoch, once its checkpoint is saved, with one `stopped:`
line and exit code 143; rerunning the command resumes exactly.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: hide its C++ INFO/WARNING lines

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file (see configs/).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (created if missing); rerun on it to resume.")
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy: default (one device), mirrored (all local GPUs/CPUs), "
    "multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG), tpu (TPUStrategy).",
)  # fmt: skip
_CONFIG_HELP = flags.DEFINE_bool(
    "config_help", False, "List every config.* field with its value (the --config file's, else the defaults) and meaning."
)
#: Exit status after a SIGTERM stop: 128 + SIGTERM, what a shell reports for a process the signal ended.
EXIT_SIGTERM = 128 + signal.SIGTERM
_TPU = flags.DEFINE_string("tpu", "", "TPU address or name for --strategy=tpu (empty: the local TPU).")


def make_strategy(name, tpu=""):
    """The tf.distribute strategy that `--strategy` names (None for default)."""
    import tensorflow as tf

    if name == "default":
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _parse_flags(argv):
    from tf_freetickets.experiments.cli import parse_flags

    return parse_flags(argv, "config")


def main(argv):
    """absl entry point: trains the run `--config` describes into `--workdir` (see the module docstring).

    Args:
      argv: the arguments left after absl parsed the flags (only the program name).
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CONFIG_HELP.value:
        from tf_freetickets.experiments.config import config_help

        print(config_help(_CONFIG.value))
        return
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("Both --config and --workdir are required.")
    if not flags.FLAGS["verbosity"].present:
        # TF's SavedModel writer logs every file at INFO; --verbosity=0 shows them.
        logging.set_verbosity(logging.WARNING)
    from tf_freetickets.experiments import interrupt
    from tf_freetickets.experiments import runner as experiment
    from tf_freetickets.experiments.cli import fail, user_errors

    interrupt.install_sigterm_handler()
    try:
        experiment.run(_CONFIG.value, _WORKDIR.value, strategy=make_strategy(_STRATEGY.value, _TPU.value))
    except interrupt.TrainingInterrupted as stop:
        print(f"stopped: {stop}", file=sys.stderr, flush=True)
        sys.exit(EXIT_SIGTERM)
    except user_errors() as error:
        fail(error)


def console_main():
    """Entry point of the `tft-train` console script (and of `python -m tf_freetickets.train`): absl runs `main`."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    console_main()
