"""Train one (sparse) model from an ml_collections config.

  python -m tf_freetickets.train --config=configs/fashion_mnist_rigl.py --workdir=out/rigl \
      [--config.sparse.sparsity=0.8 ...]

Writes WORKDIR/model.keras and WORKDIR/results.json, prints the per-layer
sparsity table and the test accuracy / NLL. Bad config values and missing data
end with one error line and exit code 2.
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (created if missing).")

METHODS = ("dense", "static", "set", "rigl", "snfs")


class ConfigError(ValueError):
    """A config value outside what the library accepts."""


def validate(config):
    """Raises ConfigError naming the first bad field and what is allowed."""
    from tf_freetickets.sparse.densities import DISTRIBUTIONS, check_sparsity
    from tf_freetickets.sparse.schedules import DECAYS

    sparse = config.sparse
    if sparse.method not in METHODS:
        raise ConfigError(f"config.sparse.method={sparse.method!r} is unknown; use one of {METHODS}.")
    try:
        check_sparsity(sparse.sparsity, "config.sparse.sparsity")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if sparse.distribution not in DISTRIBUTIONS:
        raise ConfigError(f"config.sparse.distribution={sparse.distribution!r} is unknown; use one of {DISTRIBUTIONS}.")
    if not 0.0 <= sparse.drop_fraction <= 1.0:
        raise ConfigError(f"config.sparse.drop_fraction={sparse.drop_fraction!r} must be in [0, 1].")
    if sparse.decay not in DECAYS:
        raise ConfigError(f"config.sparse.decay={sparse.decay!r} is unknown; use one of {DECAYS}.")
    if int(sparse.update_every) < 1:
        raise ConfigError(f"config.sparse.update_every={sparse.update_every!r} must be a positive integer.")
    for name in ("epochs", "batch_size"):
        if int(config[name]) < 1:
            raise ConfigError(f"config.{name}={config[name]!r} must be a positive integer.")
    if config.dataset != "fashion_mnist":
        raise ConfigError(f"config.dataset={config.dataset!r} is not available offline; use 'fashion_mnist'.")


def _updater(sparse, seed):
    import tf_freetickets as tft

    if sparse.method == "static":
        return tft.Static()
    cls = {"set": tft.SET, "rigl": tft.RigL, "snfs": tft.SNFS}[sparse.method]
    return cls(
        update_every=int(sparse.update_every),
        drop_fraction=float(sparse.drop_fraction),
        end_fraction=float(sparse.end_fraction),
        decay=sparse.decay,
        seed=seed,
    )


def run(config, workdir):
    """Trains and evaluates as `config` says; returns the results dict."""
    import keras

    import tf_freetickets as tft
    from tf_freetickets import data, models

    validate(config)
    keras.utils.set_random_seed(config.seed)
    x_train, y_train = data.load_fashion_mnist("train", config.data_dir or None)
    x_test, y_test = data.load_fashion_mnist("test", config.data_dir or None)
    if config.train_examples:
        x_train, y_train = x_train[: config.train_examples], y_train[: config.train_examples]
    train_ds = data.train_dataset(x_train, y_train, config.batch_size, seed=config.seed)
    test_ds = data.eval_dataset(x_test, y_test)

    model = models.small_cnn(width=config.width, weight_decay=config.optimizer.weight_decay)
    callbacks = []
    if config.sparse.method != "dense":
        model = tft.sparsify(model, config.sparse.sparsity, config.sparse.distribution, seed=config.seed)
        callbacks.append(tft.MaskUpdate(_updater(config.sparse, config.seed), gradient_data=train_ds))

    steps = config.epochs * (len(x_train) // config.batch_size)
    learning_rate = config.optimizer.learning_rate
    if config.optimizer.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(
        keras.optimizers.SGD(learning_rate, momentum=config.optimizer.momentum),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if config.sparse.method != "dense":
        print(tft.sparsity_table(model))
    model.fit(train_ds, epochs=config.epochs, callbacks=callbacks, verbose=config.verbose, shuffle=False)
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
    results = {
        "method": config.sparse.method,
        "sparsity": tft.global_sparsity(model) if config.sparse.method != "dense" else 0.0,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
    }
    os.makedirs(workdir, exist_ok=True)
    model.save(os.path.join(workdir, "model.keras"))
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"results": results, "config": config.to_dict()}, f, indent=2)
    print(f"{'method':<10} {'sparsity':>8} {'accuracy':>9} {'test loss':>9}")
    print(f"{results['method']:<10} {results['sparsity']:>8.4f} {results['test_accuracy']:>9.4f} {results['test_loss']:>9.4f}")
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("Both --config and --workdir are required.")
    from tf_freetickets.data import MissingDatasetError

    try:
        run(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, MissingDatasetError) as error:
        logging.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
