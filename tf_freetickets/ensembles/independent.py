"""Ensembles of independent runs: DST ensembles, dense deep ensembles, single baselines.

FreeTickets' DST ensemble (Sec. 3.1) trains M sparse networks from scratch with
different seeds (weight init, mask and data order differ); a naive dense deep
ensemble is the same with dense members, and a dense single model is M = 1.
One driver serves all three so their comparison differs only in the model.
"""

import os

import keras


def train_independent_ensemble(
    make_model,
    train_data,
    epochs,
    num_members=3,
    seeds=None,
    make_callbacks=None,
    export_dir=None,
    export_saved_model=True,
    export_input_range="auto",
    strategy=None,
    verbose=2,
    fit_fn=None,
    **fit_kwargs,
):
    """Trains `num_members` models one after another and returns them.

    Args:
      make_model: seed -> compiled Keras model. For a DST ensemble it builds the
        dense net, calls `tft.sparsify(..., seed=seed)` and compiles; for a dense
        ensemble it just builds and compiles.
      train_data: what `model.fit` takes as `x` (a tf.data.Dataset or arrays;
        with arrays pass `y=` in `fit_kwargs`).
      epochs: epochs per member.
      num_members: M.
      seeds: M ints; default 0..M-1. `keras.utils.set_random_seed(seed)` runs
        before each member is built, so init and data order differ.
      make_callbacks: seed -> list of callbacks for that member (a fresh
        `MaskUpdate` each time; callbacks hold per-run state).
      export_dir: if set, member k is written as `member_<k>.keras` and, with
        `export_saved_model`, as a SavedModel folder `member_<k>/` whose
        endpoints check `export_input_range` ("auto": [0, 1] for float inputs;
        None for inputs normalised otherwise, e.g. ImageNet's mean/std).
      strategy: a `tf.distribute.Strategy` to build the members under.
      verbose: Keras fit verbosity.
      fit_fn: optional `fit_fn(model, seed, callbacks, name)` that trains a
        member in place of `model.fit(train_data, ...)` (the experiment runner
        uses it to resume from checkpoints); `name` is "member_<k>".
      **fit_kwargs: passed to `model.fit` (validation_data, y, batch_size, ...).

    Returns:
      list of the M trained models.
    """
    seeds = list(range(num_members)) if seeds is None else list(seeds)
    if len(seeds) != num_members:
        raise ValueError(f"Got {len(seeds)} seeds {seeds} for num_members={num_members}.")
    if export_dir:
        os.makedirs(export_dir, exist_ok=True)
    members = []
    for index, seed in enumerate(seeds):
        keras.utils.set_random_seed(seed)
        if strategy is not None:
            with strategy.scope():
                model = make_model(seed)
        else:
            model = make_model(seed)
        callbacks = list(make_callbacks(seed)) if make_callbacks else []
        if verbose:
            print(f"Ensemble member {index + 1}/{num_members} (seed {seed})", flush=True)
        if fit_fn is not None:
            fit_fn(model, seed, callbacks, f"member_{index}")
        else:
            model.fit(train_data, epochs=epochs, callbacks=callbacks, verbose=verbose, **fit_kwargs)
        if export_dir:
            model.save(os.path.join(export_dir, f"member_{index}.keras"))
            if export_saved_model:
                from tf_freetickets.deploy.saved_model import export_member

                export_member(model, os.path.join(export_dir, f"member_{index}"), input_range=export_input_range)
        members.append(model)
    return members
