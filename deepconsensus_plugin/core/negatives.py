"""Negative examples: micrograph regions that no picker thought held a particle.

The network learns "particle" from the AND set and "not a particle" from
random boxes far from every pick (the NEG set).  A box centred at least half a
box away from every OR coordinate overlaps no picked particle's centre, so it
shows ice, carbon, contamination or particle edges: the kinds of image that
pickers' false positives look like.
"""
from __future__ import annotations

import logging
from typing import Hashable, Mapping, Optional

import numpy as np
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)


def allocate(total: int, n_bins: int) -> np.ndarray:
    """Split ``total`` items over ``n_bins`` bins as evenly as possible."""
    if n_bins <= 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.full(n_bins, total // n_bins, dtype=np.int64)
    counts[: total % n_bins] += 1
    return counts


def sample_negatives(shape: tuple[int, int], box: int, avoid: np.ndarray,
                     count: int, min_distance: float,
                     rng: np.random.Generator, max_rounds: int = 50,
                     spacing: float | None = None,
                     existing: np.ndarray | None = None) -> np.ndarray:
    """Random box centres on one micrograph, away from every coordinate in ``avoid``.

    Parameters
    ----------
    shape:
        micrograph shape as (rows, columns).
    box:
        box size in pixels; every returned box lies wholly inside the micrograph.
    avoid:
        (n, 2) x/y coordinates (the OR set and known particles) to keep away from.
    count:
        how many centres to return.  Fewer are returned, with a warning, when
        the micrograph is too crowded to hold them.
    min_distance:
        smallest allowed distance to ``avoid``.
    spacing:
        smallest allowed distance between returned centres (default
        ``min_distance``); near-identical boxes would only repeat a patch.
    existing:
        negatives already chosen on this micrograph: new ones keep ``spacing``
        from them too, and only the new ones are returned.
    """
    rows, cols = shape
    half = box / 2.0
    lo = np.array([half, half])
    hi = np.array([cols - half, rows - half])
    if count <= 0 or np.any(hi < lo):
        return np.empty((0, 2))
    spacing = min_distance if spacing is None else spacing
    avoid = np.asarray(avoid, dtype=np.float64).reshape(-1, 2)
    avoid_tree = cKDTree(avoid) if len(avoid) else None
    start = np.empty((0, 2)) if existing is None else np.asarray(existing, float).reshape(-1, 2)
    chosen = start
    for _ in range(max_rounds):
        need = count - (len(chosen) - len(start))
        if need <= 0:
            break
        candidates = rng.uniform(lo, hi, size=(max(4 * need, 64), 2))
        if avoid_tree is not None:
            dist, _ = avoid_tree.query(candidates)
            candidates = candidates[dist >= min_distance]
        chosen = _add_spread(chosen, candidates, spacing)[:len(start) + count]
    new = chosen[len(start):]
    if len(new) < count:
        logger.warning("Only %d of %d negative boxes fit on a %dx%d micrograph "
                       "at %.1f px from every pick", len(new), count, cols, rows,
                       min_distance)
    return new


def offcentre_negatives(centres: np.ndarray, avoid: np.ndarray, shape: tuple[int, int],
                        shift: float, clearance: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Boxes shifted off particle centres: one per centre, ``shift`` px away in a random direction.

    A picker that centres a particle badly, or picks its edge, produces a box
    that shows most of a particle off-centre; random background never shows
    the network such a box, so it learns "some particle in the box" instead
    of "a particle at the centre", and keeps off-centre picks and the second,
    off-centre pick of a particle.  These boxes teach the difference.  A
    shifted centre closer than ``clearance`` to any coordinate of ``avoid``
    (the OR set: another pick, which may be a particle's centre) or outside
    the micrograph is dropped.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    if len(centres) == 0:
        return np.empty((0, 2))
    angle = rng.uniform(0.0, 2 * np.pi, len(centres))
    shifted = centres + shift * np.column_stack([np.cos(angle), np.sin(angle)])
    rows, cols = shape
    inside = ((shifted[:, 0] >= 0) & (shifted[:, 0] < cols)
              & (shifted[:, 1] >= 0) & (shifted[:, 1] < rows))
    shifted = shifted[inside]
    avoid = np.asarray(avoid, dtype=np.float64).reshape(-1, 2)
    if len(avoid) and len(shifted):
        dist, _ = cKDTree(avoid).query(shifted)
        shifted = shifted[dist >= clearance]
    return shifted


def _add_spread(chosen: np.ndarray, candidates: np.ndarray, min_distance: float) -> np.ndarray:
    """Append candidates that keep ``min_distance`` from the chosen ones and each other.

    Overlapping negatives would show the same patch twice; dropping them keeps
    the NEG set as varied as the micrograph allows.
    """
    if len(chosen) and len(candidates):
        dist, _ = cKDTree(chosen).query(candidates)
        candidates = candidates[dist >= min_distance]
    kept: list[np.ndarray] = []
    if len(candidates):
        tree = cKDTree(candidates)
        taken = np.zeros(len(candidates), dtype=bool)
        blocked = np.zeros(len(candidates), dtype=bool)
        for i in range(len(candidates)):
            if blocked[i]:
                continue
            taken[i] = True
            blocked[tree.query_ball_point(candidates[i], min_distance)] = True
        kept = [candidates[taken]]
    return np.vstack([chosen, *kept]) if kept else chosen


PICKER_PARTICLES_SHARE = 0.5
"""Known negatives of which more than this share lie on one picker's picks
(:func:`fraction_on_picks`) are that picker's particles, and refused
(:func:`picker_particles`)."""


def fraction_on_picks(known: Mapping[Hashable, np.ndarray],
                      picks: Mapping[Hashable, np.ndarray], radius: float) -> tuple[int, float]:
    """How many known negatives share a micrograph with ``picks``, and what fraction of
    those lie closer than ``radius`` to a pick (as picks agree in the consensus).

    Both map a micrograph (its name or id) to (n, 2) x/y in the same pixels.  Known
    negatives that mostly sit on a picker's picks are that picker's
    particles, not background: training on them as negatives teaches the
    network that particles are not particles.
    """
    near = shared = 0
    for name, xy in known.items():
        theirs = picks.get(name)
        if theirs is None or not len(theirs) or not len(xy):
            continue
        dist, _ = cKDTree(theirs).query(xy, distance_upper_bound=radius)
        shared += len(xy)
        near += int(np.count_nonzero(dist < radius))
    return shared, near / shared if shared else 0.0


def picker_particles(known: Mapping[Hashable, np.ndarray], picks: Mapping[Hashable, np.ndarray],
                     radius: float) -> Optional[tuple[int, int]]:
    """(how many of the known negatives lie on ``picks``, of how many that share a
    micrograph with them) where more than :data:`PICKER_PARTICLES_SHARE` do: the known
    negatives are then that picker's particles (:func:`fraction_on_picks`), which the
    form and the command line refuse; None where they are not."""
    shared, fraction = fraction_on_picks(known, picks, radius)
    return (round(fraction * shared), shared) if fraction > PICKER_PARTICLES_SHARE else None
