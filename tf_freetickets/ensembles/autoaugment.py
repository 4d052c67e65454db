"""AutoAugment's CIFAR-10 policy (Cubuk et al. 2019) as a Keras layer, per image.

Divide-and-Co-training's CIFAR-10 member views apply it after the crop and the
flip (official `dataset/autoaugment.py`, `CIFAR10Policy`, PIL operations on
uint8 images). Keras has no AutoAugment layer (its `RandAugment` draws
operations and magnitudes at random, a different policy), so it is written here.

Each image gets one of the 25 sub-policies, uniformly; a sub-policy is two
operations, each applied with its own probability at a fixed magnitude, with a
random sign for the signed operations (shear, translate, colour, contrast,
sharpness, brightness). The operations follow PIL's definitions on 0..255
values and round to integers after each one, as PIL's uint8 images do.
Geometric operations fill with grey 128 and sample the nearest pixel
(PIL's shear uses bicubic sampling: bilinear here, the closest TF offers);
pixel-centre conventions may differ from PIL's by half a pixel.
"""

import math

import keras
import tensorflow as tf

# Magnitude index m in 0..9 -> operation argument, as the AutoAugment paper's ranges.
_RANGES = {
    "shearY": lambda m: 0.3 * m / 9,
    "translateX": lambda m: (150 / 331) * m / 9,
    "translateY": lambda m: (150 / 331) * m / 9,
    "rotate": lambda m: 30.0 * m / 9,
    "color": lambda m: 0.9 * m / 9,
    "posterize": lambda m: int(round(8 - 4 * m / 9)),
    "solarize": lambda m: 256.0 - 256.0 * m / 9,
    "contrast": lambda m: 0.9 * m / 9,
    "sharpness": lambda m: 0.9 * m / 9,
    "brightness": lambda m: 0.9 * m / 9,
    "autocontrast": lambda m: 0.0,
    "equalize": lambda m: 0.0,
    "invert": lambda m: 0.0,
}

#: The 25 sub-policies found on reduced CIFAR-10: ((op, probability, magnitude index), (op, p, m)).
CIFAR10_POLICY = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translateX", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shearY", 0.5, 8), ("translateY", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)),
    (("shearY", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translateX", 0.5, 8)),
    (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translateY", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.6, 4)),
    (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)),
    (("translateY", 0.9, 9), ("translateY", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)),
    (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translateY", 0.7, 9), ("autocontrast", 0.9, 1)),
)

_FILL = 128.0


def _blend(degenerate, image, factor):
    # PIL's Image.blend truncates towards zero into uint8.
    return tf.clip_by_value(tf.floor(degenerate + factor * (image - degenerate)), 0.0, 255.0)


def _grayscale(image):
    # PIL's "L" conversion: L = R * 299/1000 + G * 587/1000 + B * 114/1000.
    return tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _affine(image, matrix, interpolation="NEAREST"):
    """PIL's `Image.transform(AFFINE, (a, b, c, d, e, f))`: output (x, y) samples input (ax + by + c, dx + ey + f).

    PIL maps pixel centres (x + 0.5, y + 0.5); TF maps integer positions, hence the shifted offsets.
    """
    a, b, c, d, e, f = matrix
    c = c + 0.5 * (a + b - 1.0)
    f = f + 0.5 * (d + e - 1.0)
    transform = tf.cast(tf.stack([[a, b, c, d, e, f, 0.0, 0.0]]), tf.float32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=_FILL, interpolation=interpolation, fill_mode="CONSTANT",
    )  # fmt: skip
    return out[0]


def _equalize_channel(channel):
    # PIL's ImageOps.equalize on one channel of integer values 0..255.
    values = tf.cast(channel, tf.int32)
    histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(histogram) - nonzero[-1]) // 255
    lut = (step // 2 + tf.concat([[0], tf.cumsum(histogram)[:-1]], axis=0)) // tf.maximum(step, 1)
    lut = tf.minimum(lut, 255)
    return tf.where(step > 0, tf.cast(tf.gather(lut, values), tf.float32), channel)


def _autocontrast_channel(channel):
    low, high = tf.reduce_min(channel), tf.reduce_max(channel)
    scale = 255.0 / tf.maximum(high - low, 1.0)
    stretched = tf.clip_by_value(tf.floor((channel - low) * scale), 0.0, 255.0)
    return tf.where(high > low, stretched, channel)


def _apply(name, magnitude, image, sign):
    """One PIL operation on a (H, W, 3) float image of integer values 0..255."""
    height, width = image.shape[0], image.shape[1]
    if name == "invert":
        return 255.0 - image
    if name == "posterize":
        step = 2.0 ** (8 - magnitude)
        return tf.floor(image / step) * step
    if name == "solarize":
        return tf.where(image < magnitude, image, 255.0 - image)
    if name == "autocontrast":
        return tf.stack([_autocontrast_channel(image[..., c]) for c in range(3)], axis=-1)
    if name == "equalize":
        return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)
    factor = 1.0 + magnitude * sign
    if name == "brightness":
        return _blend(tf.zeros_like(image), image, factor)
    if name == "color":
        return _blend(tf.repeat(tf.round(_grayscale(image)), 3, axis=-1), image, factor)
    if name == "contrast":
        mean = tf.floor(tf.reduce_mean(_grayscale(image)) + 0.5)
        return _blend(tf.fill(tf.shape(image), mean), image, factor)
    if name == "sharpness":
        kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
        kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
        smooth = tf.round(tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0])
        # PIL's SMOOTH filter leaves the one-pixel border as it was.
        degenerate = tf.pad(smooth - image[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + image
        return _blend(degenerate, image, factor)
    offset = magnitude * sign
    if name == "translateX":
        return _affine(image, (1.0, 0.0, offset * width, 0.0, 1.0, 0.0))
    if name == "translateY":
        return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, offset * height))
    if name == "shearY":
        return _affine(image, (1.0, 0.0, 0.0, offset, 1.0, 0.0), "BILINEAR")
    if name == "rotate":
        # PIL's rotate(angle): counter-clockwise about the centre (no random sign in this policy).
        angle = -math.radians(magnitude)
        cos, sin = math.cos(angle), math.sin(angle)
        cx, cy = width / 2.0, height / 2.0
        matrix = [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy]
        return _affine(image, matrix)
    raise ValueError(f"Unknown AutoAugment operation {name!r}.")


class CIFAR10AutoAugment(keras.layers.Layer):
    """AutoAugment's CIFAR-10 policy on a batch of images in [0, 1], one random sub-policy per image.

    Args:
      seed: seeds the sub-policy choices, the coins and the signs.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False  # histogram (equalize) and per-image branches: no XLA
        self._branches = [self._sub_policy(ops) for ops in CIFAR10_POLICY]

    @staticmethod
    def _sub_policy(operations):
        def run(image, coins, signs):
            for k, (name, probability, index) in enumerate(operations):
                magnitude = _RANGES[name](index)
                image = tf.cond(
                    coins[k] < probability,
                    lambda image=image, name=name, magnitude=magnitude, k=k: tf.clip_by_value(
                        tf.round(_apply(name, magnitude, image, signs[k])), 0.0, 255.0
                    ),
                    lambda image=image: image,
                )
            return image

        return run

    def call(self, images, training=True):
        """Applies one random sub-policy to each image in training; returns `images` unchanged otherwise.

        Args:
          images: (N, H, W, 3) RGB images in [0, 1] (any float dtype).
          training: False returns the input as it is.

        Returns:
          (N, H, W, 3) augmented images in [0, 1], the input's dtype (rounded
          to steps of 1/255, as the PIL operations work on 8-bit pixels).
        """
        if not training:
            return images
        if images.shape[-1] != 3:
            raise ValueError(f"AutoAugment's CIFAR-10 policy takes RGB images, got {images.shape[-1]} channel(s).")
        batch = tf.shape(images)[0]
        choice = keras.random.randint((batch,), 0, len(CIFAR10_POLICY), seed=self.generator)
        draws = keras.random.uniform((batch, 4), seed=self.generator)
        coins, signs = draws[:, :2], tf.where(draws[:, 2:] < 0.5, -1.0, 1.0)
        pixels = tf.round(tf.cast(images, tf.float32) * 255.0)

        def one(args):
            image, index, coin, sign = args
            branches = [lambda b=b: b(image, coin, sign) for b in self._branches]
            return tf.switch_case(index, branches)

        out = tf.map_fn(one, (pixels, choice, coins, signs), fn_output_signature=tf.float32)
        return tf.cast(out / 255.0, images.dtype)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
