"""tf.data pipelines for image classification arrays."""

import tensorflow as tf


def _normalise(images):
    return tf.cast(images, tf.float32) / 255.0


#: How pad-and-crop fills the border: "constant" (zeros; torchvision's RandomCrop(32, padding=4)) or
#: "reflect" (mirrored without repeating the edge; FreeTickets' and CigL's CIFAR-10 code).
CROP_PADDINGS = ("constant", "reflect")


def _augment(image, seed, crop_padding="constant"):
    """Random horizontal flip and pad-and-crop (4 px at 32x32 as for CIFAR, 2 px below), stateless from `seed`."""
    pad = 4 if image.shape[0] >= 32 else 2
    image = tf.image.stateless_random_flip_left_right(image, seed)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT" if crop_padding == "reflect" else "CONSTANT")
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed + 1)


_EPOCH_STRIDE = 1_000_003


def steps_per_epoch(num_examples, batch_size):
    """Full batches per epoch (the partial last batch is dropped)."""
    return num_examples // batch_size


def train_dataset(
    images, labels, batch_size, seed=0, augment=True, start_epoch=0, num_epochs=None, crop_padding="constant"
):
    """Epoch-indexed training stream of (image float32 in [0, 1], label) batches.

    Epoch e is a permutation of the examples drawn from (seed, e), and each
    example's augmentation from (seed, e, position), so the stream from any
    epoch on is the same whether training started there (resumed from a
    checkpoint) or ran through. Pass `steps_per_epoch(len(images), batch_size)`
    to `model.fit`, which then reads the stream epoch after epoch.

    Args:
      images: uint8 array (N, H, W, C); labels: int array (N,).
      batch_size: examples per batch; each epoch's partial last batch is
        dropped so every step (and every replica's share) has the same size.
      seed: seeds the shuffles and the augmentation.
      augment: random horizontal flip and pad-and-crop (the CIFAR recipe: 4
        pixels at 32x32, 2 at 28x28).
      start_epoch: first epoch of the stream (the resume point).
      num_epochs: end of the stream (exclusive); None repeats forever.
      crop_padding: one of `CROP_PADDINGS`, the border of the pad-and-crop.

    Raises:
      ValueError: an unknown `crop_padding`.
    """
    if crop_padding not in CROP_PADDINGS:
        raise ValueError(f"Unknown crop_padding {crop_padding!r}; use one of {CROP_PADDINGS}.")
    images = tf.convert_to_tensor(images)
    labels = tf.convert_to_tensor(labels)
    size = int(images.shape[0])

    def one_epoch(epoch):
        epoch_seed = tf.cast(seed, tf.int64) * _EPOCH_STRIDE + epoch
        key = tf.stack([epoch_seed, tf.constant(0, tf.int64)])

        def prepare(position):
            # A stateless permutation of the examples for this epoch.
            index = tf.random.experimental.index_shuffle(position, key, size - 1)
            image = _normalise(tf.gather(images, index))
            if augment:
                image = _augment(image, tf.stack([epoch_seed, position]), crop_padding)
            return image, tf.gather(labels, index)

        positions = tf.data.Dataset.range(size)
        return positions.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True)

    end = num_epochs if num_epochs is not None else tf.int64.max
    return tf.data.Dataset.range(start_epoch, end).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images, labels, batch_size=512):
    """Batched evaluation batches in file order, no augmentation."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.map(lambda x, y: (_normalise(x), y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
