"""Particle extraction: boxes cut from micrographs, downsampled and normalised.

The network sees small images (e.g. 64 px) whatever the box size, so every
box is Fourier-cropped: the exact low-pass to the new Nyquist frequency,
without the aliasing of nearest-pixel or the blur of bilinear resizing.
Each micrograph is read once for all its boxes, and the particles go straight
into an on-disk stack so that memory stays bounded for any number of them.
A micrograph's padded border (rows or columns without data, left where motion
correction shifted the frames) is blanked before boxes are cut, so that the
network never learns its stripes.

Micrographs are read from MRC files (``mrcfile``, memory-mapped) or single-image
TIFF files (``tifffile``); any other image format is named and refused
(:func:`format_problem`) before a run starts, rather than failing at extraction.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import mrcfile
import numpy as np
import scipy.stats
import tifffile

from .selection import MicrographFrame
from .stack import ParticleStack, boxes_per_chunk

logger = logging.getLogger(__name__)


class MicrographError(RuntimeError):
    """A micrograph file that cannot be used; the message names the file."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"Micrograph {path}: {reason}")
        self.path = path
        self.reason = reason


TIFF_SUFFIXES = (".tif", ".tiff")
"""Micrograph files read with ``tifffile``; every other name is read as MRC."""
OTHER_IMAGE_SUFFIXES = (".spi", ".xmp", ".stk", ".hdf", ".em", ".dm3", ".dm4", ".eer",
                        ".jpg", ".jpeg", ".png", ".img", ".hed")
"""Image formats that Scipion's packages write but that are neither MRC nor TIFF:
named and refused (:func:`format_problem`), not misread as MRC."""


def format_problem(path: str, particles: bool = False) -> Optional[str]:
    """Why a micrograph file (a particle stack, if ``particles``) of this name cannot be
    read (its format), or None.

    Only the name is looked at, so that a form can check thousands of
    micrographs before a run; a file whose contents are not what its name
    says is refused when read (:class:`MicrographError`).
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix in OTHER_IMAGE_SUFFIXES or (particles and suffix in TIFF_SUFFIXES):
        readable = ("MRC particle stacks (.mrcs)" if particles else
                    "MRC (.mrc) and TIFF (.tif) micrographs")
        return ("%s files cannot be read: deep consensus reads %s; convert them to MRC "
                "first" % (suffix, readable))
    return None


def is_tiff(path: str) -> bool:
    """Whether a file of this name is read as TIFF (:data:`TIFF_SUFFIXES`)."""
    return os.path.splitext(path)[1].lower() in TIFF_SUFFIXES


def _refuse_unread_format(path: str, particles: bool = False) -> None:
    """Raise :class:`MicrographError` naming ``path`` where :func:`format_problem` says its
    format is not read."""
    problem = format_problem(path, particles)
    if problem:
        raise MicrographError(path, problem)


def _read_tiff(path: str, header_only: bool = False):
    """The one 2-D image of a TIFF file (its shape alone if ``header_only``); a file of
    several images (a movie), or one that fails to read, raises :class:`MicrographError`
    naming it."""
    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0] if tiff.series else None
            if series is None:
                raise MicrographError(path, "no image in the TIFF file")
            shape = tuple(int(n) for n in series.shape if n != 1)
            if len(shape) != 2:
                raise MicrographError(path, "expected a 2D image, found shape %s (a movie? "
                                            "give the motion-corrected micrographs)"
                                      % (tuple(series.shape),))
            return shape if header_only else np.asarray(series.asarray()).reshape(shape)
    except MicrographError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, OSError...
        raise MicrographError(path, f"cannot be read as TIFF ({exc})") from exc


def _check_readable(path: str) -> None:
    """Refuse a missing file or one of a format not read here, naming it."""
    if not os.path.exists(path):
        raise MicrographError(path, "file not found")
    _refuse_unread_format(path)


def micrograph_shape(path: str) -> tuple[int, int]:
    """(rows, columns) of a micrograph, from its header alone."""
    _check_readable(path)
    if is_tiff(path):
        return _read_tiff(path, header_only=True)
    try:
        with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
            header = mrc.header
            return int(header.ny), int(header.nx)
    except Exception as exc:  # mrcfile raises ValueError, OSError, struct.error...
        raise MicrographError(path, f"cannot be read as MRC ({exc})") from exc


PADDING_DEPTH = 0.1
"""How far into a micrograph (a fraction of each dimension) a padded border is looked for."""
PADDING_LEVEL = 0.1
"""A row (column) is padding when it differs from its inward neighbour by less than this
fraction of the mean difference between neighbouring rows in the micrograph's centre:
repeated or constant rows differ by nothing, rows of data by the noise."""


@contextlib.contextmanager
def _mapped_micrograph(path: str) -> Iterator[np.ndarray]:
    """The 2-D image of a micrograph file, memory-mapped where it is MRC (a
    single-section stack counts as 2-D); a file that is missing, truncated, of another
    format (:func:`format_problem`) or a stack, or that fails while read, raises
    :class:`MicrographError` naming it."""
    _check_readable(path)
    if is_tiff(path):
        yield _read_tiff(path)
        return
    try:
        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
            data = mrc.data
            if data is None:
                raise MicrographError(path, "no image data (truncated or not an MRC file?)")
            if data.ndim == 3 and data.shape[0] == 1:
                data = data[0]
            if data.ndim != 2:
                raise MicrographError(path, f"expected a 2D image, found shape {data.shape}")
            yield data
    except MicrographError:
        raise
    except Exception as exc:  # mrcfile raises ValueError, OSError, struct.error...
        raise MicrographError(path, f"cannot be read as MRC ({exc})") from exc


def micrograph_frame(path: str) -> MicrographFrame:
    """A micrograph's size and padded borders (:func:`padded_borders`), reading only
    the strips along its edges and a central patch."""
    with _mapped_micrograph(path) as data:
        return MicrographFrame(*data.shape, *padded_borders(data))


def padded_borders(data: np.ndarray) -> tuple[int, int, int, int]:
    """Rows at low and high y, columns at low and high x, of the border without data.

    The padding is the span from each edge to the innermost row (column), within
    :data:`PADDING_DEPTH` of the edge, that repeats its inward neighbour to within
    :data:`PADDING_LEVEL` of the centre's neighbour differences.  Taking the innermost
    one, not the first run from the edge, keeps the border whole where compression
    left the outermost rows slightly different (the EMPIAR-10017 JPEGs).  A micrograph
    without texture in its centre has no measurable padding.
    """
    rows, columns = data.shape
    centre = np.asarray(data[rows // 2 - rows // 8:rows // 2 + rows // 8,
                             columns // 2 - columns // 8:columns // 2 + columns // 8],
                        dtype=np.float64)
    if centre.shape[0] < 2:
        return 0, 0, 0, 0
    scale = float(np.mean(np.abs(np.diff(centre, axis=0))))
    if not scale > 0:
        return 0, 0, 0, 0
    depth_y, depth_x = int(PADDING_DEPTH * rows), int(PADDING_DEPTH * columns)

    def extent(strip: np.ndarray, axis: int) -> int:
        step = np.mean(np.abs(np.diff(np.asarray(strip, dtype=np.float64), axis=axis)),
                       axis=1 - axis)
        flat = np.flatnonzero(step < PADDING_LEVEL * scale)
        return int(flat[-1]) + 1 if len(flat) else 0

    return (extent(data[:depth_y + 1], 0), extent(data[::-1][:depth_y + 1], 0),
            extent(data[:, :depth_x + 1], 1), extent(data[:, ::-1][:, :depth_x + 1], 1))


def blank_padding(micrograph: np.ndarray) -> np.ndarray:
    """The micrograph with its padded border (:func:`padded_borders`) set to the mean of
    its data, as :func:`cut_boxes` fills the part of a box outside the micrograph: the
    network sees no stripes, only the absence of data, near the edge."""
    low_y, high_y, low_x, high_x = padded_borders(micrograph)
    if not (low_y or high_y or low_x or high_x):
        return micrograph
    rows, columns = micrograph.shape
    inside = (slice(low_y, rows - high_y), slice(low_x, columns - high_x))
    blanked = np.full_like(micrograph, micrograph[inside].mean())
    blanked[inside] = micrograph[inside]
    return blanked


def read_micrograph(path: str) -> np.ndarray:
    """Read a 2D micrograph as float32 rows x columns, refusing unusable files.

    A truncated file, a stack, or an image holding NaN/inf would otherwise
    surface later as a cryptic TensorFlow error or silently poison training.
    """
    with _mapped_micrograph(path) as mapped:
        data = np.asarray(mapped, dtype=np.float32)
    if not np.isfinite(data).all():
        raise MicrographError(path, "contains NaN or infinite values")
    return data


@functools.lru_cache(maxsize=8)
def _resize_operator(box: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 1-D Fourier crop/pad from ``box`` to ``size`` samples as (R, u, v), the (size,
    box) matrix T = R + i u v^T.

    The 2-D resize (FFT, crop or zero-pad the centred spectrum, inverse FFT, real part) is
    separable, so it equals ``Re(T X T^T) = R X R^T - (v^T X v) u u^T``: a few BLAS calls
    per micrograph instead of one FFT per box, and the same images.  T's imaginary part
    comes from the one frequency kept without its mirror (the Nyquist frequency of an even
    size), so it has rank one at most, and its share of a box is one number: half the
    products of writing T in real and imaginary parts.
    """
    spectrum = np.fft.fftshift(np.fft.fft(np.eye(box), axis=0), axes=0)
    cropped = np.zeros((size, box), dtype=np.complex128)
    keep = min(box, size)
    src = box // 2 - keep // 2
    dst = size // 2 - keep // 2
    cropped[dst:dst + keep] = spectrum[src:src + keep]
    operator = np.fft.ifft(np.fft.ifftshift(cropped, axes=0), axis=0) * (size / box)
    left, values, right = np.linalg.svd(operator.imag)
    u, v = left[:, 0] * np.sqrt(values[0]), right[0] * np.sqrt(values[0])
    real = operator.real.copy()
    for shared in (real, u, v):
        shared.flags.writeable = False  # shared by every call (the cache)
    return real, u, v


def fourier_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a stack of square images to ``size`` by cropping or padding their spectra.

    The products run in float64 and are rounded to float32 at the end.  In float32 a
    box's last bit depends on how many rows BLAS multiplies at once (its kernels treat the
    edges of their tiles differently, and differ between CPUs), so a box came out
    differently alone, in a shard or beside the shifted boxes of the best-centred search.
    A float64 product differs far below float32's resolution, so the boxes come out the
    same however they are grouped: shards, slices and one piece give the same scores.
    """
    n, box = images.shape[0], images.shape[-1]
    if box == size:
        return images.astype(np.float32, copy=False)
    real, u, v = _resize_operator(box, size)
    nyquist = np.outer(u, u)
    resized = np.empty((n, size, size), dtype=np.float32)
    chunk = boxes_per_chunk(box)
    for first in range(0, n, chunk):
        rows = images[first:first + chunk].astype(np.float64).reshape(-1, box)
        m = len(rows) // box
        right = (rows @ real.T).reshape(m, box, size)  # X R^T
        # R (X R^T) as one product on the transposed images: R A = (A^T R^T)^T.
        both = (right.transpose(0, 2, 1).reshape(m * size, box) @ real.T).reshape(m, size, size)
        weight = (rows @ v).reshape(m, box) @ v  # v^T X v
        resized[first:first + m] = both.transpose(0, 2, 1) - weight[:, None, None] * nyquist
    return resized


def normalise(images: np.ndarray, invert: bool = False) -> np.ndarray:
    """Zero mean and unit standard deviation per image (optionally contrast-inverted).

    Per-particle normalisation removes ice-thickness and dose differences
    between micrographs, which would otherwise be an easy but wrong cue.
    """
    images = images.astype(np.float32, copy=False)
    mean = images.mean(axis=(-2, -1), keepdims=True)
    std = images.std(axis=(-2, -1), keepdims=True)
    # A flat image (e.g. a box wholly outside the micrograph, filled with its mean) has a
    # rounding-error std; dividing by it would blow float noise up to unit variance.
    flat = std <= 1e-5 * np.abs(mean)
    out = np.where(flat, np.float32(0), (images - mean) / np.where(flat, 1.0, std))
    return -out if invert else out


def cut_boxes(micrograph: np.ndarray, xy: np.ndarray, box: int,
              margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``box`` x ``box`` images centred on ``xy`` (x = column, y = row).

    Returns the boxes and a boolean mask of those that crossed the micrograph
    border; their outside part is filled with the micrograph mean so that they
    can still be scored.  ``margin`` > 0 says that ``micrograph`` already carries
    that many pixels of such filling on every side (:func:`pad_for_boxes`) and that
    ``xy`` are coordinates of the micrograph inside it: a caller cutting many
    slices of boxes from one micrograph pads it once instead of once a slice.
    """
    rows, cols = micrograph.shape
    corner = _box_corners(xy, box) + margin
    crossing = _crossing(corner - margin, rows - 2 * margin, cols - 2 * margin, box)
    if _crossing(corner, rows, cols, box).any():
        micrograph = pad_for_boxes(micrograph[margin:rows - margin, margin:cols - margin], box)
        corner = corner - margin + box
    corner = np.clip(corner, 0, np.array(micrograph.shape[::-1]) - box)
    windows = np.lib.stride_tricks.sliding_window_view(micrograph, (box, box))
    # Indexing with arrays gathers the boxes into a new array: no copy is needed after it.
    return windows[corner[:, 1], corner[:, 0]], crossing


def _box_corners(xy: np.ndarray, box: int) -> np.ndarray:
    """(n, 2) integer corners (column, row) of the boxes centred on ``xy``.

    The pixel nearest the centre (ties to the lower one) goes to index box // 2, the
    Fourier centre that fourier_resize keeps.  (np.rint(xy - box / 2) rounds half to
    even, which put it one pixel off for half of the integer coordinates when box is
    odd.)  Ties down keep every centre in [box / 2, size - box / 2] wholly inside.  A
    margin is added to the corners, not to ``xy``: added to a coordinate on a half pixel
    first, it would round off the coordinate's last bits, and with them the tie's side.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return np.ceil(xy - 0.5).astype(np.int64) - box // 2


def _crossing(corner: np.ndarray, rows: int, cols: int, box: int) -> np.ndarray:
    """Which boxes at ``corner`` reach beyond a ``rows`` x ``cols`` image."""
    return ((corner[:, 0] < 0) | (corner[:, 1] < 0)
            | (corner[:, 0] + box > cols) | (corner[:, 1] + box > rows))


def pad_for_boxes(micrograph: np.ndarray, box: int) -> np.ndarray:
    """The micrograph with ``box`` pixels of its mean on every side: what a box crossing
    its edge is cut from (:func:`cut_boxes`, whose ``margin`` is then ``box``)."""
    return np.pad(micrograph, box, mode="constant", constant_values=float(micrograph.mean()))


def extract_particles(micrograph: np.ndarray, xy: np.ndarray, box: int, size: int,
                      invert: bool = False, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of one micrograph, Fourier-resized to ``size`` and normalised (``margin``: as
    :func:`cut_boxes` takes it).  They are cut a chunk at a time
    (:func:`.stack.boxes_per_chunk`), so that no full-sized copy of every box is made at
    once; where a box crosses the edge, the micrograph is padded once for all the chunks."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    rows, cols = micrograph.shape
    if margin == 0 and _crossing(_box_corners(xy, box), rows, cols, box).any():
        micrograph, margin = pad_for_boxes(micrograph, box), box
    chunk = boxes_per_chunk(box)
    images = np.empty((len(xy), size, size), dtype=np.float32)
    crossing = np.zeros(len(xy), dtype=bool)
    for first in range(0, len(xy), chunk):
        boxes, crossing[first:first + chunk] = cut_boxes(micrograph, xy[first:first + chunk],
                                                         box, margin)
        images[first:first + chunk] = normalise(fourier_resize(boxes, size), invert)
    return images, crossing


@dataclass
class ExtractionReport:
    """What an extraction did, for the protocol summary and the log."""

    n_particles: int = 0
    n_crossing_border: int = 0
    seconds: float = 0.0
    skipped_micrographs: list[str] = field(default_factory=list)


def extract_to_stack(jobs: Iterable[tuple[str, np.ndarray]], stack: ParticleStack,
                     box: int, invert: bool = False, skip_bad_micrographs: bool = False,
                     log_every: int = 10_000,
                     on_progress: Optional[Callable[[int], None]] = None) -> ExtractionReport:
    """Extract the particles of many micrographs into ``stack``, from its first row on.

    ``jobs`` yields (micrograph path, (n, 2) centres) in the order the
    particles must appear in the stack.  Only one micrograph and its boxes
    are in memory at a time; ``stack`` comes from :func:`.stack.create_stack`.
    Rows of a skipped micrograph stay zero and the report names the file.
    ``on_progress`` is called with the number of particles of each micrograph
    done (a progress bar's ``update``).
    """
    size = stack.shape[-1]
    report = ExtractionReport()
    start = time.perf_counter()
    next_log = log_every
    offset = 0
    for path, xy in jobs:
        n = len(xy)
        if n == 0:
            continue
        try:
            micrograph = blank_padding(read_micrograph(path))
        except MicrographError:
            if not skip_bad_micrographs:
                raise
            logger.warning("Skipping unreadable micrograph %s (%d particles)", path, n)
            report.skipped_micrographs.append(path)
            offset += n
            if on_progress is not None:
                on_progress(n)
            continue
        images, crossing = extract_particles(micrograph, xy, box, size, invert)
        stack[offset:offset + n] = images
        offset += n
        report.n_particles += n
        report.n_crossing_border += int(crossing.sum())
        if on_progress is not None:
            on_progress(n)
        if offset >= next_log:
            rate = offset / max(time.perf_counter() - start, 1e-9)
            logger.info("Extracted %d / %d particles (%.0f particles/s)", offset, len(stack), rate)
            next_log += log_every
    report.seconds = time.perf_counter() - start
    logger.info("Extracted %d particles in %.1f s (%d crossing the border)",
                report.n_particles, report.seconds, report.n_crossing_border)
    return report


def particle_box(path: str) -> int:
    """The box (px) of the images of an MRC particle stack, from its header alone."""
    _refuse_unread_format(path, particles=True)
    try:
        with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
            return int(mrc.header.nx)
    except Exception as exc:  # mrcfile raises ValueError, OSError, struct.error...
        raise MicrographError(path, f"cannot be read as an MRC stack ({exc})") from exc


def read_particle_images(items: Iterable[tuple[int, str]], size: int,
                         invert: bool = False, field_px: Optional[float] = None) -> np.ndarray:
    """Read user-given particle images, resized and normalised like extracted ones.

    ``items`` are (1-based index in the stack, file) pairs as Scipion stores
    particles; each file is opened once.  ``field_px`` is the run's box in the
    images' own pixels (its width in Å over their pixel size): each image is cut
    to that many central pixels before it is resized, so that it shows the run's
    field of view at the run's scale, whatever box it was extracted with (a box
    of 256 px resized whole into the network's 32 px would show the ice and
    carbon smaller than the run's 180 px boxes do).  None resizes the whole
    image (images in the run's own box and pixel size).
    """
    by_file: dict[str, list[int]] = {}
    order: list[tuple[str, int]] = []
    for index, path in items:
        by_file.setdefault(path, []).append(index)
        order.append((path, len(by_file[path]) - 1))
    loaded: dict[str, np.ndarray] = {}
    for path, indices in by_file.items():
        _refuse_unread_format(path, particles=True)
        try:
            with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
                data = np.asarray(mrc.data, dtype=np.float32)
        except Exception as exc:  # mrcfile raises ValueError, OSError, struct.error...
            raise MicrographError(path, f"cannot be read as an MRC stack ({exc})") from exc
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3 or data.shape[-1] != data.shape[-2]:
            raise MicrographError(path, "expected square particle images, found shape %s"
                                  % (data.shape,))
        idx = np.asarray(indices) - 1
        if idx.min() < 0 or idx.max() >= len(data):
            raise MicrographError(path, f"particle index out of range 1..{len(data)}")
        images = data[idx]
        if field_px is not None:
            images = _central_field(images, field_px, path)
        loaded[path] = normalise(fourier_resize(images, size), invert)
    if not order:
        return np.empty((0, size, size), dtype=np.float32)
    return np.stack([loaded[path][i] for path, i in order])


def _central_field(images: np.ndarray, field_px: float, path: str) -> np.ndarray:
    """The central ``field_px`` (rounded) pixels of each image, centred where extraction
    centres a pick (pixel box // 2); a field wider than the images is refused, naming
    the file."""
    box = images.shape[-1]
    field = int(round(field_px))
    if field > box:
        raise MicrographError(path, f"particle images of {box} px are narrower than the run's "
                                    f"boxes ({field} px at their pixel size): extract them "
                                    f"with a box of at least {field} px")
    start = box // 2 - field // 2
    return images[:, start:start + field, start:start + field]


def median_skewness(images: np.ndarray) -> float:
    """The median over ``images`` of each image's pixel skewness: negative where dense
    objects (protein, carbon, contamination) are darker than the ice, as in raw
    micrographs; positive where the contrast was inverted (RELION's and Xmipp's
    extraction invert it by default)."""
    if len(images) == 0:
        return 0.0
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return float(np.median(scipy.stats.skew(flat, axis=1)))
