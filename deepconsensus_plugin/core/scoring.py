"""Scoring particles with a trained classifier.

Every OR coordinate gets the probability that its box holds a centred
particle.  Particles are read from the on-disk stack one batch at a time, so
the memory used does not depend on how many there are.  With several GPUs
the stack is cut into one contiguous part per GPU, each scored by its own
copy of the model in its own thread (TensorFlow releases the interpreter
lock while it computes, so the parts run at the same time).

A process keeps the networks it has loaded for scoring: loading one and
tracing its first batch takes about 0.35 s, which the best-centred search
paid twice for every stack (its own boxes, then the shifted ones) and a
stream for every batch of micrographs.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


class _Progress:
    """Particles scored so far over all devices, logged every ``every`` particles."""

    def __init__(self, total: int, every: int,
                 on_progress: Optional[Callable[[int], None]] = None):
        self.total, self.every, self.on_progress = total, every, on_progress
        self.done, self.next_log = 0, every
        self.start = time.perf_counter()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.on_progress is not None:
                self.on_progress(n)
            if self.done >= self.next_log:
                logger.info("Scored %d / %d particles (%.0f particles/s)", self.done, self.total,
                            self.done / max(time.perf_counter() - self.start, 1e-9))
                self.next_log += self.every


_IDLE_MODELS: "OrderedDict[tuple, list]" = OrderedDict()
"""Loaded networks not in use, by the file's content and the devices, newest last."""
_IDLE_MAX = 4
_IDLE_LOCK = threading.Lock()


@contextmanager
def _loaded_models(model_path: str, devices: Sequence[str]) -> Iterator[List]:
    """One copy of the network in ``model_path`` per device, reused from an earlier call
    where one has loaded that file's content on those devices.

    Keyed by a hash of the file, not its name or time, because a stream retrains into the
    same file.  A caller holds its copies alone until it is done (two scoring steps in
    threads of one process never share a model), then leaves them for the next."""
    import keras
    import tensorflow as tf

    with open(model_path, "rb") as handle:
        key = (hashlib.blake2b(handle.read()).hexdigest(), tuple(devices))
    with _IDLE_LOCK:
        models = _IDLE_MODELS.pop(key, None)
    if models is None:
        models = []
        for device in devices:
            with tf.device(device):
                models.append(keras.models.load_model(model_path, compile=False))
    try:
        yield models
    finally:
        with _IDLE_LOCK:
            _IDLE_MODELS[key] = models
            while len(_IDLE_MODELS) > _IDLE_MAX:
                _IDLE_MODELS.popitem(last=False)


def score_stack(model_path: str, stack, batch_size: int = 512,
                gpus: Optional[Sequence[int]] = None, seed: int = 0,
                log_every: int = 50_000,
                on_progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Scores in [0, 1] for every particle of ``stack`` ((n, size, size), e.g. on disk).

    ``gpus`` are the GPU ids to use (None or empty: the CPU); ``on_progress``
    is called with the number of particles of each batch scored.
    """
    from .runtime import compute_devices, configure_tensorflow

    configure_tensorflow(gpus, seed)
    return score_on_devices(model_path, stack, compute_devices(), batch_size, log_every,
                            on_progress)


def score_on_devices(model_path: str, stack, devices: Sequence[str], batch_size: int = 512,
                     log_every: int = 50_000,
                     on_progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Score ``stack`` with one model copy per TensorFlow device, each on a contiguous part."""
    with _loaded_models(model_path, devices) as models:
        return _score_parts(models, stack, devices, batch_size, log_every, on_progress)


def _score_parts(models: Sequence, stack, devices: Sequence[str], batch_size: int,
                 log_every: int, on_progress: Optional[Callable[[int], None]]) -> np.ndarray:
    import tensorflow as tf

    scores = np.empty(len(stack), dtype=np.float64)
    bounds = np.linspace(0, len(stack), len(devices) + 1).astype(np.int64)
    progress = _Progress(len(stack), log_every, on_progress)

    def score_part(part: int) -> None:
        # Every batch has the same shape, the last one padded with blank boxes: a batch of
        # another shape makes TensorFlow trace the network again (about a second, and a
        # warning about retracing where a few small stacks are scored one after another).
        batch = None
        with tf.device(devices[part]):
            for first in range(bounds[part], bounds[part + 1], batch_size):
                last = min(first + batch_size, bounds[part + 1])
                n = last - first
                images = np.asarray(stack[first:last], dtype=np.float32)
                if batch is None:
                    batch = np.zeros((batch_size,) + images.shape[1:] + (1,), dtype=np.float32)
                batch[:n, ..., 0] = images
                batch[n:] = 0.0
                scores[first:last] = np.asarray(
                    models[part].predict_on_batch(batch)).reshape(-1)[:n]
                progress.add(n)

    if len(devices) == 1:
        score_part(0)
    else:
        with ThreadPoolExecutor(len(devices)) as pool:
            list(pool.map(score_part, range(len(devices))))  # re-raises a part's error
    logger.info("Scored %d particles in %.1f s on %s", len(stack),
                time.perf_counter() - progress.start, ", ".join(devices))
    return np.clip(scores, 0.0, 1.0)
