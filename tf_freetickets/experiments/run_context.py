"""What every training path of one experiment shares: its plan, data, model builder, optimizer and fit.

`RunContext` is handed to each trainer of `experiments.runner` (single model,
independent ensemble, EDST, DNC): it builds and compiles the models, resumes
`fit` from the run's checkpoints with the finite-training guard, the epoch
checkpoint and the SIGTERM stop, and writes the members through the workdir's
staging folder.
"""

import contextlib
import dataclasses
import os

import keras

from tf_freetickets import data, models
from tf_freetickets.data.tfds_data import CIFAR_CHANNEL_STATS
from tf_freetickets.ensembles.best_validation import BestValidation
from tf_freetickets.experiments import workdir as workdirs
from tf_freetickets.experiments.checkpointing import EpochCheckpoint, checkpoint_numbers, restore_latest
from tf_freetickets.experiments.guards import FiniteTrainingGuard, NonFiniteTrainingError, check_finite
from tf_freetickets.experiments.interrupt import StopAtEpochEnd
from tf_freetickets.experiments.plan import RunPlan
from tf_freetickets.experiments.training_clock import TrainingClock
from tf_freetickets.losses import SmoothedSparseCrossentropy
from tf_freetickets.multi_worker import enable_multi_worker_fit
from tf_freetickets.sparse import masked_layers, sparsify
from tf_freetickets.sparse.tensorboard import LayerSparsityLogger


def layer_options(config):
    """The `models.LayerOptions` of `config`: initialisers, BatchNorm settings, input mean/std (None: Keras' defaults)."""
    mean, std = CIFAR_CHANNEL_STATS[config.dataset] if config.input_normalization else (None, None)
    options = models.LayerOptions(
        config.kernel_initializer, config.batchnorm_momentum, config.batchnorm_epsilon, mean, std
    )
    return None if options.is_default else options


@dataclasses.dataclass
class RunContext:
    """What every training path of one experiment shares."""

    plan: RunPlan
    workdir: str
    source: object  # experiment_data.ArrayData or ImageNetData
    strategy: object
    clocks: list = dataclasses.field(default_factory=list)  # a `TrainingClock` per `fit`, in call order

    @property
    def config(self):
        """The run's validated `ml_collections` config."""
        return self.plan.config

    @property
    def epochs(self):
        """Epochs of every `fit` of the run (EDST: its whole schedule)."""
        return self.plan.epochs

    @property
    def input_range(self):
        """What the run's SavedModels accept: [0, 1] pixels, or no range where the stream normalises (ImageNet)."""
        from tf_freetickets.deploy.saved_model import input_range_for_dataset

        return input_range_for_dataset(self.config.dataset)

    @property
    def steps_per_epoch(self):
        """Optimizer steps per epoch (full batches of the training examples)."""
        return data.steps_per_epoch(self.source.num_train_examples, self.config.batch_size)

    @property
    def members_dir(self):
        """WORKDIR/members: the members' (or tickets') .keras files and SavedModels."""
        return os.path.join(self.workdir, "members")

    def stream(self, seed, start_epoch):
        """The training batches of member `seed` from `start_epoch` on (augmented unless DNC augments in the model)."""
        # Co-training augments inside the model, a different view per member.
        augment = self.plan.ensemble.kind != "dnc"
        return self.source.train_stream(self.config.batch_size, seed, start_epoch, self.epochs, augment=augment)

    def gradient_stream(self, seed):
        """An endless, seeded stream of training batches for dense-gradient growth (its own order)."""
        return self.source.gradient_stream(self.config.batch_size, seed)

    def scope(self):
        """The distribution strategy's scope, or a null context without one."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def learning_rate(self):
        """The learning rate (a float or a Keras schedule over optimizer steps) that config.optimizer describes."""
        opt = self.config.optimizer
        total = self.epochs * self.steps_per_epoch
        learning_rate = opt.learning_rate
        if self.plan.ensemble.edst is not None or opt.schedule == "constant":
            pass  # EDST sets the rate of each phase itself
        elif opt.schedule == "step" and opt.decay_every:
            # PyTorch's StepLR(step_size=decay_every) stepped every iteration (CigL).
            learning_rate = keras.optimizers.schedules.ExponentialDecay(
                opt.learning_rate, opt.decay_every, opt.gamma, staircase=True
            )
        elif opt.schedule == "step":
            boundaries = [int(m * total) for m in opt.milestones]
            values = [opt.learning_rate * opt.gamma**i for i in range(len(boundaries) + 1)]
            learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        else:
            warmup = opt.warmup_epochs * self.steps_per_epoch
            learning_rate = keras.optimizers.schedules.CosineDecay(
                opt.warmup_from if warmup else opt.learning_rate, max(total - warmup, 1),
                alpha=opt.min_learning_rate / opt.learning_rate,
                warmup_target=opt.learning_rate if warmup else None, warmup_steps=warmup,
            )  # fmt: skip
        return learning_rate

    def optimizer(self):
        """SGD with the run's momentum, Nesterov switch and `learning_rate()`."""
        opt = self.config.optimizer
        return keras.optimizers.SGD(self.learning_rate(), momentum=opt.momentum, nesterov=opt.nesterov)

    def build(self, width=None, weight_decay=None, dropout=None, name=None):
        """The config's dense model (`models.build_model`); DNC's narrow members override width/decay/dropout."""
        config = self.config
        return models.build_model(
            config.model, self.source.input_shape, self.source.num_classes,
            width=config.width if width is None else width, depth=config.depth,
            dropout=config.dropout if dropout is None else dropout,
            weight_decay=config.optimizer.weight_decay if weight_decay is None else weight_decay, name=name,
            weight_decay_scope=config.optimizer.weight_decay_scope, layer_options=layer_options(config),
            fused_batchnorm=config.fused_batchnorm,
        )  # fmt: skip

    def best_validation(self, **kwargs):
        """A `BestValidation` tracker on the held-out examples (config.keep_best_validation)."""
        return BestValidation(self.source.validation_data(), **kwargs)

    def loss(self):
        """Sparse cross-entropy on logits, label-smoothed when config.label_smoothing is set."""
        smoothing = float(self.config.label_smoothing)
        if not smoothing:
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return SmoothedSparseCrossentropy(self.source.num_classes, smoothing)

    def make_model(self, seed):
        """The compiled model of member `seed`: built, sparsified at the plan's starting sparsity, compiled."""
        sparsity = self.plan.sparsity
        model = self.build()
        if not sparsity.is_dense:
            model = sparsify(model, sparsity.initial, sparsity.distribution, seed=seed)
        model.compile(self.optimizer(), self.loss(), metrics=["accuracy"])
        return model

    def write_members(self, models, names, saved_models=True, extra=()):
        """Writes members/<name>.keras (and SavedModel members/<name>/) for each model; returns the .keras paths.

        Everything is written to `members/.staging/` first and moved into place
        only once complete, so a rerun of a finished workdir that fails here
        leaves the finished run (its members and manifest) as it was.

        Args:
          models, names: the members and their file names (without extension).
          saved_models: also export each member as a SavedModel folder.
          extra: (write function of a path, final path) pairs written the same
            way (DNC's ensemble SavedModel).
        """
        from tf_freetickets.deploy import saved_model

        os.makedirs(self.members_dir, exist_ok=True)
        staging = workdirs.staging_dir(self.members_dir)
        moves, paths = [], []
        for model, name in zip(models, names):
            check_finite(model, name)  # end-of-training callbacks (weight averaging) change weights after the guard
            paths.append(os.path.join(self.members_dir, f"{name}.keras"))
            model.save(os.path.join(staging, f"{name}.keras"))
            moves.append((os.path.join(staging, f"{name}.keras"), paths[-1]))
            if saved_models:
                saved_model.export_member(model, os.path.join(staging, name), input_range=self.input_range)
                moves.append((os.path.join(staging, name), os.path.join(self.members_dir, name)))
        for index, (write, final) in enumerate(extra):
            write(os.path.join(staging, f"extra_{index}"))
            moves.append((os.path.join(staging, f"extra_{index}"), final))
        workdirs.replace_outputs(self.members_dir, moves)
        return paths

    def fit(self, model, seed, callbacks, checkpoint_name, writes_members=False):
        """`model.fit` from the last checkpoint of this run (or from scratch).

        `writes_members`: the callbacks write member files while training
        (EDST's tickets), so a finished run's manifest is cleared before
        epochs that would overwrite them.
        """
        stateful = [c for c in callbacks if hasattr(c, "get_state")]
        directory = os.path.join(self.workdir, "checkpoints", checkpoint_name)
        initial_epoch = restore_latest(model, directory, stateful)
        if initial_epoch:
            print(f"Resuming {checkpoint_name} after epoch {initial_epoch} from {directory}", flush=True)
        if writes_members and initial_epoch < self.epochs:
            workdirs.clear_manifest(self.members_dir)
        log_dir = os.path.join(self.workdir, "tensorboard", checkpoint_name)
        logging = [keras.callbacks.TensorBoard(log_dir)]
        if masked_layers(model):
            logging.append(LayerSparsityLogger(os.path.join(log_dir, "sparsity")))
        enable_multi_worker_fit(model)  # keras-team/keras#20585; a no-op under other strategies
        # The guard goes first: a non-finite batch or epoch stops fit before mask
        # updates, tickets and the epoch checkpoint see it.
        guard = FiniteTrainingGuard(checkpoint_name)
        self.clocks.append(TrainingClock(directory, initial_epoch))
        # Called even when every epoch is done, so that end-of-training callbacks run.
        # shuffle=False: the stream is already shuffled per epoch (and Keras would warn).
        try:
            model.fit(
                self.stream(seed, initial_epoch), epochs=self.epochs, initial_epoch=initial_epoch,
                steps_per_epoch=self.steps_per_epoch, shuffle=False,
                callbacks=[
                    self.clocks[-1].start, guard, *callbacks, *logging, self.clocks[-1], EpochCheckpoint(directory, stateful),
                    StopAtEpochEnd(checkpoint_name, directory),  # SIGTERM: stop once the epoch's checkpoint is saved
                ], verbose=self.config.verbose,
            )  # fmt: skip
        except FloatingPointError as error:
            newest = max(checkpoint_numbers(directory), default=0)
            kept = (
                f"the newest checkpoint ({directory}, after epoch {newest}) is the last good one"
                if newest
                else ("no checkpoint was written")
            )
            message = (
                str(error)
                if isinstance(error, NonFiniteTrainingError)
                else f"{checkpoint_name}: epoch {guard.epoch + 1}: {error}"
            )
            raise NonFiniteTrainingError(
                f"{message}; {kept}. Lower config.optimizer.learning_rate and start fresh in a new --workdir."
            ) from None
