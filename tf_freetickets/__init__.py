"""tf_freetickets: sparse training and sparse ensembles for Keras 3 / TensorFlow.

The top level re-exports the everyday API:

    import tf_freetickets as tft
    model = tft.sparsify(model, sparsity=0.9, distribution="erk")
    model.fit(ds, callbacks=[tft.MaskUpdate(tft.RigL(update_every=100), gradient_data=ds)])
    print(tft.sparsity_table(model))

Importing the package never imports `tf_keras` or tensorflow-model-optimization,
so `tf.keras` keeps resolving to whatever it resolved to before. Import it
before `keras` or `tensorflow` to keep TensorFlow's C++ start-up lines off
stderr; it also hides two false alarms (`tensorflow_startup.hide_false_alarms`).
"""

import tf_freetickets.tensorflow_startup  # noqa: F401  (first: imports TensorFlow without its start-up noise)
from tf_freetickets import data, ensembles, metrics, models, sparse
from tf_freetickets.deploy.compact import compact
from tf_freetickets.ensembles import EDST, CoTrainingModel, EnsembleModel, WeightAveraging, train_independent_ensemble
from tf_freetickets.multi_worker import enable_multi_worker_fit
from tf_freetickets.sparse import (
    SET,
    SNFS,
    Chase,
    CigL,
    ConstantSparsity,
    GradualMagnitudePruning,
    MaskUpdate,
    MaskUpdater,
    PolynomialDecay,
    PruningSchedule,
    RigL,
    SRigL,
    Static,
    global_sparsity,
    init_masks,
    layer_densities,
    masked_class_for,
    sparsify,
    sparsity_table,
    strip_masks,
)
from tf_freetickets.sparse.strip import strip

__version__ = "0.2.0"

__all__ = [
    "ConstantSparsity",
    "GradualMagnitudePruning",
    "PolynomialDecay",
    "PruningSchedule",
    "Chase",
    "CigL",
    "compact",
    "EDST",
    "CoTrainingModel",
    "EnsembleModel",
    "WeightAveraging",
    "train_independent_ensemble",
    "enable_multi_worker_fit",
    "ensembles",
    "metrics",
    "SET",
    "SNFS",
    "SRigL",
    "MaskUpdate",
    "MaskUpdater",
    "RigL",
    "Static",
    "global_sparsity",
    "init_masks",
    "layer_densities",
    "masked_class_for",
    "data",
    "models",
    "sparse",
    "sparsify",
    "sparsity_table",
    "strip",
    "strip_masks",
]
