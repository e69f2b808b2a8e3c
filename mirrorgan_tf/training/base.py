"""What the trainers share: a Keras model whose networks are built on construction."""

from __future__ import annotations

import keras


class PrebuiltTrainer(keras.Model):
    """A trainer whose networks are built on construction: `fit` reads no batch to build it.

    Under a tf.distribute strategy, Keras (TensorFlow backend) takes a first batch from a
    first iterator of the dataset to build the model symbolically, then starts the dataset
    again. A seeded dataset that reshuffles per iteration (the runs' datasets) then feeds a
    distributed run other batches than a single-device one. When everything is built
    already there is nothing to learn from that batch: skip it.

    `_maybe_symbolic_build` is a private hook of Keras 3's TensorFlow trainer: if a Keras
    upgrade stops calling it, the distributed runs read other batches than the single-device
    ones, and tests/training/test_distribute.py fails.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        built = all(layer.built for layer in self._flatten_layers())
        if built and (self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
