"""Diversity of ensemble members: prediction disagreement and KL divergence.

Follows the diversity analysis of FreeTickets (Liu et al. ICLR 2022, arXiv 2106.14568,
after Fort et al. 2019): for members i and j,

- disagreement d_ij = 1 - mean_n [argmax p_i(x_n) == argmax p_j(x_n)], the fraction of test examples
  on which their top-1 predictions differ;
- KL_ij = mean_n KL(p_i(x_n) || p_j(x_n)) = mean_n sum_c p_i,c (log p_i,c - log p_j,c), natural log,
  with probabilities floored at `eps` inside the logs (0 * log(...) terms stay 0).

The ensemble summaries average the off-diagonal entries (i != j) of these M x M matrices.
"""

import numpy as np
from keras import ops

from tf_freetickets.metrics.uncertainty import check_member_probs


def _members(member_probs):
    return ops.convert_to_tensor(check_member_probs(member_probs, min_members=2))


def _off_diagonal_mean(matrix):
    m = matrix.shape[0]
    return float(np.sum(matrix * (1.0 - np.eye(m))) / (m * (m - 1)))


def pairwise_disagreement(member_probs):
    """Matrix of prediction disagreement between members, d_ij = 1 - mean_n [argmax_i == argmax_j].

    Args: member_probs (M, N, C) with M >= 2, or a list of M arrays (N, C).
    Returns: numpy array (M, M), symmetric, zero diagonal, values in [0, 1].
    Raises: ValueError when fewer than 2 members or the members' shapes differ.
    """
    predictions = ops.argmax(_members(member_probs), axis=-1)  # (M, N)
    agree = ops.cast(ops.equal(predictions[:, None, :], predictions[None, :, :]), "float64")
    return ops.convert_to_numpy(1.0 - ops.mean(agree, axis=-1))


def mean_disagreement(member_probs):
    """Mean of `pairwise_disagreement` over ordered pairs i != j (a float)."""
    return _off_diagonal_mean(pairwise_disagreement(member_probs))


def pairwise_kl(member_probs, eps=1e-12):
    """Matrix of mean KL divergences, KL_ij = mean_n KL(p_i(x_n) || p_j(x_n)) (nats).

    Not symmetric: row i is the reference distribution p_i. Probabilities are floored at `eps`
    inside the logarithms; the diagonal is exactly 0.
    Args: member_probs (M, N, C) with M >= 2, or a list of M arrays (N, C).
    Returns: numpy array (M, M).
    Raises: ValueError when fewer than 2 members or the members' shapes differ.
    """
    probs = _members(member_probs)
    log_probs = ops.log(ops.maximum(probs, eps))
    # Row i: sum_c p_i (log p_i - log p_j) for every j at once, (M, N, C) -> (M,); identical members give exactly 0.
    rows = [ops.mean(ops.sum(probs[i] * (log_probs[i] - log_probs), axis=-1), axis=-1) for i in range(probs.shape[0])]
    kl = ops.stack(rows) * (1.0 - ops.eye(probs.shape[0], dtype="float64"))
    return ops.convert_to_numpy(kl)


def mean_kl(member_probs, eps=1e-12):
    """Mean of `pairwise_kl` over ordered pairs i != j (a float)."""
    return _off_diagonal_mean(pairwise_kl(member_probs, eps=eps))
