"""Test session setup: quiet TF logs, two logical CPU devices for tf.distribute, tools/ importable."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The study and results-page code (tools/reporting) is not installed; the tools import it as
# `reporting` from their own folder, and so do the tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import tensorflow as tf  # noqa: E402

# Must run before TF initialises its devices: MirroredStrategy tests need two.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
