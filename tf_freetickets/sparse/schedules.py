"""When masks change and how much: RigL's update schedule.

An update happens every `update_every` (ΔT) optimizer steps from `begin_step`
to `end_step` inclusive. The fraction of each layer's active weights that is
dropped decays from `drop_fraction` to 0 along a cosine over that window
(Evci et al. 2020, Eq. 1), or stays constant (SET's original choice).
"""

import dataclasses
import math

DECAYS = ("cosine", "constant")


@dataclasses.dataclass
class UpdateSchedule:
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
    """

    update_every: int = 100
    drop_fraction: float = 0.3
    end_fraction: float = 0.75
    end_step: int | None = None
    begin_step: int = 0
    decay: str = "cosine"

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

    def drop_fraction_at(self, step):
        """The drop fraction used by the update at `step`."""
        if self.decay == "constant":
            return self.drop_fraction
        span = max(self.end_step - self.begin_step, 1)
        progress = min(max((step - self.begin_step) / span, 0.0), 1.0)
        return self.drop_fraction * 0.5 * (1.0 + math.cos(math.pi * progress))
