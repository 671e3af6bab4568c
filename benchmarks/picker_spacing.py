"""Where one picker's picks lack another picker's vote: beside that picker's own pick?

    python benchmarks/picker_spacing.py --data ../shared/data/empiar10017 --picker crYOLO \\
        --other topaz
    python benchmarks/picker_spacing.py --data NEW --pixel-size 1.1 --diameter 150 [--flip-y] \\
        --picker A --other B

The agreement reads a picker's missing vote as evidence of junk.  But no picker picks
two points closer than its own spacing (the exclusion radius of its extraction), so
in a crowded field a missing vote may only say that the picker had picked beside.
This prints each picker's closest spacing (the smallest distance between two of its
picks on one micrograph) and then, on the labelled micrographs, the picks of
``--picker`` that no pick of ``--other`` confirms within the consensus radius (10% of
the box, as the protocol's default), by their distance to the nearest pick of
``--other``, with the share of them on a label (lenient: within the match radius).
If that share is as high beside the other picker's pick as it is among confirmed picks,
the missing vote there says nothing about the box (``benchmarks/README.md``, *The
decisions per vote pattern*).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from empiar_data import add_dataset_arguments, load_dataset, spec_from_arguments  # noqa: E402

from deepconsensus_plugin.core.metrics import match_to_truth  # noqa: E402
from deepconsensus_plugin.core.stages import ConsensusParams  # noqa: E402


def closest_spacing(picks: dict[str, np.ndarray]) -> float:
    """The smallest distance (px) between two picks of one micrograph, over all of them
    (``inf`` where no micrograph has two picks)."""
    closest = np.inf
    for xy in picks.values():
        if len(xy) > 1:
            distances, _ = cKDTree(xy).query(xy, k=2)
            closest = min(closest, float(distances[:, 1].min()))
    return closest


def nearest_other(picks: dict[str, np.ndarray], others: dict[str, np.ndarray],
                  truth: dict[str, np.ndarray],
                  match_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """For each pick on a micrograph of ``truth``: the distance to the nearest pick of
    ``others`` (``inf`` where it has none there) and whether a label lies within
    ``match_radius`` (the benchmark's lenient labels, :func:`.metrics.match_to_truth`)."""
    distance, labelled = [np.empty(0)], [np.empty(0, dtype=bool)]
    for name, labels in truth.items():
        xy = picks.get(name, np.empty((0, 2)))
        if not len(xy):
            continue
        other = others.get(name, np.empty((0, 2)))
        distance.append(cKDTree(other).query(xy)[0] if len(other)
                        else np.full(len(xy), np.inf))
        labelled.append(match_to_truth(xy, labels, match_radius)[0])
    return np.concatenate(distance), np.concatenate(labelled)


def share(flags: np.ndarray) -> float:
    """The share of ``flags`` that are set (NaN where there are none)."""
    return float(flags.mean()) if len(flags) else float("nan")


def bands(distance: np.ndarray, labelled: np.ndarray, radius: float,
          spacing: float) -> list[tuple[str, int, float]]:
    """(band, count, labelled share) of the picks farther than ``radius`` from the other
    picker's: beside one of its picks (within its closest ``spacing``), a little further
    (up to twice it) and beyond."""
    limits = [("within its closest spacing", radius, spacing),
              ("one to two spacings", spacing, 2 * spacing),
              ("further, or none on the micrograph", 2 * spacing, np.inf)]
    rows = []
    for label, low, high in limits:
        inside = (distance > low) & (distance <= high)
        rows.append((label, int(inside.sum()), share(labelled[inside])))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--picker", required=True, help="the picker whose lone picks to count")
    parser.add_argument("--other", required=True, help="the picker whose vote they lack")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        data = load_dataset(args.data, scratch, spec_from_arguments(args))
    for name in (args.picker, args.other):
        if name not in data.pickers:
            raise SystemExit("%s has no picker %r (it has %s)"
                             % (args.data, name, ", ".join(data.pickers)))
    print("%s: box %d px, match radius %.1f px" % (data.name, data.box, data.match_radius))
    for picker in data.pickers:
        print("  %s: closest spacing %.1f px" % (picker, closest_spacing(data.picks[picker])))
    radius = ConsensusParams().radius * data.box
    spacing = closest_spacing(data.picks[args.other])
    distance, labelled = nearest_other(data.picks[args.picker], data.picks[args.other],
                                       data.truth, data.match_radius)
    confirmed = distance <= radius
    print("%s picks on the labelled micrographs: %d that a %s pick within %.1f px confirms, "
          "%.0f%% labelled; %d that none does, %.0f%% labelled"
          % (args.picker, confirmed.sum(), args.other, radius, 100 * share(labelled[confirmed]),
             (~confirmed).sum(), 100 * share(labelled[~confirmed])))
    for band, count, labelled_share in bands(distance, labelled, radius, spacing):
        print("  nearest %s pick %s: %d%s" % (args.other, band, count, ", %.0f%% labelled"
                                              % (100 * labelled_share) if count else ""))


if __name__ == "__main__":
    main()
