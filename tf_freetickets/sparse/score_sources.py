"""Score sources: what a mask update reads besides the weights.

Each updater declares one (`MaskUpdater.score_source`), and `MaskEngine`
gathers it before the update without knowing the method:

| source            | read per update                                   | methods                 |
|-------------------|---------------------------------------------------|-------------------------|
| `NONE`            | nothing (masks never change)                      | Static                  |
| `MAGNITUDE`       | nothing beyond the weights                        | gradual pruning         |
| `RANDOM`          | nothing: scores are drawn from (seed, layer, step)| SET                     |
| `DenseGradient`   | G extra batches' dense gradient, averaged         | RigL, CigL              |
| `GradientMomentum`| G extra batches folded as m = sum mu^(G-1-k) g_k  | SNFS (library variant)  |
| `StepGradient`    | the update step's own batch (a training-time tap) | RigL/CigL step_batch... |

A source also states what it costs (`batches_per_update`, read by the FLOPs
accounting and by a resumed run to skip the gradient batches already used).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ScoreSource:
    """A declared score source.

    Attributes:
      name: "none", "magnitude", "random", "dense_gradient",
        "gradient_momentum" or "step_gradient".
      batches_per_update: extra batches of `gradient_data` one update reads
        (0 for every source that takes no extra batch).
    """

    name: str
    batches_per_update: int = 0

    @property
    def reads_gradients(self):
        """Whether the update reads a dense gradient (of extra batches or of the step's batch)."""
        return False

    @property
    def needs_gradient_data(self):
        """Whether `MaskUpdate` needs `gradient_data` for it."""
        return self.batches_per_update > 0

    def gather(self, engine):
        """The per-layer signal (a list with one tensor or None per masked layer)."""
        return [None] * len(engine.layers)


NONE = ScoreSource("none")
MAGNITUDE = ScoreSource("magnitude")
RANDOM = ScoreSource("random")


@dataclasses.dataclass(frozen=True)
class DenseGradient(ScoreSource):
    """The mean dense gradient of `batches_per_update` extra batches (RigL, Evci et al. 2020, Sec. 3)."""

    name: str = "dense_gradient"
    batches_per_update: int = 1

    @property
    def reads_gradients(self):
        return True

    def fold(self, accumulated, gradient):
        """Adds one batch's gradient to the running mean (divided first, summed in batch order)."""
        scaled = gradient / self.batches_per_update
        return scaled if accumulated is None else accumulated + scaled

    def gather(self, engine):
        accumulated = [None] * len(engine.layers)
        for gradients in engine.dense_gradient_batches(self.batches_per_update):
            accumulated = [self.fold(a, g) for a, g in zip(accumulated, gradients)]
        return accumulated


@dataclasses.dataclass(frozen=True)
class GradientMomentum(DenseGradient):
    """Momentum of the last `batches_per_update` dense gradients, m = sum_k mu^(G-1-k) g_k (SNFS)."""

    name: str = "gradient_momentum"
    batches_per_update: int = 5
    momentum: float = 0.9

    def fold(self, accumulated, gradient):
        """m <- mu m + g."""
        return gradient if accumulated is None else self.momentum * accumulated + gradient


@dataclasses.dataclass(frozen=True)
class StepGradient(ScoreSource):
    """The dense gradient of the update step's own training batch, read from a training-time tap."""

    name: str = "step_gradient"
    tap_owner: object = None  # the updater whose `tap` holds the gradients

    @property
    def reads_gradients(self):
        return True

    def gather(self, engine):
        return self.tap_owner.tap.gradients()
