"""Static sparse training: a random ER/ERK mask fixed for the whole run."""

from tf_freetickets.sparse import score_sources
from tf_freetickets.sparse.registry import CostFacts, register_method
from tf_freetickets.sparse.updater import MaskUpdater


class Static(MaskUpdater):
    """Fixed masks: sparse training from a random (ER/ERK) mask, no updates."""

    score_source = score_sources.NONE

    def __init__(self):
        super().__init__(update_every=1, drop_fraction=0.0)

    def kernel_transforms(self, model, layer_index):
        """No training-time transforms: the masked kernel is all a fixed mask needs."""
        return []

    @property
    def updates_masks(self):
        """False: the masks never change."""
        return False


def _static_costs(updater, gradient_batches):
    return CostFacts(updates_masks=False)


register_method(
    "static",
    summary="Static sparse training: the random ER/ERK mask of sparsify, never updated.",
    make_updater=lambda sparse, seed: Static(),
    cost_facts=_static_costs,
    updater_class=Static,
)
