"""RigL: the Rigged Lottery (Evci et al. 2020), growth by |dense gradient|.

Also FreeTickets' update rules as a preset (`freetickets_official`).
"""

from keras import ops

from tf_freetickets.sparse import score_sources, train_hooks
from tf_freetickets.sparse.masked_set import MaskedLayerSet
from tf_freetickets.sparse.methods.common import N_M_FIELD, dst_updater_kwargs_with_n_m, gradient_growth_costs
from tf_freetickets.sparse.registry import ConfigField, register_method
from tf_freetickets.sparse.updater import MaskUpdater

GROWTH_GRADIENTS = ("extra_batch", "step_batch", "step_batch_skip_update")


class RigL(MaskUpdater):
    """Rigged Lottery (Evci et al. 2020): grow where |dense gradient| is largest.

    The dense gradient is of the training loss with respect to the effective
    (masked) weights.

    Args:
      gradient_batches: batches of `gradient_data` averaged per update
        (growth_gradient="extra_batch" only).
      growth_gradient: which batch the growth gradient comes from.
        "extra_batch" (default): after the update step's optimizer update,
        `gradient_batches` fresh batches of `gradient_data`, BatchNorm
        statistics restored. "step_batch": the update step's own batch, at
        the weights before that step's optimizer update, which is applied
        (FreeTickets' `core.py`: `weight.grad` read after `optimizer.step`);
        a global exploration at an epoch start uses the previous epoch's last
        batch, as FreeTickets' `main_EDST.py` does. "step_batch_skip_update":
        the update step's own batch, and that step's optimizer update is
        skipped (weights and slots unchanged; `iterations` still counts it)
        so growth sees the weights the gradient was taken at (RigL's
        `SparseRigLOptimizer`, CigL's `main.py`). The step-batch modes need
        `steps_per_execution=1`; they take no `gradient_data`.
      *args, **kwargs: `MaskUpdater`'s arguments.
    """

    def __init__(self, *args, gradient_batches=1, growth_gradient="extra_batch", **kwargs):
        super().__init__(*args, **kwargs)
        if gradient_batches < 1:
            raise ValueError(f"gradient_batches must be >= 1, got {gradient_batches!r}.")
        if growth_gradient not in GROWTH_GRADIENTS:
            raise ValueError(f"Unknown growth_gradient {growth_gradient!r}; use one of {GROWTH_GRADIENTS}.")
        if growth_gradient != "extra_batch" and gradient_batches != 1:
            raise ValueError(
                f"growth_gradient={growth_gradient!r} takes the update step's own batch; "
                f"gradient_batches={gradient_batches} needs growth_gradient='extra_batch'."
            )
        self.gradient_batches = gradient_batches
        self.growth_gradient = growth_gradient
        self.tap = None
        self._tap_model = None

    @property
    def score_source(self):
        """The dense gradient of `gradient_batches` extra batches, or of the update step's own batch."""
        if self.growth_gradient == "extra_batch":
            return score_sources.DenseGradient(batches_per_update=self.gradient_batches)
        return score_sources.StepGradient(tap_owner=self)

    def kernel_transforms(self, model, layer_index):
        """The base transforms, then `transforms_before_tap`, then the step-gradient tap (step-batch modes)."""
        transforms = super().kernel_transforms(model, layer_index) + self.transforms_before_tap(model, layer_index)
        if self.tap is not None:
            transforms.append(self.tap.transform(layer_index))
        return transforms

    def transforms_before_tap(self, model, layer_index):
        """Training-only kernel transforms applied before the tap, so the step gradient is taken at their output.

        None for RigL; CigL's random mask goes here, so its growth reads the
        gradient with respect to the randomly masked kernel, as its code's
        `weight.grad`.
        """
        return []

    def attach(self, model, layers=None):
        """RigL's hooks: the step-gradient tap and, for "step_batch_skip_update", the skipped optimizer update."""
        layers = MaskedLayerSet(model) if layers is None else layers
        if self.growth_gradient != "extra_batch":
            if getattr(model, "steps_per_execution", 1) != 1:
                raise ValueError(
                    f"growth_gradient={self.growth_gradient!r} reads the update step's batch right after it; "
                    f"compile the model with steps_per_execution=1, got {model.steps_per_execution}."
                )
            replicas = model.distribute_strategy.num_replicas_in_sync
            if self.growth_gradient == "step_batch_skip_update" and replicas > 1:
                raise NotImplementedError(
                    "growth_gradient='step_batch_skip_update' wraps the optimizer update in a tf.cond, which "
                    f"tf.distribute cannot merge across {replicas} replicas; use 'step_batch' or 'extra_batch'."
                )
            if self.tap is None or self._tap_model is not model:
                self.tap = train_hooks.StepGradientTap(layers, model.distribute_strategy)
                self._tap_model = model
        changed = super().attach(model, layers)
        if self.growth_gradient == "step_batch_skip_update":
            schedule = self.schedule
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)

            def is_update_step(step):
                step = ops.cast(step, "int64")
                since = step - schedule.begin_step
                return ops.logical_and(
                    ops.logical_and(step > 0, since >= 0),
                    ops.logical_and(step <= schedule.end_step, ops.mod(since, schedule.update_every) == 0),
                )

            train_hooks.skip_optimizer_update_on(model.optimizer, is_update_step)
            changed = True
        return changed

    def detach(self, model):
        """Undoes `attach`, the optimizer's skip wrapper included."""
        restored = train_hooks.restore_optimizer(model.optimizer)
        return super().detach(model) or restored

    def step_gradients(self):
        """The growth signal of the step-batch modes: the last training batch's gradients."""
        return self.tap.gradients()

    def grow_scores(self, weight, gradient, layer_index, step):
        """|dense gradient|."""
        return ops.abs(gradient)


def freetickets_official(updater_class=RigL, **kwargs):
    """An updater that follows the update rules of FreeTickets' CIFAR code (`sparselearning/core.py`).

    Sets the three switches where that code departs from RigL's choices (the
    library's defaults): `reinit_when_same=True` (every grown weight restarts
    at 0), `dense_gradient_momentum=True` (momentum follows the dense gradient
    and is never reset) and, for gradient growth (`RigL` and subclasses),
    `growth_gradient="step_batch"` (the update step's own batch, after its
    optimizer update). FreeTickets' ImageNet code masks the momentum every
    step and grows without zeroing first, so only its `growth_gradient`
    matches this preset.

    Args:
      updater_class: `SET` (random growth) or `RigL` (gradient growth, the
        FreeTickets configs).
      **kwargs: the updater's schedule arguments (they may override a switch).

    Returns:
      An instance of `updater_class`.
    """
    options = {"reinit_when_same": True, "dense_gradient_momentum": True}
    if issubclass(updater_class, RigL):
        options["growth_gradient"] = "step_batch"
    return updater_class(**{**options, **kwargs})


def check_growth_gradient(value, sparse):
    """Config check of `sparse.growth_gradient`."""
    if value not in GROWTH_GRADIENTS:
        raise ValueError(f"config.sparse.growth_gradient={value!r} is unknown; use one of {GROWTH_GRADIENTS}.")


#: `config.sparse.growth_gradient`, read by RigL and the methods built on it (CigL).
GROWTH_GRADIENT_FIELD = ConfigField(
    "growth_gradient", "extra_batch", "rigl/cigl/srigl: extra_batch | step_batch | step_batch_skip_update", check_growth_gradient
)


def _make_rigl(sparse, seed):
    return RigL(growth_gradient=sparse.get("growth_gradient", "extra_batch"), **dst_updater_kwargs_with_n_m(sparse, seed))


register_method(
    "rigl",
    summary="RigL (Evci et al. 2020): drop the smallest magnitudes, grow by |dense gradient|.",
    make_updater=_make_rigl,
    cost_facts=gradient_growth_costs,
    config_fields=(GROWTH_GRADIENT_FIELD, N_M_FIELD),
    updater_class=RigL,
    dynamic=True,
)
