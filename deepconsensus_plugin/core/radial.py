"""A second view of every box: the rotational average of its whitened image.

The network judges a box from its 32 x 32 pixels, learnt from a few
thousand examples; a faint particle gives it little to go on.  Particles lie
at every angle in the ice, so the average of a box over each ring around
its centre (its rotational average) keeps what every view of a particle
shares, its radial density profile, and averages the noise over the
2 pi r pixels of each ring.  The boxes are whitened first (each box's
spectrum divided by the square root of the run's mean power spectrum), so
that the noise is equally strong at every frequency and the low
frequencies of ice and carbon gradients do not dominate the profile.

A linear discriminant (Fisher's, in closed form) fitted on the same labels
as the network (the AND boxes against the negatives) turns each profile
into a log-likelihood ratio of particle against background.  The agreement
adds it to the network's logit: two classifiers of the same box that err in
different ways (the ensemble rule of adding log-odds).  Measured on both
development datasets in ``benchmarks/README.md``.

Nothing here reads files: the stages hand over stacks (arrays or
memory-mapped) and rows, and the fitted :class:`RotationalDiscriminant` is
a few numbers that the run record keeps, so that a streaming run scores its
later batches with the discriminant of its training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Tuple

import numpy as np
import scipy.fft

from .stack import boxes_per_chunk

RIDGE = 1e-3
"""Added to the pooled covariance's diagonal, as a share of its mean variance, so that
the discriminant stays defined when two rings' averages move together."""
MIN_BOXES = 10
"""Fewest boxes of each class the discriminant is fitted on."""


def _frequency_bins(size: int) -> np.ndarray:
    """The radial frequency bin (0 to size // 2) of each ``rfft2`` coefficient."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.minimum((np.hypot(fy, fx) * size).astype(np.int64), size // 2)


def _ring_bins(size: int) -> np.ndarray:
    """The ring (0 to size // 2) of each pixel around the box centre, pixel size // 2
    (where extraction puts the pick)."""
    y, x = np.mgrid[:size, :size] - size // 2
    return np.minimum(np.hypot(y, x).astype(np.int64), size // 2)


def _bin_means(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """(n, bins) means of each image's ``values`` over each bin of ``bins``."""
    flat_bins = bins.ravel()
    counts = np.bincount(flat_bins)
    one_hot = np.eye(len(counts))[flat_bins]
    return values.reshape(len(values), -1) @ one_hot / counts


def _chunks(stack, rows: np.ndarray) -> Iterable[np.ndarray]:
    """The boxes of ``stack`` at ``rows`` (sorted), as float64, a chunk at a time
    (:func:`.stack.boxes_per_chunk`), so that memory stays bounded for any stack."""
    chunk = boxes_per_chunk(int(stack.shape[-1]))
    for start in range(0, len(rows), chunk):
        yield np.asarray(stack[rows[start:start + chunk]], dtype=np.float64)


def mean_power(sources: Sequence[Tuple[object, np.ndarray]]) -> np.ndarray:
    """The radially averaged power spectrum over the boxes of ``sources`` ((stack, rows)
    pairs): what the whitening divides by."""
    size = int(sources[0][0].shape[-1])
    bins = _frequency_bins(size)
    total, n = np.zeros(size // 2 + 1), 0
    for stack, rows in sources:
        for boxes in _chunks(stack, np.sort(rows)):
            power = np.abs(scipy.fft.rfft2(boxes, workers=-1)) ** 2
            total += _bin_means(power, bins).sum(axis=0)
            n += len(boxes)
    if n == 0:
        raise ValueError("no boxes to estimate the power spectrum from")
    return total / n


@dataclass(frozen=True)
class RingAverager:
    """The rotational averages of boxes whitened by one power spectrum, as one matrix
    product a box.

    Whitening (a real, radially symmetric filter on the box's spectrum) and averaging
    over rings are both linear, so together they are one (size x size, rings) matrix:
    the filter is symmetric, so its columns are the rings' masks (each over its pixel
    count) whitened.  Only dividing each whitened box by its own deviation is not
    linear, and that deviation follows from the box's power spectrum (Parseval), so a
    box costs one forward transform and a small product instead of a forward and an
    inverse transform and sums over the whitened image: the discriminant's fit over a
    million boxes in half the time (``benchmarks/README.md``, *Scale*).
    """

    operator: np.ndarray
    """(size * size, size // 2 + 1): each box's pixels to its whitened ring averages,
    before the division by the whitened box's deviation."""
    power_weights: np.ndarray
    """(size, size // 2 + 1): the weights that turn the box's ``rfft2`` power into the
    whitened box's mean square (the filter squared, half-spectrum columns other than
    the first and the last counted twice, over the pixels squared)."""

    @classmethod
    def of(cls, power: np.ndarray, size: int) -> RingAverager:
        """The averager of ``size`` px boxes whitened by ``power`` (:func:`mean_power`)."""
        scale = 1.0 / np.sqrt(np.maximum(power, 1e-12 * power.max()))
        scale[0] = 0.0  # the box mean carries no shape, and the whitened box has none
        spectral_filter = scale[_frequency_bins(size)]
        rings = _ring_bins(size)
        masks = (rings[None] == np.arange(size // 2 + 1)[:, None, None]).astype(np.float64)
        masks /= masks.sum(axis=(1, 2), keepdims=True)
        whitened = scipy.fft.irfft2(scipy.fft.rfft2(masks) * spectral_filter, s=(size, size))
        columns = np.full(size // 2 + 1, 2.0)
        columns[0] = 1.0
        if size % 2 == 0:
            columns[-1] = 1.0
        return cls(operator=whitened.reshape(len(masks), -1).T,
                   power_weights=spectral_filter ** 2 * columns / float(size * size) ** 2)

    def __call__(self, boxes: np.ndarray) -> np.ndarray:
        """(n, size // 2 + 1) ring averages of each box, whitened and divided by the
        whitened box's deviation.  A box of one value throughout (a blank border) has
        no deviation, only the transforms' rounding, which the division would blow up
        to averages of order one: its averages are zeros."""
        boxes = np.asarray(boxes, dtype=np.float64)
        flat = boxes.reshape(len(boxes), boxes.shape[-2] * boxes.shape[-1])
        power = np.abs(scipy.fft.rfft2(boxes, workers=-1)) ** 2
        deviation = np.sqrt((power * self.power_weights).sum(axis=(1, 2)))
        blank = flat.min(axis=1) == flat.max(axis=1)
        averages = flat @ self.operator
        averages[blank] = 0.0
        return averages / np.where(deviation > 0, deviation, 1.0)[:, None]


def _per_box(stack, rows: np.ndarray, function) -> np.ndarray:
    """``function`` of the boxes of ``stack`` at ``rows``, in that order, read a chunk at
    a time in increasing row order."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    size = int(stack.shape[-1])
    parts = [function(boxes) for boxes in _chunks(stack, rows[order])]
    ordered = np.concatenate(parts) if parts else function(np.empty((0, size, size)))
    out = np.empty_like(ordered)
    out[order] = ordered
    return out


@dataclass
class ClassMoments:
    """The count, mean and scatter (sum of squared deviations from the mean) of one
    class's rotational averages: all the discriminant needs of them.  Gathered a chunk at
    a time (merged as Chan et al. merge variances, from each chunk's own mean, so no large
    sum is cancelled), so that a fit over a million boxes holds a few numbers, not a
    million rows."""

    n: int
    mean: np.ndarray
    scatter: np.ndarray

    @classmethod
    def of_stack(cls, stack, rows: np.ndarray, power: np.ndarray) -> ClassMoments:
        """The moments of the rotational averages (:class:`RingAverager` with ``power``)
        of the boxes of ``stack`` at ``rows``, a chunk of boxes at a time."""
        averager = RingAverager.of(power, int(stack.shape[-1]))
        bins = averager.operator.shape[1]
        moments = cls(0, np.zeros(bins), np.zeros((bins, bins)))
        for boxes in _chunks(stack, np.sort(np.asarray(rows, dtype=np.int64))):
            moments.add(averager(boxes))
        return moments

    def add(self, averages: np.ndarray) -> None:
        """Take the rotational averages ``averages`` ((n, bins)) into the moments."""
        count = len(averages)
        if count == 0:
            return
        mean = averages.mean(axis=0)
        centred = averages - mean
        delta = mean - self.mean
        total = self.n + count
        self.scatter = self.scatter + centred.T @ centred \
            + np.outer(delta, delta) * (self.n * count / total)
        self.mean = self.mean + delta * (count / total)
        self.n = total

    @property
    def covariance(self) -> np.ndarray:
        """The unbiased covariance, as ``np.cov`` gives it."""
        return self.scatter / (self.n - 1)


@dataclass(frozen=True)
class RotationalDiscriminant:
    """Fisher's linear discriminant over the whitened rotational averages.

    ``power`` is the whitening spectrum, ``weights`` and ``offset`` give the log-likelihood
    ratio of particle against background (two Gaussians of a shared covariance);
    ``separation`` is the distance between the classes' means in units of their shared
    deviation along ``weights`` (d'), for the log and the summary.
    """

    power: np.ndarray
    weights: np.ndarray
    offset: float
    separation: float

    def log_likelihood_ratio(self, averages: np.ndarray) -> np.ndarray:
        return np.asarray(averages, dtype=np.float64) @ self.weights + self.offset

    def score_stack(self, stack, rows: np.ndarray) -> np.ndarray:
        """The log-likelihood ratio of the boxes of ``stack`` at ``rows`` (memory: one
        number a box beyond a chunk's boxes)."""
        averager = RingAverager.of(self.power, int(stack.shape[-1]))
        return _per_box(stack, rows,
                        lambda boxes: self.log_likelihood_ratio(averager(boxes)))


def fit_discriminant(particles: ClassMoments, background: ClassMoments,
                     power: np.ndarray) -> RotationalDiscriminant:
    """The discriminant of the rotational averages of ``particles`` against
    ``background`` (their :class:`ClassMoments`, of averages made with ``power``)."""
    if particles.n < MIN_BOXES or background.n < MIN_BOXES:
        raise ValueError("the rotational-average discriminant needs at least %d boxes of each "
                         "class (got %d particles, %d background)"
                         % (MIN_BOXES, particles.n, background.n))
    mean_1, mean_0 = particles.mean, background.mean
    pooled = 0.5 * (particles.covariance + background.covariance)
    pooled += RIDGE * np.trace(pooled) / len(pooled) * np.eye(len(pooled))
    difference = mean_1 - mean_0
    weights = np.linalg.solve(pooled, difference)
    offset = -float(weights @ (mean_1 + mean_0)) / 2
    separation = float(np.sqrt(max(difference @ weights, 0.0)))
    return RotationalDiscriminant(np.asarray(power, dtype=np.float64), weights, offset,
                                  separation)
