"""RigL's update schedule: update steps and cosine drop fraction."""

import math

import pytest

from tf_freetickets.sparse.schedules import UpdateSchedule


def test_update_steps_every_delta_t_until_end():
    schedule = UpdateSchedule(update_every=100, end_fraction=0.75).resolved(1000)
    assert schedule.end_step == 750
    assert [s for s in range(0, 1001) if schedule.is_update_step(s)] == [100, 200, 300, 400, 500, 600, 700]


def test_begin_step_offsets_the_grid():
    schedule = UpdateSchedule(update_every=10, begin_step=5, end_step=40)
    assert [s for s in range(60) if schedule.is_update_step(s)] == [5, 15, 25, 35]


def test_cosine_drop_fraction():
    schedule = UpdateSchedule(update_every=1, drop_fraction=0.3, end_step=100)
    assert schedule.drop_fraction_at(0) == pytest.approx(0.3)
    assert schedule.drop_fraction_at(50) == pytest.approx(0.15)
    assert schedule.drop_fraction_at(25) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert schedule.drop_fraction_at(100) == pytest.approx(0.0)


def test_constant_decay():
    schedule = UpdateSchedule(drop_fraction=0.5, decay="constant", end_step=10)
    assert schedule.drop_fraction_at(7) == 0.5


def test_explicit_end_step_wins_and_unknown_length_needs_one():
    assert UpdateSchedule(end_step=30).resolved(1000).end_step == 30
    with pytest.raises(ValueError, match="end_step"):
        UpdateSchedule().resolved(None)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(update_every=0), "update_every"),
        (dict(drop_fraction=-0.1), "drop_fraction must be in"),
        (dict(drop_fraction=1.5), "drop_fraction must be in"),
        (dict(end_fraction=0.0), "end_fraction"),
        (dict(decay="linear"), "'linear'"),
        (dict(begin_step=10, end_step=5), "before begin_step"),
    ],
)
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UpdateSchedule(**kwargs)
