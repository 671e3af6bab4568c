"""TensorFlow start-up: devices, memory growth, determinism.

Kept apart so that the GPU choice is made before TensorFlow initialises its
devices, which it does once per process.  Scipion books GPUs per step
(``GPU_LIST``); we show TensorFlow only those and let it take GPU memory on
demand instead of grabbing the whole card, the original's most reported crash.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

logger = logging.getLogger(__name__)

_configured: Optional[tuple] = None


def configure_tensorflow(gpus: Optional[Sequence[int]], seed: int) -> None:
    """Make TensorFlow use ``gpus`` (None or empty: CPU only) and seed it.

    Call before any other TensorFlow use in the process; later calls only
    re-seed, since devices cannot change once initialised.
    """
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    key = tuple(gpus or ())
    if _configured is None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in key) if key else "-1"
    elif _configured != key:
        logger.warning("TensorFlow already started on GPUs %s; ignoring the request for %s",
                       list(_configured), list(key))
    import tensorflow as tf
    import keras

    if _configured is None:
        for device in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(device, True)
        _configured = key
        used = tf.config.list_logical_devices("GPU")
        logger.info("TensorFlow %s on %s", tf.__version__,
                    ", ".join(d.name for d in used) if used else "CPU")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def compute_devices() -> list[str]:
    """TensorFlow's names of the GPUs in use, or the CPU when there is none.

    Valid after :func:`configure_tensorflow`; scoring splits its work over them.
    """
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")] or ["/CPU:0"]
