"""Find the per-weight optimizer state (momentum, Adam moments, ...) of a variable."""

import keras

from tf_freetickets import keras_compat


def innermost_optimizer(optimizer):
    """The optimizer that owns the slots: unwraps `LossScaleOptimizer` (mixed_float16), nested or not."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def slots_for(optimizer, variable):
    """Optimizer variables that hold per-element state of `variable`.

    Keras 3 optimizers keep each kind of state as a list aligned with their
    trainable variables (`momentums`, `_velocities`, EMA copies, gradient
    accumulators, ...). Every such list contributes its entry at `variable`'s
    index when that entry has `variable`'s shape. Looking up by index, not by
    name, keeps two layers with the same name (members of one ensemble model)
    apart.

    Under mixed_float16 Keras wraps the optimizer in a `LossScaleOptimizer`,
    whose own lists hold no slots; the wrapped optimizer's are used.

    Args:
      optimizer: a `keras.optimizers.Optimizer`, possibly a
        `LossScaleOptimizer` (None, or not yet built, gives []).
      variable: a model variable, e.g. a masked layer's kernel.

    Returns:
      list of optimizer variables, possibly empty (plain SGD has none).
    """
    optimizer = innermost_optimizer(optimizer)
    if optimizer is None or not getattr(optimizer, "built", False):
        return []
    found_index = keras_compat.optimizer_variable_slots(optimizer, variable)
    if found_index is None:
        return []
    index, trainable = found_index
    shape = tuple(variable.shape)
    found = {}
    for value in vars(optimizer).values():
        if value is trainable or not isinstance(value, (list, tuple)) or len(value) != len(trainable):
            continue
        slot = value[index]
        if isinstance(slot, keras.Variable) and slot is not variable and tuple(slot.shape) == shape:
            found[id(slot)] = slot
    return list(found.values())
