"""Model builders (Functional Keras models, so `sparsify` can clone them); all return logits."""

from tf_freetickets.models.cifar_resnet import cifar_resnet
from tf_freetickets.models.fused_batch_norm import FusedBatchNormalization, with_fused_batchnorm
from tf_freetickets.models.layer_options import KERNEL_INITIALIZERS, LayerOptions
from tf_freetickets.models.registry import MODELS, WIDTH_ARGUMENT, build_model
from tf_freetickets.models.small_cnn import small_cnn
from tf_freetickets.models.weight_decay import WEIGHT_DECAY_SCOPES, WeightDecay, decay_arguments
from tf_freetickets.models.wide_resnet import wide_resnet

__all__ = [
    "FusedBatchNormalization", "KERNEL_INITIALIZERS", "LayerOptions", "MODELS", "WEIGHT_DECAY_SCOPES", "WIDTH_ARGUMENT",
    "WeightDecay", "build_model", "cifar_resnet", "decay_arguments", "small_cnn", "wide_resnet", "with_fused_batchnorm",
]  # fmt: skip
