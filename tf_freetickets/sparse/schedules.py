"""When masks change and how much: RigL's update schedule.

An update happens every `update_every` (ΔT) optimizer steps from `begin_step`
to `end_step` inclusive. The fraction of each layer's active weights that is
dropped decays from `drop_fraction` to `min_drop_fraction` (RigL: 0) along a
cosine over that window (Evci et al. 2020, Eq. 1), or stays constant (SET's
original choice). `restart_steps` cut the window into segments, each with a
fresh cosine from `drop_fraction` (FreeTickets' ImageNet EDST restarts it after
every global exploration).
"""

import dataclasses
import math

DECAYS = ("cosine", "constant")


class MaskSchedule:
    """What every mask-update schedule answers; `MaskUpdate` and `MaskEngine` read only this.

    Implemented by `UpdateSchedule` (RigL's cosine/constant drop fraction) and
    gradual pruning's `PruningSteps` (tfmot's polynomial/constant sparsity).
    Steps are optimizer steps; an update "at step s" follows the s-th step.

    Attributes (of every implementation):
      update_every: steps between updates (ΔT, or tfmot's `frequency`).
      begin_step: no update before this step.
      end_step: the last step an update may follow (None until resolved
        against the run length).
    """

    def resolved(self, total_steps):
        """The schedule with its end fixed for a run of `total_steps` steps (itself if already fixed)."""
        raise NotImplementedError

    def is_update_step(self, step):
        """True when a mask update follows optimizer step `step` (1-based)."""
        raise NotImplementedError

    def drop_fraction_at(self, step):
        """The fraction of each layer's active weights the update at `step` removes."""
        raise NotImplementedError

    def updates_through(self, step):
        """How many updates a run has made by the end of optimizer step `step` (for resuming mid-run)."""
        return sum(1 for s in range(1, int(step) + 1) if self.is_update_step(s))


@dataclasses.dataclass
class UpdateSchedule(MaskSchedule):
    """Schedule of mask updates.

    Attributes:
      update_every: ΔT, optimizer steps between updates (RigL uses 100 on
        CIFAR/ImageNet at batch 128/4096-ish).
      drop_fraction: fraction of active weights dropped at the first update,
        in [0, 1] (RigL: 0.3, FreeTickets: 0.5).
      end_fraction: the last update happens at this fraction of training
        (RigL: 0.75); used when `end_step` is None.
      end_step: absolute last update step; overrides `end_fraction`.
      begin_step: no update before this step.
      decay: "cosine" (RigL) or "constant".
      min_drop_fraction: where the cosine ends, in [0, drop_fraction]. RigL
        decays to 0; FreeTickets' `CosineDecay` (a wrapper of PyTorch's
        `CosineAnnealingLR` with `eta_min=0.005`) ends at 0.005.
      restart_steps: increasing steps in (begin_step, end_step) after which
        the cosine starts again from `drop_fraction`. The segment that holds
        step s runs from the last restart before s (or `begin_step`) to the
        first restart at or after s (or `end_step`), so an update falling on
        a restart step still belongs to the segment it ends.
    """

    update_every: int = 100
    drop_fraction: float = 0.3
    end_fraction: float = 0.75
    end_step: int | None = None
    begin_step: int = 0
    decay: str = "cosine"
    min_drop_fraction: float = 0.0
    restart_steps: tuple = ()

    def __post_init__(self):
        if not isinstance(self.update_every, int) or self.update_every < 1:
            raise ValueError(f"update_every must be a positive integer, got {self.update_every!r}.")
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {self.drop_fraction!r}.")
        if not 0.0 < self.end_fraction <= 1.0:
            raise ValueError(f"end_fraction must be in (0, 1], got {self.end_fraction!r}.")
        if self.begin_step < 0:
            raise ValueError(f"begin_step must be >= 0, got {self.begin_step!r}.")
        if self.end_step is not None and self.end_step < self.begin_step:
            raise ValueError(f"end_step {self.end_step} is before begin_step {self.begin_step}.")
        if self.decay not in DECAYS:
            raise ValueError(f"Unknown drop fraction decay {self.decay!r}; use one of {DECAYS}.")
        if not 0.0 <= self.min_drop_fraction <= self.drop_fraction:
            raise ValueError(
                f"min_drop_fraction must be in [0, drop_fraction={self.drop_fraction}], got {self.min_drop_fraction!r}."
            )
        restarts = tuple(self.restart_steps)
        if any(not isinstance(r, int) for r in restarts) or list(restarts) != sorted(set(restarts)):
            raise ValueError(f"restart_steps must be increasing integers, got {self.restart_steps!r}.")
        if restarts and restarts[0] <= self.begin_step:
            raise ValueError(f"restart_steps must come after begin_step={self.begin_step}, got {restarts!r}.")
        if restarts and self.end_step is not None and restarts[-1] >= self.end_step:
            raise ValueError(f"restart_steps must come before end_step={self.end_step}, got {restarts!r}.")
        self.restart_steps = restarts

    def resolved(self, total_steps):
        """A copy with `end_step` set from `end_fraction * total_steps` if unset."""
        if self.end_step is not None:
            return self
        if total_steps is None:
            raise ValueError(
                "The number of training steps is unknown (a dataset of unknown length?); give the schedule an explicit end_step."
            )
        return dataclasses.replace(self, end_step=int(self.end_fraction * total_steps))

    def is_update_step(self, step):
        """True when a mask update follows optimizer step `step` (1-based)."""
        if self.end_step is None:
            raise ValueError("Call resolved(total_steps) before asking for update steps.")
        return step > 0 and self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.update_every == 0

    def updates_through(self, step):
        """Updates at begin_step + k ΔT (step > 0) up to min(`step`, end_step)."""
        if self.end_step is None:
            raise ValueError("Call resolved(total_steps) before counting updates.")
        last = min(int(step), self.end_step)
        return sum(1 for s in range(self.begin_step, last + 1, self.update_every) if s > 0)

    def cosine_segment(self, step):
        """(start, stop): the steps between which the cosine that holds `step` runs."""
        if self.end_step is None:
            raise ValueError("Call resolved(total_steps) before asking for drop fractions.")
        earlier = [r for r in self.restart_steps if r < step]
        later = [r for r in self.restart_steps if r >= step]
        return (earlier[-1] if earlier else self.begin_step), (later[0] if later else self.end_step)

    def drop_fraction_at(self, step):
        """The drop fraction used by the update at `step`."""
        if self.decay == "constant":
            return self.drop_fraction
        start, stop = self.cosine_segment(step)
        progress = min(max((step - start) / max(stop - start, 1), 0.0), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_drop_fraction + (self.drop_fraction - self.min_drop_fraction) * cosine
