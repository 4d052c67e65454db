"""Gradual-pruning schedules: the target sparsity at each optimizer step, and when to prune.

The two schedules of tensorflow-model-optimization (tfmot) under the same
names, arguments and closed-form values, written for this library (tfmot needs
Keras 2 and is never imported here):

- `PolynomialDecay` (Zhu & Gupta 2017, Eq. 1):
  p = clip((step - begin_step) / (end_step - begin_step), 0, 1),
  s(step) = final + (initial - final) * (1 - p) ** power.
- `ConstantSparsity`: s(step) = target_sparsity.

Both prune at the steps `begin_step + k * frequency` (k >= 0) that lie in
[begin_step, end_step] (`end_step=-1`: no end, `ConstantSparsity` only). A
schedule is called like tfmot's: `should_prune, sparsity = schedule(step)`.

Which training moment a schedule step is (`PruningSteps.step_convention`):
tfmot 0.8's wrapper increments its `pruning_step` inside the training call
before it prunes, so batch b (1-based) runs with pruning_step b: schedule
step s prunes in the forward pass of batch s, on the weights left by s - 1
optimizer updates, and step 0 is never pruned. "tfmot" (the default) does
the same: step s prunes between optimizer steps s - 1 and s (step 1 before
the first batch). "after_step" (this library's `method="gmp"` configs) prunes
step s after optimizer step s, and step 0 before the first batch.
Python ints give Python values (float64 arithmetic); `sparsity_tensor` gives
the same value as a float64 tensor inside a compiled mask update (tfmot
computes in float32, so its values can differ in the 7th digit).
"""

import math

from keras import ops

from tf_freetickets.sparse.schedules import MaskSchedule


def _check_steps(begin_step, end_step, frequency, allow_no_end):
    for name, value in (("begin_step", begin_step), ("end_step", end_step), ("frequency", frequency)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}.")
    if begin_step < 0:
        raise ValueError(f"begin_step must be >= 0, got {begin_step}.")
    if end_step == -1 and not allow_no_end:
        raise ValueError("end_step=-1 (no end) is only allowed for ConstantSparsity; give the step pruning ends.")
    if end_step != -1 and end_step < begin_step:
        raise ValueError(f"end_step must be >= begin_step={begin_step} (or -1 for no end), got {end_step}.")
    if frequency < 1:
        raise ValueError(f"frequency must be >= 1, got {frequency}.")


def _check_sparsity(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


class PruningSchedule:
    """Base class: `begin_step`, `end_step`, `frequency` and a sparsity per step.

    Subclasses set those three attributes and define `sparsity(step)` (Python
    float) and `sparsity_tensor(step)` (float64 tensor), plus
    `final_sparsity`, the value the schedule ends at.
    """

    begin_step = 0
    end_step = -1
    frequency = 100

    def should_prune(self, step):
        """True when masks are pruned after optimizer step `step` (tfmot's rule)."""
        in_range = step >= self.begin_step and (self.end_step == -1 or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0

    def __call__(self, step):
        """(should_prune, sparsity) at integer `step`, as tfmot's schedules return."""
        return self.should_prune(int(step)), self.sparsity(int(step))

    def sparsity(self, step):
        """The target sparsity at integer optimizer step `step` (a Python float)."""
        raise NotImplementedError

    def sparsity_tensor(self, step):
        """The target sparsity at `step` as a float tensor (inside compiled updates)."""
        raise NotImplementedError

    @property
    def final_sparsity(self):
        """The sparsity the schedule ends at."""
        raise NotImplementedError

    def get_config(self):
        """tfmot's config layout: {"class_name": ..., "config": {constructor arguments}}."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        """Rebuilds a schedule from `get_config()["config"]` (or the whole dict)."""
        return cls(**config.get("config", config))

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config()["config"].items())
        return f"{type(self).__name__}({arguments})"


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` along a polynomial.

    s(step) = final + (initial - final) * (1 - p) ** power with
    p = clip((step - begin_step) / (end_step - begin_step), 0, 1): steep at
    first, flat near the end (Zhu & Gupta 2017, "To prune, or not to prune",
    Eq. 1, with power 3; tfmot's `PolynomialDecay`). Before `begin_step` the
    value is `initial_sparsity`, after `end_step` it is `final_sparsity`. With
    `end_step == begin_step` the value is `final_sparsity` from `begin_step`
    on (tfmot divides by zero there).

    Args:
      initial_sparsity: sparsity at `begin_step`, in [0, 1).
      final_sparsity: sparsity at `end_step`, in [0, 1).
      begin_step: first optimizer step that prunes.
      end_step: last step of the decay (an integer >= begin_step).
      power: exponent of the decay (3 in the paper and tfmot).
      frequency: prune every `frequency` steps from `begin_step`.
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        _check_steps(begin_step, end_step, frequency, allow_no_end=False)
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
        self._final_sparsity = _check_sparsity(final_sparsity, "final_sparsity")
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise ValueError(f"power must be a positive number, got {power!r}.")
        self.power = power
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency

    @property
    def final_sparsity(self):
        """The sparsity the schedule ends at."""
        return self._final_sparsity

    def _progress(self, step):
        if self.end_step == self.begin_step:
            return 1.0 if step >= self.begin_step else 0.0
        return min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))

    def sparsity(self, step):
        """The scheduled sparsity at integer `step` (Python float)."""
        p = self._progress(step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power

    def sparsity_tensor(self, step):
        """`sparsity(step)` for a scalar integer tensor, in float64."""
        step = ops.cast(step, "float64")
        if self.end_step == self.begin_step:
            p = ops.cast(step >= self.begin_step, "float64")
        else:
            p = ops.clip((step - self.begin_step) / float(self.end_step - self.begin_step), 0.0, 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * ops.power(1.0 - p, float(self.power))

    def get_config(self):
        return {
            "class_name": "PolynomialDecay",
            "config": {
                "initial_sparsity": self.initial_sparsity,
                "final_sparsity": self.final_sparsity,
                "power": self.power,
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
            },
        }


class ConstantSparsity(PruningSchedule):
    """The same sparsity at every pruning step (tfmot's `ConstantSparsity`).

    Args:
      target_sparsity: the sparsity, in [0, 1).
      begin_step: first optimizer step that prunes.
      end_step: last step that prunes; -1 (default) prunes until training ends.
      frequency: prune every `frequency` steps from `begin_step`.
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        _check_steps(begin_step, end_step, frequency, allow_no_end=True)
        self.target_sparsity = _check_sparsity(target_sparsity, "target_sparsity")
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency

    @property
    def final_sparsity(self):
        """The sparsity the schedule ends at."""
        return self.target_sparsity

    def sparsity(self, step):
        """The scheduled sparsity (the same at every step)."""
        return self.target_sparsity

    def sparsity_tensor(self, step):
        """The target sparsity at `step` as a float tensor (inside compiled updates)."""
        return ops.convert_to_tensor(self.target_sparsity, "float64")

    def get_config(self):
        return {
            "class_name": "ConstantSparsity",
            "config": {
                "target_sparsity": self.target_sparsity,
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
            },
        }


def zero_count(sparsity, size):
    """Pruned weights of a layer of `size` weights at `sparsity`: floor(sparsity * size).

    RigL's mask convention (as `densities.active_count`); rounding the product to
    6 decimals first makes 0.3 * 100 give 30, not 29.
    """
    return int(math.floor(round(sparsity * size, 6)))


STEP_CONVENTIONS = ("tfmot", "after_step")


class PruningSteps(MaskSchedule):
    """The update schedule `MaskUpdate` and `MaskEngine` read, for a `PruningSchedule`.

    `MaskUpdate` prunes after optimizer steps; which schedule step that is
    depends on `step_convention` (see the module docstring): with "tfmot" the
    pruning after optimizer step t is schedule step t + 1 (tfmot's
    `pruning_step` in batch t + 1, pruned before that batch's update), with
    "after_step" it is schedule step t. The pruning of optimizer step 0
    (before the first batch) is done by `GradualMagnitudePruning.attach`.
    Masks are also pruned at `end_step` when it is off the frequency grid and
    `prune_at_end_step` is True, so the final sparsity is always reached
    (tfmot would stop at the last grid step before it).

    Args:
      schedule: a `PruningSchedule`, or a function total_steps ->
        `PruningSchedule` resolved when training starts (fraction-based
        configs).
      prune_at_end_step: see above.
      step_convention: "tfmot" (default) or "after_step".
    """

    def __init__(self, schedule, prune_at_end_step=True, step_convention="tfmot"):
        if not (isinstance(schedule, PruningSchedule) or callable(schedule)):
            raise ValueError(
                "schedule must be a PruningSchedule (tft.PolynomialDecay, tft.ConstantSparsity) or a function "
                f"total_steps -> PruningSchedule, got {type(schedule).__name__}."
            )
        if step_convention not in STEP_CONVENTIONS:
            raise ValueError(f"step_convention must be one of {STEP_CONVENTIONS}, got {step_convention!r}.")
        self._schedule = schedule
        self.prune_at_end_step = bool(prune_at_end_step)
        self.step_convention = step_convention
        # Schedule step = optimizer step + offset; tfmot never prunes at schedule step 0.
        self.offset = 1 if step_convention == "tfmot" else 0

    @property
    def is_resolved(self):
        """True once the schedule is a `PruningSchedule` (not a function of the run length)."""
        return isinstance(self._schedule, PruningSchedule)

    @property
    def end_step(self):
        """The schedule's absolute end step (a schedule step); None while it is a function of the run length.

        `MaskUpdate` checks a second `fit` against the optimizer's step only
        for schedules resolved from the run length (None here).
        """
        return self._schedule.end_step if self.is_resolved else None

    @property
    def begin_step(self):
        """The optimizer step of the first pruning (0: `GradualMagnitudePruning.attach` prunes before the first batch)."""
        return max(self.pruning_schedule.begin_step - self.offset, 0)

    @property
    def update_every(self):
        """Steps between prunings (the schedule's `frequency`), as `UpdateSchedule.update_every`."""
        return self.pruning_schedule.frequency

    @property
    def pruning_schedule(self):
        """The resolved `PruningSchedule`."""
        if not self.is_resolved:
            raise ValueError("The pruning schedule is given by a function of the run length; call resolved(total_steps).")
        return self._schedule

    def resolved(self, total_steps):
        """Itself once resolved; otherwise the schedule built for `total_steps`."""
        if self.is_resolved:
            return self
        if total_steps is None:
            raise ValueError("The number of training steps is unknown; give GradualMagnitudePruning a schedule with steps.")
        schedule = self._schedule(int(total_steps))
        if not isinstance(schedule, PruningSchedule):
            raise ValueError(f"The schedule function returned {type(schedule).__name__}, not a PruningSchedule.")
        return PruningSteps(schedule, self.prune_at_end_step, self.step_convention)

    def schedule_step(self, step):
        """The schedule step of the pruning that follows optimizer step `step` (int or tensor)."""
        return step + self.offset

    def _prunes_at(self, schedule_step):
        """True when the schedule prunes at `schedule_step` (the end-step extra included)."""
        schedule = self.pruning_schedule
        if schedule_step < self.offset:  # tfmot's pruning_step is >= 1 whenever it prunes
            return False
        extra_end = self.prune_at_end_step and schedule.end_step != -1 and schedule_step == schedule.end_step
        return schedule.should_prune(schedule_step) or extra_end

    def prunes_before_first_batch(self):
        """True when `attach` prunes at optimizer step 0 (schedule step 0, or 1 under "tfmot")."""
        return self._prunes_at(self.offset)

    def is_update_step(self, step):
        """True when masks are pruned after optimizer step `step` (>= 1)."""
        return step > 0 and self._prunes_at(step + self.offset)

    def _last_schedule_step(self, schedule_step):
        """The last schedule step <= `schedule_step` that prunes, or None."""
        schedule = self.pruning_schedule
        if schedule_step < max(schedule.begin_step, self.offset):
            return None
        if self.prune_at_end_step and schedule.end_step >= self.offset and schedule_step >= schedule.end_step:
            return schedule.end_step
        last = schedule_step if schedule.end_step == -1 else min(schedule_step, schedule.end_step)
        grid = schedule.begin_step + (last - schedule.begin_step) // schedule.frequency * schedule.frequency
        return grid if grid >= self.offset else None

    def last_update_step(self, step):
        """The optimizer step of the last pruning at or before optimizer step `step` (0 counts), or None."""
        last = self._last_schedule_step(step + self.offset)
        return None if last is None else last - self.offset

    def sparsity_after(self, step):
        """The scheduled sparsity of the pruning after optimizer step `step` (a Python float)."""
        return self.pruning_schedule.sparsity(step + self.offset)

    def updates_through(self, step):
        """Prunings after steps 1..`step` (the step-0 pruning of `attach` is not a mask update)."""
        return super().updates_through(step)

    def drop_fraction_at(self, step):
        """Fraction of the active weights the pruning after optimizer `step` removes, by the global schedule."""
        previous = self.last_update_step(step - 1)
        before = 0.0 if previous is None else self.sparsity_after(previous)
        return max(0.0, 1.0 - (1.0 - self.sparsity_after(step)) / (1.0 - before))
