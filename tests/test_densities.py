"""Layer-wise densities: ERK / ER / uniform against an independent reference."""

import numpy as np
import pytest

from tf_freetickets.sparse import densities


def resnet50_kernel_shapes():
    """Kernel shapes (h, w, in, out) of ResNet-50 v1 with its 1000-way classifier."""
    shapes = [("conv1", (7, 7, 3, 64))]
    in_channels = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for block in range(blocks):
            prefix = f"stage{stage}_block{block}"
            shapes.append((f"{prefix}_a", (1, 1, in_channels, width)))
            shapes.append((f"{prefix}_b", (3, 3, width, width)))
            shapes.append((f"{prefix}_c", (1, 1, width, 4 * width)))
            if block == 0:
                shapes.append((f"{prefix}_proj", (1, 1, in_channels, 4 * width)))
            in_channels = 4 * width
    shapes.append(("fc", (2048, 1000)))
    return shapes


def reference_erk(shapes, sparsity, kernel_aware=True):
    """Solves sum_i min(1, eps * raw_i) * n_i = (1 - sparsity) * sum_i n_i by bisection."""
    sizes = np.array([np.prod(s) for _, s in shapes], dtype=np.float64)
    if kernel_aware:
        raw = np.array([np.sum(s) / np.prod(s) for _, s in shapes])
    else:
        raw = np.array([np.sum(s[-2:]) / np.prod(s[-2:]) for _, s in shapes])
    target = (1.0 - sparsity) * sizes.sum()
    low, high = 0.0, 1.0 / raw.min()
    for _ in range(200):
        mid = 0.5 * (low + high)
        if np.sum(np.minimum(1.0, mid * raw) * sizes) < target:
            low = mid
        else:
            high = mid
    return dict(zip([n for n, _ in shapes], np.minimum(1.0, high * raw)))


@pytest.mark.parametrize("sparsity", [0.8, 0.9])
@pytest.mark.parametrize("distribution,kernel_aware", [("erk", True), ("er", False)])
def test_resnet50_densities_match_reference(sparsity, distribution, kernel_aware):
    shapes = resnet50_kernel_shapes()
    got = densities.layer_densities(shapes, sparsity, distribution)
    want = reference_erk(shapes, sparsity, kernel_aware)
    assert list(got) == [name for name, _ in shapes]
    for name in got:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
    sizes = {name: np.prod(shape) for name, shape in shapes}
    total_active = sum(got[name] * sizes[name] for name in got)
    assert total_active == pytest.approx((1 - sparsity) * sum(sizes.values()), rel=1e-9)


def test_erk_resnet50_keeps_first_conv_denser_than_fc():
    got = densities.layer_densities(resnet50_kernel_shapes(), 0.9, "erk")
    assert got["conv1"] > 0.3 > 0.1 > got["fc"]
    assert max(got.values()) <= 1.0


def test_erk_makes_small_layer_dense_and_rescales_the_rest():
    # raw(a) = (2+2)/4 = 1, raw(b) = 200/10000 = 0.02; sparsity 0.5 over 10004 weights.
    # First eps = 5002 / (4 + 200) -> eps * raw(a) > 1, so a is dense (4 weights),
    # and b keeps 5002 - 4 = 4998 of 10000: density 0.4998.
    got = densities.layer_densities([("a", (2, 2)), ("b", (100, 100))], 0.5, "erk")
    assert got["a"] == 1.0
    assert got["b"] == pytest.approx(0.4998)


def test_uniform_gives_every_layer_one_minus_sparsity():
    got = densities.layer_densities({"a": (3, 3, 8, 16), "b": (10, 2)}, 0.75, "uniform")
    assert got == {"a": 0.25, "b": 0.25}


def test_er_ignores_spatial_dims_and_erk_uses_them():
    shapes = [("conv", (3, 3, 16, 32)), ("dense", (512, 10))]
    er = densities.layer_densities(shapes, 0.9, "er")
    erk = densities.layer_densities(shapes, 0.9, "erk")
    # ER: conv raw = 48 / 512; ERK: conv raw = 54 / 4608, so ERK gives the conv less.
    assert er["conv"] / er["dense"] == pytest.approx((48 / 512) / (522 / 5120))
    assert erk["conv"] / erk["dense"] == pytest.approx((54 / 4608) / (522 / 5120))


@pytest.mark.parametrize("bad", [1.0, 1.2, -0.1, float("nan"), "0.5", True])
def test_bad_sparsity_is_rejected_with_its_value(bad):
    with pytest.raises(ValueError, match="sparsity must be"):
        densities.layer_densities({"a": (4, 4)}, bad)


def test_unknown_distribution_names_the_choices():
    with pytest.raises(ValueError, match=r"'gaussian'.*uniform"):
        densities.layer_densities({"a": (4, 4)}, 0.5, "gaussian")


def test_zero_dimension_is_rejected():
    with pytest.raises(ValueError, match="'a'.*positive"):
        densities.layer_densities({"a": (4, 0)}, 0.5)


@pytest.mark.parametrize(
    "size,density,active",
    [(100, 0.3, 30), (100, 0.7, 70), (72, 0.4, 29), (10, 1.0, 10), (1000, 0.001, 1), (3, 0.5, 2)],
)
def test_active_count_zeroes_floor_of_sparsity_times_size(size, density, active):
    assert densities.active_count(size, density) == active
