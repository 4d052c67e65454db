"""SET: Sparse Evolutionary Training (Mocanu et al. 2018), random growth."""

from keras import ops

from tf_freetickets.sparse import score_sources
from tf_freetickets.sparse.methods.common import N_M_FIELD, dst_updater_kwargs_with_n_m
from tf_freetickets.sparse.registry import CostFacts, register_method
from tf_freetickets.sparse.stateless_random import stateless_uniform
from tf_freetickets.sparse.updater import MaskUpdater


class SET(MaskUpdater):
    """Sparse Evolutionary Training (Mocanu et al. 2018): grow at random.

    Drops the smallest magnitudes and grows uniformly at random among the
    positions not kept. The random scores are a pure function of (seed, layer,
    step), so every replica and a resumed run draw the same positions.
    """

    score_source = score_sources.RANDOM

    def grow_scores(self, weight, gradient, layer_index, step):
        """Uniform random scores from (seed, layer, step)."""
        return stateless_uniform(ops.shape(weight), self.seed, layer_index, step)


def _set_costs(updater, gradient_batches):
    # Random growth reads no gradient; FreeTickets' dense momentum still costs a dense weight gradient per step.
    return CostFacts(dense_weight_gradient_every_step=updater is not None and updater.dense_gradient_momentum)


register_method(
    "set",
    summary="SET (Mocanu et al. 2018): drop the smallest magnitudes, regrow at random.",
    make_updater=lambda sparse, seed: SET(**dst_updater_kwargs_with_n_m(sparse, seed)),
    cost_facts=_set_costs,
    config_fields=(N_M_FIELD,),
    updater_class=SET,
    dynamic=True,
)
