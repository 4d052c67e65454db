"""Defaults and validation of the ml_collections configs the binaries take.

Config files in configs/ start from `fashion_mnist_defaults()` and change what
their experiment needs; `validate` turns a bad value into one `ConfigError`
that names the field, the value and what is allowed.
"""

import inspect
import math
import re

import ml_collections

from tf_freetickets.sparse import registry

ENSEMBLE_KINDS = ("none", "independent", "edst", "dnc")
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "svhn_cropped", "imagenet2012")
MODELS = ("small_cnn", "wide_resnet", "cifar_resnet", "resnet50")
LR_SCHEDULES = ("cosine", "constant", "step")


class ConfigError(ValueError):
    """A config value outside what the library accepts."""


def fashion_mnist_defaults():
    """A single RigL model at 90% sparsity (ERK) on Fashion-MNIST with the small CNN."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds weights, masks, data order and augmentation (integer >= 0)
    config.dataset = "fashion_mnist"  # fashion_mnist | cifar10 | cifar100 | svhn_cropped | imagenet2012 (read offline)
    config.data_dir = ""  # empty: $TFT_FASHION_MNIST_DIR, then Debian's /usr/share/datasets/fashion-mnist
    config.train_examples = 0  # 0 = whole training split; fewer for smoke runs
    config.image_size = 224  # imagenet2012 only: side of the square crops
    config.model = "small_cnn"  # small_cnn | wide_resnet | cifar_resnet | resnet50
    config.depth = 28  # wide_resnet (6n + 4) and cifar_resnet (6n + 2)
    config.width = 1.0  # width multiplier; the widen factor k for wide_resnet
    config.dropout = 0.0  # dropout rate before the classifier, in [0, 1)
    config.epochs = 3  # training epochs (EDST: ignored, the schedule gives t_ex + M * t_re)
    config.batch_size = 128  # examples per step (each epoch drops its partial last batch)
    config.label_smoothing = 0.0  # cross-entropy label smoothing (FreeTickets' ImageNet runs: 0.1)
    config.verbose = 2  # Keras fit verbosity: 1 progress bar, 2 one line per epoch
    config.deterministic = False  # TF op determinism: bitwise-repeatable runs (and resumes), slower on GPUs
    config.fused_batchnorm = True  # BatchNorm through TF's fused kernel: Keras' numbers up to rounding, ~20% faster step
    # Port details of the papers' PyTorch code (paper configs turn them on; docs/METHODS.md, fidelity table).
    config.input_normalization = False  # CIFAR: the model starts with (x - mean) / std of the official code
    config.crop_padding = "constant"  # constant | reflect: border of the pad-and-crop augmentation
    config.kernel_initializer = "keras"  # keras | he_normal_fan_out (official WRN init) | he_normal_fan_in (FT ImageNet)
    config.batchnorm_momentum = 0.99  # PyTorch's BatchNorm default is Keras' 0.9
    config.batchnorm_epsilon = 1e-3  # PyTorch's: 1e-5
    config.validation_examples = 0  # hold out the last N training examples (official CIFAR scripts: 5000)
    config.keep_best_validation = False  # members and EDST tickets: the weights of their best validation epoch

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 0.05  # base learning rate of SGD
    config.optimizer.momentum = 0.9  # SGD momentum
    config.optimizer.weight_decay = 5e-4  # adds weight_decay * w to the gradient (PyTorch SGD's weight_decay)
    config.optimizer.weight_decay_scope = "kernels"  # kernels | all | all_but_biases (which parameters decay)
    config.optimizer.nesterov = False  # Nesterov momentum
    config.optimizer.schedule = "cosine"  # cosine | constant | step; EDST sets its own per-phase rates
    config.optimizer.warmup_epochs = 0  # linear warm-up from 0 (cosine schedule)
    config.optimizer.milestones = (0.5, 0.75)  # step schedule: fractions of training where lr *= gamma
    config.optimizer.gamma = 0.1  # step schedule: factor applied at each milestone (or every decay_every steps)
    config.optimizer.decay_every = 0  # step schedule: lr *= gamma every this many steps instead (CigL: 30000)
    config.optimizer.warmup_from = 0.0  # learning rate at the start of the warm-up (Divide-and-Co-training: 5e-3)
    config.optimizer.min_learning_rate = 0.0  # cosine schedule's floor (Divide-and-Co-training: 1e-4)

    config.sparse = ml_collections.ConfigDict()
    config.sparse.method = "rigl"  # a registered method (sparse.registry; --config_help lists them)
    config.sparse.sparsity = 0.9  # fraction of pruned weights over the masked layers, in [0, 1)
    config.sparse.distribution = "erk"  # layer-wise densities: erk | er | uniform
    config.sparse.update_every = 100  # mask update every this many steps (DeltaT)
    config.sparse.drop_fraction = 0.3  # fraction of active weights dropped and regrown per update (initial value)
    config.sparse.end_fraction = 0.75  # fraction of training after which masks stop changing
    config.sparse.decay = "cosine"  # decay of the drop fraction: cosine | constant

    config.weight_averaging = ml_collections.ConfigDict()
    config.weight_averaging.enabled = False  # CigL's evaluation model: mean of end-of-epoch snapshots
    config.weight_averaging.start_fraction = 0.8  # fraction of training after which snapshots are averaged
    config.weight_averaging.random_mask_snapshots = True  # cigl: snapshots carry the next step's random mask (the code)

    config.ensemble = ml_collections.ConfigDict()
    config.ensemble.kind = "none"  # none | independent (DST / dense ensemble) | edst | dnc (Divide-and-Co-training)
    config.ensemble.num_members = 3  # M: members (independent / DNC) or tickets (EDST)
    config.ensemble.exploration_epochs = 1  # EDST t_ex
    config.ensemble.refinement_epochs = 2  # EDST t_re
    config.ensemble.refinement_lr_factors = (0.1, 0.01)  # EDST: lr steps of each refinement phase (x base lr)
    config.ensemble.refinement_lr_epochs = ()  # EDST: epochs of each step (empty: even split)
    config.ensemble.large_drop_fraction = 0.8  # EDST q
    config.ensemble.batchnorm_batches = 0  # EDST: recompute BN statistics on N training batches per ticket (0: as the code)
    _add_dnc_defaults(config)

    # Fidelity switches of the DST schedule (docs/METHODS.md).
    config.sparse.min_drop_fraction = 0.0  # where the cosine drop fraction ends (FreeTickets' code: 0.005)
    config.ensemble.restart_schedule_after_exploration = False  # EDST: fresh DST cosine after each global exploration
    # FreeTickets' update rules (sparse.updaters.freetickets_official sets all three); defaults are RigL's.
    config.sparse.reinit_when_same = False  # True: every grown weight restarts at 0
    config.sparse.dense_gradient_momentum = False  # True: momentum follows the dense gradient, never reset
    # CigL's code (and FreeTickets' ImageNet code): nearly dense layers with many active weights drop less.
    config.sparse.adjust_prune_rate = False  # True: a layer of sparsity s < 0.2 with above-mean active count drops min(s, f)
    add_method_fields(config.sparse)  # each method's own fields, from the registry (sparse.methods)
    return config


def _add_dnc_defaults(config):
    """Divide-and-Co-training's `config.ensemble` fields at their defaults (each line read by --config_help)."""
    config.ensemble.cotraining_weight = 0.5  # DNC: weight of the JS co-training term
    config.ensemble.cotraining_warmup_epochs = 1  # DNC: linear ramp of that weight
    config.ensemble.cotraining_ramp = "step"  # step | epoch: the ramp rises every step, or every epoch (official)
    config.ensemble.cotraining_min_weight = 0.0  # DNC: floor of the ramp (official: 0.005)
    config.ensemble.views = "flip_translate"  # DNC member views: flip_translate | cifar10 | cifar100 | cifar100_autoaugment
    config.ensemble.divide_weight_decay = True  # DNC: members decay with wd * exp(1/S - 1) (paper: CIFAR-10 only)


def add_method_fields(sparse):
    """Adds every registered method's `config.sparse` fields (at their defaults) that `sparse` lacks."""
    for name, field in registry.declared_fields().items():
        *groups, leaf = name.split(".")
        node = sparse
        for group in groups:
            if group not in node:
                node[group] = ml_collections.ConfigDict()
            node = node[group]
        if leaf not in node:
            node[leaf] = field.default


def _choice(value, allowed, field):
    if value not in allowed:
        raise ConfigError(f"config.{field}={value!r} is unknown; use one of {allowed}.")


def _positive_int(value, field, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config.{field}={value!r} must be an integer >= {minimum}.")


def _number(value, field, allowed, ok):
    """Refuses a non-number, NaN/Inf or a value outside `ok` in one line saying what is `allowed`."""
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and ok(value)
    if not valid:
        raise ConfigError(f"config.{field}={value!r} must be {allowed}.")


def _fraction(value, field, low_open=False):
    ok = isinstance(value, (int, float)) and (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0)
    if not ok:
        raise ConfigError(f"config.{field}={value!r} must be in {'(0' if low_open else '[0'}, 1].")


def edst_schedule(config):
    """The `EDSTSchedule` of an EDST config: M, t_ex, t_re, the refinement lr steps and optimizer.warmup_epochs."""
    from tf_freetickets.ensembles.edst import EDSTSchedule

    ensemble = config.ensemble
    return EDSTSchedule(
        num_tickets=ensemble.num_members,
        exploration_epochs=ensemble.exploration_epochs,
        refinement_epochs=ensemble.refinement_epochs,
        refinement_lr_factors=tuple(ensemble.refinement_lr_factors),
        refinement_lr_epochs=tuple(ensemble.refinement_lr_epochs),
        warmup_epochs=config.optimizer.warmup_epochs,
        restart_schedule_after_exploration=bool(ensemble.get("restart_schedule_after_exploration", False)),
    )


def _validate_port_details(config):
    from tf_freetickets.data.pipelines import CROP_PADDINGS
    from tf_freetickets.data.tfds_data import CIFAR_CHANNEL_STATS
    from tf_freetickets.ensembles.views import VIEW_PIPELINES
    from tf_freetickets.models.layer_options import KERNEL_INITIALIZERS

    if config.input_normalization and config.dataset not in CIFAR_CHANNEL_STATS:
        raise ConfigError(
            f"config.input_normalization=True knows the statistics of {sorted(CIFAR_CHANNEL_STATS)}, not {config.dataset!r}."
        )
    _choice(config.crop_padding, CROP_PADDINGS, "crop_padding")
    _choice(config.kernel_initializer, KERNEL_INITIALIZERS, "kernel_initializer")
    if not 0.0 <= config.batchnorm_momentum < 1.0:
        raise ConfigError(f"config.batchnorm_momentum={config.batchnorm_momentum!r} must be in [0, 1).")
    if not config.batchnorm_epsilon > 0:
        raise ConfigError(f"config.batchnorm_epsilon={config.batchnorm_epsilon!r} must be positive.")
    _positive_int(config.validation_examples, "validation_examples", minimum=0)
    if config.validation_examples and config.dataset == "imagenet2012":
        raise ConfigError("config.validation_examples is for in-memory datasets; imagenet2012 has no held-out split here.")
    if config.keep_best_validation and not config.validation_examples:
        raise ConfigError("config.keep_best_validation=True needs config.validation_examples > 0 (the held-out examples).")
    if config.keep_best_validation and config.weight_averaging.enabled:
        raise ConfigError(
            "config.keep_best_validation and config.weight_averaging.enabled both choose the final weights; enable one."
        )
    _choice(config.ensemble.views, tuple(VIEW_PIPELINES), "ensemble.views")
    _choice(config.ensemble.cotraining_ramp, ("step", "epoch"), "ensemble.cotraining_ramp")
    if not 0.0 <= config.ensemble.cotraining_min_weight <= max(config.ensemble.cotraining_weight, 0.0):
        raise ConfigError(
            f"config.ensemble.cotraining_min_weight={config.ensemble.cotraining_min_weight!r} must be in [0, cotraining_weight]."
        )


def sparse_method(sparse):
    """The registered `SparseMethod` that `config.sparse.method` names.

    Raises:
      ConfigError: one line naming the unknown method and the registered ones.
    """
    try:
        return registry.get_method(sparse.method)
    except ValueError:
        raise ConfigError(
            f"config.sparse.method={sparse.method!r} is unknown; registered methods: {', '.join(registry.method_names())}."
        ) from None


def _field_value(sparse, name):
    node = sparse
    for part in name.split("."):
        if part not in node:
            return None, False
        node = node[part]
    return node, True


def _validate_method_fields(sparse, method):
    """Checks the fields `method` declares; refuses another method's field set away from its default."""
    own = {field.name for field in method.config_fields}
    for name, field in registry.declared_fields().items():
        value, present = _field_value(sparse, name)
        if not present:
            if name in own:
                raise ConfigError(f"config.sparse.{name} is missing; sparse.method={method.name!r} reads it.")
            continue
        if name in own:
            if field.check is not None:
                try:
                    field.check(value, sparse)
                except ValueError as error:
                    raise ConfigError(str(error)) from None
        elif value != field.default:
            readers = ", ".join(registry.methods_declaring(name))
            raise ConfigError(
                f"config.sparse.{name}={value!r} is read only by sparse.method {readers}, "
                f"not sparse.method={method.name!r}; leave it at {field.default!r}."
            )


def validate(config):
    """Raises ConfigError for the first bad field; returns the config otherwise."""
    _choice(config.dataset, DATASETS, "dataset")
    _choice(config.model, MODELS, "model")
    if not config.width > 0:
        raise ConfigError(f"config.width={config.width!r} must be positive.")
    _positive_int(config.epochs, "epochs")
    _positive_int(config.batch_size, "batch_size")
    _positive_int(config.train_examples, "train_examples", minimum=0)
    _positive_int(config.image_size, "image_size", minimum=8)
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"config.label_smoothing={config.label_smoothing!r} must be in [0, 1).")
    if config.label_smoothing and config.ensemble.kind == "dnc":
        raise ConfigError("config.label_smoothing is not supported with ensemble.kind='dnc' (its loss is the co-training loss).")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"config.dropout={config.dropout!r} must be in [0, 1).")
    _validate_optimizer(config)
    method = _validate_sparse(config.sparse)
    if not 0.0 <= config.weight_averaging.start_fraction < 1.0:
        raise ConfigError(f"config.weight_averaging.start_fraction={config.weight_averaging.start_fraction!r} must be in [0, 1).")
    for switch in ("sparse.adjust_prune_rate", "weight_averaging.random_mask_snapshots"):
        group, name = switch.split(".")
        if not isinstance(config[group].get(name, False), bool):
            raise ConfigError(f"config.{switch}={config[group][name]!r} must be True or False.")
    _validate_ensemble(config, method)
    validate_run_fields(config)
    return config


def _validate_optimizer(config):
    from tf_freetickets.models.weight_decay import WEIGHT_DECAY_SCOPES

    optimizer = config.optimizer
    # The rate first: the warm-up and floor checks below compare against it (NaN would be blamed on them).
    _number(optimizer.learning_rate, "optimizer.learning_rate", "a finite number > 0", lambda v: v > 0)
    _number(optimizer.momentum, "optimizer.momentum", "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
    _number(optimizer.gamma, "optimizer.gamma", "a finite number > 0", lambda v: v > 0)
    _choice(optimizer.schedule, LR_SCHEDULES, "optimizer.schedule")
    if any(not 0.0 < m < 1.0 for m in optimizer.milestones) or list(optimizer.milestones) != sorted(optimizer.milestones):
        raise ConfigError(
            f"config.optimizer.milestones={tuple(optimizer.milestones)!r} must be increasing fractions in (0, 1)."
        )
    _choice(optimizer.weight_decay_scope, WEIGHT_DECAY_SCOPES, "optimizer.weight_decay_scope")
    _positive_int(optimizer.decay_every, "optimizer.decay_every", minimum=0)
    if not 0.0 <= optimizer.warmup_from <= optimizer.learning_rate:
        raise ConfigError(f"config.optimizer.warmup_from={optimizer.warmup_from!r} must be in [0, learning_rate].")
    if not 0.0 <= optimizer.min_learning_rate <= optimizer.learning_rate:
        raise ConfigError(f"config.optimizer.min_learning_rate={optimizer.min_learning_rate!r} must be in [0, learning_rate].")
    _validate_port_details(config)
    _number(optimizer.weight_decay, "optimizer.weight_decay", "a finite number >= 0", lambda v: v >= 0)


def _validate_sparse(sparse):
    """Checks `config.sparse`; returns the registered method it names."""
    from tf_freetickets.sparse.densities import DISTRIBUTIONS, check_sparsity
    from tf_freetickets.sparse.schedules import DECAYS

    method = sparse_method(sparse)
    try:
        check_sparsity(sparse.sparsity, "config.sparse.sparsity")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    _choice(sparse.distribution, DISTRIBUTIONS, "sparse.distribution")
    _fraction(sparse.drop_fraction, "sparse.drop_fraction")
    _fraction(sparse.end_fraction, "sparse.end_fraction", low_open=True)
    _choice(sparse.decay, DECAYS, "sparse.decay")
    _positive_int(sparse.update_every, "sparse.update_every")
    if not 0.0 <= sparse.get("min_drop_fraction", 0.0) <= sparse.drop_fraction:
        raise ConfigError(
            f"config.sparse.min_drop_fraction={sparse.min_drop_fraction!r} must be in "
            f"[0, sparse.drop_fraction={sparse.drop_fraction}]."
        )
    _validate_method_fields(sparse, method)
    return method


def _validate_ensemble(config, method):
    ensemble, sparse = config.ensemble, config.sparse
    _choice(ensemble.kind, ENSEMBLE_KINDS, "ensemble.kind")
    _positive_int(ensemble.num_members, "ensemble.num_members")
    if ensemble.kind == "dnc" and ensemble.cotraining_weight < 0:
        raise ConfigError(f"config.ensemble.cotraining_weight={ensemble.cotraining_weight!r} must be >= 0.")
    if not isinstance(ensemble.get("divide_weight_decay", True), bool):
        raise ConfigError(f"config.ensemble.divide_weight_decay={ensemble.divide_weight_decay!r} must be True or False.")
    _positive_int(ensemble.get("batchnorm_batches", 0), "ensemble.batchnorm_batches", minimum=0)
    if ensemble.kind != "edst":
        if ensemble.get("batchnorm_batches", 0):
            raise ConfigError(
                f"config.ensemble.batchnorm_batches={ensemble.batchnorm_batches} recomputes EDST tickets' BatchNorm "
                f"statistics; ensemble.kind={ensemble.kind!r} has no tickets. Leave it at 0."
            )
        return
    if not method.dynamic:
        dynamic = ", ".join(name for name in registry.method_names() if registry.get_method(name).dynamic)
        raise ConfigError(f"config.ensemble.kind='edst' needs a dynamic sparse method ({dynamic}), got {sparse.method!r}.")
    _positive_int(ensemble.exploration_epochs, "ensemble.exploration_epochs", minimum=0)
    _positive_int(ensemble.refinement_epochs, "ensemble.refinement_epochs", minimum=1)
    try:
        edst_schedule(config)
    except ValueError as error:
        raise ConfigError(f"config.ensemble: {error}") from None
    _fraction(ensemble.large_drop_fraction, "ensemble.large_drop_fraction", low_open=True)
    if ensemble.get("restart_schedule_after_exploration", False) and (sparse.decay != "cosine" or sparse.end_fraction != 1.0):
        raise ConfigError(
            "config.ensemble.restart_schedule_after_exploration restarts the cosine drop fraction to the end of "
            f"training: it needs sparse.decay='cosine' and sparse.end_fraction=1.0, got {sparse.decay!r} and "
            f"{sparse.end_fraction!r}."
        )


# NumPy seeds (keras.utils.set_random_seed) are 32-bit.
MAX_SEED = 2**32 - 1


def validate_run_fields(config):
    """Checks the fields that decide a run's reproducibility rather than its method (seed).

    The seed is a NumPy seed, in [0, 2**32 - 1]; an independent ensemble seeds
    member k with seed + k, so each of those must be one too.
    """
    _positive_int(config.seed, "seed", minimum=0)
    members = int(config.ensemble.num_members) if config.ensemble.kind == "independent" else 1
    if config.seed + members - 1 > MAX_SEED:
        seeds = f" (its {members} members are seeded seed + k, k < {members})" if members > 1 else ""
        raise ConfigError(f"config.seed={config.seed!r} must be an integer in [0, {MAX_SEED - members + 1}]{seeds}.")


_FIELD_LINE = re.compile(r"^\s*config\.([\w.]+)\s*=\s*[^#]+?(?:#\s*(.*))?$")


def field_docs():
    """{dotted field: meaning} of every `fashion_mnist_defaults` field.

    A shared field is documented by the comment beside its default in
    `fashion_mnist_defaults` (or `_add_dnc_defaults`); a method's own field by the help text it was
    registered with (`sparse.registry.ConfigField`). `--config_help` prints
    them and a test checks none is missing.
    """
    docs = {}
    for line in (inspect.getsource(fashion_mnist_defaults) + inspect.getsource(_add_dnc_defaults)).splitlines():
        match = _FIELD_LINE.match(line)
        if match and "ConfigDict()" not in line:  # a group, not a field
            docs[match.group(1)] = (match.group(2) or "").strip()
    docs.update({f"sparse.{name}": field.help for name, field in registry.declared_fields().items()})
    docs["sparse.method"] = f"a registered method: {' | '.join(registry.method_names())}"
    return docs


def config_help(config=None):
    """Text listing every `config.*` field: its value in `config` (default: the defaults) and its meaning."""
    config = fashion_mnist_defaults() if config is None else config
    docs = field_docs()

    def flat(tree, prefix=""):
        for key, value in tree.items():
            name = f"{prefix}{key}"
            if isinstance(value, ml_collections.ConfigDict):
                yield from flat(value, f"{name}.")
            else:
                yield name, value

    rows = [(f"config.{name}", repr(value), docs.get(name, "")) for name, value in flat(config)]
    width = max(len(name) for name, _, _ in rows)
    value_width = min(max(len(value) for _, value, _ in rows), 24)
    lines = ["Every field is a flag: --config.<field>=<value>. Fields, their values and meaning:"]
    lines += [f"  {name:<{width}}  {value:<{value_width}}  {doc}".rstrip() for name, value, doc in rows]
    return "\n".join(lines)
