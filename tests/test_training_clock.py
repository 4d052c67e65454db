"""TrainingClock: a run's training time, continued across resumes and honest about epochs it never timed."""

import json
import time

import pytest

from tf_freetickets.experiments.training_clock import CLOCK_FILE, TrainingClock, clock_totals


def _train(clock, epochs, first_epoch=0, seconds=0.01):
    """Epochs of `seconds` of busy work each (CPU time grows with wall time), started by `clock.start`."""
    for epoch in range(first_epoch, first_epoch + epochs):
        clock.start.on_epoch_begin(epoch)
        clock.on_epoch_begin(epoch)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sum(range(1000))
        clock.on_epoch_end(epoch)


def _entries(directory):
    return {int(k): v for k, v in json.loads((directory / CLOCK_FILE).read_text()).items()}


def test_totals_after_each_epoch_are_on_disk_and_grow(tmp_path):
    clock = TrainingClock(str(tmp_path / "ckpt"))
    _train(clock, 3)
    entries = _entries(tmp_path / "ckpt")
    assert sorted(entries) == [1, 2, 3]
    walls = [entries[k][0] for k in (1, 2, 3)]
    assert 0.01 <= walls[0] < walls[1] < walls[2] == clock.wall_seconds
    assert clock.wall_seconds >= 0.03 and clock.untimed_epochs == 0
    assert entries[3] == [clock.wall_seconds, clock.cpu_seconds, 0] and clock.cpu_seconds > 0.01


def test_a_resume_continues_from_the_checkpoint_epoch_and_forgets_later_entries(tmp_path):
    first = TrainingClock(str(tmp_path))
    _train(first, 3)  # the process dies after epoch 3, but the restored checkpoint is epoch 2's
    after_two = _entries(tmp_path)[2]
    resumed = TrainingClock(str(tmp_path), initial_epoch=2)
    assert [resumed.wall_seconds, resumed.cpu_seconds, resumed.untimed_epochs] == after_two
    _train(resumed, 1, first_epoch=2)
    assert _entries(tmp_path)[3] == [resumed.wall_seconds, resumed.cpu_seconds, 0] and resumed.wall_seconds > after_two[0]
    _train(resumed, 1, first_epoch=3)
    entries = _entries(tmp_path)
    assert sorted(entries) == [1, 2, 3, 4] and entries[2] == after_two and entries[4][0] == resumed.wall_seconds


def test_a_finished_run_reread_reports_its_whole_time(tmp_path):
    clock = TrainingClock(str(tmp_path))
    _train(clock, 2)
    again = TrainingClock(str(tmp_path), initial_epoch=2)  # fit called with every epoch done
    assert (again.wall_seconds, again.cpu_seconds, again.untimed_epochs) == (clock.wall_seconds, clock.cpu_seconds, 0)


@pytest.mark.parametrize(
    "content",
    [None, "{not json", '{"1": [0.5, 0.4]}', '{"5": [0.5]}', '{"5": [-1.0, 0.4]}', '{"5": [0.5, NaN]}'],
    ids=["absent", "damaged", "no-entry", "short-entry", "negative", "nan"],
)
def test_epochs_trained_before_the_clock_are_counted_as_untimed(tmp_path, content):
    if content is not None:
        (tmp_path / CLOCK_FILE).write_text(content)
    resumed = TrainingClock(str(tmp_path), initial_epoch=5)
    assert resumed.untimed_epochs == 5 and resumed.wall_seconds == resumed.cpu_seconds == 0.0
    _train(resumed, 1, first_epoch=5)
    totals = clock_totals([resumed, TrainingClock(str(tmp_path / "other"))])
    assert totals["untimed_epochs"] == 5 and totals["train_seconds"] == resumed.wall_seconds > 0


def test_untimed_epochs_stay_counted_through_later_resumes(tmp_path):
    first = TrainingClock(str(tmp_path), initial_epoch=5)  # resumed from epochs no clock timed
    _train(first, 2, first_epoch=5)
    second = TrainingClock(str(tmp_path), initial_epoch=7)  # killed again after epoch 7, resumed
    assert (second.wall_seconds, second.cpu_seconds, second.untimed_epochs) == (first.wall_seconds, first.cpu_seconds, 5)
    _train(second, 1, first_epoch=7)
    assert _entries(tmp_path)[8][2] == 5 and clock_totals([second])["untimed_epochs"] == 5


def test_entries_of_two_values_are_whole_runs(tmp_path):
    (tmp_path / CLOCK_FILE).write_text('{"1": [0.5, 0.4], "2": [1.0, 0.8]}')  # written before untimed epochs were kept
    resumed = TrainingClock(str(tmp_path), initial_epoch=2)
    assert (resumed.wall_seconds, resumed.cpu_seconds, resumed.untimed_epochs) == (1.0, 0.8, 0)


def test_totals_sum_the_fits_of_one_run_and_count_a_refit_folder_once(tmp_path):
    clocks = [TrainingClock(str(tmp_path / f"member_{k}")) for k in range(3)]
    for clock in clocks:
        _train(clock, 1)
    again = TrainingClock(str(tmp_path / "member_2"), initial_epoch=1)  # fit called again on member_2's folder
    _train(again, 1, first_epoch=1)
    totals = clock_totals([*clocks, again])
    counted = [*clocks[:2], again]
    assert totals == {
        "train_seconds": sum(c.wall_seconds for c in counted),
        "train_cpu_seconds": sum(c.cpu_seconds for c in counted),
        "untimed_epochs": 0,
    }
    assert again.wall_seconds > clocks[2].wall_seconds  # it continued member_2's totals


def test_without_its_start_callback_the_clock_times_from_its_own_epoch_begin(tmp_path):
    clock = TrainingClock(str(tmp_path))
    clock.on_epoch_begin(0)
    time.sleep(0.01)
    clock.on_epoch_end(0)
    assert clock.wall_seconds >= 0.01 and clock.started is None
