"""The saved results of a deep-consensus run, read back from its run folder.

ProtDeepConsensus keeps everything its outputs are made from in its run's
extra folder, a :class:`~.core.run_folder.RunFolder`: the consensus table,
the scores (aligned with the table's rows, NaN on skipped micrographs), the
micrographs, the particle stack, the training history and the run record.
The viewer, the re-threshold protocol, the demo and the benchmarks read them
here, which is why a new threshold or a figure costs seconds and no
retraining.  Nothing here imports Scipion: the caller passes the folder and
the project folder the stored paths are relative to.
"""
import os

import numpy as np

from .core.evaluation import agreement
from .core.run_folder import RunFolder
from .core.run_folder import MODEL_SCORE_ONLY
from .core.run_summary import model_origin
from .core.selection import Split, split_scores
from .core.stack import open_stack
from .core.training import read_history


class RunResults:
    """Consensus table, scores, micrographs and record of one finished deep-consensus run."""

    def __init__(self, folder, projectPath=None):
        """Load the run whose extra folder is ``folder``.

        Micrograph paths are stored relative to the project folder (the
        working directory of Scipion's steps); ``projectPath`` makes them
        usable from any working directory.
        """
        self.run = RunFolder(folder)
        missing = [name for name in RunFolder.SCORED if not self.run.has(name)]
        if missing:
            raise FileNotFoundError("%s holds no finished deep-consensus results (missing %s)"
                                    % (folder, ", ".join(missing)))
        self.folder = folder
        self.projectPath = projectPath
        self.table = self.run.consensus()
        self.scores = self.run.scores()
        self.info = self.run.info()
        self.micrographs = self.run.micrographs()
        self._edges = None

    @staticmethod
    def isComplete(folder):
        """Whether ``folder`` holds what a new threshold needs (the run got to its scores)."""
        return RunFolder(folder).is_scored()

    def path(self, name):
        return self.run.file(name)

    @property
    def box(self):
        """The box the run worked in (extraction, scoring, the shares of the box)."""
        return self.info.consensus.box

    @property
    def outputBox(self):
        """The box the outputs carry: the input coordinates'."""
        return self.info.consensus.output_box

    @property
    def minVotes(self):
        return self.info.consensus.min_votes

    @property
    def threshold(self):
        """The threshold the run's outputs were made with."""
        return self.info.split.threshold if self.info.split else 0.5

    @property
    def autoThreshold(self):
        """The run's automatic threshold, or None when the run did not compute one."""
        return self.info.ranking.auto_threshold if self.info.ranking else None

    @property
    def minDistancePx(self):
        """The run's minimum distance between retained coordinates (0: none)."""
        return self.info.split.min_distance_px if self.info.split else 0.0

    @property
    def modelOrigin(self):
        """Where the run's network came from, in words."""
        return model_origin(self.info.model)

    @property
    def scoredWithoutTraining(self):
        """Whether a reused model scored the run as it was (no training, no curves)."""
        return self.info.model is not None and self.info.model.use == MODEL_SCORE_ONLY

    @property
    def edgeMarginPx(self):
        """Distance from the micrograph edge under which coordinates are pruned (0: none)."""
        return self.info.split.edge_margin_px if self.info.split else 0.0

    def edgeDistances(self):
        """Each OR coordinate's distance in px to its micrograph's edge (read once)."""
        if self._edges is None:
            self._edges = self.run.edge_distances(self.table.mic, self.table.xy,
                                                  self.projectPath)
        return self._edges

    def split(self, threshold) -> Split:
        """The protocols' rule at ``threshold``: retained, pruned (duplicates and coordinates
        at the micrograph edge included) and which were duplicates or at the edge; rows with
        NaN scores are in neither set."""
        margin = self.edgeMarginPx
        return split_scores(self.scores, threshold, self.table.mic, self.table.xy,
                            self.minDistancePx, self.edgeDistances() if margin > 0 else None,
                            margin)

    def knownLabels(self):
        """(OR rows, 1 good / 0 bad) of the user's known picks, or None without them."""
        if self.info.evaluation is None or not self.run.has(RunFolder.KNOWN_LABELS):
            return None
        pairs = self.run.array(RunFolder.KNOWN_LABELS)
        return pairs[:, 0], pairs[:, 1]

    def knownAgreement(self, threshold):
        """Precision, recall and ROC-AUC on the known picks at ``threshold`` (None without)."""
        known = self.knownLabels()
        if known is None:
            return None
        rows, labels = known
        return agreement(labels, self.scores[rows], self.retainedMask(threshold)[rows])

    def retainedMask(self, threshold):
        return self.split(threshold).retained_mask()

    def micrographName(self, micId):
        return self.micrographs[micId].name

    def micrographPath(self, micId):
        path = self.micrographs[micId].path
        if self.projectPath and not os.path.isabs(path):
            path = os.path.join(self.projectPath, path)
        return path

    def micrographRows(self, micId):
        """Table rows of the coordinates on micrograph ``micId``."""
        return np.flatnonzero(self.table.mic == micId)

    def history(self):
        """Per-epoch training history (empty when the run has none)."""
        path = self.path(RunFolder.HISTORY)
        return read_history(path) if os.path.exists(path) else {}

    def particles(self):
        """The extracted OR boxes (read on demand), rows aligned with the table."""
        return open_stack(self.path(RunFolder.OR_PARTICLES))
