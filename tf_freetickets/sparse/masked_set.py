"""`MaskedLayerSet`: the masked layers a mask update works on, and their indices.

Every piece of the update machinery (the updater's training hooks, the
compiled `MaskEngine`, gradual pruning's per-layer targets, the step-gradient
tap) addresses a layer by its position in this one list, so the list is built
once per training run and handed to each of them: a layer's index means the
same thing everywhere (it also seeds the layer's random draws, so it must not
shift between a run and its resume).
"""

from collections.abc import Sequence

from tf_freetickets.sparse import layers as masking


class MaskedLayerSet(Sequence):
    """The trainable masked layers of a model, in model order.

    Frozen masked layers (`trainable=False`) are left out: weights regrown
    there would start at zero and never train, so their masks stay as they are.

    Args:
      model: a model with masked layers (see `tft.sparsify`).

    Raises:
      ValueError: the model has no masked layers, or every one is frozen.
    """

    def __init__(self, model):
        self.model = model
        self.layers = tuple(masking.updatable_masked_layers(model))
        if not self.layers:
            raise ValueError(f"Model {model.name!r} has no masked layers; call tf_freetickets.sparsify first.")

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def index_of(self, layer):
        """The position of `layer` in the set (the index its updates and random draws use)."""
        for index, candidate in enumerate(self.layers):
            if candidate is layer:
                return index
        raise ValueError(f"Layer {layer.name!r} is not one of the updatable masked layers of {self.model.name!r}.")

    @property
    def kernels(self):
        """The kernel variables, in index order."""
        return [layer.kernel_variable for layer in self.layers]

    @property
    def masks(self):
        """The mask variables, in index order."""
        return [layer.kernel_mask for layer in self.layers]

    @property
    def names(self):
        """The layer names, in index order."""
        return [layer.name for layer in self.layers]
