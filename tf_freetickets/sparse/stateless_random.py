"""Counter-based randomness: draws that are a pure function of (seed, stream, step).

SET's random growth and CigL's random mask draw from here. With no generator
state to carry, every replica draws the same numbers (design invariant 5) and
a run restored from a checkpoint draws exactly what the uninterrupted run
would have (invariant 6): the step lives in the optimizer's `iterations`.
"""

import random

import tensorflow as tf

_STREAM_STRIDE = 1_000_003  # keeps (seed, stream) pairs apart for streams < stride


def fresh_seed():
    """A random int seed, for when the user gives None."""
    return random.SystemRandom().randrange(2**31 - 1)


def stateless_uniform(shape, seed, stream, step):
    """Uniform [0, 1) float32 numbers of `shape` for (seed, stream, step).

    Args:
      shape: output shape (list or 1-D int tensor).
      seed: int, the run's seed.
      stream: int, e.g. a masked layer's index, so layers draw independently.
      step: int or int scalar tensor, e.g. the optimizer step.
    """
    key = tf.stack([tf.constant(seed * _STREAM_STRIDE + stream, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.stateless_uniform(shape, seed=key)
