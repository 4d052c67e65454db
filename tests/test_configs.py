"""Every config file loads and validates; the papers' configs carry the papers' numbers."""

import glob
import importlib.util
import math
import os

import numpy as np
import pytest

from tf_freetickets.experiments.config import ConfigError, fashion_mnist_defaults, validate
from tf_freetickets.experiments.plan import RunPlan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[os.path.basename(p) for p in CONFIG_FILES])
def test_every_config_validates(path):
    validate(load(os.path.splitext(os.path.basename(path))[0]))


def test_freetickets_edst_layout_and_optimizer():
    config = load("cifar10_wrn28_10_edst")
    assert (config.model, config.depth, config.width) == ("wide_resnet", 28, 10)
    assert RunPlan.from_config(config).epochs == 150 + 3 * 100
    assert (config.sparse.sparsity, config.sparse.drop_fraction, config.sparse.update_every) == (0.8, 0.5, 1000)
    assert config.ensemble.large_drop_fraction == 0.8
    assert (config.optimizer.learning_rate, config.optimizer.momentum, config.optimizer.weight_decay) == (0.1, 0.9, 5e-4)
    dst = load("cifar100_wrn28_10_dst")
    dst_plan = RunPlan.from_config(dst)
    assert (dst.dataset, dst.ensemble.kind, dst.ensemble.num_members, dst_plan.epochs) == ("cifar100", "independent", 3, 250)
    assert tuple(dst.optimizer.milestones) == (0.5, 0.75)
    # The update rules of FreeTickets' sparselearning/core.py, as the runner builds them.
    for run in (config, dst):
        updater = RunPlan.from_config(run).sparsity.make_updater(seed=0)
        assert (updater.reinit_when_same, updater.dense_gradient_momentum, updater.growth_gradient) == (True, True, "step_batch")
    config.sparse.method = "set"
    with pytest.raises(ConfigError, match="growth_gradient"):
        validate(config)


def test_freetickets_imagenet_edst_config():
    from tf_freetickets.experiments.config import edst_schedule

    config = load("imagenet_resnet50_edst")
    assert (config.dataset, config.model, config.image_size, config.batch_size) == ("imagenet2012", "resnet50", 224, 128)
    assert (config.label_smoothing, config.optimizer.weight_decay, config.optimizer.warmup_epochs) == (0.1, 1e-4, 5)
    assert (config.sparse.method, config.sparse.update_every, config.sparse.sparsity) == ("rigl", 4000, 0.8)
    schedule = edst_schedule(config)
    assert RunPlan.from_config(config).epochs == schedule.total_epochs == 310
    assert schedule.ticket_epochs == [99, 169, 239, 309]
    # The code's learning rates: 0.1 after warm-up, then 0.01 / 0.001 / 0.0001 in each phase.
    rates = [round(0.1 * schedule.lr_factor(e), 6) for e in (0, 5, 29, 30, 60, 90, 100, 309)]
    assert rates == [round(0.1 / 6, 6), 0.1, 0.1, 0.01, 0.001, 0.0001, 0.01, 0.0001]
    # DST updates run to the end; the 0.5 -> 0.005 cosine restarts after each global exploration.
    assert (config.sparse.decay, config.sparse.drop_fraction, config.sparse.min_drop_fraction) == ("cosine", 0.5, 0.005)
    assert config.sparse.end_fraction == 1.0 and schedule.restart_schedule_after_exploration
    assert schedule.restart_steps(10) == (1000, 1700, 2400)
    # ImageNet/core.py: growth by the step's weight.grad; momentum masked, no zeroing before growth.
    assert (config.sparse.growth_gradient, config.sparse.reinit_when_same, config.sparse.dense_gradient_momentum) == (
        "step_batch", False, False
    )
    # ImageNet/resnet.py with `-c fanin` and PyTorch's BatchNorm defaults.
    assert (config.kernel_initializer, config.batchnorm_momentum, config.batchnorm_epsilon) == ("he_normal_fan_in", 0.9, 1e-5)
    assert not config.input_normalization
    validate(config)
    config.sparse.end_fraction = 0.5
    with pytest.raises(ConfigError, match="restart_schedule_after_exploration"):
        validate(config)


def test_bad_edst_learning_rate_steps_are_config_errors():
    config = load("imagenet_resnet50_edst")
    config.ensemble.refinement_lr_epochs = (30, 30)
    with pytest.raises(ConfigError, match="config.ensemble: refinement_lr_epochs=\\(30, 30\\)"):
        validate(config)
    config = fashion_mnist_defaults()
    config.label_smoothing = 1.0
    with pytest.raises(ConfigError, match="label_smoothing=1.0"):
        validate(config)


def test_edst_batchnorm_batches_is_a_count_for_edst_only():
    config = load("fashion_mnist_edst")
    config.ensemble.batchnorm_batches = 4
    validate(config)
    config.ensemble.batchnorm_batches = -1
    with pytest.raises(ConfigError, match=r"^config.ensemble.batchnorm_batches=-1 must be an integer >= 0.$"):
        validate(config)
    config = fashion_mnist_defaults()
    config.ensemble.batchnorm_batches = 4
    with pytest.raises(ConfigError, match=r"^config.ensemble.batchnorm_batches=4 recomputes EDST tickets' BatchNorm "
                                          r"statistics; ensemble.kind='none' has no tickets. Leave it at 0.$"):  # fmt: skip
        validate(config)


def test_cigl_and_dnc_configs():
    cigl = load("cifar10_wrn22_2_cigl")
    assert (cigl.sparse.method, cigl.sparse.random_drop_rate, cigl.weight_averaging.start_fraction) == ("cigl", 0.01, 0.8)
    assert load("cifar100_wrn22_2_cigl").sparse.random_drop_rate == 0.01  # the code's dpnum=100 on CIFAR-100 too
    assert cigl.sparse.growth_gradient == "step_batch_skip_update"  # the authors' main.py
    # grow.py zeroes every grown weight; core.py calls adjust_prune_rate; the random mask as Masking applies it.
    assert cigl.sparse.reinit_when_same and cigl.sparse.adjust_prune_rate and not cigl.sparse.dense_gradient_momentum
    assert (cigl.sparse.random_mask_rescale, cigl.sparse.random_mask_restore_dropped) == (False, True)
    assert (cigl.sparse.random_mask_growth_gradient, cigl.sparse.random_mask_prune_dropped) == ("dense", True)
    assert cigl.weight_averaging.random_mask_snapshots
    small = load("fashion_mnist_cigl")  # the code's growth signal with the step's update kept; grown weights at 0
    sparse = small.sparse
    assert (sparse.growth_gradient, sparse.reinit_when_same, sparse.random_drop_rate) == ("step_batch", True, 0.01)
    validate(small)
    dnc = load("cifar100_wrn28_10_dnc_s4")
    assert (dnc.ensemble.kind, dnc.ensemble.num_members, dnc.epochs, dnc.optimizer.warmup_epochs) == ("dnc", 4, 300, 20)
    assert dnc.ensemble.cotraining_weight == 0.5 and dnc.optimizer.nesterov


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("dataset", "imagenet", "config.dataset='imagenet' is unknown"),
        ("model", "vgg", "config.model='vgg' is unknown"),
        ("dropout", 1.5, "config.dropout=1.5"),
        ("epochs", 0, "config.epochs=0 must be an integer >= 1"),
    ],
)
def test_bad_top_level_values(field, value, message):
    config = fashion_mnist_defaults()
    config[field] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(config)


def test_bad_milestones():
    config = fashion_mnist_defaults()
    config.optimizer.milestones = (0.8, 0.5)
    with pytest.raises(ConfigError, match="increasing fractions"):
        validate(config)


class _Source:
    """Just what `RunContext` reads to schedule the learning rate."""

    def __init__(self, num_train_examples):
        self.num_train_examples = num_train_examples


def _rates(config, train_examples, steps):
    from tf_freetickets.experiments.run_context import RunContext

    schedule = RunContext(RunPlan.from_config(config), "", _Source(train_examples), None).learning_rate()
    return [float(schedule(step)) for step in steps]


@pytest.mark.parametrize("dataset,random_rate", [("cifar10", 0.01), ("cifar100", 0.01)])
def test_cigl_config_matches_the_official_wrn_22_2_setup(dataset, random_rate):
    config = load(f"{dataset}_wrn22_2_cigl")
    assert (config.depth, config.width, config.epochs, config.batch_size) == (22, 2, 250, 128)
    assert config.optimizer.nesterov and config.optimizer.momentum == 0.9
    assert (config.optimizer.weight_decay, config.optimizer.weight_decay_scope) == (5e-4, "kernels")
    assert config.sparse.random_drop_rate == random_rate  # 1 / dpnum with Masking's dpnum = 100
    assert (config.sparse.update_every, config.sparse.drop_fraction, config.sparse.end_fraction) == (100, 0.3, 0.75)
    assert config.validation_examples == 5000 and not config.keep_best_validation
    assert config.crop_padding == ("reflect" if dataset == "cifar10" else "constant")
    # StepLR(30000, 0.5) on 45,000 images: 351 steps an epoch; averaging starts after epoch 200 (step 70,200).
    steps_per_epoch = 45000 // 128
    rates = _rates(config, 45000, [0, 29999, 30000, 59999, 60000, 199 * steps_per_epoch, 250 * steps_per_epoch - 1])
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025], rtol=1e-6)
    # Weight averaging: snapshots at the end of epochs 200..250 (1-based), 51 of them, as begin_save=200.
    start_epoch = math.ceil(config.weight_averaging.start_fraction * config.epochs) - 1
    assert (start_epoch, config.epochs - start_epoch) == (199, 51)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_dnc_config_matches_the_official_schedule_and_views(dataset):
    config = load(f"{dataset}_wrn28_10_dnc_s2")
    ensemble = config.ensemble
    assert (ensemble.views, ensemble.cotraining_ramp, ensemble.cotraining_min_weight) == (dataset, "epoch", 0.005)
    assert (ensemble.cotraining_weight, ensemble.cotraining_warmup_epochs) == (0.5, 40)
    assert config.optimizer.weight_decay_scope == "all_but_biases" and config.optimizer.nesterov
    # lr: 5e-3 at step 0, linear to 0.1 over 20 epochs of 390 steps, cosine to the 1e-4 floor at step 300 * 390.
    rates = _rates(config, 50000, [0, 10 * 390, 20 * 390, 300 * 390])
    np.testing.assert_allclose(rates, [5e-3, 5e-3 + 0.5 * (0.1 - 5e-3), 0.1, 1e-4], rtol=1e-5)
    assert config.input_normalization and config.kernel_initializer == "he_normal_fan_out"
    assert (config.batchnorm_momentum, config.batchnorm_epsilon) == (0.9, 1e-5)
    # Weight decay divided by exp(1/S - 1) on CIFAR-10 only (paper Tables II and III).
    assert ensemble.divide_weight_decay is (dataset == "cifar10")
    assert load(f"{dataset}_wrn28_10_dnc_s4").ensemble.divide_weight_decay is (dataset == "cifar10")
    assert fashion_mnist_defaults().ensemble.divide_weight_decay is True


def test_freetickets_port_details():
    for dataset, padding in (("cifar10", "reflect"), ("cifar100", "constant")):
        for kind in ("dst", "edst", "dense"):
            config = load(f"{dataset}_wrn28_10_{kind}")
            assert (config.crop_padding, config.validation_examples, config.keep_best_validation) == (padding, 5000, True)
            assert config.input_normalization and (config.batchnorm_momentum, config.batchnorm_epsilon) == (0.9, 1e-5)
    defaults = fashion_mnist_defaults()
    assert (defaults.crop_padding, defaults.validation_examples, defaults.input_normalization) == ("constant", 0, False)
    assert (defaults.kernel_initializer, defaults.batchnorm_momentum) == ("keras", 0.99)
    assert defaults.ensemble.views == "flip_translate"


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"keep_best_validation": True}, "needs config.validation_examples > 0"),
        ({"input_normalization": True}, "knows the statistics of"),
        ({"crop_padding": "wrap"}, "config.crop_padding='wrap' is unknown"),
        ({"ensemble.views": "autoaugment"}, "config.ensemble.views='autoaugment' is unknown"),
        ({"optimizer.decay_every": -1}, "config.optimizer.decay_every=-1"),
        ({"optimizer.warmup_from": 1.0}, "warmup_from=1.0 must be in"),
        ({"validation_examples": 10, "keep_best_validation": True, "weight_averaging.enabled": True}, "enable one"),
    ],
)
def test_bad_port_details_are_config_errors(changes, message):
    config = fashion_mnist_defaults()
    for field, value in changes.items():
        node = config
        *parents, leaf = field.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(config)
