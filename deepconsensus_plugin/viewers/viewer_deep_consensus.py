"""DeepConsensusViewer: look at a deep-consensus pruning and cut it elsewhere.

Users of Scipion judge a pruning by looking at it: the score distribution,
the particles at both ends of the ranking and around the threshold, the
picks on a micrograph, the training curves and what became of each picker's
coordinates.  Every figure is drawn by :mod:`deepconsensus_plugin.core.plots`
from the run's saved results into pwem's plotter, so nothing but pwem and
matplotlib is needed.  The threshold on the form moves the split in every
figure at once, and a new threshold becomes new output sets in seconds
through ProtDeepConsensusThreshold.
"""
import numpy as np
import pyworkflow.protocol.params as params
from pwem.viewers.plotter import EmPlotter
from pyworkflow.protocol import Protocol
from pyworkflow.viewer import DESKTOP_TKINTER, MSG_ERROR, MessageView, ProtocolViewer

from ..core import plots
from ..core.extraction import read_micrograph
from ..core.run_folder import RunFolder
from ..core.selection import gallery_rows
from ..protocols import ProtDeepConsensus, ProtDeepConsensusThreshold
from ..results import RunResults

GALLERY_COLUMNS = 10


class DeepConsensusViewer(ProtocolViewer):
    """Scores, training curves, particle galleries, picks on a micrograph and a
    per-picker table of a deep-consensus run, at a threshold of your choice, and
    new retained/pruned sets at that threshold without retraining."""

    _label = "viewer deep consensus"
    _targets = [ProtDeepConsensus, ProtDeepConsensusThreshold]
    _environments = [DESKTOP_TKINTER]

    # -------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        self._results = self._loadResults()
        if self._results is None:
            form.addSection(label="Results")
            form.addParam("noResults", params.LabelParam,
                          label="This run has no scores yet: open the viewer when it has "
                                "finished.")
            return
        results = self._results
        automatic = results.autoThreshold
        form.addSection(label="Scores")
        form.addParam("viewThreshold", params.FloatParam, default=self._runThreshold(),
                      label="Threshold",
                      help="Every figure shows the retained/pruned split at this threshold "
                           "(retained: score >= threshold). It starts at the run's; move it "
                           "and look again, then 'Create sets at this threshold' registers "
                           "the split as new output sets."
                           + (" The run's automatic threshold is %.3f." % automatic
                              if automatic is not None else ""))
        form.addParam("splitByVotes", params.BooleanParam, default=True,
                      label="Split the histogram by votes?",
                      help="Stack the histogram by how many pickers picked each coordinate: "
                           "it shows whether the network agrees with the vote.")
        form.addParam("showHistogram", params.LabelParam, label="Score histogram",
                      help="Scores of the OR set, the threshold, the retained and pruned "
                           "counts, and (right axis) the fraction a threshold at each score "
                           "would keep.")
        form.addParam("showTraining", params.LabelParam, label="Training curves",
                      help="Loss and accuracy per epoch on the training and validation "
                           "particles; the marked epoch's weights scored the coordinates. "
                           "The title says where the network came from: trained on this "
                           "data, or a reused model fine-tuned or scoring alone.")
        if results.knownLabels() is not None:
            form.addParam("showKnown", params.LabelParam, label="Against your known picks",
                          help="The scores on the known-good and known-bad coordinates given "
                               "to the run (matched to the OR coordinates within the consensus "
                               "radius): the ROC curve with this threshold's point, and "
                               "precision and recall at this threshold.")
        form.addParam("createSets", params.LabelParam,
                      label="Create sets at this threshold",
                      help="Launch a 'deep consensus threshold' run that registers new "
                           "retained and pruned sets at the threshold above, in seconds and "
                           "without retraining. It appears in the project's workflow, below "
                           "the deep-consensus run.")

        form.addSection(label="Particles")
        form.addParam("gallerySize", params.IntParam, default=40,
                      label="Particles per gallery",
                      help="How many extracted boxes (as the network saw them) each gallery "
                           "shows, %d to a row." % GALLERY_COLUMNS)
        form.addParam("showHighest", params.LabelParam, label="Highest scores",
                      help="The best-ranked particles: they should all look like particles.")
        form.addParam("showNearThreshold", params.LabelParam, label="Nearest the threshold",
                      help="The particles the threshold decides about: if most look like "
                           "particles, lower the threshold; if most do not, raise it.")
        form.addParam("showLowest", params.LabelParam, label="Lowest scores",
                      help="The worst-ranked picks: they should be ice, carbon, "
                           "contamination or empty background.")

        form.addSection(label="Micrographs and pickers")
        form.addParam("micrograph", params.EnumParam, default=0,
                      choices=[name for _, name, _ in self._micrographChoices()],
                      display=params.EnumParam.DISPLAY_COMBO, label="Micrograph",
                      help="The micrograph to draw the retained and pruned picks on.")
        form.addParam("showMicrograph", params.LabelParam, label="Picks on the micrograph",
                      help="Retained picks in green, pruned picks in orange, as circles "
                           "half the box across.")
        form.addParam("showPickers", params.LabelParam, label="Per-picker table",
                      help="For each picker: coordinates picked, retained, picked by it alone "
                           "and of those retained.")

    def _getVisualizeDict(self):
        if self._results is None:
            return {}
        return {"showHistogram": self._showHistogram,
                "showTraining": self._showTraining,
                "showKnown": self._showKnown,
                "showHighest": self._showGallery,
                "showNearThreshold": self._showGallery,
                "showLowest": self._showGallery,
                "showMicrograph": self._showMicrograph,
                "showPickers": self._showPickers,
                "createSets": self._createSets}

    # -------------------------- VISUALIZE functions --------------------------
    def _showHistogram(self, paramName=None):
        results = self._results
        votes = results.table.votes if self.splitByVotes.get() else None
        threshold = self.viewThreshold.get()
        split = results.split(threshold)
        return self._plot(plots.score_histogram, "Deep Consensus scores", results.scores,
                          threshold, votes=votes, auto_threshold=results.autoThreshold,
                          duplicate=split.duplicate, at_edge=split.at_edge)

    def _showTraining(self, paramName=None):
        results = self._results
        origin = "Network: %s." % results.modelOrigin
        history = results.history()
        if results.scoredWithoutTraining:
            return [MessageView("%s This run trained nothing, so there are no training "
                                "curves." % origin, title="Deep Consensus training",
                                tkParent=self.getTkRoot())]
        if not history:
            return [self._errorView("This run has no training history (%s)."
                                    % results.path(RunFolder.HISTORY))]
        return self._plot(plots.training_curves, "Deep Consensus training", history,
                          title=origin)

    def _showKnown(self, paramName=None):
        results = self._results
        rows, labels = results.knownLabels()
        threshold = self.viewThreshold.get()
        return self._plot(plots.known_picks, "Deep Consensus against known picks", labels,
                          results.scores[rows], results.retainedMask(threshold)[rows],
                          threshold)

    def _showGallery(self, paramName):
        kind, title = {"showHighest": ("highest", "Highest scores"),
                       "showNearThreshold": ("threshold", "Nearest the threshold"),
                       "showLowest": ("lowest", "Lowest scores")}[paramName]
        results = self._results
        threshold = self.viewThreshold.get()
        rows = gallery_rows(results.scores, self.gallerySize.get(), kind, threshold)
        split = results.split(threshold)
        return self._plot(plots.gallery, title, results.particles(), rows,
                          n_cols=GALLERY_COLUMNS, scores=results.scores,
                          title="%s (threshold %.2f)" % (title, threshold), threshold=threshold,
                          duplicate=split.duplicate, at_edge=split.at_edge)

    def _showMicrograph(self, paramName=None):
        results = self._results
        micId, name, path = self._micrographChoices()[self.micrograph.get()]
        rows = results.micrographRows(micId)
        retained = results.retainedMask(self.viewThreshold.get())[rows]
        scored = np.isfinite(results.scores[rows])  # NaN: on a skipped micrograph
        xy = results.table.xy[rows]
        return self._plot(plots.micrograph_overlay, "Deep Consensus picks",
                          read_micrograph(path), xy[retained], xy[scored & ~retained],
                          results.outputBox,
                          title="%s (threshold %.2f)" % (name, self.viewThreshold.get()))

    def _showPickers(self, paramName=None):
        results = self._results
        return self._plot(plots.picker_table, "Deep Consensus per picker",
                          results.table.voters, results.retainedMask(self.viewThreshold.get()),
                          self.pickerNames())

    def _createSets(self, paramName=None):
        prot, errors = self.launchThresholdRun(self.viewThreshold.get())
        if errors:
            return [self._errorView("\n".join(errors))]
        return [MessageView("Launched '%s': new retained and pruned sets at threshold %.2f. "
                            "It appears in the project window when it has finished."
                            % (prot.getObjLabel(), prot.threshold.get()),
                            title="New sets", tkParent=self.getTkRoot())]

    # -------------------------- UTILS functions ------------------------------
    def launchThresholdRun(self, threshold):
        """Launch a ProtDeepConsensusThreshold on this run's scores at ``threshold``.

        Returns the new protocol and the validation errors that stopped it
        from being launched (empty when it was launched).
        """
        project = self.getProject()
        prot = project.newProtocol(ProtDeepConsensusThreshold, threshold=threshold)
        prot.setObjLabel("deep consensus threshold %.2f" % threshold)
        prot.inputRun.set(self.deepConsensusRun())
        errors = prot.validate()
        if not errors:
            project.launchProtocol(prot)
        return prot, errors

    def deepConsensusRun(self):
        """The ProtDeepConsensus whose results are shown (itself, or a threshold run's input)."""
        if isinstance(self.protocol, ProtDeepConsensusThreshold):
            return self.protocol.inputRun.get()
        return self.protocol

    def pickerNames(self):
        """A short name for each input set of the deep-consensus run, in the table's order."""
        return [_pointerName(pointer, i)
                for i, pointer in enumerate(self.deepConsensusRun().inputCoordinates, 1)]

    def _loadResults(self):
        dcRun = self.deepConsensusRun()
        if dcRun is None:
            return None
        project = self.getProject()
        folder = project.getPath(dcRun._getExtraPath())
        return RunResults(folder, project.getPath()) if RunResults.isComplete(folder) else None

    def _runThreshold(self):
        """The threshold of the viewed run: a threshold run's own, else the deep-consensus
        run's."""
        if isinstance(self.protocol, ProtDeepConsensusThreshold):
            summary = self.protocol.readThresholdSummary()
            return summary["threshold"] if summary else self.protocol.threshold.get()
        return self._results.threshold

    def _micrographChoices(self):
        """(micId, name, absolute path) of the run's micrographs, in id order."""
        results = self._results
        return [(micId, results.micrographName(micId), results.micrographPath(micId))
                for micId in sorted(results.micrographs)]

    def _plot(self, draw, windowTitle, *args, **kwargs):
        """Draw with ``draw`` into a new pwem plotter, which the form shows as a window."""
        plotter = EmPlotter(windowTitle=windowTitle)
        draw(*args, figure=plotter.getFigure(), **kwargs)
        plotter.tightLayoutOn = False  # the drawing function laid the figure out
        return [plotter]

    def _errorView(self, message):
        """An error dialog. Not ``_error``: every Protocol (a viewer is one) has a
        ``_error`` String attribute that would hide such a method."""
        return MessageView(message, title="Deep Consensus viewer", msgType=MSG_ERROR,
                           tkParent=self.getTkRoot())


def _pointerName(pointer, index):
    """The label of the run that produced a pointed set, else the set's label."""
    producer = pointer.getObjValue()
    if isinstance(producer, Protocol):
        return producer.getObjLabel() or producer.getRunName()
    obj = pointer.get()
    return (obj.getObjLabel() if obj is not None else "") or "set %d" % index
