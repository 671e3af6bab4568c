"""Choosing the score threshold without ground truth.

The paper keeps coordinates scoring at least 0.5 and suggests choosing better
thresholds by eye.  Scores of a trained classifier over the OR set are
bimodal (particles near 1, junk near 0), so the valley between the modes is a
threshold that follows the data: Otsu's criterion finds it by maximising the
between-class variance of the two groups it creates.
"""
from __future__ import annotations

import numpy as np


def automatic_threshold(scores: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of scores in [0, 1]; 0.5 when there is nothing to split.

    NaN scores (coordinates of skipped micrographs) are ignored.
    """
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if len(scores) < 2 or np.ptp(scores) == 0:
        return 0.5
    counts, edges = np.histogram(scores, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])
