"""`EnsembleModel`: a Keras model averaging the probabilities of M members."""

import os
import re
import zipfile

import keras
from keras import ops

from tf_freetickets import keras_compat
from tf_freetickets.metrics.uncertainty import entropy


def _spec(member, index):
    if not isinstance(member, keras.Model) or not member.built or len(member.inputs) != 1 or len(member.outputs) != 1:
        raise ValueError(
            f"Ensemble member {index} ({getattr(member, 'name', member)!r}) must be a built Keras model "
            "with one input and one output."
        )
    return (tuple(member.inputs[0].shape[1:]), str(member.inputs[0].dtype), tuple(member.outputs[0].shape[1:]))


def check_members_agree(members, labels=None):
    """Raises ValueError naming the first member whose input/output spec differs from member 0's.

    Args:
      members: list of built single-input, single-output Keras models.
      labels: optional names for the members in messages (e.g. file paths).

    Returns:
      (input shape per example, input dtype, output shape per example).
    """
    if not members:
        raise ValueError("An ensemble needs at least one member.")
    labels = labels or [f"member {i} ({m.name!r})" for i, m in enumerate(members)]
    reference = _spec(members[0], 0)
    for index, member in enumerate(members[1:], start=1):
        spec = _spec(member, index)
        if spec != reference:
            raise ValueError(
                f"{labels[index]} has input {spec[0]} {spec[1]} -> output {spec[2]}, but {labels[0]} has "
                f"input {reference[0]} {reference[1]} -> output {reference[2]}; ensemble members must agree."
            )
    return reference


def _last_activation(member):
    """"softmax" or "linear" when the member's last layer visibly ends so, else None (not visible or other)."""
    if not keras_compat.is_functional_or_sequential(member) or not member.layers:
        return None
    last = member.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(last, "activation", None), "__name__", None)
    return name if name in ("softmax", "linear") else None


def check_from_logits(members, from_logits, labels=None):
    """Raises ValueError when `from_logits` contradicts a member's visible last activation.

    A member ending in a softmax given `from_logits=True` would be softmaxed
    twice (flattened probabilities, wrong calibration); a member ending in a
    linear layer given `from_logits=False` would be averaged as if its logits
    were probabilities. Members whose last layer cannot be inspected
    (SavedModel wrappers, subclassed models) are trusted.
    """
    labels = labels or [f"member {i} ({m.name!r})" for i, m in enumerate(members)]
    for label, member in zip(labels, members):
        activation = _last_activation(member)
        if from_logits and activation == "softmax":
            raise ValueError(
                f"{label} ends in a softmax but the ensemble has from_logits=True, which would apply softmax twice; "
                "pass from_logits=False."
            )
        if not from_logits and activation == "linear":
            raise ValueError(
                f"{label} ends in a linear layer ({member.layers[-1].name!r}), so it outputs logits, but the ensemble "
                "has from_logits=False; pass from_logits=True."
            )


@keras.saving.register_keras_serializable("tf_freetickets", "EnsembleModel")
class EnsembleModel(keras.Model):
    """Mean-of-probabilities ensemble over member models (FreeTickets Sec. 4).

    Calling it returns the mean of the members' softmax probabilities, (N, C),
    so it compiles and evaluates like any classifier (use a loss/metrics that
    take probabilities). `member_probabilities(x)` gives (M, N, C) and
    `uncertainty(x)` the predictive entropy and mutual information.

    Args:
      members: list of built Keras models with the same input and output
        specs (sparse tickets, DST runs, dense models, DNC members).
      from_logits: members output logits (True, the library's models) or
        probabilities (False). A member whose last layer visibly ends in a
        softmax with True (or in a linear activation with False) is an error.
      name: model name.
      member_labels: names for the members in error messages (file paths).
      member_devices: optional device per member (e.g. ["/GPU:0", "/GPU:1"]) to
        run members side by side, as Divide-and-Co-training's multi-GPU test.

    Saved as `.keras`, it loads with `keras.models.load_model` once
    `tf_freetickets` is imported (members and their masks included).

    Raises:
      ValueError: no members, a member whose spec differs (named), or a
        member whose last activation contradicts `from_logits`.
    """

    def __init__(self, members, from_logits=True, name="ensemble", member_labels=None, member_devices=None, **kwargs):
        super().__init__(name=name, **kwargs)
        members = list(members)
        spec = check_members_agree(members, member_labels)
        check_from_logits(members, from_logits, member_labels)
        if member_devices is not None and len(member_devices) != len(members):
            raise ValueError(f"Got {len(member_devices)} member_devices for {len(members)} members.")
        self.members = members
        self.member_devices = list(member_devices) if member_devices else None
        self.from_logits = from_logits
        self.input_shape_per_example, self.member_input_dtype, self.output_shape_per_example = spec
        # Members are built; marking the ensemble built directly (not via build())
        # leaves its state unlocked for subclasses to add layers and metrics.
        self.built = True

    @property
    def num_members(self):
        """M, the number of members."""
        return len(self.members)

    def _probabilities(self, index, x, training):
        member = self.members[index]
        if self.member_devices:
            import tensorflow as tf

            with tf.device(self.member_devices[index]):
                out = member(x, training=training)
        else:
            out = member(x, training=training)
        return ops.softmax(out, axis=-1) if self.from_logits else out

    def member_probabilities(self, x, training=False):
        """Probabilities of every member, shape (M, N, C).

        In a compiled call (predict, evaluate, the exported `serve`) the members'
        subgraphs share no data, so TensorFlow's executor runs them concurrently
        on its inter-op threads; `member_devices` also puts each on its own device.
        """
        return ops.stack([self._probabilities(i, x, training) for i in range(len(self.members))], axis=0)

    def call(self, x, training=False):
        """Mean of the members' probabilities, (N, C), for inputs `x` of shape (N, ...)."""
        return ops.mean(self.member_probabilities(x, training), axis=0)

    def compute_output_shape(self, input_shape):
        """(N, *member output shape per example) for an input shape (N, ...)."""
        return (input_shape[0], *self.output_shape_per_example)

    def uncertainty(self, x):
        """dict: mean_probabilities (N, C), predictive_entropy (N,), mutual_information (N,).

        Predictive entropy H[mean p]; mutual information H[mean p] - mean H[p_m]
        (the members' disagreement, zero when they agree), natural log.
        """
        probs = self.member_probabilities(x)
        mean = ops.mean(probs, axis=0)
        total = entropy(mean)
        return {
            "mean_probabilities": mean,
            "predictive_entropy": total,
            "mutual_information": total - ops.mean(entropy(probs), axis=0),
        }

    def export(self, filepath, format="tf_saved_model", input_range="auto", **kwargs):
        """Writes one SavedModel with `serve`, `member_probabilities`, `uncertainty` endpoints.

        Every endpoint checks the batch shape, and `input_range` the values:
        "auto" (the default: [0, 1] for float inputs, none for integer ids),
        `(low, high)`, or None for inputs normalised otherwise (ImageNet's
        mean/std); NaN/Inf inputs are always rejected
        (`tf_freetickets.deploy.saved_model`, the one input contract of every
        SavedModel the library writes).
        """
        if format != "tf_saved_model":
            raise ValueError(f"EnsembleModel exports only format='tf_saved_model', got {format!r}.")
        from tf_freetickets.deploy.saved_model import export_ensemble

        return export_ensemble(self, filepath, input_range=input_range)

    def export_fastest(self, filepath, example, forms=None, input_range="auto", runtime="saved_model", **kwargs):
        """Writes the ensemble in the form that serves `example` fastest in `runtime`, and says which.

        The forms (`ensembles.serving_choice`): for runtime "saved_model" (one
        SavedModel at `filepath`) "members" (`export`), "stacked" (one plain
        graph, `deploy.stacked`), "compacted" (stacked after `tft.compact`),
        "compacted_offsets" (after `tft.compact(padded_constants="offset")`);
        for runtime "tflite" (one .tflite file at `filepath`) "stacked",
        "compacted", "compacted_offsets" and "grouped" (`deploy.grouped`). Each is exported,
        reloaded, checked against the mean probability (max abs diff <= 1e-5)
        and timed on `example`; the fastest is kept at `filepath`.

        Args:
          filepath: the SavedModel folder ("saved_model") or .tflite file
            ("tflite") to write; an existing one is replaced only if it is a
            SavedModel (or a .tflite file): `serving_choice.check_target`.
          example: a batch shaped as the serving traffic (the forms are timed on it).
          forms: candidates among the runtime's forms (None: all of them).
          input_range: the SavedModel input contract's range ("auto", (low, high) or None).
          runtime: "saved_model" or "tflite".
          **kwargs: `serving_choice.export_fastest`'s repeats, calls, tolerance, verbose.

        Returns:
          (chosen form, list of `serving_choice.FormTiming`).
        """
        from tf_freetickets.ensembles.serving_choice import export_fastest

        return export_fastest(self, filepath, example, forms=forms, input_range=input_range, runtime=runtime, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "from_logits": self.from_logits,
            "members": [keras.saving.serialize_keras_object(m) for m in self.members],
        }

    @classmethod
    def from_config(cls, config):
        members = [keras.saving.deserialize_keras_object(m) for m in config.pop("members")]
        return cls(members, **config)

    @classmethod
    def from_saved_models(cls, source, from_logits=True, name="ensemble"):
        """Builds an ensemble from saved members.

        Args:
          source: a folder or a list of paths. A folder contributes its
            `*.keras` files if it has any, else its SavedModel sub-folders, in
            natural order (ticket_2 before ticket_10). A `.keras` path is loaded
            with `keras.models.load_model` (masks and all); a SavedModel folder
            is wrapped with `keras.layers.TFSMLayer` on its `serve` endpoint.
          from_logits: whether members output logits.

        Raises:
          FileNotFoundError: nothing to load at `source`.
          ValueError: a member file is empty or damaged, or members disagree on
            input/output specs (the path is named).
        """
        paths = _member_paths(source)
        members = [_load_member(path) for path in paths]
        return cls(members, from_logits=from_logits, name=name, member_labels=[repr(p) for p in paths])


def _natural_key(path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", os.path.basename(path))]


def _is_saved_model(path):
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))


def _member_paths(source):
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if not os.path.isdir(source):
            raise FileNotFoundError(f"No ensemble members at {source!r}: not a folder.")
        entries = sorted((os.path.join(source, e) for e in os.listdir(source)), key=_natural_key)
        paths = [e for e in entries if e.endswith(".keras")] or [e for e in entries if _is_saved_model(e)]
        if not paths:
            raise FileNotFoundError(f"No *.keras files or SavedModel folders in {source!r}.")
        return paths
    paths = [os.fspath(p) for p in source]
    if not paths:
        raise FileNotFoundError("Empty list of ensemble member paths.")
    return paths


def _load_member(path):
    if path.endswith(".keras"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"Ensemble member {path!r} does not exist.")
        import tf_freetickets.sparse.layers  # noqa: F401  (registers the masked layer classes)

        size = os.path.getsize(path)
        if size == 0:
            raise ValueError(f"Ensemble member {path!r} is an empty file (0 bytes): it was not written completely.")
        try:
            return keras.models.load_model(path)
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as error:
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise ValueError(f"Ensemble member {path!r} ({size} bytes) cannot be loaded: {reason}") from None
    if not _is_saved_model(path):
        raise FileNotFoundError(f"Ensemble member {path!r} is neither a .keras file nor a SavedModel folder.")
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    specs = list(signature.structured_input_signature[1].values())
    if len(specs) != 1:
        raise ValueError(f"SavedModel {path!r} has {len(specs)} inputs; ensemble members need one.")
    inputs = keras.Input(shape=specs[0].shape[1:], dtype=specs[0].dtype)
    outputs = keras.layers.TFSMLayer(path, call_endpoint="serve")(inputs)
    name = re.sub(r"\W", "_", os.path.basename(os.path.normpath(path)))
    return keras.Model(inputs, outputs, name=name)
