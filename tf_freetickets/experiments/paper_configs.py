"""The papers' CIFAR and ImageNet experiments as configs (hyper-parameters from the papers' official code).

Each function returns a full config for `tf_freetickets.train`; the files in
configs/ call them. Sources:
- FreeTickets (Liu et al. 2022; VITA-Group/FreeTickets): WRN-28-10, batch 128,
  SGD 0.1 / momentum 0.9 / wd 5e-4. DST members: 250 epochs, lr x0.1 at epochs
  125 and 187, ERK, drop fraction 0.5 (constant) every 1000 steps, gradient
  growth with the update rules of its `sparselearning/core.py` (every grown
  weight at 0, momentum of the dense gradient never reset, growth gradient of
  the update step's own batch: `sparse.methods.rigl.freetickets_official`). EDST:
  150 exploration + M=3 x 100 refinement epochs, global exploration q=0.8.
- FreeTickets on ImageNet (its ImageNet/ code): ResNet-50, 224x224 crops, global
  batch 128 (64 on each of 2 GPUs), SGD 0.1 / momentum 0.9 / wd 1e-4 (not on
  BatchNorm), label smoothing 0.1, 5 warm-up epochs, He-normal fan-in
  convolutions (`-c fanin`), PyTorch's BatchNorm, ERK, gradient growth every
  4000 steps for the whole run with drop fraction 0.5 cosine-decayed to 0.005:
  one cosine over epochs 0-100, then a fresh one over each later 70-epoch phase.
  EDST: 30 exploration epochs at 0.1, then 4 refinement phases of 70 epochs at
  0.01 (30), 0.001 (30), 0.0001 (10) with a q=0.8 global exploration before
  phases 2-4: 310 epochs, 4 tickets.
- CigL (Lei et al. 2023; StevenBoys/CigL, conf/specific/cifar10_wrn_22_2_masking.yaml,
  conf/optimizer/SGD.yaml, README): WRN-22-2, 250 epochs on 45k images, batch
  128, SGD 0.1 Nesterov, wd 5e-4 on kernels only, lr halved every 30,000 steps
  (0.1, 0.05, 0.025: the averaging window runs at 0.025), RigL every 100 steps
  with drop 0.3 cosine-decayed to 75% of training (grown weights at 0, the
  drop of nearly dense layers capped: `adjust_prune_rate`), random-mask rate
  1/dpnum = 0.01 on both datasets (the code never passes the configured DPNUM
  to `Masking`; the paper and README give CIFAR-100 0.1), the random mask
  applied as the code does (`sparse.methods.cigl`), weight averaging of
  epochs 200-250.
- Divide-and-Co-training (Zhao et al. 2022; FreeformRobotics/Divide-and-Co-training,
  parser_params.py, utils/lr_scheduler.py, dataset/factory.py, model/splitnet.py):
  300 epochs, batch 128, SGD 0.1 Nesterov, a 20-epoch warm-up from 5e-3 then
  cosine floored at 1e-4, wd 5e-4 on kernels and BatchNorm gamma, divided by
  exp(1/S - 1) for the members on CIFAR-10 only (the paper's Tables II-III; the
  parser divides on both, its CIFAR-100 exclusion commented out),
  JS weight 0.5 reached over 40 epochs (raised per epoch, floor 0.005), member
  views crop + flip (+ AutoAugment on CIFAR-10) + RandomErasing, WRN-28-10 divided into S = 2 (WRN-28-7)
  or 4 (WRN-28-5) members.

Every CIFAR config also takes the official code's port details: inputs
normalised by the CIFAR channel mean/std, He-normal (fan-out) convolutions,
PyTorch's BatchNorm momentum/epsilon. What remains different is listed in
docs/METHODS.md (fidelity table).
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def _cifar_base(dataset):
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"The papers' CIFAR configs take dataset 'cifar10' or 'cifar100', got {dataset!r}.")
    config = fashion_mnist_defaults()
    config.dataset = dataset
    config.model = "wide_resnet"
    config.depth = 28
    config.width = 10
    config.batch_size = 128
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    # Port details shared by the three official CIFAR codes.
    config.input_normalization = True
    config.kernel_initializer = "he_normal_fan_out"
    config.batchnorm_momentum = 0.9  # PyTorch's BatchNorm momentum 0.1
    config.batchnorm_epsilon = 1e-5
    return config


def freetickets(dataset="cifar10", kind="edst", sparsity=0.8, num_members=3):
    """FreeTickets' WRN-28-10 runs: kind "dense", "dense_ensemble", "dst" or "edst"."""
    config = _cifar_base(dataset)
    config.epochs = 250
    config.optimizer.schedule = "step"
    config.optimizer.milestones = (0.5, 0.75)  # epochs 125 and 187 of 250
    config.sparse.method = "rigl"
    config.sparse.sparsity = sparsity
    config.sparse.distribution = "erk"
    config.sparse.update_every = 1000
    config.sparse.drop_fraction = 0.5
    config.sparse.decay = "constant"
    config.sparse.end_fraction = 1.0
    config.ensemble.num_members = num_members
    # FreeTickets' CIFAR code passes every parameter to SGD(weight_decay=5e-4): BatchNorm and biases decay too.
    config.optimizer.weight_decay_scope = "all"
    # sparselearning/utils.py: CIFAR-10 pads by reflection, CIFAR-100 with zeros; the last 10% of the
    # training set is held out and each run (each EDST phase) keeps its best validation epoch.
    config.crop_padding = "reflect" if dataset == "cifar10" else "constant"
    config.validation_examples = 5000
    config.keep_best_validation = True
    if kind in ("dst", "edst"):
        # The update rules of the code that produced the paper's numbers (docs/METHODS.md,
        # "FreeTickets' update switches").
        config.sparse.reinit_when_same = True
        config.sparse.dense_gradient_momentum = True
        config.sparse.growth_gradient = "step_batch"
    if kind == "dense":
        config.sparse.method = "dense"
    elif kind == "dense_ensemble":
        config.sparse.method = "dense"
        config.ensemble.kind = "independent"
    elif kind == "dst":
        config.ensemble.kind = "independent"
    elif kind == "edst":
        config.ensemble.kind = "edst"
        config.ensemble.exploration_epochs = 150
        config.ensemble.refinement_epochs = 100
        config.ensemble.large_drop_fraction = 0.8
    else:
        raise ValueError(f"Unknown FreeTickets run {kind!r}; use dense, dense_ensemble, dst or edst.")
    return config


def cigl(dataset="cifar10", sparsity=0.9):
    """CigL on WRN-22-2: RigL's schedule, a random mask of rate 1/dpnum, weight averaging of the last 20% of epochs.

    The random-mask rate is the one the released code runs on both datasets,
    0.01: `Masking.dpnum` defaults to 100 (`sparselearning/core.py`) and
    `main.py` builds `Masking` without the configured `masking.dpnum`, so the
    README's `DPNUM=10` for CIFAR-100 never reaches it. The paper's (and the
    README's) CIFAR-100 rate is `--config.sparse.random_drop_rate=0.1`.
    """
    config = _cifar_base(dataset)
    config.depth = 22
    config.width = 2
    config.epochs = 250
    config.optimizer.nesterov = True
    config.optimizer.schedule = "step"
    config.optimizer.decay_every = 30000  # StepLR(30000, 0.5) stepped every iteration
    config.optimizer.gamma = 0.5
    config.optimizer.weight_decay_scope = "kernels"  # train_helper._add_weight_decay skips 1-D parameters
    # data.py: 10% of the training set held out (the averaged model is evaluated, not the best epoch);
    # CIFAR-10 pads by reflection (CIFAR-100 uses RandomResizedCrop(32), not available here: zero padding).
    config.validation_examples = 5000
    config.crop_padding = "reflect" if dataset == "cifar10" else "constant"
    config.sparse.method = "cigl"
    config.sparse.sparsity = sparsity
    config.sparse.update_every = 100
    config.sparse.drop_fraction = 0.3
    config.sparse.decay = "cosine"
    config.sparse.end_fraction = 0.75
    # 1/dpnum with Masking's default dpnum=100 on both datasets (main.py never passes masking.dpnum); the paper's
    # CIFAR-100 value is 0.1.
    config.sparse.random_drop_rate = 0.01
    # main.py: growth by the update step's own gradient (random mask applied), that step's optimizer update skipped.
    config.sparse.growth_gradient = "step_batch_skip_update"
    # funcs/grow.py abs_grad_growth zeroes every grown weight, one dropped and regrown in the same update included.
    config.sparse.reinit_when_same = True
    # core.py truncate_weights calls adjust_prune_rate: at 90% sparsity WRN-22-2's last shortcut (s = 0.15) drops less.
    config.sparse.adjust_prune_rate = True
    config.weight_averaging.enabled = True
    config.weight_averaging.start_fraction = 0.8
    return config


def divide_and_cotrain(dataset="cifar100", num_splits=2):
    """WRN-28-10 divided into S members and co-trained (S=1 gives the undivided baseline)."""
    config = _cifar_base(dataset)
    config.epochs = 300
    config.optimizer.nesterov = True
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 20
    config.optimizer.warmup_from = 5e-3  # slow_start_lr
    config.optimizer.min_learning_rate = 1e-4  # end_lr
    # get_parameter_groups skips names with "norm" or "bias"; its WRN names BatchNorm "bn", so gamma decays.
    config.optimizer.weight_decay_scope = "all_but_biases"
    config.sparse.method = "dense"
    # Paper, Table II caption: weight decay is not divided on CIFAR-100 (Table III: divided on CIFAR-10).
    # parser_params.py divides whenever is_div_wd=1; its `dataset != 'cifar100'` condition is commented out.
    config.ensemble.divide_weight_decay = dataset != "cifar100"
    if num_splits > 1:
        config.ensemble.kind = "dnc"
        config.ensemble.num_members = num_splits
        config.ensemble.cotraining_weight = 0.5
        config.ensemble.cotraining_warmup_epochs = 40
        config.ensemble.cotraining_ramp = "epoch"
        config.ensemble.cotraining_min_weight = 0.005
        config.ensemble.views = dataset  # crop + flip (+ AutoAugment on CIFAR-10) + RandomErasing
    return config


def freetickets_imagenet(sparsity=0.8, num_members=4):
    """FreeTickets' EDST run of ResNet-50 on ImageNet (`imagenet2012` prepared for tfds).

    Weight decay acts on kernels only: the official code skips parameters named
    "bn" (it still decays the classifier bias and the shortcut BatchNorm, and
    keras.applications' ResNet-50 has conv biases the official one lacks).

    DST updates every 4000 steps run to the end (`ImageNet/main.py`,
    `train_loop`): the drop fraction decays from 0.5 to 0.005 along one cosine
    over epochs 0-100 (exploration and the first refinement phase), and
    restarts at 0.5 with a fresh 70-epoch cosine after each global exploration
    (epochs 100, 170, 240). Growth by the update step's own gradient
    (`ImageNet/core.py` reads `weight.grad`). Departure: the best-validation
    checkpoint of each phase is not kept (the phase's last epoch is the ticket).
    """
    config = fashion_mnist_defaults()
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.model = "resnet50"
    config.width = 1.0
    config.batch_size = 128
    config.label_smoothing = 0.1
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.weight_decay_scope = "kernels"
    config.optimizer.warmup_epochs = 5
    # ImageNet/resnet.py run with `-c fanin` (ImageNet/imagenet_script): kaiming_normal_(mode='fan_in') convolutions,
    # nn.Linear's default classifier; nn.BatchNorm2d's momentum 0.1 (Keras 0.9) and epsilon 1e-5.
    config.kernel_initializer = "he_normal_fan_in"
    config.batchnorm_momentum = 0.9
    config.batchnorm_epsilon = 1e-5
    config.sparse.method = "rigl"
    config.sparse.sparsity = sparsity
    config.sparse.distribution = "erk"
    config.sparse.update_every = 4000
    config.sparse.drop_fraction = 0.5
    config.sparse.decay = "cosine"
    config.sparse.min_drop_fraction = 0.005  # CosineDecay's eta_min in the code
    config.sparse.end_fraction = 1.0
    # ImageNet/core.py masks the momentum every step and grows before zeroing, so only its growth
    # gradient departs from RigL's defaults: weight.grad of the update step's batch.
    config.sparse.growth_gradient = "step_batch"
    config.ensemble.kind = "edst"
    config.ensemble.restart_schedule_after_exploration = True
    config.ensemble.num_members = num_members
    config.ensemble.exploration_epochs = 30
    config.ensemble.refinement_epochs = 70
    config.ensemble.refinement_lr_factors = (0.1, 0.01, 0.001)
    config.ensemble.refinement_lr_epochs = (30, 30, 10)
    config.ensemble.large_drop_fraction = 0.8
    config.epochs = 30 + num_members * 70
    return config
