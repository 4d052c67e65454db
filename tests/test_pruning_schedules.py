"""PolynomialDecay / ConstantSparsity against tfmot's documented closed-form formulas."""

import numpy as np
import pytest

import tf_freetickets as tft


def _tfmot_polynomial(step, initial, final, begin, end, power):
    """tfmot's documented formula: final + (initial - final) * (1 - (step - begin) / (end - begin)) ** power, p clipped."""
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return final + (initial - final) * (1 - p) ** power


def _tfmot_polynomial_float32(step, initial, final, begin, end, power):
    """The same in float32, as tfmot evaluates it."""
    p = np.minimum(np.float32(1), np.maximum(np.float32(0), np.float32(step - begin) / np.float32(end - begin)))
    return np.float32(initial - final) * np.power(np.float32(1) - p, np.float32(power)) + np.float32(final)


def _tfmot_should_prune(step, begin, end, frequency):
    return begin <= step and (end < 0 or step <= end) and (step - begin) % frequency == 0


@pytest.mark.parametrize(
    "initial,final,begin,end,power,frequency",
    [(0.0, 0.9, 0, 120, 3, 10), (0.25, 0.8, 17, 97, 2, 7), (0.5, 0.5, 5, 5, 3, 1), (0.1, 0.95, 0, 60, 1, 13)],
)
def test_polynomial_decay_equals_the_formula_at_every_step(initial, final, begin, end, power, frequency):
    schedule = tft.PolynomialDecay(initial, final, begin, end, power=power, frequency=frequency)
    for step in range(0, end + 25):
        should_prune, sparsity = schedule(step)
        assert should_prune == _tfmot_should_prune(step, begin, end, frequency), step
        if end > begin:
            assert sparsity == _tfmot_polynomial(step, initial, final, begin, end, power), step
            assert sparsity == pytest.approx(float(_tfmot_polynomial_float32(step, initial, final, begin, end, power)), abs=1e-6)
        else:  # begin == end: tfmot divides by zero; here the final sparsity from begin_step on
            assert sparsity == (final if step >= begin else initial)
        assert float(schedule.sparsity_tensor(step)) == pytest.approx(sparsity, abs=1e-15), step


def test_polynomial_decay_known_values():
    schedule = tft.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, power=3, frequency=10)
    assert schedule.sparsity(0) == 0.0
    assert schedule.sparsity(50) == pytest.approx(0.8 * (1 - 0.5**3))  # 0.7
    assert schedule.sparsity(100) == 0.8 and schedule.sparsity(1000) == 0.8
    assert [s for s in range(0, 130) if schedule.should_prune(s)] == list(range(0, 101, 10))


def test_constant_sparsity_equals_tfmot():
    forever = tft.ConstantSparsity(0.6, begin_step=3, frequency=4)
    assert [s for s in range(0, 20) if forever(s)[0]] == [3, 7, 11, 15, 19]
    assert all(forever(s)[1] == 0.6 for s in range(20))
    bounded = tft.ConstantSparsity(0.6, 3, end_step=11, frequency=4)
    assert [s for s in range(0, 30) if bounded.should_prune(s)] == [3, 7, 11]
    assert float(bounded.sparsity_tensor(5)) == 0.6


def test_config_round_trip_in_tfmot_layout():
    schedule = tft.PolynomialDecay(0.1, 0.9, 10, 110, power=2, frequency=5)
    config = schedule.get_config()
    assert config == {
        "class_name": "PolynomialDecay",
        "config": {"initial_sparsity": 0.1, "final_sparsity": 0.9, "power": 2, "begin_step": 10, "end_step": 110, "frequency": 5},
    }
    assert tft.PolynomialDecay.from_config(config) == schedule
    assert tft.ConstantSparsity.from_config(tft.ConstantSparsity(0.5, 0).get_config()["config"]) == tft.ConstantSparsity(0.5, 0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(initial_sparsity=0.0, final_sparsity=1.0, begin_step=0, end_step=10), "final_sparsity"),
        (dict(initial_sparsity=-0.1, final_sparsity=0.5, begin_step=0, end_step=10), "initial_sparsity"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=-1), "end_step=-1"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=20, end_step=10), "end_step must be >= begin_step"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=10, frequency=0), "frequency"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=-1, end_step=10), "begin_step"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0.5, end_step=10), "integer"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=10, power=0), "power"),
    ],
)
def test_bad_polynomial_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tft.PolynomialDecay(**kwargs)


def test_bad_constant_sparsity():
    with pytest.raises(ValueError, match="target_sparsity"):
        tft.ConstantSparsity(1.2, 0)
    with pytest.raises(ValueError, match="end_step"):
        tft.ConstantSparsity(0.5, 10, end_step=3)
