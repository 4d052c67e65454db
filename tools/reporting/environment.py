"""Where a study or benchmark ran: library versions, CPU model and vector ISA, core count, date.

Wall times depend on the CPU's vector ISA as much as on its name, so every
record and benchmark names both.
"""

import datetime
import os
import platform


def vector_isa(flags):
    """The widest x86 vector ISA among /proc/cpuinfo `flags` ("AVX-512", "AVX2", "AVX"), else "".

    A virtual machine often reports only a family name ("AMD EPYC"), and two
    machines of that name can differ 2x in TensorFlow's speed by this alone.
    """
    flags = set(flags)
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return ""


def cpu_model():
    """The CPU's model name and widest vector ISA, e.g. "AMD EPYC (AVX-512)": wall times depend on both.

    Read from `/proc/cpuinfo`; elsewhere `platform.processor()` alone.
    """
    name, flags = None, []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and name is None:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    if name is None:
        return platform.processor() or "unknown CPU"
    isa = vector_isa(flags)
    return f"{name} ({isa})" if isa else name


def environment():
    """TensorFlow / Keras / Python versions, CPU count, machine and date of this run."""
    import keras
    import tensorflow as tf

    return {
        "date": datetime.date.today().isoformat(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
    }
