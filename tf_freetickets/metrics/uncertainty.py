"""Predictive uncertainty of a single model or an ensemble (natural log, 0 * log 0 = 0).

For an ensemble of M members with probabilities p_m (member_probs of shape (M, N, C)):

- total uncertainty     H[mean_m p_m]            (`predictive_entropy` of the ensemble mean)
- aleatoric (expected)  mean_m H[p_m]            (`expected_entropy`)
- epistemic             H[mean_m p_m] - mean_m H[p_m]  (`mutual_information`, >= 0 by Jensen)

This is the decomposition used to read ensemble uncertainty in FreeTickets (arXiv 2106.14568) and
the Divide-and-Co-training ensembles; the entropy of the mean is also the OoD score of `ood.py`.
"""

import numpy as np
from keras import ops

from tf_freetickets.metrics.calibration import check_probs


def check_member_probs(member_probs, name="member_probs", min_members=1):
    """Returns member probabilities as a float64 array (M, N, C), or raises ValueError naming the shapes.

    Accepts one array of shape (M, N, C) or a sequence of M arrays of shape (N, C).
    """
    if isinstance(member_probs, (list, tuple)):
        members = [np.asarray(ops.convert_to_numpy(p)) for p in member_probs]
        shapes = [m.shape for m in members]
        if len(set(shapes)) > 1:
            raise ValueError(f"{name}: every member must have the same shape (N, C), got shapes {shapes}.")
        member_probs = np.stack(members) if members else np.zeros((0, 0, 0))
    member_probs = np.asarray(ops.convert_to_numpy(member_probs))
    if member_probs.ndim != 3:
        raise ValueError(f"{name} must have shape (M, N, C), got shape {member_probs.shape}.")
    if member_probs.shape[0] < min_members:
        raise ValueError(
            f"{name} needs at least {min_members} member(s) along axis 0, got shape {member_probs.shape} "
            f"({member_probs.shape[0]} member(s))."
        )
    for m in range(member_probs.shape[0]):
        check_probs(member_probs[m], name=f"{name}[{m}]")
    return member_probs.astype(np.float64)


def entropy(probs):
    """Entropy over the last axis in nats, with 0 * log 0 = 0, as a backend tensor.

    Graph-safe and differentiable (no log of 0 is evaluated): the ensemble
    model's uncertainty endpoint and the co-training JS loss use it.
    """
    positive = probs > 0
    plogp = ops.where(positive, probs * ops.log(ops.where(positive, probs, 1.0)), 0.0)
    return -ops.sum(plogp, axis=-1)


def predictive_entropy(probs):
    """Entropy of each example's predictive distribution, -sum_c p_c log p_c (nats).

    Args: probs (N, C) probabilities (for an ensemble pass the mean of the members' probabilities).
    Returns: numpy array (N,).
    """
    probs = ops.convert_to_tensor(check_probs(probs))
    return ops.convert_to_numpy(entropy(probs))


def expected_entropy(member_probs):
    """Mean over members of each member's predictive entropy, mean_m H[p_m] (nats); aleatoric part.

    Args: member_probs (M, N, C), or a list of M arrays (N, C).
    Returns: numpy array (N,).
    """
    member_probs = ops.convert_to_tensor(check_member_probs(member_probs))
    return ops.convert_to_numpy(ops.mean(entropy(member_probs), axis=0))


def mutual_information(member_probs):
    """Mutual information between prediction and member, H[mean_m p_m] - mean_m H[p_m] (nats).

    The epistemic part of the ensemble's uncertainty (members' disagreement); tiny negative values
    from rounding are clipped to 0.
    Args: member_probs (M, N, C), or a list of M arrays (N, C).
    Returns: numpy array (N,).
    """
    member_probs = ops.convert_to_tensor(check_member_probs(member_probs))
    total = entropy(ops.mean(member_probs, axis=0))
    return ops.convert_to_numpy(ops.maximum(total - ops.mean(entropy(member_probs), axis=0), 0.0))
