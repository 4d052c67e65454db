"""Find the per-weight optimizer state (momentum, Adam moments, ...) of a variable."""


def slots_for(optimizer, variable):
    """Optimizer variables that hold per-element state of `variable`.

    Keras 3 optimizers name every such variable
    `<variable.path with '/' -> '_'>_<slot name>` (`add_variable_from_reference`)
    and give it the variable's shape; both are checked. Covers SGD momentum,
    Adam/AdamW/Nadam moments, RMSprop, Adagrad accumulators, gradient
    accumulators and EMA copies.

    Args:
      optimizer: a built `keras.optimizers.Optimizer` (None gives []).
      variable: a model variable, e.g. a masked layer's kernel.

    Returns:
      list of optimizer variables, possibly empty (plain SGD has none).
    """
    if optimizer is None:
        return []
    prefix = variable.path.replace("/", "_") + "_"
    shape = tuple(variable.shape)
    found = []
    for slot in optimizer.variables:
        name = getattr(slot, "path", slot.name).split("/")[-1]
        if name.startswith(prefix) and tuple(slot.shape) == shape:
            found.append(slot)
    return found
