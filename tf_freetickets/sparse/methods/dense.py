"""Dense training: no masks, every weight trains (the baseline of every claim)."""

from tf_freetickets.sparse.registry import CostFacts, register_method


def _no_updater(sparse, seed):
    return None


def _dense_costs(updater, gradient_batches):
    return CostFacts(dense=True, updates_masks=False)


register_method(
    "dense",
    summary="Dense training: no masks (3 f_D per example and step).",
    make_updater=_no_updater,
    cost_facts=_dense_costs,
)
