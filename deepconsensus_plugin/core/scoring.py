"""Scoring particles with a trained classifier.

Every OR coordinate gets the probability that its box holds a centred
particle.  Particles are read from the on-disk stack one batch at a time, so
the memory used does not depend on how many there are.
"""
from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def score_stack(model_path: str, stack: np.ndarray, batch_size: int = 512,
                gpus: Optional[Sequence[int]] = None, seed: int = 0,
                log_every: int = 50_000) -> np.ndarray:
    """Scores in [0, 1] for every particle of ``stack`` ((n, size, size), e.g. memory-mapped)."""
    from .runtime import configure_tensorflow

    configure_tensorflow(gpus, seed)
    import keras

    model = keras.models.load_model(model_path, compile=False)
    scores = np.empty(len(stack), dtype=np.float64)
    start = time.perf_counter()
    next_log = log_every
    for first in range(0, len(stack), batch_size):
        batch = np.asarray(stack[first:first + batch_size], dtype=np.float32)[..., None]
        scores[first:first + len(batch)] = np.asarray(model.predict_on_batch(batch)).reshape(-1)
        done = first + len(batch)
        if done >= next_log:
            logger.info("Scored %d / %d particles (%.0f particles/s)", done, len(stack),
                        done / max(time.perf_counter() - start, 1e-9))
            next_log += log_every
    logger.info("Scored %d particles in %.1f s", len(stack), time.perf_counter() - start)
    return np.clip(scores, 0.0, 1.0)
