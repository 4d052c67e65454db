"""Imports TensorFlow without the C++ start-up lines its native libraries print before logging is set up.

TensorFlow's libraries log (oneDNN, CUDA stubs, CPU features) through absl
before absl's logging is initialised, which ignores TF_CPP_MIN_LOG_LEVEL, so
every `python -m tf_freetickets.train` began with about ten lines of noise.
Importing this module (the package does it first) imports TensorFlow that way,
and hides two false alarms every sparse training run would otherwise print
(`hide_false_alarms`). Only a program that imports `tf_freetickets` before
`keras` or `tensorflow` is spared the start-up lines.
"""

import logging
import os
import sys
import warnings

# Keras 3.15 warns on every `fit` over a tf.data.Dataset, because `fit`'s
# default is shuffle=True; the package's pipelines shuffle inside the dataset.
_SHUFFLE_WARNING = r"`shuffle=True` was passed, but will be ignored since the data `x` was provided as a tf\.data\.Dataset"


def import_tensorflow_quietly():
    """Imports TensorFlow and finds its devices without its C++ start-up lines on stderr.

    TensorFlow's native libraries log (oneDNN, CUDA stubs, CPU features)
    through absl before their logging is initialised, which ignores
    TF_CPP_MIN_LOG_LEVEL; so stderr (file descriptor 2) points to a
    temporary file meanwhile. If the import fails, what was written is
    replayed. With TF_CPP_MIN_LOG_LEVEL set to 0 or 1 nothing is hidden;
    log lines after the import follow TF_CPP_MIN_LOG_LEVEL as usual.
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        import tensorflow as tf

        return tf
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf


class _EngineRetracingFilter(logging.Filter):
    """Drops TensorFlow's frequent-retracing warning about `MaskEngine`'s per-engine functions.

    Each engine compiles its own functions over its own model's variables, so
    each is traced once. TensorFlow counts traces per Python code object, not
    per function instance, so the sixth sparse model trained in one process
    was reported as "5 out of the last 5 calls ... triggered tf.function
    retracing". Other functions' warnings pass.
    """

    def filter(self, record):
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "<function MaskEngine." in message)


def hide_false_alarms():
    """Hides two warnings that say nothing about the user's program; idempotent.

    Keras' "`shuffle=True` was passed, but will be ignored" on every `fit`
    over a tf.data.Dataset (`fit`'s default; shuffle the dataset itself, as
    `tft.data.train_dataset` does), and TensorFlow's retracing warning about
    the mask engine's per-model functions (`_EngineRetracingFilter`).
    """
    warnings.filterwarnings("ignore", message=_SHUFFLE_WARNING, category=UserWarning)
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _EngineRetracingFilter) for f in logger.filters):
        logger.addFilter(_EngineRetracingFilter())


import_tensorflow_quietly()
hide_false_alarms()
