"""Applies a `MaskUpdater` to a masked model: the compiled mask-update step.

TF-specific glue (tf.function, tf.distribute); the per-layer arithmetic is
`drop_grow.drop_and_grow_indices` in `keras.ops`.

Distribution: the update runs in cross-replica context. Dense gradients are
computed on every replica with `strategy.run` and summed (Keras scales each
replica's loss by 1/num_replicas, so the sum is the global-batch gradient); the
new masks, weights and slots are then computed once and assigned to the
mirrored variables, so every replica holds the same mask after every update,
random growth included (design invariants 5 and 7).
"""

import tensorflow as tf
from keras import ops

from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse import optimizer_slots
from tf_freetickets.sparse.drop_grow import drop_and_grow_indices


def _masks_from_indices(old_mask, dropped, grown_at, need_grown):
    """(new_mask, grown) of `drop_and_grow` from its index lists, with one full-size pass.

    The new mask is the old one with -1 at every dropped and +1 at every grown
    position (a position dropped and regrown stays 1); `grown` (the 0/1 mask of
    the grown positions) is only built when `need_grown`, else None.
    """
    shape = ops.shape(old_mask)
    flat_old = ops.reshape(old_mask, (-1,))
    ones = ops.ones_like(grown_at, dtype=flat_old.dtype)
    positions = ops.expand_dims(ops.concatenate([dropped, grown_at], 0), 1)
    new_mask = tf.tensor_scatter_nd_add(flat_old, positions, ops.concatenate([-ones, ones], 0))
    grown = ops.reshape(ops.scatter(ops.expand_dims(grown_at, 1), ones, ops.shape(flat_old)), shape) if need_grown else None
    return ops.reshape(new_mask, shape), grown


def _as_dataset(data, batch_size):
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return tf.data.Dataset.from_tensor_slices(tuple(data)).shuffle(4096, seed=0).batch(batch_size)
    raise TypeError(
        "gradient_data must be a tf.data.Dataset of (x, y[, sample_weight]) batches "
        f"or an (x, y) tuple of arrays, got {type(data).__name__}."
    )


class MaskEngine:
    """Runs mask updates of `updater` on `model` (built by `MaskUpdate`).

    Args:
      model: a compiled model with masked layers (see `sparsify`).
      updater: a `MaskUpdater` with a resolved schedule.
      gradient_data: batches for dense gradients (required when
        `updater.needs_gradient_data`): a `tf.data.Dataset` yielding (x, y) or
        (x, y, sample_weight), repeated as needed, or an (x, y) array tuple.
      gradient_batch_size: batch size used when `gradient_data` is arrays.
      skip_gradient_batches: batches of `gradient_data` already used by the
        run being resumed, so it continues with the batches it would have seen.
    """

    def __init__(self, model, updater, gradient_data=None, gradient_batch_size=128, skip_gradient_batches=0):
        self.model = model
        self.updater = updater
        self.layers = masking.updatable_masked_layers(model)  # frozen layers keep their masks
        if not self.layers:
            raise ValueError(f"Model {model.name!r} has no masked layers; call tf_freetickets.sparsify first.")
        self.strategy = model.distribute_strategy
        self._iterator = None
        if updater.uses_gradients and updater.needs_gradient_data:
            if gradient_data is None:
                raise ValueError(
                    f"{type(updater).__name__} grows by dense gradients; pass gradient_data= "
                    "(e.g. the training dataset) to MaskUpdate."
                )
            dataset = _as_dataset(gradient_data, gradient_batch_size).repeat().skip(skip_gradient_batches)
            self._iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        self._apply_fn = None
        self._gradient_fn = None
        self._finite_fn = None

    # -- dense gradients -------------------------------------------------
    def _replica_gradients(self, batch):
        x, y, sample_weight = (tuple(batch) + (None,))[:3]
        kernels = [layer.kernel_variable for layer in self.layers]
        with tf.GradientTape() as tape:
            if hasattr(self.model, "sparse_training_loss"):
                # Models with their own training loss (co-training) say what it is.
                loss = self.model.sparse_training_loss(x, y, sample_weight)
            else:
                y_pred = self.model(x, training=True)
                loss = self.model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        return tape.gradient(loss, kernels)

    def _build_gradient_fn(self):
        # The gradient pass must leave no trace: BatchNorm statistics and
        # dropout RNG state are restored afterwards. Masks are left alone.
        mask_ids = {id(layer.kernel_mask) for layer in self.layers}
        state = [v for v in self.model.non_trainable_variables if id(v) not in mask_ids]

        @tf.function
        def gradients(batch):
            saved = [tf.identity(v.value) for v in state]
            with tf.control_dependencies(saved):
                per_replica = self.strategy.run(self._replica_gradients, args=(batch,))
            reduced = [self.strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in per_replica]
            with tf.control_dependencies(reduced):
                for variable, value in zip(state, saved):
                    variable.assign(value)
            return reduced

        return gradients

    def dense_gradients(self):
        """Growth signal per masked layer, from `updater.gradient_batches` batches."""
        with masking.unmasked_kernels(self.model):
            if self._gradient_fn is None:
                self._gradient_fn = self._build_gradient_fn()
            accumulated = [None] * len(self.layers)
            for _ in range(self.updater.gradient_batches):
                grads = self._gradient_fn(next(self._iterator))
                accumulated = [self.updater.accumulate_gradient(a, g) for a, g in zip(accumulated, grads)]
        return accumulated

    # -- the update --------------------------------------------------------
    def _build_apply_fn(self):
        slots = [optimizer_slots.slots_for(self.model.optimizer, layer.kernel_variable) for layer in self.layers]

        @tf.function
        def apply(drop_fraction, step, gradients):
            changed = []
            for index, (layer, layer_slots, gradient) in enumerate(zip(self.layers, slots, gradients)):
                kernel = layer.kernel_variable
                mask = layer.kernel_mask
                # Snapshot values: a Keras variable converts lazily, and would
                # be read after the assignments below.
                old_mask = tf.identity(mask.value)
                weights = tf.identity(kernel.value)
                if getattr(self.updater, "prunes_only", False):
                    # Gradual magnitude pruning: drop to the scheduled count, grow nothing.
                    new_mask = self.updater.pruned_mask(old_mask, weights, index, step)
                    grown = ops.zeros_like(new_mask)
                else:
                    num_drop = ops.floor(drop_fraction * ops.sum(old_mask))
                    dropped, grown_at = drop_and_grow_indices(
                        old_mask,
                        self.updater.drop_scores(weights),
                        self.updater.grow_scores(weights, gradient, index, step),
                        num_drop,
                    )
                    new_mask, grown = _masks_from_indices(old_mask, dropped, grown_at, self.updater.reinit_when_same)
                # Dropped weights and new connections, with their slots, are zero;
                # a weight dropped and regrown in the same update keeps its value
                # and slots (RigL's `reinit_when_same=False`) unless the updater
                # restarts every grown weight at 0.
                survivors = new_mask * old_mask
                if self.updater.reinit_when_same:
                    survivors = survivors * (1.0 - grown)
                kernel.assign(weights * ops.cast(survivors, kernel.dtype))
                if not self.updater.dense_gradient_momentum:  # otherwise slots follow the dense gradient
                    for slot in layer_slots:
                        slot.assign(slot * ops.cast(survivors, slot.dtype))
                mask.assign(new_mask)
                if getattr(self.updater, "prunes_only", False):
                    changed.append(ops.cast(ops.sum(new_mask * (1.0 - old_mask)), "int32"))
                else:  # grown positions that were inactive before the update
                    flat_old = ops.reshape(old_mask, (-1,))
                    changed.append(ops.cast(ops.sum(1.0 - ops.take(flat_old, grown_at)), "int32"))
            return changed

        return apply

    def _check_finite(self, step, gradients):
        # Top-k over NaN/Inf scores selects arbitrary positions and can write
        # masks that are not 0/1: refuse instead of selecting. One compiled
        # reduction per tensor, read back together.
        if self._finite_fn is None:
            self._finite_fn = tf.function(lambda values: [tf.reduce_all(tf.math.is_finite(v)) for v in values])
        checked = [(layer, "weights", layer.kernel_variable) for layer in self.layers]
        checked += [(layer, "dense gradients", g) for layer, g in zip(self.layers, gradients) if g is not None]
        flags = self._finite_fn([value.value if hasattr(value, "value") else value for _, _, value in checked])
        for (layer, what, _), finite in zip(checked, flags):
            if not bool(finite):
                raise FloatingPointError(
                    f"Mask update after step {step}: layer {layer.name!r} has NaN/Inf {what}; the masks were "
                    "left unchanged (training diverged: lower the learning rate)."
                )

    def update(self, step, drop_fraction=None):
        """Runs the mask update scheduled after optimizer step `step`.

        Args:
          step: the optimizer step the update follows (sets the drop fraction).
          drop_fraction: overrides the schedule, e.g. EDST's large global
            exploration drop.

        Returns:
          dict with "drop_fraction" (float) and "changed" (list of int, the
          number of newly active weights per masked layer).

        Raises:
          FloatingPointError: a layer's weights or dense gradients hold NaN/Inf
            (the masks are left as they were).
        """
        if drop_fraction is None:
            drop_fraction = self.updater.schedule.drop_fraction_at(step)
        elif getattr(self.updater, "prunes_only", False):
            raise ValueError(f"{type(self.updater).__name__} prunes on schedule; drop_fraction overrides (EDST) are refused.")
        elif not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction!r}.")
        if self.updater.uses_gradients and not self.updater.needs_gradient_data:
            gradients = self.updater.step_gradients()
        elif self.updater.uses_gradients:
            gradients = self.dense_gradients()
        else:
            gradients = [None] * len(self.layers)
        self._check_finite(step, gradients)
        if self._apply_fn is None:
            self._apply_fn = self._build_apply_fn()
        with self.strategy.scope():
            changed = self._apply_fn(tf.constant(drop_fraction, tf.float32), tf.constant(step, tf.int64), gradients)
        return {"drop_fraction": drop_fraction, "changed": [int(c) for c in changed]}
