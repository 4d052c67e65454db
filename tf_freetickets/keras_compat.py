"""The library's only uses of private Keras (`keras.src`), one function each.

Keras 3's public API has no name for these, so each function reads Keras'
internals; when a Keras release moves them, this module is the one place to
change. Each function says why no public API serves and which Keras versions
its internals were checked on. Bottom layer: imports only keras.
"""

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
