"""The particle / not-particle classifiers.

Two architectures share one interface, a Keras model mapping an
``(size, size, 1)`` image to the probability that it holds a centred particle:

* ``paper``: the network of Sanchez-Garcia et al. (2018), Table 1: four blocks
  of two convolutions with kernels 15, 7, 3, 3, batch normalisation and max
  pooling, then a 512-unit dense layer.  Its width grows with the amount of
  training data as in the original.  Kept as the reference.
* ``fast``: a lean network of small strided convolutions, the default.  It
  reaches the same accuracy at a small fraction of the cost (see
  ``benchmarks/``), because at the downsampled box size the particle is a
  few dozen pixels wide and 15 x 15 kernels at full resolution buy nothing.

TensorFlow is imported inside the functions: Scipion imports every plugin's
protocols in every process, and importing TensorFlow costs seconds.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import keras

ARCHITECTURES = ("fast", "paper")
DEFAULT_SIZE = 32
"""Network input size (px) the boxes are downsampled to by default.  Whether a
box holds a centred particle shows at 32 px (EMPIAR-10017: F1 within 0.01 of
64 px, see ``benchmarks/README.md``), and training is about twice as fast as at
64 px; users with small particles in large boxes can raise it on the form."""
L2_STRENGTH = 1e-5
DROPOUT = 0.5
BN_MOMENTUM = 0.9
"""Faster than Keras' 0.99 so that batch-norm statistics settle within the few
hundred steps that a small AND set gives; validation scores are wrong until they do."""


def paper_width(n_train: int) -> int:
    """Filters of the paper network's first block, chosen by training-set size as in the
    original."""
    if n_train < 1500:
        return 2
    if n_train < 20000:
        return 4
    return 8


def build_model(architecture: str, size: int, n_train: int = 20000) -> "keras.Model":
    """Build an uncompiled classifier for ``size`` x ``size`` particles."""
    if architecture == "paper":
        return _paper_network(size, paper_width(n_train))
    if architecture == "fast":
        return _fast_network(size)
    raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")


def _paper_network(size: int, width: int) -> "keras.Model":
    from keras import layers, models, regularizers

    l2 = regularizers.l2(L2_STRENGTH)
    inputs = layers.Input((size, size, 1))
    x = inputs
    depth = 4
    for block in range(1, depth + 1):
        filters = width * 2 ** (block - 1)
        kernel = max(3, 30 // 2 ** block)
        x = layers.Conv2D(filters, kernel, padding="same", activation="relu",
                          kernel_regularizer=l2)(x)
        x = layers.Conv2D(filters, kernel, padding="same", kernel_regularizer=l2)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation("relu")(x)
        if block < depth:
            pool = max(2, 7 - 2 * (block - 1))
            x = layers.MaxPooling2D(pool, strides=2, padding="same")(x)
    x = layers.AveragePooling2D(4, strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=l2)(x)
    x = layers.Dropout(DROPOUT)(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return models.Model(inputs, outputs, name="deepconsensus_paper")


def _fast_network(size: int) -> "keras.Model":
    from keras import layers, models, regularizers

    l2 = regularizers.l2(L2_STRENGTH)
    inputs = layers.Input((size, size, 1))
    x = layers.Conv2D(16, 5, strides=2, padding="same", use_bias=False,
                      kernel_regularizer=l2)(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.Activation("relu")(x)
    for filters in (32, 64):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=l2)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, kernel_regularizer=l2)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.Activation("relu")(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(DROPOUT)(x)
    x = layers.Dense(64, activation="relu", kernel_regularizer=l2)(x)
    x = layers.Dropout(DROPOUT)(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return models.Model(inputs, outputs, name="deepconsensus_fast")
