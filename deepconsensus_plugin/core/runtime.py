"""TensorFlow start-up: devices, memory growth, determinism.

Kept apart so that the GPU choice is made before TensorFlow initialises its
devices, which it does once per process.  Scipion books GPUs per step
(``GPU_LIST``); we show TensorFlow only those and let it take GPU memory on
demand instead of grabbing the whole card, the original's most reported crash.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, List, Optional, Sequence

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


def compute_devices() -> List[str]:
    """TensorFlow's names of the GPUs in use, or the CPU when there is none.

    Valid after :func:`configure_tensorflow`; scoring splits its work over them.
    """
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")] or ["/CPU:0"]


GPU_CHECK = "python -c \"import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))\""
"""The one-line check that TensorFlow sees the GPUs (README, and the warning below)."""


def environment_report(gpus: Optional[Sequence[int]],
                       list_gpus: Optional[Callable[[], Sequence[str]]] = None) -> dict:
    """What the job environment offers the run: Python, TensorFlow, the GPUs booked and
    those TensorFlow sees among them, and the warning to show when it sees none.

    Configures TensorFlow for ``gpus`` (:func:`configure_tensorflow`), so the GPUs seen
    are the booked ones; ``list_gpus`` replaces TensorFlow's device list (tests).
    """
    import platform

    configure_tensorflow(gpus, 0)
    import tensorflow as tf

    if list_gpus is None:
        seen = [d.name for d in tf.config.list_physical_devices("GPU")]
    else:
        seen = list(list_gpus())
    report = {"python": sys.executable, "python_version": platform.python_version(),
              "tensorflow": tf.__version__, "built_with_cuda": bool(tf.test.is_built_with_cuda()),
              "gpus_booked": [int(g) for g in gpus or ()], "gpus_seen": seen}
    report["warning"] = gpu_warning(report)
    return report


def gpu_warning(report: dict) -> Optional[str]:
    """The warning for GPUs booked that TensorFlow cannot see (None when all is well):
    the run goes on on the CPU, and the message names the likely cause and the fix."""
    if not report["gpus_booked"] or report["gpus_seen"]:
        return None
    cause = ("this TensorFlow is built without CUDA (the CPU-only flavour)"
             if not report["built_with_cuda"] else
             "the CUDA libraries or the GPU driver are missing or do not match TensorFlow")
    return ("WARNING: GPU %s booked, but TensorFlow %s in the job environment (%s) sees no "
            "GPU: training and scoring run on the CPU, much more slowly. Likely cause: %s. "
            "Fix: install the GPU flavour (pip install 'tensorflow[and-cuda]' in that "
            "environment, or 'scipion installb deepconsensus-gpu'), then check with: %s"
            % (",".join(str(g) for g in report["gpus_booked"]), report["tensorflow"],
               report["python"], cause, GPU_CHECK.replace("python", report["python"], 1)))
