"""Applies a `MaskUpdater` to a masked model: the compiled mask-update step.

TF-specific glue (tf.function, tf.distribute). The engine knows no method: it
gathers the updater's declared score source, asks the updater's `new_mask`
hook for each layer's new mask, and keeps the invariants every method shares
(pruned weights and their optimizer slots exactly 0, exact counts, the same
mask on every replica).

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
from tf_freetickets.sparse.masked_set import MaskedLayerSet


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
      layers: the run's `MaskedLayerSet` (the one the updater attached to);
        built from `model` when None.
    """

    def __init__(
        self, model, updater, gradient_data=None, gradient_batch_size=128, skip_gradient_batches=0, layers=None
    ):  # fmt: skip
        self.model = model
        self.updater = updater
        self.layers = MaskedLayerSet(model) if layers is None else layers  # frozen layers keep their masks
        self.strategy = model.distribute_strategy
        self._iterator = None
        if updater.needs_gradient_data:
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

    def dense_gradient_batches(self, num_batches):
        """Yields the dense gradient per masked layer of each of the next `num_batches` batches of `gradient_data`."""
        with masking.unmasked_kernels(self.model):
            if self._gradient_fn is None:
                self._gradient_fn = self._build_gradient_fn()
            for _ in range(num_batches):
                yield self._gradient_fn(next(self._iterator))

    def dense_gradients(self):
        """The updater's growth signal per masked layer, as its score source gathers it."""
        return self.updater.score_source.gather(self)

    # -- the update --------------------------------------------------------
    def _build_apply_fn(self):
        slots = [optimizer_slots.slots_for(self.model.optimizer, layer.kernel_variable) for layer in self.layers]
        updater = self.updater

        @tf.function
        def apply(drop_fraction, step, scores):
            changed = []
            # Snapshot values: a Keras variable converts lazily, and would be
            # read after the assignments below.
            old_masks = [tf.identity(layer.kernel_mask.value) for layer in self.layers]
            fractions = updater.layer_drop_fractions(drop_fraction, old_masks)
            for index, (layer, layer_slots, layer_scores) in enumerate(zip(self.layers, slots, scores)):
                kernel = layer.kernel_variable
                mask = layer.kernel_mask
                old_mask = old_masks[index]
                weights = tf.identity(kernel.value)
                new_mask, grown = updater.new_mask(index, old_mask, weights, layer_scores, step, fractions[index])
                # Dropped weights and new connections, with their slots, are zero;
                # a weight dropped and regrown in the same update keeps its value
                # and slots (RigL's `reinit_when_same=False`) unless the updater
                # restarts every grown weight at 0.
                survivors = new_mask * old_mask
                if updater.reinit_when_same and grown is not None:
                    survivors = survivors * (1.0 - grown)
                kernel.assign(weights * ops.cast(survivors, kernel.dtype))
                if not updater.dense_gradient_momentum:  # otherwise slots follow the dense gradient
                    for slot in layer_slots:
                        slot.assign(slot * ops.cast(survivors, slot.dtype))
                mask.assign(new_mask)
                changed.append(ops.cast(ops.sum(new_mask * (1.0 - old_mask)), "int32"))  # newly active positions
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
        elif not self.updater.accepts_drop_fraction:
            raise ValueError(f"{type(self.updater).__name__} prunes on schedule; drop_fraction overrides (EDST) are refused.")
        elif not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction!r}.")
        gradients = self.dense_gradients()
        self._check_finite(step, gradients)
        if self._apply_fn is None:
            self._apply_fn = self._build_apply_fn()
        with self.strategy.scope():
            changed = self._apply_fn(tf.constant(drop_fraction, tf.float32), tf.constant(step, tf.int64), gradients)
        return {"drop_fraction": drop_fraction, "changed": [int(c) for c in changed]}
