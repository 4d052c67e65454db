"""Training-step hooks for the update rules of FreeTickets' and RigL's official code.

The library's default training step sees only the masked kernel: pruned weights
get a zero gradient, so they and their optimizer slots stay exactly 0. Two
official codebases do otherwise, and these hooks reproduce them inside the
compiled Keras train step (installed by `MaskUpdater.attach`, removed by
`detach`):

- `dense_gradient_passthrough`: the kernel variable receives the dense
  gradient (with respect to the effective weights) at every position, as
  PyTorch's `weight.grad` in FreeTickets' `sparselearning/core.py`, whose
  `apply_mask` zeroes weights but leaves momentum alone. Together with
  `remask_after_each_step` (the optimizer's variable constraint re-applies the
  mask after each update, as `Masking.step` calls `apply_mask` after
  `optimizer.step`) pruned weights stay 0 at every step boundary while their
  momentum follows the dense gradient.
- `StepGradientTap`: keeps the gradient of the last training batch with respect
  to each masked layer's effective kernel, so growth can use the update step's
  own batch (FreeTickets: `weight.grad` after `optimizer.step`; RigL's
  `SparseRigLOptimizer` and CigL: the same batch, with that step's optimizer
  update skipped: `skip_optimizer_update_on`).
- `keep_values_through_update`: after each optimizer update, chosen entries of
  chosen variables get their pre-update values back (CigL's `Masking.step`
  restores the randomly dropped weights from `w_raw_dict`).

The optimizer hooks wrap the optimizer's `apply` on the instance, one wrapper
per kind, so they stack; `restore_optimizer` removes them all.
"""

import functools

import keras
import tensorflow as tf
from keras import ops


def dense_gradient_passthrough(layer, kernel):
    """`kernel` (the masked kernel) in value; the dense gradient reaches the raw kernel variable.

    kernel + (raw - stop_gradient(raw)) * (1 - mask) equals kernel exactly, and
    its gradient with respect to raw is mask * g + (1 - mask) * g = g.
    """
    raw = ops.cast(layer._unmasked_kernel(), kernel.dtype)
    mask = ops.cast(layer.kernel_mask, kernel.dtype)
    return kernel + (raw - tf.stop_gradient(raw)) * (1.0 - mask)


class _ReMask:
    """Variable constraint: the layer's mask times the user's own constraint (if any)."""

    def __init__(self, mask, previous):
        self.mask = mask
        self.previous = previous

    def __call__(self, value):
        if self.previous is not None:
            value = self.previous(value)
        return value * ops.cast(self.mask, value.dtype)


def remask_after_each_step(layers):
    """Makes the optimizer zero each layer's pruned weights right after every update."""
    for layer in layers:
        variable = layer.kernel_variable
        if not isinstance(variable.constraint, _ReMask):
            variable.constraint = _ReMask(layer.kernel_mask, variable.constraint)


def _compose(transforms, layer, kernel):
    for transform in transforms:
        kernel = transform(layer, kernel)
    return kernel


def set_kernel_transforms(layers, transforms_per_layer):
    """Installs the training-only kernel transforms (in order) on each layer; True if any."""
    installed = False
    for layer, transforms in zip(layers, transforms_per_layer):
        layer.training_kernel_transform = functools.partial(_compose, tuple(transforms)) if transforms else None
        installed = installed or bool(transforms)
    return installed


def clear(layers):
    """Removes kernel transforms and re-mask constraints; True if anything was installed."""
    changed = False
    for layer in layers:
        if layer.training_kernel_transform is not None:
            layer.training_kernel_transform = None
            changed = True
        variable = layer.kernel_variable
        if isinstance(variable.constraint, _ReMask):
            variable.constraint = variable.constraint.previous
            changed = True
    return changed


class StepGradientTap:
    """The last training batch's gradient with respect to each masked layer's effective kernel.

    One non-trainable buffer per layer, written in the backward pass of every
    training step (a `tf.custom_gradient` identity on the kernel). Under
    `tf.distribute` the buffers are on-read variables summed over replicas, so
    a cross-replica read is the global batch's gradient (each replica's loss is
    scaled by 1/replicas), as for `MaskEngine`'s extra-batch gradients.

    Args:
      layers: the masked layers, in `masked_layers(model)` order.
      strategy: the model's distribution strategy.
    """

    def __init__(self, layers, strategy):
        self.strategy = strategy
        with strategy.scope():
            self.buffers = [
                keras.Variable(
                    ops.zeros(tuple(layer.kernel_variable.shape)), trainable=False, dtype="float32",
                    name=f"{layer.name}_step_gradient", synchronization="on_read", aggregation="sum",
                )  # fmt: skip
                for layer in layers
            ]
            self.filled = keras.Variable(
                0.0, trainable=False, dtype="float32", name="step_gradient_filled", synchronization="on_read",
                aggregation="sum",
            )  # fmt: skip

    def transform(self, index):
        """The kernel transform that records layer `index`'s gradient (identity in value)."""
        buffer, filled = self.buffers[index], self.filled

        def tap(layer, kernel):
            @tf.custom_gradient
            def identity(value):
                def gradient(upstream):
                    writes = [buffer.assign(ops.cast(upstream, "float32")), filled.assign(1.0)]
                    with tf.control_dependencies(writes):
                        return tf.identity(upstream)

                return tf.identity(value), gradient

            return identity(kernel)

        return tap

    def gradients(self):
        """The recorded gradients; raises if no training step has written them yet."""
        if float(self._read(self.filled)) == 0.0:
            raise RuntimeError(
                "Growth by the update step's own batch (growth_gradient='step_batch...') needs the gradient of the "
                "last training batch, and none has run since training started. A run resumed right before a "
                "global exploration must restore it (EDST's get_state/set_state carry it)."
            )
        return [self._read(buffer) for buffer in self.buffers]

    def _read(self, variable):
        # In cross-replica context an on-read variable reads as the sum over replicas.
        with self.strategy.scope():
            return tf.convert_to_tensor(variable.value)

    def get_state(self):
        """The buffers as numpy arrays (for checkpoints)."""
        state = {f"step_gradient/{i}": self._read(b).numpy() for i, b in enumerate(self.buffers)}
        state["step_gradient/filled"] = self._read(self.filled).numpy()
        return state

    def set_state(self, state):
        """Restores `get_state`'s arrays."""
        for i, buffer in enumerate(self.buffers):
            self._write(buffer, state[f"step_gradient/{i}"])
        self._write(self.filled, state["step_gradient/filled"])

    @staticmethod
    def _write(variable, value):
        # A summed on-read variable cannot be assigned across replicas: give each
        # replica its share so the sum reads back as `value`.
        components = getattr(variable.value, "values", None)
        if components is None:
            variable.assign(value)
        else:
            for component in components:
                component.assign(value / len(components))


def _wrapper_kinds(optimizer):
    kinds, apply = [], vars(optimizer).get("apply")
    while apply is not None:
        kinds.append(getattr(apply, "tft_kind", None))
        apply = getattr(apply, "tft_wrapped", None)
    return kinds


def _wrap_apply(optimizer, kind, make_apply):
    """Installs `make_apply(previous_apply)` as `optimizer.apply` unless a wrapper of `kind` is there; True if new."""
    if kind in _wrapper_kinds(optimizer):
        return False
    wrapped = vars(optimizer).get("apply")
    apply = make_apply(optimizer.apply)
    apply.tft_kind, apply.tft_wrapped = kind, wrapped
    optimizer.apply = apply
    return True


def keep_values_through_update(optimizer, variables, keep_update):
    """Makes each optimizer update leave chosen entries of `variables` at their pre-update values.

    CigL's `Masking.step` (`sparselearning/core.py`) zeroes the weights its
    next random mask drops before `optimizer.step()` and writes them back from
    `w_raw_dict` at the following step, so those weights do not take that
    update (their momentum does). Here the wrapper reads each variable before
    the optimizer's `apply` and, after it, keeps the new value only where
    `keep_update(index, step)` is nonzero. Nothing is stored between steps, so
    replicas and resumed runs agree whenever `keep_update` is a pure function
    of (index, step). Undo with `restore_optimizer`.

    Args:
      optimizer: a Keras optimizer.
      variables: the variables to guard (e.g. masked kernels), in index order.
      keep_update: fn(index, step) -> tensor of the variable's shape, 1 where
        the update is kept; `step` is the int64 optimizer step being taken
        (`iterations` before the update).

    Returns:
      True if the wrapper was installed now (False: it was there already).
    """
    variables = list(variables)

    def make_apply(previous):
        def apply(grads, trainable_variables=None):
            step = ops.cast(ops.convert_to_tensor(optimizer.iterations), "int64")
            before = [tf.identity(variable.value) for variable in variables]
            with tf.control_dependencies(before):
                previous(grads, trainable_variables)
            for index, (variable, old) in enumerate(zip(variables, before)):
                keep = ops.cast(keep_update(index, step), "bool")
                variable.assign(ops.where(keep, variable.value, old))

        return apply

    return _wrap_apply(optimizer, "keep_values", make_apply)


def skip_optimizer_update_on(optimizer, is_update_step):
    """Makes `optimizer` skip its update (not its step count) after which a mask update follows.

    RigL's `SparseRigLOptimizer.apply_gradients` and CigL's `main.py` run the
    mask update *instead of* the optimizer step on update iterations. Here the
    optimizer's `apply` is wrapped in a `tf.cond` on the step it is about to
    take; weights and slots stay as they are and `iterations` still advances, so
    the schedule keeps counting batches. Undo with `restore_optimizer`.

    Args:
      optimizer: a built Keras optimizer.
      is_update_step: fn(step tensor) -> bool tensor, the schedule's update steps.
    """

    def make_apply(original):
        def apply(grads, trainable_variables=None):
            step = optimizer.iterations + 1

            def skip():
                optimizer.iterations.assign_add(1)
                return tf.constant(True)

            def run():
                original(grads, trainable_variables)
                return tf.constant(False)

            tf.cond(is_update_step(step), skip, run)

        return apply

    _wrap_apply(optimizer, "skip_update", make_apply)


def restore_optimizer(optimizer):
    """Removes every optimizer wrapper of this module (`skip_optimizer_update_on`, ...); True if any was there."""
    if "apply" in vars(optimizer):
        del optimizer.apply
        return True
    return False
