"""The built-in sparse-training methods, one module each; importing this package registers them.

Order is the order `--config_help` and error messages list them in.
"""

from tf_freetickets.sparse.methods import dense, static, set, rigl, snfs, cigl, gmp, srigl, chase  # noqa: F401, I001  (registers)
