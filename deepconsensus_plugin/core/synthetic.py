"""Synthetic micrographs and pickers with known truth, for tests and benchmarks.

Particles are dark rings with a dark centre (a crude top view of a
symmetric complex) on a smooth, noisy background; junk is small dense dots
and large dark blobs (ice contamination).  Each synthetic picker finds most
particles with a little position error and adds false positives of its own on
junk and on empty background, so that the pickers rarely agree on a false
positive: the situation Deep Consensus is built for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import mrcfile
import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class SyntheticMicrograph:
    path: str
    particles: np.ndarray  # (n, 2) true centres
    junk: np.ndarray       # (m, 2) junk centres


def _stamp(image: np.ndarray, centre: np.ndarray, template: np.ndarray) -> None:
    half = template.shape[0] // 2
    x, y = int(round(centre[0])), int(round(centre[1]))
    image[y - half:y - half + template.shape[0], x - half:x - half + template.shape[1]] += template


def particle_template(diameter: float) -> np.ndarray:
    size = int(diameter * 1.5) | 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    r = np.hypot(xx, yy)
    radius = diameter / 2
    ring = np.exp(-((r - 0.75 * radius) / (0.15 * radius)) ** 2)
    core = np.exp(-(r / (0.25 * radius)) ** 2)
    return -(ring + 0.8 * core)


def junk_template(diameter: float, rng: np.random.Generator) -> np.ndarray:
    """A small dense dot or a large soft blob, never particle-shaped."""
    size = int(diameter * 1.5) | 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    r = np.hypot(xx, yy)
    if rng.random() < 0.5:
        return -2.5 * np.exp(-(r / (0.12 * diameter)) ** 2)
    return -1.2 * np.exp(-(r / (0.55 * diameter)) ** 4)


def make_micrograph(path: str, shape: tuple[int, int], n_particles: int, n_junk: int,
                    diameter: float, rng: np.random.Generator,
                    noise: float = 0.6) -> SyntheticMicrograph:
    """Write one synthetic MRC micrograph and return its truth."""
    rows, cols = shape
    margin = diameter
    centres = _spread_points(n_particles + n_junk, (rows, cols), margin, 1.2 * diameter, rng)
    particles, junk = centres[:n_particles], centres[n_particles:]
    image = gaussian_filter(rng.normal(size=shape), 40) * 20
    template = particle_template(diameter)
    for c in particles:
        _stamp(image, c, template)
    for c in junk:
        _stamp(image, c, junk_template(diameter, rng))
    image = gaussian_filter(image, 1.0) + rng.normal(scale=noise, size=shape)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(image.astype(np.float32))
        mrc.voxel_size = 2.0
    return SyntheticMicrograph(path, particles, junk)


def _spread_points(n: int, shape: tuple[int, int], margin: float, min_distance: float,
                   rng: np.random.Generator) -> np.ndarray:
    rows, cols = shape
    points: list[np.ndarray] = []
    for _ in range(50 * n):
        if len(points) == n:
            break
        p = rng.uniform([margin, margin], [cols - margin, rows - margin])
        if all(np.hypot(*(p - q)) >= min_distance for q in points):
            points.append(p)
    return np.array(points).reshape(-1, 2)


def make_picker(mic: SyntheticMicrograph, shape: tuple[int, int], recall: float,
                n_false: int, jitter: float, diameter: float,
                rng: np.random.Generator) -> np.ndarray:
    """Picks of one synthetic picker: found particles with jitter, plus false positives.

    Half of the false positives land on junk, the rest on random background.
    """
    found = mic.particles[rng.random(len(mic.particles)) < recall]
    found = found + rng.normal(scale=jitter, size=found.shape)
    n_on_junk = min(len(mic.junk), n_false // 2)
    on_junk = mic.junk[rng.choice(len(mic.junk), n_on_junk, replace=False)] if n_on_junk else \
        np.empty((0, 2))
    rows, cols = shape
    elsewhere = rng.uniform([diameter, diameter], [cols - diameter, rows - diameter],
                            size=(n_false - n_on_junk, 2))
    return np.vstack([found, on_junk, elsewhere])


def make_dataset(folder: str, n_micrographs: int = 4, shape: tuple[int, int] = (768, 768),
                 n_particles: int = 60, n_junk: int = 20, diameter: float = 24,
                 n_pickers: int = 3, seed: int = 0) -> tuple[list[SyntheticMicrograph], list]:
    """Micrographs written to ``folder`` and, per picker, a list of picks per micrograph."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    mics = [make_micrograph(os.path.join(folder, f"synthetic_{i:03d}.mrc"), shape,
                            n_particles, n_junk, diameter, rng)
            for i in range(n_micrographs)]
    pickers = [[make_picker(m, shape, recall=0.92, n_false=n_particles // 4,
                            jitter=diameter * 0.03, diameter=diameter, rng=rng) for m in mics]
               for _ in range(n_pickers)]
    return mics, pickers
