"""Training the particle classifier on AND (positive) and NEG (negative) particles.

Follows the paper's recipe: Adam at 1e-4, binary cross-entropy, L2 1e-5 and
dropout 0.5 (in the model), balanced classes, 10% of the data held out for
validation, random flips and 90-degree rotations (the symmetries of a square
box, which change nothing a particle classifier should care about), the
learning rate divided by 10 when the validation loss stalls, and early
stopping that keeps the best weights.  Particles stream from the on-disk
stacks in batches, so memory does not grow with the data, and an epoch holds
at most ``TrainingConfig.epoch_particles`` of each class, so neither does an
epoch's time.
"""
from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras

logger = logging.getLogger(__name__)


def lr_patience_for(patience: int) -> int:
    """Half the early-stopping patience: the lower learning rate gets its chance before
    training stops."""
    return max(1, patience // 2)


@dataclass(frozen=True)
class TrainingConfig:
    """Training hyper-parameters; the defaults are the paper's where it gives them."""

    architecture: str = "fast"
    max_epochs: int = 30
    patience: int = 4
    lr_patience: Optional[int] = None
    """Epochs without a better validation loss before the learning rate drops tenfold;
    None: :func:`lr_patience_for` the patience."""
    learning_rate: float = 1e-4
    batch_size: int = 64
    validation_fraction: float = 0.1
    seed: int = 0
    epoch_particles: int = 25_000
    """At most this many boxes of each class an epoch, the rest in turn in later epochs, and
    at most a fifth of it per class held out (0: every box every epoch, the paper's epoch).
    The early stopping and the learning-rate drop count epochs, so the bound is what keeps
    a large dataset's training time from growing with it; the development datasets' epochs
    (at most about 17,000 negatives) are below it."""

    def __post_init__(self) -> None:
        if self.lr_patience is None:
            object.__setattr__(self, "lr_patience", lr_patience_for(self.patience))


@dataclass(frozen=True)
class TrainingResult:
    """Where the model went and how well it did on the held-out particles."""

    model_path: str
    history: dict
    epochs: int
    val_accuracy: float
    val_loss: float
    seconds: float
    epoch_size: int
    """The boxes each epoch showed the network."""


Source = Tuple[np.ndarray, np.ndarray]
"""A particle stack (usually memory-mapped) and the rows of it to use."""


def whole(stack: np.ndarray) -> Source:
    """Every particle of a stack, as a training source."""
    return stack, np.arange(len(stack))


class ParticleBatches:
    """Balanced, shuffled, augmented batches of labelled particles read from stacks.

    ``samples`` holds, per label (0 = negative, 1 = positive), an (n, 2) array
    of (source number, row) pairs into ``stacks``, so that a class can draw
    on several stacks (extracted negatives and user-given particles, say)
    without copying them.  Each epoch visits every particle of the larger
    class once and cycles the smaller class to the same count, so batches are
    balanced without discarding data.  With ``per_class`` > 0 an epoch holds at
    most that many of each class: a larger class gives the next ones of a
    shuffled order, so that successive epochs go through all of it in turn.
    Each stack is asked once per batch for all its rows (a
    :class:`.stack.ParticleStack` sorts them and reads runs of neighbouring rows
    in one call).
    """

    def __init__(self, stacks: Sequence[np.ndarray], samples: Sequence[np.ndarray],
                 batch_size: int, seed: int, augment: bool, balance: bool = True,
                 per_class: int = 0):
        self.stacks = list(stacks)
        self.samples = [np.asarray(s, dtype=np.int64).reshape(-1, 2) for s in samples]
        self.batch_size = batch_size
        self.augment = augment
        self.balance = balance
        self.per_class = per_class
        self.rng = np.random.default_rng(seed)
        self._turns: dict[int, tuple[np.ndarray, int]] = {}

    @property
    def class_count(self) -> int:
        """The boxes of each class an epoch holds when balanced."""
        largest = max(len(s) for s in self.samples)
        return min(largest, self.per_class) if self.per_class > 0 else largest

    @property
    def epoch_size(self) -> int:
        """The boxes an epoch holds."""
        return (2 * self.class_count if self.balance
                else sum(len(s) for s in self.samples))

    def epoch_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels, (source, row) pairs) of one epoch, shuffled when augmenting."""
        if self.balance:
            count = self.class_count
            chosen = [self._draw(label, s, count) for label, s in enumerate(self.samples)]
        else:
            chosen = self.samples
        labels = np.concatenate([np.full(len(c), lab, dtype=np.int64)
                                 for lab, c in enumerate(chosen)])
        pairs = np.concatenate(chosen)
        order = self.rng.permutation(len(labels)) if self.augment else np.arange(len(labels))
        return labels[order], pairs[order]

    def _draw(self, label: int, samples: np.ndarray, count: int) -> np.ndarray:
        """``count`` of one class's samples: all of them, shuffled and cycled to the count,
        where the class has no more; else the next ``count`` of a shuffled order, which is
        shuffled again each time it runs out."""
        if len(samples) <= count:
            return (samples[np.resize(self.rng.permutation(len(samples)), count)]
                    if len(samples) else samples)
        order, start = self._turns.get(label, (np.empty(0, dtype=np.int64), 0))
        taken = []
        while count > 0:
            if start == len(order):
                order, start = self.rng.permutation(len(samples)), 0
            step = min(count, len(order) - start)
            taken.append(order[start:start + step])
            start, count = start + step, count - step
        self._turns[label] = (order, start)
        return samples[np.concatenate(taken)]

    def __len__(self) -> int:
        return math.ceil(self.epoch_size / self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        labels, pairs = self.epoch_samples()
        shape = self.stacks[0].shape[1:]
        for start in range(0, len(labels), self.batch_size):
            lab = labels[start:start + self.batch_size]
            batch = pairs[start:start + self.batch_size]
            images = np.empty((len(lab),) + shape, dtype=np.float32)
            for source in np.unique(batch[:, 0]):
                where = np.flatnonzero(batch[:, 0] == source)
                images[where] = self.stacks[source][batch[where, 1]]
            if self.augment:
                images = dihedral_augment(images, self.rng)
            yield images[..., None], lab.astype(np.float32)


def dihedral_augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply a random one of the 8 flips/90-degree rotations to each image."""
    turns = rng.integers(0, 4, len(images))
    out = np.empty_like(images)
    for k in range(4):
        sel = turns == k
        out[sel] = np.rot90(images[sel], k, axes=(1, 2))
    flip = rng.random(len(images)) < 0.5
    out[flip] = out[flip][:, :, ::-1]
    return out


def split_validation(n: int, fraction: float, rng: np.random.Generator,
                     most: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random train / validation split of ``range(n)``, at least one of each when n >= 2,
    and at most ``most`` held out when it is positive."""
    order = rng.permutation(n)
    n_val = int(round(n * fraction))
    if most > 0:
        n_val = min(n_val, most)
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_batches(model: "keras.Model", train: ParticleBatches, val: ParticleBatches,
                max_epochs: int, callbacks: list) -> dict[str, list[float]]:
    """Keras' own ``fit`` loop (its callbacks, metrics and validation), fed numpy batches.

    ``model.fit`` turns a Python generator into a ``tf.data`` pipeline
    (``from_generator``) and runs each step in a graph loop over that pipeline.  On
    a 2-core machine of this project that cost half or more of an epoch's time:
    EMPIAR-10017's first round took 30 to 38 s an epoch that way and 15 s here, the
    two alternating on the same machine (``benchmarks/README.md``, beside the
    dataset figures of 2026-12-07; ``speed.py`` times the same comparison on
    synthetic stacks).  Given the same batches, both compute the same history and
    weights to the bit (a test holds this).  Returns the per-epoch history.
    """
    import keras

    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, model=model,
                                                 epochs=max_epochs, steps=len(train))
    model.stop_training = False
    model.make_train_function()
    model.make_test_function()
    callback_list.on_train_begin()
    logs: dict = {}
    for epoch in range(max_epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for batch in train:
            model.train_function([batch])
        logs = dict(model.get_metrics_result())
        model.reset_metrics()
        for batch in val:
            model.test_function([batch])
        logs.update({f"val_{name}": value for name, value in model.get_metrics_result().items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs)
    return model.history.history


def _label_samples(sources: Sequence[Source], offset: int) -> np.ndarray:
    """(source number, row) pairs of one class's sources, numbered from ``offset``."""
    parts = [np.column_stack([np.full(len(rows), offset + i), np.asarray(rows)])
             for i, (_, rows) in enumerate(sources)]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty((0, 2), np.int64)


def train_classifier(positives: Sequence[Source], negatives: Sequence[Source],
                     config: TrainingConfig, model_path: str, history_path: str,
                     gpus: Optional[Sequence[int]] = None,
                     on_epoch: Optional[Callable[[int], None]] = None,
                     initial_model: Optional[str] = None) -> TrainingResult:
    """Train a classifier of positives (label 1) vs negatives (label 0) and save it.

    Each class is a list of (stack, rows) sources, e.g. the AND rows of the
    OR stack for positives and the random negatives plus user-given particles
    for negatives; nothing is copied into memory.  The best model by
    validation loss is written to ``model_path`` (``.keras``) and the
    per-epoch history to ``history_path``.  ``on_epoch`` is called with 1 after
    each epoch (a progress bar's ``update``).  ``initial_model`` (a ``.keras`` file)
    fine-tunes that network instead of training a new one of ``config.architecture``.
    """
    from .runtime import configure_tensorflow

    configure_tensorflow(gpus, config.seed)
    import keras

    from .model import build_model

    stacks = [stack for stack, _ in negatives] + [stack for stack, _ in positives]
    neg = _label_samples(negatives, 0)
    pos = _label_samples(positives, len(negatives))
    if min(len(pos), len(neg)) < 2:
        raise ValueError(f"cannot train on {len(pos)} positive and {len(neg)} negative particles")
    size = stacks[0].shape[-1]
    rng = np.random.default_rng(config.seed)
    held_out = config.epoch_particles // 5
    pos_train, pos_val = (pos[i] for i in
                          split_validation(len(pos), config.validation_fraction, rng, held_out))
    neg_train, neg_val = (neg[i] for i in
                          split_validation(len(neg), config.validation_fraction, rng, held_out))
    train = ParticleBatches(stacks, [neg_train, pos_train], config.batch_size, config.seed + 1,
                            augment=True, per_class=config.epoch_particles)
    val = ParticleBatches(stacks, [neg_val, pos_val], max(config.batch_size, 256),
                          config.seed + 2, augment=False, balance=False)
    bounded = train.class_count < max(len(pos_train), len(neg_train))
    logger.info("Training a %s network on %d positive and %d negative particles "
                "(%d + %d held out for validation), %d x %d px, %d boxes an epoch%s",
                config.architecture, len(pos_train), len(neg_train),
                len(pos_val), len(neg_val), size, size, train.epoch_size,
                " (at most %d of each class, the rest in turn in later epochs)"
                % config.epoch_particles if bounded else "")

    if initial_model is None:
        model = build_model(config.architecture, size, n_train=len(pos_train) + len(neg_train))
    else:
        model = keras.models.load_model(initial_model, compile=False)
        if tuple(model.input_shape[1:3]) != (size, size):
            raise ValueError("%s takes %s px boxes; the particles are %d x %d px"
                             % (initial_model, " x ".join(map(str, model.input_shape[1:3])),
                                size, size))
        logger.info("Fine-tuning the network of %s", initial_model)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="binary_crossentropy", metrics=["accuracy"])
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1,
                                          patience=config.lr_patience, min_lr=1e-7),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                      restore_best_weights=True),
        keras.callbacks.CSVLogger(history_path),
        _progress_callback(config.max_epochs, on_epoch),
    ]
    start = time.perf_counter()
    fitted = fit_batches(model, train, val, config.max_epochs, callbacks)
    seconds = time.perf_counter() - start
    model.save(model_path)
    history = {k: [float(v) for v in vals] for k, vals in fitted.items()}
    best = int(np.argmin(history["val_loss"]))
    logger.info("Training finished after %d epochs in %.0f s; best epoch %d: "
                "validation loss %.4f, accuracy %.4f", len(history["val_loss"]), seconds,
                best + 1, history["val_loss"][best], history["val_accuracy"][best])
    return TrainingResult(model_path=model_path, history=history,
                          epochs=len(history["val_loss"]),
                          val_accuracy=history["val_accuracy"][best],
                          val_loss=history["val_loss"][best], seconds=seconds,
                          epoch_size=train.epoch_size)


def read_history(path: str) -> dict[str, list[float]]:
    """Read the per-epoch history CSV written during training."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def _progress_callback(max_epochs: int, on_epoch: Optional[Callable[[int], None]] = None):
    """A Keras callback that logs each epoch, so the Scipion log shows training move."""
    import keras

    class ProgressLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logger.info("Epoch %d/%d (%.0f s): loss %.4f accuracy %.4f | "
                        "validation loss %.4f accuracy %.4f | learning rate %.1e",
                        epoch + 1, max_epochs, time.perf_counter() - self.start,
                        logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
                        logs.get("val_loss", float("nan")),
                        logs.get("val_accuracy", float("nan")), lr)
            if on_epoch is not None:
                on_epoch(1)

    return ProgressLog()
