"""Co-training of S networks on different views (Divide-and-Co-training, Zhao et al. 2022, Sec. 3.2).

Every member sees its own random augmentation of the same batch. The loss is
the sum of the members' cross-entropies plus a weighted Jensen-Shannon
divergence between their predicted distributions,

  JS(p_1..p_S) = H(mean_i p_i) - mean_i H(p_i),

which is 0 when the members agree and positive otherwise; it pulls the
members towards agreement while their different views keep them diverse. The
weight ramps up linearly at the start of training (official code: 0.5 after a
40-epoch warm-up, raised once per epoch, never below 0.005). At inference the
members' probabilities are averaged. The official views are in
`ensembles/views.py`.
"""

import keras
import tensorflow as tf
from keras import ops

from tf_freetickets import keras_compat
from tf_freetickets.ensembles.ensemble_model import EnsembleModel
from tf_freetickets.metrics.uncertainty import entropy


def js_divergence(member_probs):
    """Generalized Jensen-Shannon divergence of S distributions, per example.

    Args:
      member_probs: (S, N, C) probabilities.

    Returns:
      (N,) tensor: H(mean_s p_s) - mean_s H(p_s), natural log, >= 0.
    """
    return entropy(ops.mean(member_probs, axis=0)) - ops.mean(entropy(member_probs), axis=0)


def default_view_augmentation(seed, translation=0.1):
    """A per-member augmentation: random horizontal flip and a random shift of up to 10%.

    The shift with zero fill plays the part of the CIFAR pad-and-crop; each
    member gets its own seed, so each sees a different view of every batch.
    """
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(translation, translation, fill_mode="constant", seed=seed + 1),
        ],
        name=f"view_{seed}",
    )


class CoTrainingModel(EnsembleModel):
    """S members trained together on different views; an `EnsembleModel` at inference.

    Compile it with an optimizer (its training loss is built in) and, for
    `evaluate`, a loss and metrics that take probabilities, e.g.
    `compile(SGD(...), loss="sparse_categorical_crossentropy", metrics=["accuracy"])`.

    Args:
      members: S Functional models returning logits (sparse ones too).
      view_augmenters: S callables/layers `aug(x, training=True)`; default
        `default_view_augmentation(seed=1000 * i)` for member i.
      cotraining_weight: weight of the JS term after warm-up (paper: 0.5).
      warmup_steps: optimizer steps over which the weight rises linearly from
        0 (official code: 40 epochs).
      steps_per_epoch: given, the weight rises once per epoch, as the official
        code's `cot_weight * epoch / warm-up epochs` (0-based epoch); None: every step.
      min_weight: floor of the weight during the warm-up (official: 0.005).
      name: model name.

    Logged in `fit`: loss (total), ce (sum of member cross-entropies),
    cotraining_js (the JS term, unweighted), cotraining_weight, and the compiled
    metrics on the ensemble's training predictions.
    """

    def __init__(
        self, members, view_augmenters=None, cotraining_weight=0.5, warmup_steps=0, steps_per_epoch=None, min_weight=0.0,
        name="cotraining", **kwargs,
    ):  # fmt: skip
        super().__init__(members, from_logits=True, name=name, **kwargs)
        if view_augmenters is None:
            view_augmenters = [default_view_augmentation(1000 * i) for i in range(len(self.members))]
        if len(view_augmenters) != len(self.members):
            raise ValueError(f"Got {len(view_augmenters)} view augmenters for {len(self.members)} members.")
        if cotraining_weight < 0:
            raise ValueError(f"cotraining_weight must be >= 0, got {cotraining_weight!r}.")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}.")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be a positive integer or None, got {steps_per_epoch!r}.")
        if not 0.0 <= min_weight <= cotraining_weight:
            raise ValueError(f"min_weight must be in [0, cotraining_weight={cotraining_weight}], got {min_weight!r}.")
        self.view_augmenters = list(view_augmenters)
        self.cotraining_weight = float(cotraining_weight)
        self.warmup_steps = int(warmup_steps)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.min_weight = float(min_weight)
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.js_tracker = keras.metrics.Mean(name="cotraining_js")
        self.weight_tracker = keras.metrics.Mean(name="cotraining_weight")

    def member_views(self, x, training=True):
        """The S inputs the members see: augmented views in training, `x` itself otherwise."""
        if not training:
            return [x] * len(self.members)
        return [augment(x, training=True) for augment in self.view_augmenters]

    def current_cotraining_weight(self):
        """The JS weight at the optimizer's current step (linear warm-up, per step or per epoch, floored)."""
        if self.warmup_steps == 0 or self.optimizer is None:
            return ops.convert_to_tensor(self.cotraining_weight, "float32")
        steps = ops.cast(self.optimizer.iterations, "float32")
        if self.steps_per_epoch:
            steps = ops.floor(steps / self.steps_per_epoch) * self.steps_per_epoch
        progress = ops.minimum(steps / self.warmup_steps, 1.0)
        return ops.maximum(self.cotraining_weight * progress, self.min_weight)

    def cotraining_losses(self, x, y, sample_weight=None):
        """(total, ce, js, member probabilities) of one training batch; total includes regularization."""
        views = self.member_views(x, training=True)
        logits = [member(view, training=True) for member, view in zip(self.members, views)]
        ce_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        ce = sum(ce_fn(y, member_logits, sample_weight=sample_weight) for member_logits in logits)
        probs = ops.stack([ops.softmax(member_logits, axis=-1) for member_logits in logits], axis=0)
        js = ops.mean(js_divergence(probs))
        total = ce + self.current_cotraining_weight() * js
        if self.losses:
            total = total + ops.sum(self.losses)
        return total, ce, js, probs

    def sparse_training_loss(self, x, y, sample_weight=None):
        """The training loss for dense gradients of the sparse engine (scaled per replica)."""
        total = self.cotraining_losses(x, y, sample_weight)[0]
        return total / tf.distribute.get_strategy().num_replicas_in_sync

    def train_step(self, data):
        """One optimizer step on `cotraining_losses`: the members' cross-entropies plus the weighted JS term.

        Args:
          data: a batch (x, y) or (x, y, sample_weight); x (N, ...) inputs,
            y (N,) integer labels.

        Returns:
          The compiled metrics on the ensemble's mean training probabilities
          (N, C), with loss, ce, cotraining_js and cotraining_weight.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            total, ce, js, probs = self.cotraining_losses(x, y, sample_weight)
            # Gradients are summed over replicas by the optimizer.
            scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
            if self.optimizer is not None:
                scaled = self.optimizer.scale_loss(scaled)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        keras_compat.loss_tracker(self).update_state(total)
        self.ce_tracker.update_state(ce)
        self.js_tracker.update_state(js)
        self.weight_tracker.update_state(self.current_cotraining_weight())
        return self.compute_metrics(x, y, ops.mean(probs, axis=0), sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            cotraining_weight=self.cotraining_weight, warmup_steps=self.warmup_steps,
            steps_per_epoch=self.steps_per_epoch, min_weight=self.min_weight,
        )  # fmt: skip
        config.pop("from_logits")
        return config
