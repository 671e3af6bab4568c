"""Build the real demo dataset shipped in ``deepconsensus_plugin/demo_data``.

The plugin needs a few real micrographs with the outputs of several
independent pickers and curated ground truth, small enough to ship inside the
package, so that its tests and tutorial run on real data without downloads.
This script derives that dataset from the EMPIAR-10017 collection in the
shared folder (see its README.md for provenance and coordinate frames):

* three of the four micrographs that have ground truth are flipped from the
  JPG row frame to the MRC frame the pickers saw, binned 2x2 (1.77 A ->
  3.54 A per pixel) and written as 8-bit MRC;
* the crYOLO, topaz and deepPicker EMAN ``.box`` files and the ground-truth
  centres are mapped to the binned MRC frame;
* precision, recall and F1 are printed for each picker in the binned frame and
  at full resolution from the source files, to show the conversion preserves
  them.

Usage (from the repository root)::

    python tools/make_demo_data.py [--src DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO_ROOT.parent / "shared" / "data" / "empiar10017"
DEFAULT_OUT = REPO_ROOT / "deepconsensus_plugin" / "demo_data"

PICKERS = ("crYOLO", "topaz", "deepPicker")
N_MICROGRAPHS = 3
FULL_SIZE = 4096
BIN = 2
FULL_PIXEL_SIZE = 1.77
BINNED_PIXEL_SIZE = FULL_PIXEL_SIZE * BIN
BINNED_BOX = 180 // BIN
FULL_RADIUS = 27.0
BINNED_RADIUS = FULL_RADIUS / BIN


@dataclass(frozen=True)
class Picks:
    """Particle centres (N x 2, columns x = column, y = row) with scores."""

    centres: np.ndarray
    scores: list[str]


def gt_names(src: Path) -> list[str]:
    """Micrograph names that have ground truth, in sorted order."""
    return sorted(p.stem for p in (src / "gt").glob("*.csv"))


def load_mrc_frame_image(jpg: Path) -> np.ndarray:
    """Read a JPG micrograph as float and flip it to the MRC (picker) frame."""
    data = np.asarray(Image.open(jpg).convert("L"), dtype=np.float64)
    return data[::-1]


def bin_image(data: np.ndarray, factor: int = BIN) -> np.ndarray:
    """Mean-bin a 2D image by ``factor`` along both axes."""
    rows, cols = data.shape
    blocks = data.reshape(rows // factor, factor, cols // factor, factor)
    return blocks.mean(axis=(1, 3))


def to_int8(data: np.ndarray) -> np.ndarray:
    """Shift 8-bit grey values [0, 255] to signed int8 (MRC mode 0)."""
    return np.clip(np.round(data) - 128, -128, 127).astype(np.int8)


def write_micrograph(data: np.ndarray, path: Path) -> None:
    """Write an int8 micrograph with the binned pixel size."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = BINNED_PIXEL_SIZE


def read_box(path: Path) -> Picks:
    """Read an EMAN box file (lower-left x y w h score) as centres."""
    centres, scores = [], []
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        x, y, w, h = (float(v) for v in fields[:4])
        centres.append((x + w / 2, y + h / 2))
        scores.append(fields[4])
    return Picks(np.array(centres, dtype=np.float64).reshape(-1, 2), scores)


def write_box(picks: Picks, box: int, path: Path) -> None:
    """Write centres as an EMAN box file (lower-left x y w h score)."""
    half = box / 2
    lines = [f"{x - half:.1f}\t{y - half:.1f}\t{box}\t{box}\t{score}"
             for (x, y), score in zip(picks.centres, picks.scores)]
    path.write_text("\n".join(lines) + "\n")


def read_gt_jpg_frame(path: Path) -> np.ndarray:
    """Read source ground truth (JPG row frame) as MRC-frame centres."""
    xy = np.loadtxt(path, delimiter=",", comments="#", ndmin=2)
    return np.column_stack([xy[:, 0], FULL_SIZE - xy[:, 1]])


def read_gt(path: Path) -> np.ndarray:
    """Read shipped ground truth (header ``x,y``) as centres."""
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def write_gt(centres: np.ndarray, path: Path) -> None:
    """Write centres as CSV with header ``x,y``."""
    lines = ["x,y"] + [f"{x:.1f},{y:.1f}" for x, y in centres]
    path.write_text("\n".join(lines) + "\n")


def count_matches(coords: np.ndarray, gt: np.ndarray,
                  radius: float) -> tuple[int, int]:
    """Coordinates within ``radius`` of a GT centre, and GT centres hit."""
    if len(coords) == 0 or len(gt) == 0:
        return 0, 0
    d_coords, _ = cKDTree(gt).query(coords, distance_upper_bound=radius)
    d_gt, _ = cKDTree(coords).query(gt, distance_upper_bound=radius)
    return int(np.sum(d_coords <= radius)), int(np.sum(d_gt <= radius))


def evaluate(pairs: list[tuple[np.ndarray, np.ndarray]],
             radius: float) -> tuple[int, float, float, float]:
    """Pooled n, precision, recall and F1 over (coords, gt) pairs."""
    n = sum(len(coords) for coords, _ in pairs)
    n_gt = sum(len(gt) for _, gt in pairs)
    counts = [count_matches(coords, gt, radius) for coords, gt in pairs]
    tp = sum(matched for matched, _ in counts)
    hit = sum(found for _, found in counts)
    precision = tp / n if n else 0.0
    recall = hit / n_gt if n_gt else 0.0
    total = precision + recall
    f1 = 2 * precision * recall / total if total else 0.0
    return n, precision, recall, f1


def convert_micrograph(src: Path, out: Path, name: str) -> None:
    """Write the binned micrograph, picks and ground truth for one name."""
    image = load_mrc_frame_image(src / "micrographs" / f"{name}.jpg")
    write_micrograph(to_int8(bin_image(image)),
                     out / "micrographs" / f"{name}.mrc")
    for picker in PICKERS:
        picks = read_box(src / "picks" / picker / f"{name}.box")
        binned = Picks(picks.centres / BIN, picks.scores)
        box_path = out / "coordinates" / picker / f"{name}.box"
        write_box(binned, BINNED_BOX, box_path)
    gt = read_gt_jpg_frame(src / "gt" / f"{name}.csv")
    write_gt(gt / BIN, out / "ground_truth" / f"{name}.csv")


def make_dirs(out: Path) -> None:
    """Create the output folder layout."""
    for sub in ["micrographs", "ground_truth",
                *(f"coordinates/{p}" for p in PICKERS)]:
        (out / sub).mkdir(parents=True, exist_ok=True)


def print_verification(src: Path, out: Path, names: list[str]) -> None:
    """Print picker figures in the shipped (binned) and source frames."""
    print(f"Verification on {len(names)} micrographs: {', '.join(names)}")
    print(f"{'picker':<11} {'frame':<20} {'n':>5} {'P':>6} {'R':>6} {'F1':>6}")
    for picker in PICKERS:
        binned = [(read_box(out / "coordinates" / picker / f"{n}.box").centres,
                   read_gt(out / "ground_truth" / f"{n}.csv")) for n in names]
        full = [(read_box(src / "picks" / picker / f"{n}.box").centres,
                 read_gt_jpg_frame(src / "gt" / f"{n}.csv")) for n in names]
        for label, pairs, radius in (
                (f"binned r={BINNED_RADIUS:g}", binned, BINNED_RADIUS),
                (f"full r={FULL_RADIUS:g}", full, FULL_RADIUS)):
            n, p, r, f1 = evaluate(pairs, radius)
            print(f"{picker:<11} {label:<20} {n:>5} "
                  f"{p:6.3f} {r:6.3f} {f1:6.3f}")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC,
                        help="EMPIAR-10017 folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: %(default)s)")
    return parser.parse_args()


def main() -> None:
    """Build the demo dataset and print its verification."""
    args = parse_args()
    names = gt_names(args.src)[:N_MICROGRAPHS]
    make_dirs(args.out)
    for name in names:
        convert_micrograph(args.src, args.out, name)
        print(f"wrote {name}")
    print_verification(args.src, args.out, names)


if __name__ == "__main__":
    main()
