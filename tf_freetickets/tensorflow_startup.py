"""Imports TensorFlow without the C++ start-up lines its native libraries print before logging is set up.

TensorFlow's libraries log (oneDNN, CUDA stubs, CPU features) through absl
before absl's logging is initialised, which ignores TF_CPP_MIN_LOG_LEVEL, so
every `python -m tf_freetickets.train` began with about ten lines of noise.
Importing this module (the package does it first) imports TensorFlow that way.
"""

import os
import sys


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


import_tensorflow_quietly()
