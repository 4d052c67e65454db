"""Runs one experiment from a config: a single model, an independent-run ensemble or EDST.

The training binary (`python -m tf_freetickets.train`) is a thin absl shell
around `run`; tests and tools call `run` directly.
"""

import json
import os

import keras
import numpy as np

from tf_freetickets import data, models
from tf_freetickets.ensembles import (
    EDST,
    CoTrainingModel,
    EnsembleModel,
    WeightAveraging,
    build_divided_members,
    train_independent_ensemble,
)
from tf_freetickets.experiment_config import validate
from tf_freetickets.metrics.summary import format_table, member_probabilities, summarize_members
from tf_freetickets.sparse import SET, SNFS, CigL, MaskUpdate, RigL, Static, global_sparsity, sparsify, sparsity_table

_UPDATERS = {"set": SET, "rigl": RigL, "snfs": SNFS, "cigl": CigL}


def make_updater(sparse, seed):
    """The `MaskUpdater` that `config.sparse` describes (None for dense)."""
    if sparse.method == "dense":
        return None
    if sparse.method == "static":
        return Static()
    extra = {"random_drop_rate": float(sparse.random_drop_rate)} if sparse.method == "cigl" else {}
    return _UPDATERS[sparse.method](
        update_every=int(sparse.update_every),
        drop_fraction=float(sparse.drop_fraction),
        end_fraction=float(sparse.end_fraction),
        decay=sparse.decay,
        seed=seed,
        **extra,
    )


def _learning_rate(config, total_steps):
    if config.ensemble.kind == "edst" or config.optimizer.schedule == "constant":
        return config.optimizer.learning_rate
    return keras.optimizers.schedules.CosineDecay(config.optimizer.learning_rate, total_steps)


def _optimizer(config, total_steps):
    return keras.optimizers.SGD(_learning_rate(config, total_steps), momentum=config.optimizer.momentum)


def _model_factory(config, total_steps):
    def make_model(seed):
        model = models.small_cnn(width=config.width, weight_decay=config.optimizer.weight_decay)
        if config.sparse.method != "dense":
            model = sparsify(model, config.sparse.sparsity, config.sparse.distribution, seed=seed)
        model.compile(
            _optimizer(config, total_steps),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    return make_model


def _train_dnc(config, members_dir, train_ds, epochs, steps_per_epoch, callbacks):
    """Divide-and-Co-training: S narrow members (width / sqrt(S)) co-trained on different views."""
    keras.utils.set_random_seed(config.seed)
    members = build_divided_members(
        models.small_cnn, config.ensemble.num_members, config.width, weight_decay=config.optimizer.weight_decay
    )
    if config.sparse.method != "dense":
        members = [
            sparsify(m, config.sparse.sparsity, config.sparse.distribution, seed=config.seed + i) for i, m in enumerate(members)
        ]
    model = CoTrainingModel(
        members,
        cotraining_weight=config.ensemble.cotraining_weight,
        warmup_steps=config.ensemble.cotraining_warmup_epochs * steps_per_epoch,
    )
    model.compile(_optimizer(config, epochs * steps_per_epoch), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"Divide-and-Co-training: {len(members)} members of {members[0].count_params()} parameters", flush=True)
    model.fit(train_ds, epochs=epochs, callbacks=callbacks, verbose=config.verbose, shuffle=False)
    os.makedirs(members_dir, exist_ok=True)
    for index, member in enumerate(model.members):
        member.save(os.path.join(members_dir, f"member_{index}.keras"))
    model.export(os.path.join(members_dir, "..", "ensemble"))
    return model.members


def fit_epochs(config):
    """Epochs `fit` runs: EDST's t_ex + M * t_re, else config.epochs."""
    ensemble = config.ensemble
    if ensemble.kind == "edst":
        return ensemble.exploration_epochs + ensemble.num_members * ensemble.refinement_epochs
    return config.epochs


def train_members(config, workdir, train_ds, steps_per_epoch):
    """Trains what `config.ensemble.kind` asks for.

    Returns:
      (members, extra): the member models and a dict of run facts for the
      results (EDST: the tickets' pairwise mask overlap).
    """
    epochs = fit_epochs(config)
    make_model = _model_factory(config, epochs * steps_per_epoch)
    members_dir = os.path.join(workdir, "members")
    kind = config.ensemble.kind
    if kind == "edst":
        keras.utils.set_random_seed(config.seed)
        model = make_model(config.seed)
        edst = EDST(
            make_updater(config.sparse, config.seed),
            num_tickets=config.ensemble.num_members,
            exploration_epochs=config.ensemble.exploration_epochs,
            refinement_epochs=config.ensemble.refinement_epochs,
            large_drop_fraction=config.ensemble.large_drop_fraction,
            export_dir=members_dir,
            gradient_data=train_ds,
        )
        model.fit(train_ds, epochs=epochs, callbacks=[edst], verbose=config.verbose, shuffle=False)
        overlaps = edst.ticket_overlaps()
        print("EDST ticket mask overlap (fraction of ticket i's active weights active in ticket j):")
        print(np.array2string(overlaps, precision=4))
        return EnsembleModel.from_saved_models(members_dir).members, {"ticket_mask_overlap": overlaps.tolist()}

    if kind == "dnc":
        updater = make_updater(config.sparse, config.seed)
        callbacks = [MaskUpdate(updater, gradient_data=train_ds)] if updater else []
        return _train_dnc(config, members_dir, train_ds, epochs, steps_per_epoch, callbacks), {}

    def make_callbacks(seed):
        updater = make_updater(config.sparse, seed)
        callbacks = [MaskUpdate(updater, gradient_data=train_ds)] if updater else []
        if config.weight_averaging.enabled:
            callbacks.append(WeightAveraging(config.weight_averaging.start_fraction, batchnorm_data=train_ds))
        return callbacks

    num_members = config.ensemble.num_members if kind == "independent" else 1
    seeds = [config.seed + i for i in range(num_members)]
    members = train_independent_ensemble(
        make_model, train_ds, epochs, num_members=num_members, seeds=seeds, make_callbacks=make_callbacks,
        export_dir=members_dir, verbose=config.verbose, shuffle=False,
    )  # fmt: skip
    return members, {}


def run(config, workdir):
    """Trains and evaluates as `config` says.

    Writes WORKDIR/members/ (each member as .keras and SavedModel),
    WORKDIR/results.json (metrics and the config) and prints the evaluation
    table. Returns the results dict.
    """
    validate(config)
    keras.utils.set_random_seed(config.seed)
    x_train, y_train = data.load_fashion_mnist("train", config.data_dir or None)
    x_test, y_test = data.load_fashion_mnist("test", config.data_dir or None)
    if config.train_examples:
        x_train, y_train = x_train[: config.train_examples], y_train[: config.train_examples]
    # Co-training augments inside the model, a different view per member.
    augment = config.ensemble.kind != "dnc"
    train_ds = data.train_dataset(x_train, y_train, config.batch_size, seed=config.seed, augment=augment)
    test_ds = data.eval_dataset(x_test, y_test)

    members, extra = train_members(config, workdir, train_ds, len(x_train) // config.batch_size)
    results = summarize_members(member_probabilities(members, test_ds.map(lambda x, y: x)), y_test)
    results.update(extra)
    if config.sparse.method != "dense":
        print(sparsity_table(members[0]))
        results["sparsity"] = global_sparsity(members[0])
    name = config.sparse.method if config.ensemble.kind == "none" else f"{config.sparse.method}-{config.ensemble.kind}"
    table = format_table({name: results})
    print(table)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"name": name, "results": results, "config": config.to_dict()}, f, indent=2)
    return results
