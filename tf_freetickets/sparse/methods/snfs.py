"""SNFS: sparse momentum (Dettmers & Zettlemoyer 2019), growth by |gradient momentum|."""

from keras import ops

from tf_freetickets.sparse import score_sources
from tf_freetickets.sparse.methods.common import dst_updater_kwargs, gradient_growth_costs
from tf_freetickets.sparse.registry import CostFacts, register_method
from tf_freetickets.sparse.updater import MaskUpdater


class SNFS(MaskUpdater):
    """Sparse momentum (Dettmers & Zettlemoyer 2019): grow by |gradient momentum|.

    The original keeps SGD momentum of the dense gradient every step, which
    costs a dense backward pass per step. Here the momentum is rebuilt at each
    update from the last `gradient_batches` dense gradients,
    m = sum_k momentum^(K-1-k) g_k, so the extra cost is K backward passes per
    ΔT steps. Layer-wise densities stay fixed (no momentum redistribution), so
    per-layer active counts are exact as for RigL.
    """

    def __init__(self, *args, gradient_batches=5, momentum=0.9, **kwargs):
        super().__init__(*args, **kwargs)
        if gradient_batches < 1:
            raise ValueError(f"gradient_batches must be >= 1, got {gradient_batches!r}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.gradient_batches = gradient_batches
        self.momentum = momentum

    @property
    def score_source(self):
        """The momentum of the last `gradient_batches` dense gradients."""
        return score_sources.GradientMomentum(batches_per_update=self.gradient_batches, momentum=self.momentum)

    def grow_scores(self, weight, gradient, layer_index, step):
        """|gradient momentum|."""
        return ops.abs(gradient)


def _snfs_costs(updater, gradient_batches):
    if updater is None and gradient_batches is None:
        # The paper's SNFS keeps the dense gradient's momentum every step (RigL's table: 2 f_S + f_D).
        return CostFacts(growth_gradient_batches=None, dense_weight_gradient_every_step=True)
    return gradient_growth_costs(updater, gradient_batches)


register_method(
    "snfs",
    summary="SNFS (Dettmers & Zettlemoyer 2019): grow by |momentum of the dense gradient| (rebuilt per update).",
    make_updater=lambda sparse, seed: SNFS(**dst_updater_kwargs(sparse, seed)),
    cost_facts=_snfs_costs,
    updater_class=SNFS,
    dynamic=True,
)
