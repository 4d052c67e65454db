"""The random views each Divide-and-Co-training member sees of a batch (official `dataset/factory.py`).

The official CIFAR training transform of every member is, on images in [0, 1]:

- CIFAR-10: random crop with 4 px zero padding, horizontal flip, AutoAugment's
  CIFAR-10 policy, normalisation, RandomErasing(p=0.5, area 12.5-20%, aspect
  0.99-1, value 0);
- CIFAR-100: crop, flip, normalisation, RandomErasing(p=0.5, area 6.25-10%,
  aspect 0.99-1, value 0) (`is_autoaugment` is 0 by default in
  `parser_params.py`; `script/train_split.sh` turns it on: "cifar100_autoaugment").

Each member draws its own randomness (a different seed per member), so the
members see different views of the same images. The flip is Keras'
`RandomFlip`; Keras' `RandomCrop` takes one offset for the whole batch and its
`RandomErasing` samples the probability in [0, factor], the two sides of the
box independently and its x and y offsets from one draw, so pad-and-crop and
erasing are written here with the per-image semantics of torchvision. The
members normalise their inputs themselves (`models.LayerOptions`), so erasing
fills with the dataset mean, which is 0 after normalisation, as in the official
code. AutoAugment has no Keras layer: `ensembles/autoaugment.py` writes its
CIFAR-10 policy.
"""

import math

import keras
import tensorflow as tf

from tf_freetickets.ensembles.autoaugment import CIFAR10AutoAugment


class RandomPadCrop(keras.layers.Layer):
    """Pads every image by `padding` pixels and crops a random window of the original size, per image.

    Args:
      padding: pixels added on each side (CIFAR: 4).
      mode: "constant" (zeros) or "reflect".
      seed: seeds the offsets (deterministic sequence of views).
    """

    def __init__(self, padding=4, mode="constant", seed=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("constant", "reflect"):
            raise ValueError(f"Unknown padding mode {mode!r}; use 'constant' or 'reflect'.")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}.")
        self.padding, self.mode, self.seed = int(padding), mode, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        """Random pad-and-crop of each image in training; `images` unchanged otherwise or with padding 0.

        Args:
          images: (N, H, W, C) images.
          training: False returns the input as it is.

        Returns:
          (N, H, W, C) crops of the padded images, one random offset per image.
        """
        if not training or not self.padding:
            return images
        pad, height, width = self.padding, images.shape[1], images.shape[2]
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode=self.mode.upper())
        offsets = keras.random.randint((tf.shape(images)[0], 2), 0, 2 * pad + 1, seed=self.generator)
        rows = offsets[:, :1] + tf.range(height)[None]
        cols = offsets[:, 1:] + tf.range(width)[None]
        return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "mode": self.mode, "seed": self.seed}


class RandomErasingBox(keras.layers.Layer):
    """torchvision's RandomErasing: with probability p, one box of random area and aspect ratio is filled.

    Per image: area a ~ U(scale) * H * W, aspect r = exp(U(log ratio)),
    h = round(sqrt(a r)), w = round(sqrt(a / r)), top-left corner uniform over
    the positions where the box fits; the box gets `fill_value`.

    Args:
      probability: chance that an image is erased.
      scale: (min, max) erased fraction of the image area.
      ratio: (min, max) aspect ratio h / w.
      fill_value: a number or one value per channel (in the images' units).
      seed: seeds the draws.

    Raises:
      ValueError (at call): a box this large may not fit the image; torchvision
        then draws again (up to 10 times), which is not implemented here.
    """

    def __init__(self, probability=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), fill_value=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability!r}.")
        if not 0.0 < scale[0] <= scale[1] < 1.0 or not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"scale={scale!r} must be increasing in (0, 1) and ratio={ratio!r} increasing and positive.")
        self.probability, self.scale, self.ratio, self.seed = float(probability), tuple(scale), tuple(ratio), seed
        self.fill_value = fill_value
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        """Erases one random box in each image with probability `probability`, in training only.

        Args:
          images: (N, H, W, C) images.
          training: False returns the input as it is.

        Returns:
          (N, H, W, C) images, erased boxes set to `fill_value`.

        Raises:
          ValueError: the largest box `scale` and `ratio` allow does not fit H x W.
        """
        if not training:
            return images
        height, width = images.shape[1], images.shape[2]
        area = float(height * width)
        if round(math.sqrt(self.scale[1] * area * self.ratio[1])) >= height or round(
            math.sqrt(self.scale[1] * area / self.ratio[0])
        ) >= width:
            raise ValueError(
                f"RandomErasingBox(scale={self.scale}, ratio={self.ratio}) can draw boxes that do not fit "
                f"{height}x{width} images; torchvision's retries are not implemented."
            )
        batch = tf.shape(images)[0]
        uniform = keras.random.uniform((batch, 5), seed=self.generator)
        erase_area = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * uniform[:, 0])
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = tf.exp(log_low + (log_high - log_low) * uniform[:, 1])
        box_h = tf.round(tf.sqrt(erase_area * aspect))
        box_w = tf.round(tf.sqrt(erase_area / aspect))
        top = tf.floor(uniform[:, 2] * (height - box_h + 1))
        left = tf.floor(uniform[:, 3] * (width - box_w + 1))
        erase = uniform[:, 4] < self.probability
        rows = tf.range(height, dtype=tf.float32)[None]
        cols = tf.range(width, dtype=tf.float32)[None]
        in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
        box = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]
        fill = tf.cast(tf.broadcast_to(tf.constant(self.fill_value, tf.float32), [images.shape[-1]]), images.dtype)
        return tf.where(box[..., None], fill, images)

    def get_config(self):
        return {
            **super().get_config(), "probability": self.probability, "scale": self.scale, "ratio": self.ratio,
            "fill_value": self.fill_value, "seed": self.seed,
        }  # fmt: skip


def _flip_translate(seed, mean):
    del mean
    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 1),
    ]


def _crop_flip_erase(scale, autoaugment):
    def layers(seed, mean):
        policy = [CIFAR10AutoAugment(seed=seed + 3)] if autoaugment else []
        return [
            RandomPadCrop(4, "constant", seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed + 1),
            *policy,
            RandomErasingBox(0.5, scale, (0.99, 1.0), fill_value=tuple(mean) if mean is not None else 0.0, seed=seed + 2),
        ]

    return layers


#: Member view pipelines by name: "flip_translate" (flip and a shift of up to 10%, zero fill: the
#: library's small-scale default); the official "cifar10" (crop + flip + AutoAugment + RandomErasing
#: of 12.5-20% of the area), "cifar100" (crop + flip + RandomErasing of 6.25-10%) and
#: "cifar100_autoaugment" (cifar100 with AutoAugment, as the official training script runs it).
VIEW_PIPELINES = {
    "flip_translate": _flip_translate,
    "cifar10": _crop_flip_erase((0.125, 0.2), autoaugment=True),
    "cifar100": _crop_flip_erase((0.0625, 0.1), autoaugment=False),
    "cifar100_autoaugment": _crop_flip_erase((0.0625, 0.1), autoaugment=True),
}


def member_views(name, num_members, seed=0, mean=None):
    """One view augmenter per member, each with its own seeds.

    Args:
      name: a key of `VIEW_PIPELINES`.
      num_members: S.
      seed: base seed; member i uses seeds from seed + 1000 * i.
      mean: per-channel mean of the images in [0, 1], the erasing fill (0 after
        the members' normalisation); None fills with 0.

    Returns:
      list of S `keras.Sequential` layers, called as `view(x, training=True)`
      on float batches (N, H, W, C); identity when `training=False`.

    Raises:
      ValueError: unknown pipeline name.
    """
    if name not in VIEW_PIPELINES:
        raise ValueError(f"Unknown view pipeline {name!r}; use one of {sorted(VIEW_PIPELINES)}.")
    return [
        keras.Sequential(VIEW_PIPELINES[name](seed + 1000 * i, mean), name=f"view_{i}") for i in range(num_members)
    ]
