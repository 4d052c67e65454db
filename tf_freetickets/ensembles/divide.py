"""Divide one wide network into S narrow ones (Divide-and-Co-training, Zhao et al. 2022, Sec. 3).

Convolution parameters grow with the square of the width, so S networks of
width w / sqrt(S) hold about as many parameters (and FLOPs) as one of width w.
Regularization is divided too, because each small network has less capacity to
overfit: the official code scales weight decay by exp(1/S - 1) and dropout by
1/S. The paper divides weight decay on CIFAR-10 only (Table III; Table II's
caption: not on CIFAR-100), while the official parser divides whenever
`is_div_wd` is set (its CIFAR-100 exclusion, `dataset != 'cifar100'`, is
commented out in `parser_params.py`): `divide_weight_decay=False` keeps the
undivided decay.
"""

import math


def divided_width(width, num_splits):
    """Width multiplier of each of `num_splits` networks: width / sqrt(S)."""
    _check_splits(num_splits)
    return width / math.sqrt(num_splits)


def divided_widen_factor(widen_factor, num_splits):
    """WRN widen factor of each split network, rounded as the official code does.

    k_S = int(max(k / sqrt(S) + 0.4, 1)): WRN-28-10 gives k = 7 for S = 2 and
    k = 5 for S = 4 (35.8M and 36.6M parameters in all, against 36.5M).
    """
    _check_splits(num_splits)
    return int(max(widen_factor / math.sqrt(num_splits) + 0.4, 1.0))


def divided_weight_decay(weight_decay, num_splits):
    """Weight decay of each split network: wd * exp(1/S - 1) (the official code's choice)."""
    _check_splits(num_splits)
    return weight_decay * math.exp(1.0 / num_splits - 1.0)


def divided_dropout(dropout, num_splits):
    """Dropout rate of each split network: p / S."""
    _check_splits(num_splits)
    return dropout / num_splits


def _check_splits(num_splits):
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"num_splits (S) must be a positive integer, got {num_splits!r}.")


def build_divided_members(
    build, num_splits, width, weight_decay=0.0, dropout=0.0, width_arg="width", width_fn=divided_width,
    divide_weight_decay=True, **kwargs
):  # fmt: skip
    """Builds the S narrow members of a divided network.

    Args:
      build: model builder taking `<width_arg>=`, `weight_decay=`, `name=` (and
        `dropout=` when dropout is nonzero), e.g. `tft.models.small_cnn`,
        `tft.models.cifar_resnet` or `tft.models.wide_resnet` with
        width_arg="widen_factor".
      num_splits: S.
      width: the undivided network's width (multiplier or widen factor).
      weight_decay, dropout: the undivided network's regularization.
      width_arg: the builder's width keyword.
      width_fn: `divided_width` (continuous multipliers) or
        `divided_widen_factor` (WRN's integer k).
      divide_weight_decay: True (the official parser's `is_div_wd=1`, the
        paper's CIFAR-10 runs): each member decays with wd * exp(1/S - 1);
        False (the paper's CIFAR-100 runs): each member keeps `weight_decay`.
      **kwargs: passed to every `build` call (num_classes, input_shape, depth, ...).

    Returns:
      list of S Functional models named member_0 .. member_{S-1}.
    """
    member_width = width_fn(width, num_splits)
    member_decay = divided_weight_decay(weight_decay, num_splits) if divide_weight_decay else weight_decay
    regularization = {"weight_decay": member_decay}
    if dropout:
        regularization["dropout"] = divided_dropout(dropout, num_splits)
    return [build(**{width_arg: member_width}, name=f"member_{i}", **regularization, **kwargs) for i in range(num_splits)]
