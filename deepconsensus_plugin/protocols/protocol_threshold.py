"""ProtDeepConsensusThreshold: new retained and pruned sets at another score threshold.

The paper leaves better thresholds to be "manually chosen after visual
inspection of the final ranking".  The scores of a finished deep-consensus
run are saved with it, so a new cut is a matter of seconds: this protocol
reads them and registers the two sets again, made exactly as the
deep-consensus run makes its own, without touching the network.
"""
import json
import os

import pyworkflow.protocol.params as params
from pwem.protocols import ProtParticles
from pyworkflow import BETA
from pyworkflow.utils import Message

from ..core import parameters, run_summary
from ..results import RunResults
from .outputs import POSSIBLE_OUTPUTS, registerSplit


class ProtDeepConsensusThreshold(ProtParticles):
    """Cut the scores of a finished deep-consensus run at a new threshold.

    Registers new DC-retained (score >= threshold) and DC-pruned sets, with
    the same micrographs, box size and score attributes (_dcScore, _dcVotes)
    as the run's own outputs, in seconds and without retraining.
    """

    _label = "deep consensus threshold"
    _devStatus = BETA
    _possibleOutputs = POSSIBLE_OUTPUTS

    THRESHOLD_GIVEN = 0
    THRESHOLD_AUTO = 1

    # -------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputRun", params.PointerParam, pointerClass="ProtDeepConsensus",
                      important=True, label="Deep consensus run",
                      help="A finished deep-consensus run: its saved scores are cut again; "
                           "nothing is retrained.")
        form.addParam("thresholdMode", params.EnumParam, default=self.THRESHOLD_GIVEN,
                      choices=["given value", "automatic"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Threshold",
                      help="'given value' uses the score threshold below, chosen for "
                           "instance from the viewer's histogram and galleries. "
                           "'automatic' uses the threshold the deep-consensus run "
                           "computed from its scores, when it computed one.")
        form.addParam("threshold", params.FloatParam, default=0.5,
                      condition="thresholdMode==%d" % self.THRESHOLD_GIVEN,
                      label="Score threshold",
                      help="Coordinates scoring at or above it are DC-retained, the others "
                           "DC-pruned. Higher keeps fewer, cleaner particles; lower keeps "
                           "more. 0.5 is the natural cut of a balanced classifier.")

    # -------------------------- INSERT steps functions -----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.createOutputStep, self.thresholdMode.get(),
                                 self.threshold.get(), needsGPU=False)

    # -------------------------- STEPS functions ------------------------------
    def createOutputStep(self, mode, value):
        dcRun = self.inputRun.get()
        results = RunResults(dcRun._getExtraPath())
        threshold = results.autoThreshold if mode == self.THRESHOLD_AUTO else value
        split = results.split(threshold)
        registerSplit(self, dcRun, results, split)
        table, training = results.table, results.info.training
        summary = {"threshold": float(threshold), "automatic": mode == self.THRESHOLD_AUTO,
                   "nRetained": len(split.retained), "nPruned": len(split.pruned),
                   "nDuplicates": split.n_duplicates, "minDistancePx": results.minDistancePx,
                   "nAtEdge": split.n_at_edge, "edgeMarginPx": results.edgeMarginPx,
                   "nUnscored": len(table) - len(split.retained) - len(split.pruned),
                   "valAccuracy": training.last.val_accuracy if training else None}
        with open(self._getExtraPath("threshold.json"), "w") as handle:
            json.dump(summary, handle, indent=1)

    # -------------------------- INFO functions -------------------------------
    def _validate(self):
        dcRun = self.inputRun.get()
        if dcRun is None:
            return ["Choose a deep-consensus run."]
        folder = dcRun._getExtraPath()
        if not RunResults.isComplete(folder):
            return ["The deep-consensus run '%s' has no scores yet: let it finish first."
                    % dcRun.getRunName()]
        if self.thresholdMode.get() == self.THRESHOLD_AUTO:
            if RunResults(folder).autoThreshold is None:
                return ["The deep-consensus run '%s' computed no automatic threshold: "
                        "give a value instead." % dcRun.getRunName()]
            return []
        return ["Score threshold must be %s." % text for _, _, text in
                parameters.out_of_range({"threshold": self.threshold.get()})]

    def _summary(self):
        summary = self.readThresholdSummary()
        if summary is None:
            return ["Not run yet."]
        total = summary["nRetained"] + summary["nPruned"]
        line = "Kept {:,} of {:,} coordinates ({:.1f}%) at {}threshold {:.2f}".format(
            summary["nRetained"], total, 100.0 * summary["nRetained"] / max(total, 1),
            "the automatic " if summary["automatic"] else "", summary["threshold"])
        if summary.get("valAccuracy") is not None:
            line += ", validation accuracy %.2f" % summary["valAccuracy"]
        pruned = "; pruned {:,}".format(summary["nPruned"])
        pruned += run_summary.pruned_reasons(summary.get("nDuplicates", 0),
                                             summary.get("minDistancePx", 0.0),
                                             summary.get("nAtEdge", 0),
                                             summary.get("edgeMarginPx", 0.0))
        lines = [line + pruned + "."]
        if summary["nUnscored"]:
            lines.append("{:,} coordinates on skipped micrographs have no score and are in "
                         "neither set.".format(summary["nUnscored"]))
        return lines

    def _methods(self):
        summary = self.readThresholdSummary()
        if summary is None:
            return []
        return ["The Deep Consensus [SanchezGarcia2018] scores were cut at %.2f, keeping %d "
                "of %d coordinates." % (summary["threshold"], summary["nRetained"],
                                        summary["nRetained"] + summary["nPruned"])]

    def _citations(self):
        return ["SanchezGarcia2018"]

    # -------------------------- UTILS functions ------------------------------
    def readThresholdSummary(self):
        """Threshold used and set sizes, as written by createOutputStep (None before)."""
        path = self._getExtraPath("threshold.json")
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            return json.load(handle)
