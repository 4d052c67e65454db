"""The library's only uses of private Keras (`keras.src` and private attributes), one function each.

Keras 3's public API has no name for these, so each function reads Keras'
internals; when a Keras release moves them, this module is the one place to
change. Each function says why no public API serves and which Keras versions
its internals were checked on. Bottom layer: imports only keras.
"""

import contextlib
import sys

import keras
from keras.src.backend.common import global_state
from keras.src.models.functional import Functional


def in_training_call():
    """True while Keras runs a layer call with `training=True` (read when the call is traced).

    Why private: a masked layer's `kernel` property is read inside its base
    class's own `call` (Dense, Conv2D, EinsumDense, ...), which takes no
    `training` argument, so Keras passes none to it. Keras resolves
    `training` once per outermost call and keeps it only in its call context
    (`global_state` attribute "current_call_ctx", a `CallContext`), which has
    no public accessor. Checked on Keras 3.15.1 (`keras/src/layers/layer.py`:
    `Layer.__call__`, `_get_call_context`, `CallContext.get_value`).
    """
    context = global_state.get_global_attribute("current_call_ctx")
    return context is not None and context.get_value("training") is True


def user_clone_function_source():
    """The layer `keras.models.clone_model` handed to a user's `clone_function` now running, or None.

    Why private: tfmot's subset idiom (a `clone_function` that returns a
    pruned version of chosen layers) keeps those layers' weights, because
    tfmot wraps the original layer; a masked layer built from the original's
    config has no way to see the original. `clone_model` holds it only as the
    `layer` argument of its wrapped clone function (`keras/src/models/cloning.py`,
    `_wrap_clone_function.wrapped_clone_function`; checked on Keras 3.15.1),
    so this walks up the call stack to that frame. None when there is no
    such frame, when no user frame lies between (Keras' own default clone,
    whose rule is fresh weights, and this library's `sparsify`, which copies
    the weights itself), or when a Keras release renames it.
    """
    frame = sys._getframe(1)
    user_frame_seen = False
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == "keras.src.models.cloning" and frame.f_code.co_name == "wrapped_clone_function":
            source = frame.f_locals.get("layer")
            return source if user_frame_seen and isinstance(source, keras.layers.Layer) else None
        package = module.split(".", 1)[0]
        if package not in ("keras", "tf_freetickets"):
            user_frame_seen = True
        frame = frame.f_back
    return None


def is_functional_or_sequential(model):
    """True for a Sequential model or a graph-of-layers (Functional) model, subclasses included.

    These are the models whose layer graph `keras.models.clone_model` can
    rebuild and whose `layers` list ends with the output layer; a subclassed
    model (its own `call`) is neither.

    Why private: `keras.Model(inputs, outputs)` returns an instance of
    `keras.src.models.functional.Functional` (Keras also injects that class
    into subclasses whose `__init__` passes inputs and outputs), and Keras
    exports no public name for it: `keras.Model` is the base of subclassed
    models too. Checked on Keras 3.15.1 (`keras/src/models/model.py`:
    `Model.__new__`, `inject_functional_model_class`).
    """
    return isinstance(model, (keras.Sequential, Functional))


def is_plain_functional(model):
    """True exactly for what `keras.Model(inputs, outputs)` returns, not for a subclass of it.

    A subclass may override `call`, so code that runs the layer graph itself
    (CSR serving) accepts only the plain class.

    Why private: the class, `keras.src.models.functional.Functional`, has no
    public name (see `is_functional_or_sequential`). Checked on Keras 3.15.1.
    """
    return type(model) is Functional


def child_layers(container, recursive=False):
    """The layers tracked inside `container` (a model or layer), itself excluded, in tracking order.

    `recursive=False` gives the direct children (a nested model is one
    child); `recursive=True` every layer at any depth.

    Why private: `Model.layers` lists a model's direct layers only and a
    plain `Layer` has no public list of its sublayers (MultiHeadAttention's
    query/key/value/output projections), while the masking code must walk
    both. Keras' own traversal is `Layer._flatten_layers`. Checked on Keras
    3.15.1 (`keras/src/layers/layer.py`).
    """
    return list(container._flatten_layers(include_self=False, recursive=recursive))


def own_sublayers(layer):
    """The sublayers `layer` created itself (MultiHeadAttention's projections), in creation order.

    Why private: Keras keeps them in `Layer._layers` and exposes no public
    list (see `child_layers`). Checked on Keras 3.15.1.
    """
    return list(layer._layers)


@contextlib.contextmanager
def tracking_unlocked(layer):
    """Lets a built layer add a variable (the mask of a projection MultiHeadAttention built itself).

    Why private: Keras locks a layer's variable tracker after `build`, and
    `add_weight` on a locked layer raises; the only switch is the private
    `Layer._tracker` (`lock`/`unlock`/`locked`). Checked on Keras 3.15.1
    (`keras/src/utils/tracking.py`).
    """
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if locked:
            tracker.lock()


def layer_kernel_variable(layer):
    """The kernel variable a Keras layer stores as `_kernel` (Dense, Conv*, EinsumDense).

    Why private: those layers expose `kernel` as a property that a masked
    layer overrides with the masked tensor, and keep the variable itself in
    the private attribute `_kernel`. Checked on Keras 3.15.1
    (`keras/src/layers/core/dense.py`, `convolutional/base_conv.py`).
    """
    return layer._kernel


def optimizer_variable_slots(optimizer, variable):
    """(index of `variable` in the optimizer, the optimizer's trainable-variable list), or None if it has none.

    Why private: Keras 3 optimizers keep their per-variable slots (momentum,
    Adam moments) in lists parallel to `_trainable_variables`, indexed by
    `_get_variable_index`; no public API maps a model variable to its slots.
    Checked on Keras 3.15.1 (`keras/src/optimizers/base_optimizer.py`).
    """
    try:
        return optimizer._get_variable_index(variable), optimizer._trainable_variables
    except KeyError:
        return None


def loss_tracker(model):
    """The `keras.metrics.Mean` that a compiled model reports as its "loss" metric.

    A custom `train_step` that computes its own loss (Divide-and-Co-training's
    co-training loss) updates it so `fit` logs and `History` show that loss
    under "loss", as for built-in losses.

    Why private: Keras keeps it as `Model._loss_tracker` (filled by
    `compute_loss`, read by `compute_metrics` / `get_metrics_result`) with no
    public accessor. Checked on Keras 3.15.1 (`keras/src/trainers/trainer.py`).
    """
    return model._loss_tracker


def graph_nodes(model):
    """The graph of a Functional or (built) Sequential model: (inputs, outputs, nodes), nodes inputs first.

    `inputs` and `outputs` are the model's flat lists of KerasTensors. Each node is
    `(operation, input_tensors, output_tensors, call)`, in an order where every
    node comes after the nodes that produce its inputs; input nodes are left
    out. `call(operation, new_tensors)` calls `operation` (the node's own or
    a replacement) with the node's arguments, each KerasTensor replaced by
    `new_tensors[id(tensor)]`, so a rebuilt graph keeps keyword arguments
    and list inputs (Add) as the original call had them.

    Why private: Keras keeps a model's call graph in `Function._nodes_by_depth`
    (a Sequential model in the Functional `_functional` it builds), and a
    node's call arguments in `Node.arguments` (`SymbolicArguments.fill_in`);
    `clone_model`'s `call_function` is public but refused for Sequential
    models and gives no view of the original graph. Checked on Keras 3.15.1
    (`keras/src/ops/function.py` `_run_through_graph`, `keras/src/ops/node.py`,
    `keras/src/models/sequential.py` `build`).
    """
    functional = model._functional if isinstance(model, keras.Sequential) else model
    if functional is None:
        raise ValueError(f"Sequential model {model.name!r} is not built; call it on data or build it first.")
    nodes = []
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue

            def call(operation, new_tensors, node=node):
                args, kwargs = node.arguments.fill_in(new_tensors)
                return operation(*args, **kwargs)

            nodes.append((node.operation, list(node.input_tensors), list(node.output_tensors), call))
    return list(functional.inputs), list(functional.outputs), nodes
