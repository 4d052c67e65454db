"""tf.data pipelines for image classification arrays."""

import tensorflow as tf


def _normalise(images):
    return tf.cast(images, tf.float32) / 255.0


def _augment(image, seed):
    """Random horizontal flip and 2-pixel pad-and-crop, stateless from `seed`."""
    height, width = image.shape[0], image.shape[1]
    image = tf.image.stateless_random_flip_left_right(image, seed)
    padded = tf.image.pad_to_bounding_box(image, 2, 2, height + 4, width + 4)
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed + 1)


def train_dataset(images, labels, batch_size, seed=0, augment=True, shuffle_buffer=60000):
    """Shuffled, augmented, batched training batches of (image float32 in [0,1], label).

    Args:
      images: uint8 array (N, H, W, C); labels: int array (N,).
      batch_size: examples per batch; the last partial batch is dropped so every
        step (and every replica's share) has the same size.
      seed: seeds the shuffle and the augmentation; the same seed gives the same
        stream.
      augment: random flip and pad-crop (the CIFAR recipe, 2 px for 28x28).
    """
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(min(shuffle_buffer, len(images)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, y: (_normalise(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda xy, i: (_augment(xy[0], tf.stack([tf.cast(seed, tf.int64), i])), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images, labels, batch_size=512):
    """Batched evaluation batches in file order, no augmentation."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.map(lambda x, y: (_normalise(x), y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
