"""Runs one experiment from a config: a single model, an independent-run ensemble, EDST or DNC.

The training binary (`python -m tf_freetickets.train`) is a thin absl shell
around `run`; tests and tools call `run` directly. Every training is
resumable: rerunning the same command on the same workdir continues from the
last epoch checkpoint (WORKDIR/checkpoints/) and ends with the same result.
A workdir holds one run only (`experiments.workdir`: its recorded config,
an exclusive lock, and the manifest of the members it wrote), and a run that
diverges stops before writing anything non-finite (`experiments.guards`).
"""

import dataclasses
import functools
import json
import os

import keras
import numpy as np
import tensorflow as tf

from tf_freetickets.data.tfds_data import CIFAR_CHANNEL_STATS
from tf_freetickets.ensembles import (
    EDST,
    CoTrainingModel,
    EnsembleModel,
    WeightAveraging,
    build_divided_members,
    divided_widen_factor,
    divided_width,
    train_independent_ensemble,
)
from tf_freetickets.ensembles.views import member_views
from tf_freetickets.experiments import workdir as workdirs
from tf_freetickets.experiments.config import ConfigError
from tf_freetickets.experiments.data_sources import data_identity, data_source
from tf_freetickets.experiments.flops import run_flops
from tf_freetickets.experiments.member_ledger import TicketLedger
from tf_freetickets.experiments.plan import RunPlan
from tf_freetickets.experiments.run_context import RunContext
from tf_freetickets.experiments.training_clock import clock_totals
from tf_freetickets.metrics.summary import format_table, member_probabilities, summarize_members
from tf_freetickets.sparse import MaskUpdate, global_sparsity, sparsify, sparsity_table


def _train_edst(run):
    config, plan = run.config, run.plan
    keras.utils.set_random_seed(plan.seed)
    with run.scope():
        model = run.make_model(plan.seed)
    edst = EDST(
        plan.sparsity.make_updater(plan.seed),
        **dataclasses.asdict(plan.ensemble.edst),  # EDST takes the schedule's fields by name
        large_drop_fraction=config.ensemble.large_drop_fraction,
        export_dir=run.members_dir,
        export_input_range=run.input_range,
        gradient_data=run.gradient_stream(config.seed),
        **_edst_batchnorm(run),
    )
    ledger = TicketLedger(edst)  # sizes and SHA-256 of the tickets as written, checkpointed with EDST's state
    callbacks = [edst]
    if config.keep_best_validation:
        # Each ticket is its phase's best validation epoch; training goes on from the last weights.
        schedule = plan.ensemble.edst
        phase_starts = [schedule.exploration_epochs + k * schedule.refinement_epochs for k in range(schedule.num_tickets)]
        tracker = run.best_validation(reset_epochs=phase_starts, restore_at_end=False)
        callbacks = tracker.around(edst, schedule.ticket_epochs)
    run.fit(model, config.seed, [*callbacks, ledger], "edst", writes_members=True)
    if len(edst.tickets) != edst.schedule.num_tickets:
        raise RuntimeError(f"EDST ended with {len(edst.tickets)} of {edst.schedule.num_tickets} tickets saved.")
    overlaps = edst.ticket_overlaps()
    print("EDST ticket mask overlap (fraction of ticket i's active weights active in ticket j):")
    print(np.array2string(overlaps, precision=4))
    # Exactly this run's tickets, never whatever else lies in members/.
    paths = [ticket.keras_path for ticket in edst.tickets]
    ledger.verify(paths, run.workdir)  # a replaced ticket is never loaded, scored or certified
    return EnsembleModel.from_saved_models(paths).members, {"ticket_mask_overlap": overlaps.tolist(), "member_files": paths}


def _edst_batchnorm(run):
    """EDST's BatchNorm recompute (config.ensemble.batchnorm_batches; 0: none, as FreeTickets' code).

    Each ticket reads a fresh stream seeded by its index, so the batches are
    the same whether or not the run was resumed in between.
    """
    batches = run.config.ensemble.get("batchnorm_batches", 0)
    if not batches:
        return {}
    seed = run.config.seed + BATCHNORM_SEED_OFFSET
    return {"batchnorm_data": lambda index: run.gradient_stream(seed + index), "batchnorm_batches": batches}


BATCHNORM_SEED_OFFSET = 7919  # EDST's BatchNorm batches: an order of their own, apart from the gradient stream's


def dnc_members(config, build):
    """The S narrow members of a Divide-and-Co-training run (width, weight decay and dropout divided).

    Args:
      config: the run's config (`ensemble.num_members` = S, `width`,
        `optimizer.weight_decay`, `dropout`, `ensemble.divide_weight_decay`).
      build: the run's model builder, fn(width=, weight_decay=, dropout=, name=).
    """
    width_fn = divided_widen_factor if config.model == "wide_resnet" else divided_width
    return build_divided_members(
        build, config.ensemble.num_members, config.width, weight_decay=config.optimizer.weight_decay,
        dropout=config.dropout, width_fn=width_fn, divide_weight_decay=config.ensemble.get("divide_weight_decay", True),
    )  # fmt: skip


def _train_dnc(run):
    """Divide-and-Co-training: S narrow members (width / sqrt(S)) co-trained on different views."""
    config, sparsity = run.config, run.plan.sparsity
    keras.utils.set_random_seed(config.seed)
    with run.scope():
        members = dnc_members(config, run.build)
        if not sparsity.is_dense:
            members = [
                sparsify(m, sparsity.initial, sparsity.distribution, seed=config.seed + i)
                for i, m in enumerate(members)
            ]
        mean = CIFAR_CHANNEL_STATS[config.dataset][0] if config.input_normalization else None
        model = CoTrainingModel(
            members,
            # Fixed view seeds per member (as before this option existed): runs differ by init and data order.
            view_augmenters=member_views(config.ensemble.views, len(members), seed=0, mean=mean),
            cotraining_weight=config.ensemble.cotraining_weight,
            warmup_steps=config.ensemble.cotraining_warmup_epochs * run.steps_per_epoch,
            steps_per_epoch=run.steps_per_epoch if config.ensemble.cotraining_ramp == "epoch" else None,
            min_weight=config.ensemble.cotraining_min_weight,
        )
        model.compile(run.optimizer(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"Divide-and-Co-training: {len(members)} members of {members[0].count_params()} parameters", flush=True)
    updater = sparsity.make_updater(config.seed)
    callbacks = [MaskUpdate(updater, gradient_data=run.gradient_stream(config.seed))] if updater else []
    if config.keep_best_validation:
        callbacks.append(run.best_validation())
    run.fit(model, config.seed, callbacks, "dnc")
    names = [f"member_{index}" for index in range(len(model.members))]
    export = functools.partial(model.export, input_range=run.input_range)
    paths = run.write_members(model.members, names, saved_models=False, extra=[(export, os.path.join(run.workdir, "ensemble"))])
    return model.members, {"member_files": paths}


def _train_independent(run):
    config, plan = run.config, run.plan
    num_members = plan.ensemble.num_members

    def make_callbacks(seed):
        updater = plan.sparsity.make_updater(seed)
        callbacks = [MaskUpdate(updater, gradient_data=run.gradient_stream(seed))] if updater else []
        if config.weight_averaging.enabled:
            batchnorm_data = run.stream(seed, 0).take(run.steps_per_epoch)
            # CigL's code averages its parameter tensors, which hold the random mask between steps.
            random_snapshots = config.weight_averaging.get("random_mask_snapshots", True)
            snapshot = getattr(updater, "averaging_snapshot", None) if random_snapshots else None
            callbacks.append(
                WeightAveraging(config.weight_averaging.start_fraction, batchnorm_data=batchnorm_data, kernel_snapshot=snapshot)
            )
        if config.keep_best_validation:
            callbacks.append(run.best_validation())  # the member ends with its best validation epoch
        return callbacks

    members = train_independent_ensemble(
        run.make_model, None, run.epochs, num_members=num_members,
        seeds=[config.seed + i for i in range(num_members)], make_callbacks=make_callbacks,
        strategy=run.strategy, verbose=config.verbose, fit_fn=run.fit,
    )  # fmt: skip
    # Written once all are trained: a finished run stays whole until its replacement is.
    return members, {"member_files": run.write_members(members, [f"member_{k}" for k in range(num_members)])}


_TRAINERS = {"none": _train_independent, "independent": _train_independent, "edst": _train_edst, "dnc": _train_dnc}


def run(config, workdir, strategy=None):
    """Trains (or resumes) and evaluates as `config` says.

    Args:
      config: an ml_collections config (see experiment_config.fashion_mnist_defaults).
      workdir: output folder; rerunning on it resumes from its checkpoints.
      strategy: optional `tf.distribute.Strategy` to build and train under.

    Writes WORKDIR/run_record.json (the config, before training),
    WORKDIR/members/ (each member as .keras and SavedModel, and
    manifest.json listing them once all are written; a finished run's
    manifest stays until its replacement members are complete),
    WORKDIR/results.json (metrics and the config) and prints the evaluation
    table. Returns the results dict.

    Raises:
      ConfigError: a bad config value, or data that does not fit it.
      WorkdirError: the workdir holds a run with another config or data, is in
        use by another process, or cannot be written; `DiskFullError` (one of
        them): its disk filled up mid-run (rerunning after freeing space
        resumes exactly).
      CheckpointError: no checkpoint of the run can be restored.
      NonFiniteTrainingError, FloatingPointError: training diverged (NaN/Inf);
        the last good checkpoint stays the newest.
    """
    plan = RunPlan.from_config(config)  # validated and resolved once
    workdirs.prepare(workdir)
    with workdirs.exclusive_lock(workdir), workdirs.disk_full_is_one_line(workdir):
        resuming = workdirs.check_record(workdir, config)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        source = data_source(config)
        identity = data_identity(config, source)
        if resuming:
            workdirs.check_data(workdir, identity)  # the data is part of the run, as its config is
        training = RunContext(plan, workdir, source, strategy)
        check_data_fits(config, source, training.steps_per_epoch)
        if not resuming:
            workdirs.write_record(workdir, config, data=identity)
        # The manifest of a finished run stays until new members replace it (`write_members`).
        return _train_and_report(plan, workdir, source, training)


def check_data_fits(config, source, steps_per_epoch):
    """Raises ConfigError when the data gives no full batch per epoch."""
    if steps_per_epoch < 1:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is larger than the {source.num_train_examples} training examples "
            f"(config.train_examples={config.train_examples}), so an epoch has no full batch; lower batch_size or "
            "raise train_examples."
        )


def _train_and_report(plan, workdir, source, training):
    config = plan.config
    members, extra = _TRAINERS[plan.ensemble.kind](training)
    workdirs.write_manifest(training.members_dir, extra.pop("member_files"))
    results = summarize_members(member_probabilities(members, source.test_inputs()), source.test_labels)
    results.update(extra)
    results.update(run_flops(plan, members, training.steps_per_epoch))
    results.update(clock_totals(training.clocks))
    if not plan.sparsity.is_dense:
        print(sparsity_table(members[0]))
        results["sparsity"] = global_sparsity(members[0])
    name = plan.name
    print(f"training FLOPs {results['training_flops']:.4g}, inference FLOPs per example {results['inference_flops']:.4g}")
    untimed = f" (plus {results['untimed_epochs']} epochs trained before the clock)" if results["untimed_epochs"] else ""
    print(f"training time {results['train_seconds'] / 60:.1f} min wall, {results['train_cpu_seconds'] / 60:.1f} CPU-min{untimed}")
    print(format_table({name: results}))
    temporary = os.path.join(workdir, "results.json.tmp")
    with open(temporary, "w") as f:
        json.dump({"name": name, "results": results, "config": config.to_dict()}, f, indent=2)
    os.replace(temporary, os.path.join(workdir, "results.json"))
    return results
