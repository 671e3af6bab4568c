"""Run Deep Consensus end to end on the bundled EMPIAR-10017 subset.

``python -m deepconsensus_plugin.demo`` creates a Scipion project, imports the
three shipped micrographs and the crYOLO, Topaz and DeepPicker coordinates,
runs ProtDeepConsensus, and prints how each input picker, the OR and AND
sets and the DC-retained set compare with the shipped ground truth.  It needs
no Scipion installation beyond the pip packages and no data outside the
package.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime

import numpy as np

from . import headless

DEMO_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_data")
PICKERS = ("crYOLO", "topaz", "deepPicker")
SAMPLING_RATE = 3.54
MATCH_RADIUS = 13.5
"""A quarter of the ~54 px particle diameter in the binned demo frame."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user-data", default=None,
                        help="folder for Scipion projects (default: $SCIPION_USER_DATA or "
                             "~/ScipionUserData)")
    parser.add_argument("--project", default=None,
                        help="project name (default: DeepConsensusDemo-<date-time>)")
    return parser.parse_args(argv)


def read_ground_truth() -> dict[str, np.ndarray]:
    folder = os.path.join(DEMO_DATA, "ground_truth")
    return {os.path.splitext(f)[0]: np.loadtxt(os.path.join(folder, f), delimiter=",",
                                               skiprows=1, ndmin=2)
            for f in sorted(os.listdir(folder)) if f.endswith(".csv")}


def coordinates_by_micrograph(coord_set) -> dict[str, np.ndarray]:
    """micrograph name -> (n, 2) x/y, plus the votes of Deep Consensus outputs."""
    from .convert import baseName

    grouped: dict[str, list] = {}
    for coord in coord_set.iterCoordinates():
        name = baseName(coord.getMicrograph().getMicName())
        votes = getattr(coord, "_dcVotes", None)
        grouped.setdefault(name, []).append(
            (coord.getX(), coord.getY(), votes.get() if votes is not None else 0))
    return {name: np.asarray(rows, dtype=float) for name, rows in grouped.items()}


def evaluate(picks: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> tuple:
    """(n, precision, recall, F1, lenient F1) of picks over the micrographs with ground truth.

    Precision, recall and F1 count one to one: each labelled particle
    matches at most one coordinate, so a particle picked twice adds a false
    positive.  The lenient F1 counts every coordinate near a particle as a
    true positive, duplicates included (how earlier versions counted).
    """
    from .core.metrics import count_picks

    counts = count_picks({name: xy[:, :2] for name, xy in picks.items()}, truth, MATCH_RADIUS)
    one = counts["one_to_one"]
    return one.n, one.precision, one.recall, one.f1, counts["lenient"].f1


def machine_has_gpu() -> bool:
    """Whether ``nvidia-smi`` lists a GPU: the demo books one only then, so that a laptop
    runs it on the CPU without the warning a booked but unseen GPU gives."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def new_protocol(project, protocol_class, label: str, **params) -> object:
    """``project.newProtocol`` with a label: pyworkflow 3.11 drops an ``objLabel`` keyword."""
    prot = project.newProtocol(protocol_class, **params)
    prot.setObjLabel(label)
    return prot


def run_protocol(project, prot) -> object:
    project.launchProtocol(prot, wait=True)
    prot = project.getProtocol(prot.getObjId())
    if not prot.isFinished():
        print("\n".join(prot.getLogsLastLines(40, logFile=1)), file=sys.stderr)
        raise SystemExit("%s failed; its log is in %s" % (prot.getRunName(),
                                                          prot.getLogPaths()[0]))
    return prot


def import_demo_inputs(project) -> tuple[object, dict[str, object]]:
    """Import the demo micrographs and each picker's coordinates into ``project``: the
    finished import runs, the pickers' by name."""
    from pwem.protocols import ProtImportMicrographs

    from .protocols import ProtImportPickerCoordinates

    mics = run_protocol(project, new_protocol(
        project, ProtImportMicrographs, "import EMPIAR-10017 subset",
        filesPath=os.path.join(DEMO_DATA, "micrographs"), filesPattern="*.mrc",
        samplingRate=SAMPLING_RATE, voltage=300))
    pickers = {}
    for picker in PICKERS:
        prot = new_protocol(project, ProtImportPickerCoordinates, picker,
                            filesPath=os.path.join(DEMO_DATA, "coordinates", picker),
                            filesPattern="*.box")
        prot.inputMicrographs.set(mics)
        prot.inputMicrographs.setExtended("outputMicrographs")
        pickers[picker] = run_protocol(project, prot)
    return mics, pickers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headless.configure(args.user_data)
    from pyworkflow.object import Pointer
    from pyworkflow.project import Manager

    from .protocols import ProtDeepConsensus
    from .results import RunResults

    name = args.project or "DeepConsensusDemo-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    project = Manager().createProject(name)
    os.chdir(project.path)  # pyworkflow resolves the project's files from here
    print("Scipion project: %s" % project.path, flush=True)
    start = time.perf_counter()

    mics, pickers = import_demo_inputs(project)
    print("Imported %d micrographs and %s" % (mics.outputMicrographs.getSize(), ", ".join(
        "%s (%d)" % (p, prot.outputCoordinates.getSize()) for p, prot in pickers.items())),
        flush=True)

    gpu = machine_has_gpu()
    dc = new_protocol(project, ProtDeepConsensus, "deep consensus", useGpu=gpu)
    for prot in pickers.values():
        dc.inputCoordinates.append(Pointer(prot, extended="outputCoordinates"))
    print("Running deep consensus on %s; its log is under %s"
          % ("GPU %s" % dc.gpuList.get() if gpu
             else "the CPU, as nvidia-smi lists no GPU (minutes)",
             os.path.join(project.path, "Runs")), flush=True)
    dc = run_protocol(project, dc)

    truth = read_ground_truth()
    rows = [(p, evaluate(coordinates_by_micrograph(prot.outputCoordinates), truth))
            for p, prot in pickers.items()]
    retained = coordinates_by_micrograph(dc.outputCoordinatesRetained)
    pruned = coordinates_by_micrograph(dc.outputCoordinatesPruned)
    union = {m: np.vstack([retained.get(m, np.empty((0, 3))), pruned.get(m, np.empty((0, 3)))])
             for m in set(retained) | set(pruned)}
    min_votes = RunResults(dc._getExtraPath(), project.path).minVotes
    rows += [("OR", evaluate(union, truth)),
             ("AND (>= %d)" % min_votes,
              evaluate({m: xy[xy[:, 2] >= min_votes] for m, xy in union.items()}, truth)),
             ("DC-retained", evaluate(retained, truth))]

    print("\nAgainst the ground truth of %d micrographs (match radius %.1f px, one to one: "
          "a particle picked twice counts once):" % (len(truth), MATCH_RADIUS))
    print("%-14s %6s %9s %7s %6s %11s" % ("set", "n", "precision", "recall", "F1",
                                          "lenient F1"))
    for label, (n, precision, recall, f1, lenient_f1) in rows:
        print("%-14s %6d %9.3f %7.3f %6.3f %11.3f" % (label, n, precision, recall, f1,
                                                      lenient_f1))
    print("\n" + "\n".join(dc.summary()))
    print("\nFinished in %.0f s. Open the project with: %s"
          % (time.perf_counter() - start, open_command(name, args.user_data)))
    return 0


def open_command(name: str, user_data: str | None) -> str:
    """The command that opens the project's window with what a pip install brings."""
    command = "%s -m deepconsensus_plugin.project %s" % (sys.executable, name)
    return command + (" --user-data %s" % os.path.abspath(user_data) if user_data else "")


if __name__ == "__main__":
    sys.exit(main())
