"""Keras 3 `fit` under MultiWorkerMirroredStrategy: a work-around for keras-team/keras#20585.

Before its first step, Keras' TensorFlow trainer builds the model's metrics
symbolically from one batch, which it gets by `strategy.reduce("MEAN", batch)`
over the replicas. CollectiveAllReduceStrategy (MultiWorkerMirroredStrategy)
cannot reduce a nested (x, y) structure of per-replica values, so `fit` fails
before training starts. Only the batch's shapes and dtypes matter for that
build, so `enable_multi_worker_fit` makes the model build from the first local
replica's share of the batch instead: no cross-worker communication, same
result. Every step then hits a second failure of the same kind (scalar logs
reduced along axis 0), which it avoids by returning the logs as vectors.
"""

import types

import tensorflow as tf


def _maybe_symbolic_build_from_local_batch(self, iterator=None, data_batch=None):
    if self._distribute_strategy is None:
        return  # Keras defers the build to the first traced step
    if iterator is not None:
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tf.nest.map_structure(
                lambda v: (
                    self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                batch,
            )
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def enable_multi_worker_fit(model):
    """Lets `model.fit` run under MultiWorkerMirroredStrategy in Keras 3 (keras-team/keras#20585).

    On this model instance only: the trainer step that builds the metrics from
    one reduced batch uses the first local replica's batch instead (shapes and
    dtypes are all it needs), and `train_step` / `test_step` return their
    scalar logs as shape-(1,) tensors so Keras can reduce them across workers
    (the logged values are then the mean over all replicas). Does nothing
    unless the model was built under a MultiWorkerMirroredStrategy;
    `experiments.run` applies it to every model it trains.

    Args:
      model: a Keras model built and compiled in a `tf.distribute` strategy scope.

    Returns:
      the same model.

    Raises:
      TypeError: `model` is not a Keras model with the TensorFlow trainer.
    """
    if not hasattr(model, "_maybe_symbolic_build") or not hasattr(model, "_symbolic_build"):
        raise TypeError(f"enable_multi_worker_fit needs a Keras 3 model on the TensorFlow backend, got {type(model).__name__}.")
    if not isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build_from_local_batch, model)
    for name in ("train_step", "test_step"):
        setattr(model, name, types.MethodType(_with_vector_logs(getattr(type(model), name)), model))
    return model


def _with_vector_logs(step):
    """`step` with its scalar logs as shape-(1,) tensors.

    Under collective ops Keras reduces each per-replica log with
    reduce("MEAN", axis=0), which fails on scalars; on shape (1,) it gives the
    mean over every replica of every worker, a scalar again.
    """

    def step_with_vector_logs(self, data):
        logs = step(self, data)
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]) if tf.convert_to_tensor(v).shape.rank == 0 else v, logs)

    return step_with_vector_logs
