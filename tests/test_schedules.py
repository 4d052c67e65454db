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


def test_cosine_ends_at_min_drop_fraction():
    # FreeTickets' CosineDecay: eta_min + (0.5 - eta_min) * (1 + cos(pi t / T)) / 2 with eta_min = 0.005.
    schedule = UpdateSchedule(update_every=1, drop_fraction=0.5, min_drop_fraction=0.005, end_step=100)
    assert schedule.drop_fraction_at(0) == pytest.approx(0.5)
    assert schedule.drop_fraction_at(50) == pytest.approx(0.2525)
    assert schedule.drop_fraction_at(100) == pytest.approx(0.005)
    assert schedule.drop_fraction_at(130) == pytest.approx(0.005)


def test_restart_steps_start_a_fresh_cosine_per_segment():
    schedule = UpdateSchedule(update_every=10, drop_fraction=0.4, end_step=100, restart_steps=(40, 60))
    # Segments [0, 40], (40, 60], (60, 100]; an update on a restart step still ends its segment.
    assert [schedule.cosine_segment(s) for s in (10, 40, 41, 60, 70, 100)] == [
        (0, 40), (0, 40), (40, 60), (40, 60), (60, 100), (60, 100)
    ]  # fmt: skip
    got = [round(schedule.drop_fraction_at(s), 6) for s in range(10, 101, 10)]
    want = [0.341421, 0.2, 0.058579, 0.0, 0.2, 0.0, 0.341421, 0.2, 0.058579, 0.0]
    assert got == want
    # resolved() keeps the restarts.
    assert UpdateSchedule(end_fraction=1.0, restart_steps=(5,)).resolved(10).restart_steps == (5,)


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
        (dict(drop_fraction=0.3, min_drop_fraction=0.4), "min_drop_fraction"),
        (dict(end_step=100, restart_steps=(50, 20)), "increasing"),
        (dict(begin_step=10, end_step=100, restart_steps=(10,)), "after begin_step"),
        (dict(end_step=100, restart_steps=(100,)), "before end_step"),
    ],
)
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UpdateSchedule(**kwargs)
