"""Predictive uncertainty of a single model or an ensemble (natural log, 0 * log 0 = 0).

For an ensemble of M members with probabilities p_m (member_probs of shape (M, N, C)):

- total uncertainty     H[mean_m p_m]            (`predictive_entropy` of the ensemble mean)
- aleatoric (expected)  mean_m H[p_m]            (`expected_entropy`)
- epistemic             H[mean_m p_m] - mean_m H[p_m]  (`mutual_information`, >= 0 by Jensen)

This is the decomposition used to read ensemble uncertainty in FreeTickets (arXiv 2106.14568) and
the Divide-and-Co-training ensembles; the entropy of the mean is also the OoD score of `ood.py`.

`gibbs_cross_entropy` is the members' mean NLL, the "Gibbs" counterpart of the ensemble's NLL of
the mean probabilities (uncertainty-baselines reports both).
"""

import numpy as np
from keras import ops

from tf_freetickets.metrics.calibration import check_labels, check_probs


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


def gibbs_cross_entropy(y_true, member_probs, eps=1e-12):
    """Gibbs cross-entropy: the mean over members of each member's NLL, mean_m mean_n -log p_m,n[y_n].

    The expected loss of a member drawn at random (a Gibbs classifier), the definition of
    uncertainty-baselines' `gibbs_cross_entropy`, reported beside the ensemble NLL
    -mean_n log(mean_m p_m,n[y_n]) (`negative_log_likelihood` of the mean probabilities). By Jensen's
    inequality the ensemble NLL is never larger; the gap is the ensemble's gain in NLL. Probabilities
    are floored at `eps` like `negative_log_likelihood` (natural log).

    Args: y_true (N,) integer classes in [0, C); member_probs (M, N, C) probabilities, or a list of
    M arrays (N, C) (Keras' order: labels first).
    Returns: a float.
    """
    member_probs = check_member_probs(member_probs)
    labels = check_labels(y_true, *member_probs.shape[1:], name="y_true")
    probs = ops.convert_to_tensor(member_probs)
    onehot = ops.one_hot(ops.convert_to_tensor(labels, "int32"), member_probs.shape[-1], dtype="float64")
    p_true = ops.sum(probs * onehot[None], axis=-1)  # (M, N)
    return float(ops.mean(-ops.log(ops.maximum(p_true, eps))))
