"""Every config file loads and validates; the papers' configs carry the papers' numbers."""

import glob
import importlib.util
import os

import pytest

from tf_freetickets.experiments.config import ConfigError, fashion_mnist_defaults, validate
from tf_freetickets.experiments.runner import fit_epochs

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
    assert fit_epochs(config) == 150 + 3 * 100
    assert (config.sparse.sparsity, config.sparse.drop_fraction, config.sparse.update_every) == (0.8, 0.5, 1000)
    assert config.ensemble.large_drop_fraction == 0.8
    assert (config.optimizer.learning_rate, config.optimizer.momentum, config.optimizer.weight_decay) == (0.1, 0.9, 5e-4)
    dst = load("cifar100_wrn28_10_dst")
    assert (dst.dataset, dst.ensemble.kind, dst.ensemble.num_members, fit_epochs(dst)) == ("cifar100", "independent", 3, 250)
    assert tuple(dst.optimizer.milestones) == (0.5, 0.75)
    # The update rules of FreeTickets' sparselearning/core.py, as the runner builds them.
    from tf_freetickets.experiments.runner import make_updater

    for run in (config, dst):
        updater = make_updater(run.sparse, seed=0)
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
    assert fit_epochs(config) == schedule.total_epochs == 310
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


def test_cigl_and_dnc_configs():
    cigl = load("cifar10_wrn22_2_cigl")
    assert (cigl.sparse.method, cigl.sparse.random_drop_rate, cigl.weight_averaging.start_fraction) == ("cigl", 0.01, 0.8)
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
