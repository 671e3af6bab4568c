"""Audit of the EMPIAR-10017 ground truth with a benchmark run's scores.

    python benchmarks/gt_audit.py --data ../shared/data/empiar10017 --out OUT

``OUT`` is the folder of a ``dataset.py`` run (its ``scores.csv`` and
converted micrographs are reused).  The benchmark counts every OR coordinate
with no ground-truth centre within 27 px as a false positive.  If the curated
ground truth missed particles, some of those "false positives" are particles,
and no ranking can reach a high ROC-AUC against it.  This script looks at
each group of coordinates through two facts that need no labels:

* how far the nearest ground-truth centre is: a duplicate or an off-centre
  pick of a labelled particle lies within a particle radius (54 px); a
  particle the curation missed lies about one particle spacing away;
* what the group's average box looks like: the radial profile of the mean
  image is compared with that of the true positives all three pickers found
  (correlation), and its central contrast (mean of the inner 8 px minus the
  ring at 20-32 px, at 64 px per box) says whether there is a particle-sized
  density at the centre (random background: about 0).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from empiar_data import load_dataset, or_labels  # noqa: E402

from deepconsensus_plugin.core.extraction import extract_particles, read_micrograph  # noqa: E402

SIZE = 64
PARTICLE_RADIUS = 54.0


def radial_profile(image: np.ndarray) -> np.ndarray:
    """Mean of ``image`` over rings of 1 px around its centre."""
    centre = (np.array(image.shape) - 1) / 2
    yy, xx = np.indices(image.shape)
    ring = np.hypot(yy - centre[0], xx - centre[1]).astype(int).ravel()
    return np.bincount(ring, image.ravel()) / np.bincount(ring)


def read_scores(path: str) -> dict[str, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {"names": np.array([r["micrograph"] for r in rows]),
            "xy": np.array([[float(r["x"]), float(r["y"])] for r in rows]),
            "score": np.array([float(r["score"]) for r in rows]),
            "votes": np.array([int(r["votes"]) for r in rows])}


def audit(data_dir: str, out: str, seed: int = 0) -> list[dict]:
    data = load_dataset(data_dir, out)
    run = read_scores(os.path.join(out, "scores.csv"))
    names, xy, score, votes = run["names"], run["xy"], run["score"], run["votes"]
    rng = np.random.default_rng(seed)
    images: dict[str, list[np.ndarray]] = {}
    distances: dict[str, list[np.ndarray]] = {}
    for name, truth in data.truth.items():
        mic = read_micrograph(data.mrc_paths[name])
        on = names == name
        pts = xy[on]
        true = or_labels(names[on], pts, data)
        to_truth = cKDTree(truth).query(pts)[0]
        near_any = cKDTree(np.vstack([pts, truth]))
        cand = rng.uniform(data.box, np.array(mic.shape[::-1]) - data.box, size=(3000, 2))
        background = cand[near_any.query(cand)[0] > 2 * PARTICLE_RADIUS][:300]
        missed = truth[cKDTree(pts).query(truth)[0] > data.match_radius]
        groups = {
            "true positives, 3 votes": true & (votes[on] == 3),
            "false positives, 3 votes": ~true & (votes[on] == 3),
            "false positives, 2 votes": ~true & (votes[on] == 2),
            "false positives, 1 vote": ~true & (votes[on] == 1),
            "false positives, score >= 0.9": ~true & (score[on] >= 0.9),
            "false positives, score < 0.1": ~true & (score[on] < 0.1),
        }
        for key, mask in groups.items():
            distances.setdefault(key, []).append(to_truth[mask])
            images.setdefault(key, []).append(
                extract_particles(mic, pts[mask], data.box, SIZE)[0])
        images.setdefault("ground truth no picker found", []).append(
            extract_particles(mic, missed, data.box, SIZE)[0])
        images.setdefault("random background", []).append(
            extract_particles(mic, background, data.box, SIZE)[0])
    reference = radial_profile(np.concatenate(images["true positives, 3 votes"]).mean(0))
    rows = []
    for key, parts in images.items():
        stack = np.concatenate(parts)
        profile = radial_profile(stack.mean(0))[:32]
        row = {"group": key, "n": len(stack),
               "profile_correlation": float(np.corrcoef(profile, reference[:32])[0, 1]),
               "central_contrast": float(profile[:8].mean() - profile[20:32].mean())}
        if key in distances:
            dist = np.concatenate(distances[key])
            row["median_distance_to_truth_px"] = float(np.median(dist))
            row["share_beyond_particle_radius"] = float((dist > PARTICLE_RADIUS).mean())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="folder of a dataset.py run")
    args = parser.parse_args(argv)
    rows = audit(args.data, args.out)
    print("| group | n | profile corr. | central contrast | median distance to truth "
          "| beyond 54 px |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        dist = ("%.0f px" % r["median_distance_to_truth_px"]
                if "median_distance_to_truth_px" in r else "")
        share = ("%.0f%%" % (100 * r["share_beyond_particle_radius"])
                 if "share_beyond_particle_radius" in r else "")
        print("| %s | %d | %.3f | %.2f | %s | %s |" % (r["group"], r["n"],
                                                       r["profile_correlation"],
                                                       r["central_contrast"], dist, share))
    return 0


if __name__ == "__main__":
    sys.exit(main())
