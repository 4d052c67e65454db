"""BestValidation: members keep their best validation epoch; EDST tickets their phase's best."""

import keras
import numpy as np
import tensorflow as tf

from tf_freetickets.ensembles.best_validation import BestValidation

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 3)).astype("float32")
Y = RNG.integers(0, 4, size=300)
WEIGHTS = [RNG.normal(size=(3, 4)).astype("float32") for _ in range(9)]  # the model's weights after epoch e


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, use_bias=False)])
    model.build((None, 3))
    return model


def _accuracy(w):
    return float(np.mean(np.argmax(X @ w, axis=-1) == Y))


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.get_weights()[0].copy())


def _drive(callbacks, model, epochs):
    """What fit does around each epoch, with the epoch's 'training' setting the weights."""
    for callback in callbacks:
        callback.set_model(model)
    for epoch in range(epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        model.set_weights([WEIGHTS[epoch]])
        for callback in callbacks:
            callback.on_epoch_end(epoch, {})
    for callback in callbacks:
        callback.on_train_end()


def _validation():
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(64)


def test_single_run_ends_with_its_best_epoch():
    accuracies = [_accuracy(w) for w in WEIGHTS]
    model = _model()
    tracker = BestValidation(_validation())
    _drive([tracker], model, len(WEIGHTS))
    best = int(np.argmax(accuracies))  # first of ties, as the official `val_acc > best_acc`
    assert tracker.history == accuracies
    assert (tracker.best_epoch, tracker.best_accuracy) == (best, accuracies[best])
    np.testing.assert_array_equal(model.get_weights()[0], WEIGHTS[best])


def test_edst_tickets_are_each_phases_best_and_training_continues_from_the_last_weights():
    # Exploration epochs 0-2, then three phases of two epochs: tickets after epochs 4, 6 and 8.
    accuracies = [_accuracy(w) for w in WEIGHTS]
    model = _model()
    tracker = BestValidation(_validation(), reset_epochs=(3, 5, 7), restore_at_end=False)
    recorder = _Recorder()
    after = _Recorder()
    _drive([*tracker.around(recorder, save_epochs=(4, 6, 8)), after], model, len(WEIGHTS))
    for epoch in range(len(WEIGHTS)):
        if epoch in (4, 6, 8):
            phase = [epoch - 1, epoch]
            best = phase[int(np.argmax([accuracies[e] for e in phase]))]
            np.testing.assert_array_equal(recorder.seen[epoch], WEIGHTS[best])
        else:
            np.testing.assert_array_equal(recorder.seen[epoch], WEIGHTS[epoch])
        np.testing.assert_array_equal(after.seen[epoch], WEIGHTS[epoch])  # checkpoints see the last weights
    np.testing.assert_array_equal(model.get_weights()[0], WEIGHTS[-1])


def test_state_round_trip_continues_the_best():
    model = _model()
    tracker = BestValidation(_validation())
    _drive([tracker], model, 4)
    resumed = BestValidation(_validation())
    resumed.set_model(model)
    resumed.set_state(tracker.get_state())
    assert (resumed.best_epoch, resumed.best_accuracy) == (tracker.best_epoch, tracker.best_accuracy)
    model.set_weights([WEIGHTS[5]])
    resumed.on_train_end()
    np.testing.assert_array_equal(model.get_weights()[0], WEIGHTS[tracker.best_epoch])
