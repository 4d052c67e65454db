"""Keep the weights of the best validation epoch, as the official CIFAR scripts keep their best checkpoint.

FreeTickets' `main_DST.py` and `main_EDST.py` hold out the last 10% of the
training set (5,000 CIFAR images), evaluate on it after every epoch and save
the model whenever the validation accuracy beats the best so far; EDST resets
the best at each refinement phase, so each ticket is its phase's best epoch.
`BestValidation` does the same in Keras:

- a single run (a DST member) ends with the best epoch's weights;
- with `reset_epochs` (EDST: the first epoch of each phase) the best restarts
  there, and `around(edst)` lets the EDST callback save each ticket from the
  phase's best weights while training goes on from the last ones, as the
  official script does.

The weights (every model variable: kernels, masks, BatchNorm statistics) are
held in memory and in the epoch checkpoints (`get_state`), so a resumed run
ends the same way.
"""

import keras
import numpy as np


class BestValidation(keras.callbacks.Callback):
    """Tracks validation accuracy after every epoch and keeps the best epoch's weights.

    Args:
      validation_data: batches of (images, labels) (labels integer classes).
      reset_epochs: 0-based epochs at whose start the best is forgotten (EDST:
        the first epoch of every refinement phase).
      restore_at_end: put the best weights in the model when training ends
        (single runs); EDST's tickets use `around` instead.

    Attributes:
      best_accuracy, best_epoch: of the current phase (-1 before any epoch).
      history: validation accuracy of every epoch.
    """

    def __init__(self, validation_data, reset_epochs=(), restore_at_end=True):
        super().__init__()
        self.validation_data = validation_data
        self.reset_epochs = {int(e) for e in reset_epochs}
        self.restore_at_end = restore_at_end
        self.best_accuracy, self.best_epoch, self.history = -1.0, -1, []
        self._best_weights = None
        self._held = None  # the last weights while the best are swapped in
        self.save_epochs = set()

    def accuracy(self):
        """The model's accuracy on `validation_data` (inference mode)."""
        correct = total = 0
        for images, labels in self.validation_data:
            predictions = np.argmax(np.asarray(self.model(images, training=False)), axis=-1)
            correct += int(np.sum(predictions == np.asarray(labels).reshape(-1)))
            total += len(predictions)
        if not total:
            raise ValueError("BestValidation's validation_data is empty.")
        return correct / total

    def on_epoch_begin(self, epoch, logs=None):
        self._swap_back()
        if epoch in self.reset_epochs:
            self.best_accuracy, self.best_epoch, self._best_weights = -1.0, -1, None

    def on_epoch_end(self, epoch, logs=None):
        accuracy = self.accuracy()
        self.history.append(accuracy)
        if logs is not None:
            logs["val_best_accuracy"] = accuracy
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            self._best_weights = [np.array(w) for w in self.model.get_weights()]
        if epoch in self.save_epochs:
            self.swap_in_best()

    def on_train_end(self, logs=None):
        self._swap_back()
        if self.restore_at_end and self._best_weights is not None:
            self.model.set_weights(self._best_weights)

    def swap_in_best(self):
        """Puts the best weights in the model, holding the current ones until `_swap_back`."""
        if self._best_weights is None or self._held is not None:
            return
        self._held = self.model.get_weights()
        self.model.set_weights(self._best_weights)

    def _swap_back(self):
        if self._held is not None:
            self.model.set_weights(self._held)
            self._held = None

    def around(self, callback, save_epochs):
        """[self, callback, back]: `callback` sees the best weights at the end of each epoch in `save_epochs`.

        At the end of a save epoch (EDST: a ticket epoch) this tracker swaps the
        phase's best weights in, `callback` (EDST) saves them, and `back` puts
        the last weights back before anything else (epoch checkpoints, the next
        epoch, the global exploration) sees the model. Pass the three to `fit`
        in this order.
        """
        self.save_epochs = {int(e) for e in save_epochs}
        return [self, callback, _SwapBack(self)]

    def get_state(self):
        """Best accuracy, epoch and weights so far (for `experiments.checkpointing.EpochCheckpoint`)."""
        state = {"best": np.asarray([self.best_accuracy, self.best_epoch], np.float64)}
        for index, value in enumerate(self._best_weights or []):
            state[f"weights/{index}"] = value
        return state

    def set_state(self, state):
        """Continues from a checkpoint's best."""
        self.best_accuracy, best_epoch = (float(v) for v in state["best"])
        self.best_epoch = int(best_epoch)
        count = len([key for key in state if key.startswith("weights/")])
        self._best_weights = [np.asarray(state[f"weights/{i}"]) for i in range(count)] or None


class _SwapBack(keras.callbacks.Callback):
    """Puts the last weights back after the callback between it and its tracker has seen the best ones."""

    def __init__(self, tracker):
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch, logs=None):
        self.tracker._swap_back()
