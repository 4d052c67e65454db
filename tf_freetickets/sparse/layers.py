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
import warnings

import keras
import numpy as np
from keras import ops

from tf_freetickets import keras_compat
from tf_freetickets.sparse.densities import active_count

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
    # Fraction of the kernel the mask keeps, set by `init_masks` and saved in
    # the config, so a layer rebuilt from its config (clone_model) starts sparse.
    target_density = None

    def __init__(self, *args, target_density=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.target_density = target_density

    @classmethod
    def from_config(cls, config):
        """The layer from its config; inside a user's `clone_model` clone_function it keeps the original's weights.

        tfmot's subset idiom (`clone_model(model, clone_function=f)` with `f`
        returning a pruned version of chosen layers) keeps those layers'
        weights; a layer rebuilt from a config alone would start from fresh
        initial values. So when `f` builds a masked layer from the config of
        the layer `clone_model` handed it, the original's weights are copied
        in when the new layer is built (all ones mask unless `target_density`
        is set), or a one-line warning names the layer if their shapes differ.
        """
        layer = super().from_config(config)
        source = keras_compat.user_clone_function_source()
        if source is not None and source.built:
            mask = getattr(source, "kernel_mask", None)
            # object.__setattr__: Keras would track the list; build pops it.
            object.__setattr__(layer, "_source_weights", (source.name, [v.numpy() for v in source.weights if v is not mask]))
        return layer

    def build(self, input_shape):
        """Builds the wrapped layer, then adds the mask variable beside its kernel."""
        super().build(input_shape)
        self._add_kernel_mask()
        self._keep_source_weights()

    def _keep_source_weights(self):
        source = self.__dict__.pop("_source_weights", None)
        if source is None:
            return
        name, values = source
        own = [v for v in self.weights if v is not self.kernel_mask]
        if [tuple(v.shape) for v in own] != [np.shape(value) for value in values]:
            warnings.warn(
                f"Masked layer {self.name!r} was rebuilt from the config of {name!r} in clone_model, but their weight "
                "shapes differ, so its weights are freshly initialised (use tft.sparsify(model, include=[...]) instead).",
                stacklevel=2,
            )
            return
        for variable, value in zip(own, values):
            variable.assign(value)
        if self.target_density is None:
            return
        kernel = self.kernel_variable  # a random mask at target_density: zero the weights it prunes
        kernel.assign(kernel.value * ops.cast(self.kernel_mask, kernel.dtype))

    def _add_kernel_mask(self):
        variable = self.kernel_variable
        self.kernel_mask = self.add_weight(
            name=MASK_NAME,
            shape=tuple(variable.shape),
            initializer="ones",
            trainable=False,
            dtype=variable.dtype,
            autocast=False,
        )
        if self.target_density is not None:
            # A rebuilt layer (clone_model, load_model before its weights are
            # read) gets a fresh random mask at its density, never a dense one.
            assign_random_mask(self, self.target_density, np.random.default_rng(np.random.randint(2**31)))

    def get_config(self):
        """The wrapped layer's config plus `target_density` (so a rebuilt layer gets a mask at it)."""
        config = super().get_config()
        if self.target_density is not None:
            config["target_density"] = float(self.target_density)
        return config

    @property
    def kernel(self):
        """The effective kernel: the variable times the mask (plus training-only transforms in training calls)."""
        kernel = self._unmasked_kernel()
        if not self._apply_kernel_mask or getattr(self, "kernel_mask", None) is None:
            return kernel
        kernel = kernel * ops.cast(self.kernel_mask, kernel.dtype)
        if self.training_kernel_transform is not None and keras_compat.in_training_call():
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
        return keras_compat.layer_kernel_variable(self)

    def save_own_variables(self, store):
        """Keras' saving hook: the wrapped layer's variables and the mask."""
        own = {}
        super().save_own_variables(own)
        for key, value in own.items():
            store[key] = value
        # Layers that save a fixed list (kernel, bias) leave the mask out.
        if not any(value is self.kernel_mask for value in own.values()):
            store[MASK_NAME] = self.kernel_mask

    def load_own_variables(self, store):
        """Keras' loading hook: the wrapped layer's variables and, when saved, the mask."""
        super().load_own_variables(store)
        if MASK_NAME in list(store.keys()):
            self.kernel_mask.assign(store[MASK_NAME])


def assign_random_mask(layer, density, rng):
    """Gives masked `layer` a random mask keeping exactly `active_count(size, density)` weights.

    The kernel is zeroed outside the new mask (design invariant 1) and the
    density is recorded as the layer's `target_density`.

    Args:
      layer: a built masked layer.
      density: fraction of the kernel to keep, in (0, 1].
      rng: a `numpy.random.Generator`.
    """
    shape = tuple(layer.kernel_mask.shape)
    size = int(np.prod(shape))
    flat = np.zeros(size, dtype="float32")
    flat[rng.permutation(size)[: active_count(size, density)]] = 1.0
    mask = flat.reshape(shape)
    layer.kernel_mask.assign(mask)
    kernel = layer.kernel_variable
    kernel.assign(kernel * ops.cast(mask, kernel.dtype))
    layer.target_density = float(density)


def mask_built_layer(layer):
    """Turns an already built kernel layer into its masked twin in place (mask all ones).

    Used for the projections that a container layer (MultiHeadAttention)
    creates inside its own `build`, where no config-based rebuild can reach.
    """
    if is_masked(layer):
        return layer
    layer.__class__ = masked_class_for(type(layer))
    with keras_compat.tracking_unlocked(layer):
        layer._add_kernel_mask()
    return layer


class SublayerMaskingMixin:
    """Mixin for MultiHeadAttention (and subclasses), whose kernels live in sublayers built in `build`.

    After the layer builds, every direct sublayer with a `kernel` is turned into
    its masked twin; `sublayer_densities` (saved in the config) gives a rebuilt
    layer random masks at the densities it had.
    """

    def __init__(self, *args, sublayer_densities=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sublayer_densities = dict(sublayer_densities or {})

    def build(self, query_shape, value_shape, key_shape=None):
        """Builds the attention layer, then masks each of its projections at its recorded density."""
        # Keras maps call arguments to build arguments by name: keep MultiHeadAttention's.
        super().build(query_shape, value_shape, key_shape)
        for sublayer in keras_compat.own_sublayers(self):
            if _has_kernel(sublayer):
                sublayer.target_density = self.sublayer_densities.get(sublayer.name)
                mask_built_layer(sublayer)

    def get_config(self):
        """The attention layer's config plus each masked projection's density."""
        config = super().get_config()
        sublayers = keras_compat.own_sublayers(self)
        densities = {s.name: s.target_density for s in sublayers if is_masked(s) and s.target_density is not None}
        if densities:
            config["sublayer_densities"] = densities
        return config


def _has_kernel(layer):
    try:
        return not isinstance(layer, keras.Model) and getattr(layer, "kernel", None) is not None
    except AttributeError:
        return False


#: Layer classes whose kernels sit in sublayers that this module can mask.
CONTAINER_CLASSES = (keras.layers.MultiHeadAttention,)


def _empty_batch_safe_call(layer_class):
    """`call` for a masked one-input layer that answers a batch known to be empty with the right shape.

    TensorFlow's convolution returns its input's shape for a batch of 0
    examples (a plain `Conv2D` hides it only when its bias broadcasts), which
    breaks the next layer. An eager call (or a trace) with 0 examples gets
    an empty output of the right shape; compiled graphs with an unknown batch
    size are left as they are (a branch there would cost TFLite conversion
    its static shapes), and the exported endpoints answer an empty batch
    themselves (`tf_freetickets.deploy.saved_model`).
    """

    def call(self, inputs):
        if inputs.shape[0] == 0:
            shape = self.compute_output_shape(tuple(inputs.shape))
            if all(dim is not None for dim in shape[1:]):
                return ops.zeros((0, *shape[1:]), self.compute_dtype)
        return layer_class.call(self, inputs)

    call.__doc__ = f"`{layer_class.__name__}.call` on the masked kernel; an empty batch gets an empty output."
    return call


def _takes_one_input(layer_class):
    return list(inspect.signature(layer_class.call).parameters) == ["self", "inputs"]


_MASKED_CLASSES = {}


def masked_class_for(layer_class):
    """Returns the masked subclass of `layer_class`, creating it once.

    Args:
      layer_class: a `keras.layers.Layer` subclass whose instances have a
        `kernel` weight (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D, Conv*Transpose,
        EinsumDense, or a user layer following the same convention), or
        MultiHeadAttention (its query/key/value/output projections are masked).

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
    if issubclass(layer_class, (MaskedKernelMixin, SublayerMaskingMixin)):
        return layer_class
    if layer_class not in _MASKED_CLASSES:
        name = "Masked" + layer_class.__name__
        mixin = SublayerMaskingMixin if issubclass(layer_class, CONTAINER_CLASSES) else MaskedKernelMixin
        namespace = {
            "__module__": __name__,
            "plain_class": layer_class,
            "__doc__": f"`{layer_class.__name__}` whose kernel is multiplied by a 0/1 mask variable (see `sparsify`).",
        }
        if mixin is MaskedKernelMixin and _takes_one_input(layer_class):
            namespace["call"] = _empty_batch_safe_call(layer_class)
        masked = type(name, (mixin, layer_class), namespace)
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
MaskedMultiHeadAttention = masked_class_for(keras.layers.MultiHeadAttention)


def is_masked(layer):
    """True when `layer` carries a kernel mask (built or not)."""
    return isinstance(layer, MaskedKernelMixin)


def masked_layers(model):
    """The masked layers of `model`, in `model.layers` order, nested models included."""
    found = []
    for layer in keras_compat.child_layers(model, recursive=True):
        if is_masked(layer):
            found.append(layer)
    return found


def is_frozen(layer):
    """True for a layer whose kernel does not train (`trainable=False`, itself or a parent)."""
    return not (layer.trainable and layer.kernel_variable.trainable)


def updatable_masked_layers(model):
    """The masked layers whose masks a mask update may change: the trainable ones.

    A frozen layer keeps its mask: weights regrown there would start at zero
    and never train.

    Raises:
      ValueError: the model has masked layers but every one is frozen.
    """
    layers = masked_layers(model)
    updatable = [layer for layer in layers if not is_frozen(layer)]
    if layers and not updatable:
        raise ValueError(
            f"Every masked layer of model {model.name!r} is frozen (trainable=False); mask updates would change "
            "nothing. Unfreeze layers to train them sparsely, or use tft.Static()."
        )
    return updatable


def qualified_names(model):
    """{id(layer): name} for every layer inside `model`.

    A layer owned by a model (nested models included) keeps its own name, as in
    `model.layers`; a layer inside another layer (MultiHeadAttention's "query")
    is named "parent/child", so two attention layers' projections stay apart.
    """
    names = {}

    def walk(parent, prefix):
        for layer in keras_compat.child_layers(parent):
            name = layer.name if isinstance(parent, keras.Model) else f"{prefix}/{layer.name}"
            names[id(layer)] = name
            walk(layer, name)

    walk(model, model.name)
    return names


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
