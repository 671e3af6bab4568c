"""The saved results of a deep-consensus run, read back from its ``extra/`` folder.

ProtDeepConsensus keeps everything its outputs are made from in its run's
extra folder: the consensus table, the scores (aligned with the table's rows,
NaN on skipped micrographs), the micrographs, the particle stack, the
training history and a summary in ``info.json``.  The viewer and the
re-threshold protocol read them here, which is why a new threshold or a
figure costs seconds and no retraining.  Nothing here imports Scipion: the
caller passes the folder and the project folder the stored paths are
relative to.
"""
import json
import os

import numpy as np

from .core.pipeline import CoordinateTable
from .core.selection import Split, split_scores
from .core.stack import open_stack
from .core.training import read_history

CONSENSUS = "consensus.npz"
SCORES = "scores.npy"
MICROGRAPHS = "micrographs.json"
INFO = "info.json"
HISTORY = "history.csv"
PARTICLES = "or_particles.npy"


class RunResults:
    """Consensus table, scores, micrographs and info of one finished deep-consensus run."""

    def __init__(self, folder, projectPath=None):
        """Load the run whose extra folder is ``folder``.

        Micrograph paths are stored relative to the project folder (the
        working directory of Scipion's steps); ``projectPath`` makes them
        usable from any working directory.
        """
        missing = [name for name in (CONSENSUS, SCORES, MICROGRAPHS, INFO)
                   if not os.path.exists(os.path.join(folder, name))]
        if missing:
            raise FileNotFoundError("%s holds no finished deep-consensus results (missing %s)"
                                    % (folder, ", ".join(missing)))
        self.folder = folder
        self.projectPath = projectPath
        self.table = CoordinateTable.load(self.path(CONSENSUS))
        self.scores = np.load(self.path(SCORES))
        with open(self.path(INFO)) as handle:
            self.info = json.load(handle)
        with open(self.path(MICROGRAPHS)) as handle:
            self.micrographs = {int(k): tuple(v) for k, v in json.load(handle).items()}

    @staticmethod
    def isComplete(folder):
        """Whether ``folder`` holds what a new threshold needs (the run got to its scores)."""
        return all(os.path.exists(os.path.join(folder, name))
                   for name in (CONSENSUS, SCORES, MICROGRAPHS, INFO))

    def path(self, name):
        return os.path.join(self.folder, name)

    @property
    def threshold(self):
        """The threshold the run's outputs were made with."""
        return self.info.get("threshold", 0.5)

    @property
    def autoThreshold(self):
        """The run's automatic threshold, or None when the run did not compute one."""
        return self.info.get("autoThreshold")

    @property
    def minDistancePx(self):
        """The run's minimum distance between retained coordinates (0: none)."""
        return self.info.get("minDistancePx", 0.0)

    def split(self, threshold) -> Split:
        """The protocols' rule at ``threshold``: retained, pruned (duplicates included) and
        the duplicates; rows with NaN scores are in neither set."""
        return split_scores(self.scores, threshold, self.table.mic, self.table.xy,
                            self.minDistancePx)

    def retainedMask(self, threshold):
        return self.split(threshold).retained_mask()

    def micrographPath(self, micId):
        path = self.micrographs[micId][1]
        if self.projectPath and not os.path.isabs(path):
            path = os.path.join(self.projectPath, path)
        return path

    def micrographRows(self, micId):
        """Table rows of the coordinates on micrograph ``micId``."""
        return np.flatnonzero(self.table.mic == micId)

    def history(self):
        """Per-epoch training history (empty when the run has none)."""
        path = self.path(HISTORY)
        return read_history(path) if os.path.exists(path) else {}

    def particles(self):
        """The extracted OR boxes (read on demand), rows aligned with the table."""
        return open_stack(self.path(PARTICLES))
