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
Python ints give Python values (float64 arithmetic); `sparsity_tensor` gives
the same value as a float64 tensor inside a compiled mask update (tfmot
computes in float32, so its values can differ in the 7th digit).
"""

import math

from keras import ops


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
        raise NotImplementedError

    def sparsity_tensor(self, step):
        raise NotImplementedError

    @property
    def final_sparsity(self):
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
        return self.target_sparsity

    def sparsity(self, step):
        """The scheduled sparsity (the same at every step)."""
        return self.target_sparsity

    def sparsity_tensor(self, step):
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
