"""Model builders (Functional Keras models, so `sparsify` can clone them)."""

from tf_freetickets.models.small_cnn import small_cnn

__all__ = ["small_cnn"]
