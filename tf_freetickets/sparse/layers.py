"""Masked Keras layers: any layer with a `kernel` gains a binary `kernel_mask`.

A masked layer reads its kernel as `kernel * kernel_mask`, so the gradient that
reaches the kernel variable is already zero at pruned positions and every
optimizer keeps pruned weights and their slots at exactly zero (invariants 1-2
of the design). The mask is a non-trainable variable: it is checkpointed, saved
in `.keras` files and mirrored under `tf.distribute`.

For RigL-style growth the library needs the gradient with respect to the
*effective* weights at the pruned positions too. Because the stored kernel holds
exact zeros where the mask is zero, reading the raw kernel gives the same forward
pass, and its gradient is the dense one; `unmasked_kernels(model)` switches the
layers into that mode while a dense-gradient function is traced.
"""

import contextlib
import inspect

import keras
from keras import ops
from keras.src.backend.common import global_state  # the call context holds `training`

MASK_NAME = "kernel_mask"
_SERIAL_PACKAGE = "tf_freetickets"


class MaskedKernelMixin:
    """Mixin that multiplies a layer's `kernel` by a binary mask variable.

    Works for Keras layers that expose their kernel as a `kernel` property backed
    by a variable (Dense, EinsumDense, Conv*, Conv*Transpose) and for layers that
    assign `self.kernel = self.add_weight(...)` in `build` (DepthwiseConv*).
    """

    # Read while tracing: False inside `unmasked_kernels`.
    _apply_kernel_mask = True
    # Optional fn(layer, masked_kernel) -> kernel applied only in training calls
    # (CigL's random mask); set and cleared by the updater that owns it.
    training_kernel_transform = None

    def build(self, input_shape):
        super().build(input_shape)
        variable = self.kernel_variable
        self.kernel_mask = self.add_weight(
            name=MASK_NAME,
            shape=tuple(variable.shape),
            initializer="ones",
            trainable=False,
            dtype=variable.dtype,
            autocast=False,
        )

    @property
    def kernel(self):
        kernel = self._unmasked_kernel()
        if not self._apply_kernel_mask or getattr(self, "kernel_mask", None) is None:
            return kernel
        kernel = kernel * ops.cast(self.kernel_mask, kernel.dtype)
        if self.training_kernel_transform is not None and _in_training_call():
            kernel = self.training_kernel_transform(self, kernel)
        return kernel

    @kernel.setter
    def kernel(self, value):
        # Layers without a `kernel` property assign the variable here in build();
        # Keras' __setattr__ has tracked it already, so bypass it.
        object.__setattr__(self, "_assigned_kernel", value)

    def _unmasked_kernel(self):
        for klass in type(self).__mro__:
            if klass is MaskedKernelMixin or issubclass(MaskedKernelMixin, klass):
                continue
            attribute = klass.__dict__.get("kernel")
            if isinstance(attribute, property):
                return attribute.fget(self)
        if "_assigned_kernel" not in self.__dict__:
            raise AttributeError(f"Layer {self.name!r} has no kernel until it is built.")
        return self.__dict__["_assigned_kernel"]

    @property
    def kernel_variable(self):
        """The trainable kernel variable (not the masked tensor)."""
        assigned = self.__dict__.get("_assigned_kernel")
        if assigned is not None:
            return assigned
        return self._kernel

    def save_own_variables(self, store):
        own = {}
        super().save_own_variables(own)
        for key, value in own.items():
            store[key] = value
        # Layers that save a fixed list (kernel, bias) leave the mask out.
        if not any(value is self.kernel_mask for value in own.values()):
            store[MASK_NAME] = self.kernel_mask

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if MASK_NAME in list(store.keys()):
            self.kernel_mask.assign(store[MASK_NAME])


def _in_training_call():
    """True while Keras runs a layer call with training=True (read at trace time)."""
    context = global_state.get_global_attribute("current_call_ctx")
    return context is not None and context.get_value("training") is True


def _empty_batch_safe_call(layer_class):
    """`call` for a masked one-input layer that answers a batch known to be empty with the right shape.

    TensorFlow's convolution returns its input's shape for a batch of 0
    examples (a plain `Conv2D` hides it only when its bias broadcasts), which
    breaks the next layer. An eager call (or a trace) with 0 examples gets
    an empty output of the right shape; compiled graphs with an unknown batch
    size are left as they are (a branch there would cost TFLite conversion
    its static shapes), and the exported endpoints answer an empty batch
    themselves (`tf_freetickets.export`).
    """

    def call(self, inputs):
        if inputs.shape[0] == 0:
            shape = self.compute_output_shape(tuple(inputs.shape))
            if all(dim is not None for dim in shape[1:]):
                return ops.zeros((0, *shape[1:]), self.compute_dtype)
        return layer_class.call(self, inputs)

    return call


def _takes_one_input(layer_class):
    return list(inspect.signature(layer_class.call).parameters) == ["self", "inputs"]


_MASKED_CLASSES = {}


def masked_class_for(layer_class):
    """Returns the masked subclass of `layer_class`, creating it once.

    Args:
      layer_class: a `keras.layers.Layer` subclass whose instances have a
        `kernel` weight (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D, Conv*Transpose,
        EinsumDense, or a user layer following the same convention).

    Returns:
      A subclass named `Masked<Name>`, registered as Keras-serializable under the
      package `tf_freetickets`, so saved models load in safe mode. A user layer
      class must be passed here once in the loading process before
      `keras.models.load_model`.

    Raises:
      TypeError: `layer_class` is not a Keras layer class.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"masked_class_for expects a keras Layer class, got {layer_class!r}.")
    if issubclass(layer_class, MaskedKernelMixin):
        return layer_class
    if layer_class not in _MASKED_CLASSES:
        name = "Masked" + layer_class.__name__
        namespace = {"__module__": __name__}
        if _takes_one_input(layer_class):
            namespace["call"] = _empty_batch_safe_call(layer_class)
        masked = type(name, (MaskedKernelMixin, layer_class), namespace)
        masked = keras.saving.register_keras_serializable(_SERIAL_PACKAGE, name)(masked)
        _MASKED_CLASSES[layer_class] = masked
    return _MASKED_CLASSES[layer_class]


MaskedDense = masked_class_for(keras.layers.Dense)
MaskedEinsumDense = masked_class_for(keras.layers.EinsumDense)
MaskedConv1D = masked_class_for(keras.layers.Conv1D)
MaskedConv2D = masked_class_for(keras.layers.Conv2D)
MaskedConv3D = masked_class_for(keras.layers.Conv3D)
MaskedConv1DTranspose = masked_class_for(keras.layers.Conv1DTranspose)
MaskedConv2DTranspose = masked_class_for(keras.layers.Conv2DTranspose)
MaskedDepthwiseConv1D = masked_class_for(keras.layers.DepthwiseConv1D)
MaskedDepthwiseConv2D = masked_class_for(keras.layers.DepthwiseConv2D)


def is_masked(layer):
    """True when `layer` carries a kernel mask (built or not)."""
    return isinstance(layer, MaskedKernelMixin)


def masked_layers(model):
    """The masked layers of `model`, in `model.layers` order, nested models included."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if is_masked(layer):
            found.append(layer)
    return found


@contextlib.contextmanager
def unmasked_kernels(model):
    """Makes the masked layers of `model` read their raw kernel while active.

    The forward pass is unchanged (pruned kernel entries are exact zeros), but a
    gradient taken under this context is the dense gradient with respect to the
    effective weights, which RigL needs for growth (Evci et al. 2020, Sec. 3).
    Functions traced inside the context keep the unmasked reads; call them only
    inside it.
    """
    layers = masked_layers(model)
    for layer in layers:
        object.__setattr__(layer, "_apply_kernel_mask", False)
    try:
        yield
    finally:
        for layer in layers:
            object.__setattr__(layer, "_apply_kernel_mask", True)
