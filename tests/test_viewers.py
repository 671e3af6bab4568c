"""The viewer, the re-threshold protocol and the radius wizard on a real finished run.

One small deep-consensus run on synthetic data serves every test: the
viewer's figures are drawn headless (Agg) from it and checked against the
run's saved results, and new thresholds are cut from its scores.
"""
import os
import unittest
from types import SimpleNamespace
from unittest import mock

import numpy as np
from matplotlib.collections import PatchCollection
from pwem import Domain
from pyworkflow.object import Pointer
from pyworkflow.tests import BaseTest, setupTestProject
from pyworkflow.viewer import DESKTOP_TKINTER, MSG_ERROR, MessageView

import deepconsensus_plugin

from deepconsensus_plugin.convert import inputPicks
from deepconsensus_plugin.core.extraction import read_micrograph
from deepconsensus_plugin.core.run_folder import RankingInfo
from deepconsensus_plugin.core.box_policy import agreed_spacing
from deepconsensus_plugin.protocols import (OUTPUT_PRUNED, OUTPUT_RETAINED, ProtDeepConsensus,
                                            ProtDeepConsensusThreshold)
from deepconsensus_plugin.results import RunResults
from deepconsensus_plugin.viewers import DeepConsensusViewer
from deepconsensus_plugin.wizards import (MIN_PAIRS, PAPER_RADIUS, RADIUS_RANGE,
                                          REUSED_NETWORK_BOX, DeepConsensusDiameterWizard,
                                          DeepConsensusRadiusWizard, describeDiameter,
                                          describeProposal, proposeDiameter, proposeRadius)

from .scipion_helpers import BOX, importSynthetic


def coordinateKeys(coordSet):
    """{(micId, x, y): (score, votes)} of an output set."""
    return {(c.getMicId(), c.getX(), c.getY()): (c._dcScore.get(), c._dcVotes.get())
            for c in coordSet.iterItems()}


class TestViewerAndThreshold(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, cls.truth = importSynthetic(cls, nMicrographs=3)
        cls.dc = cls.newProtocol(ProtDeepConsensus, maxEpochs=6, networkSize=32)
        for prot in cls.protCoords:
            cls.dc.inputCoordinates.append(Pointer(prot, extended="outputCoordinates"))
        cls.launchProtocol(cls.dc)
        cls.results = RunResults(cls.proj.getPath(cls.dc._getExtraPath()), cls.proj.getPath())

    def viewer(self, protocol=None, **values):
        viewer = DeepConsensusViewer(project=self.proj)
        viewer.setProtocol(protocol or self.dc)
        for name, value in values.items():
            getattr(viewer, name).set(value)
        return viewer

    def figure(self, viewer, paramName):
        """The figure a viewer's eye button shows, drawn headless."""
        views = viewer._getVisualizeDict()[paramName](paramName)
        self.assertEqual(len(views), 1)
        figure = views[0].getFigure()
        self.addCleanup(views[0].close)
        return figure

    def launchThreshold(self, **kwargs):
        prot = self.newProtocol(ProtDeepConsensusThreshold, **kwargs)
        prot.inputRun.set(self.dc)
        return self.launchProtocol(prot)

    # -------------------------- re-threshold protocol ------------------------
    def test_threshold_outputs_partition_the_or_set(self):
        threshold = 0.8
        prot = self.launchThreshold(threshold=threshold)
        retained, pruned = getattr(prot, OUTPUT_RETAINED), getattr(prot, OUTPUT_PRUNED)
        kept, dropped = coordinateKeys(retained), coordinateKeys(pruned)
        self.assertEqual(len(kept) + len(dropped), len(self.results.table))
        self.assertFalse(set(kept) & set(dropped))
        self.assertTrue(all(score >= threshold for score, _ in kept.values()))
        # pruned at or above the threshold only as a duplicate or at the micrograph's edge
        self.assertTrue(all(c._dcScore.get() < threshold or c._dcDuplicate.get()
                            or c._dcAtEdge.get() for c in pruned.iterItems()))
        self.assertEqual(len(kept), len(self.results.split(threshold).retained))
        # The same coordinates, scores and votes as the deep-consensus run's own outputs.
        original = coordinateKeys(self.dc.outputCoordinatesRetained)
        original.update(coordinateKeys(self.dc.outputCoordinatesPruned))
        self.assertEqual({**kept, **dropped}, original)
        for coordSet in (retained, pruned):
            self.assertEqual(coordSet.getBoxSize(), BOX)
            self.assertEqual(coordSet.getMicrographs().getSize(), len(self.truth))
            coord = next(iter(coordSet.iterCoordinates()))
            self.assertEqual(coord.getMicrograph().getMicName(), coord.getMicName())
        parents = {(r["object_parent_id"], r["object_parent_extended"])
                   for r in self.proj.mapper.getRelationsByCreator(prot)}
        for picker in self.protCoords:
            self.assertIn((picker.getObjId(), "outputCoordinates"), parents)
        summary = "\n".join(prot.summary())
        self.assertIn("Kept {:,} of {:,} coordinates".format(len(kept), len(self.results.table)),
                      summary)
        self.assertIn("at threshold 0.80, validation accuracy", summary)

    def test_automatic_threshold_needs_the_run_to_have_one(self):
        run = self.results.run
        original = run.info()
        try:
            run.update_info(ranking=RankingInfo(auto_threshold=None))
            prot = self.newProtocol(ProtDeepConsensusThreshold,
                                    thresholdMode=ProtDeepConsensusThreshold.THRESHOLD_AUTO)
            prot.inputRun.set(self.dc)
            self.assertIn("computed no automatic threshold", " ".join(prot.validate()))

            run.update_info(ranking=RankingInfo(auto_threshold=0.3))
            prot = self.launchThreshold(
                thresholdMode=ProtDeepConsensusThreshold.THRESHOLD_AUTO)
        finally:
            run.write_info(original)
        kept = coordinateKeys(prot.outputCoordinatesRetained)
        self.assertEqual(len(kept), len(self.results.split(0.3).retained))
        self.assertIn("at the automatic threshold 0.30", "\n".join(prot.summary()))

    def test_threshold_of_an_unfinished_run_is_refused(self):
        unfinished = self.newProtocol(ProtDeepConsensus)
        self.proj.saveProtocol(unfinished)
        prot = self.newProtocol(ProtDeepConsensusThreshold, threshold=0.5)
        prot.inputRun.set(unfinished)
        self.assertIn("has no scores yet", " ".join(prot.validate()))
        viewer = self.viewer(unfinished)
        self.assertEqual(viewer._getVisualizeDict(), {})
        self.assertTrue(hasattr(viewer, "noResults"))

    def test_wizard_reads_the_input_picks(self):
        sets = [prot.outputCoordinates for prot in self.protCoords]
        pickers = inputPicks(sets)
        names = {os.path.splitext(os.path.basename(m.path))[0] for m in self.truth}
        self.assertEqual([set(p) for p in pickers], [names] * 3)
        for picks, coordSet in zip(pickers, sets):
            self.assertEqual(sum(len(xy) for xy in picks.values()), coordSet.getSize())
        fraction, _ = proposeRadius(pickers, BOX)
        self.assertTrue(RADIUS_RANGE[0] <= fraction <= RADIUS_RANGE[1])

    def test_wizards_fill_the_form_with_their_proposals(self):
        """Each wizard, opened on the run's form, proposes from the input sets and writes
        the value the user accepts into its parameter; with one input set it asks for
        more instead."""
        written = {}
        form = SimpleNamespace(protocol=self.dc, root=None, setVar=written.__setitem__)
        sets = [prot.outputCoordinates for prot in self.protCoords]
        with mock.patch("deepconsensus_plugin.wizards.dialog") as dialog:
            dialog.askYesNo.return_value = True
            DeepConsensusRadiusWizard().show(form)
            self.assertEqual(written.pop("consensusRadius"),
                             proposeRadius(inputPicks(sets), BOX)[0])
            # the synthetic particles lie over half their box apart: no proposal
            DeepConsensusDiameterWizard().show(form)
            self.assertIsNone(proposeDiameter(self.results.info.consensus.and_spacing_px, BOX))
            self.assertIn("leave the diameter at 0", dialog.showInfo.call_args[0][1])
            self.assertNotIn("particleDiameter", written)
            # where they crowd (a spacing of 20 px in the 48 px box), the proposal in Å
            sampling = sets[0].getMicrographs().getSamplingRate()
            with mock.patch.object(ProtDeepConsensus, "_agreedSpacing", return_value=20.0):
                DeepConsensusDiameterWizard().show(form)
            self.assertIn("Use %.0f Å?" % (20 * sampling), dialog.askYesNo.call_args[0][1])
            self.assertEqual(written.pop("particleDiameter"), round(20 * sampling))
            single = self.newProtocol(ProtDeepConsensus)
            single.inputCoordinates.append(Pointer(self.protCoords[0],
                                                   extended="outputCoordinates"))
            for wizard in (DeepConsensusRadiusWizard(), DeepConsensusDiameterWizard()):
                dialog.showWarning.reset_mock()
                wizard.show(SimpleNamespace(protocol=single, root=None,
                                            setVar=written.__setitem__))
                self.assertIn("at least two pickers", dialog.showWarning.call_args[0][1])
        self.assertEqual(written, {})

    def test_with_a_reused_network_the_wizards_say_its_box_is_the_run_s(self):
        """A run reusing this run's network works in the network's boxes: the diameter
        wizard proposes nothing and says so, the radius wizard names where the box came
        from."""
        reuse = self.newProtocol(ProtDeepConsensus, modelSource=ProtDeepConsensus.MODEL_RUN,
                                 particleDiameter=150.0)  # left from a new-network run
        reuse.modelRun.set(self.dc)
        for prot in self.protCoords:
            reuse.inputCoordinates.append(Pointer(prot, extended="outputCoordinates"))
        written = {}
        form = SimpleNamespace(protocol=reuse, root=None, setVar=written.__setitem__)
        with mock.patch("deepconsensus_plugin.wizards.dialog") as dialog:
            DeepConsensusDiameterWizard().show(form)
            self.assertEqual(dialog.showInfo.call_args[0][1],
                             REUSED_NETWORK_BOX % (BOX, BOX))
            dialog.askYesNo.return_value = False
            reuse.particleDiameter.set(0.0)
            DeepConsensusRadiusWizard().show(form)
            self.assertIn("Box size: %d px, from the first input set" % BOX,
                          dialog.askYesNo.call_args[0][1])
        self.assertEqual(written, {})

    def test_diameter_wizard_measures_the_spacing_the_run_recorded(self):
        """The wizard's spacing is the one the run records of its AND set (and warns of in
        the summary): the same picks, radius and votes."""
        sets = [prot.outputCoordinates for prot in self.protCoords]
        spacing = self.dc._agreedSpacing(sets)
        self.assertAlmostEqual(spacing, self.results.info.consensus.and_spacing_px, places=6)

    # -------------------------- viewer ---------------------------------------
    def test_histogram_counts_add_up_to_the_or_set(self):
        for split in (True, False):
            viewer = self.viewer(viewThreshold=0.7, splitByVotes=split)
            ax = self.figure(viewer, "showHistogram").axes[0]
            total = sum(bar.get_height() for container in ax.containers for bar in container)
            self.assertEqual(total, len(self.results.table))
            nKept = len(self.results.split(0.7).retained)
            texts = [t.get_text() for t in ax.get_legend().get_texts()]
            self.assertIn("retained {:,}".format(nKept), " ".join(texts))
            self.assertIn("threshold 0.70", texts)
            self.assertEqual("picked by 3" in texts, split)

    def test_training_curves_show_the_saved_history(self):
        history = self.results.history()
        loss, accuracy = self.figure(self.viewer(), "showTraining").axes
        np.testing.assert_allclose(loss.lines[1].get_ydata(), history["val_loss"])
        np.testing.assert_allclose(accuracy.lines[0].get_ydata(), history["accuracy"])
        self.assertEqual(len(loss.lines[0].get_xdata()),
                         self.results.info.training.last.epochs)

    def test_galleries_show_the_requested_boxes(self):
        scores = self.results.scores
        stack = self.results.particles()
        viewer = self.viewer(gallerySize=17, viewThreshold=0.6)
        shown = {}
        for paramName in ("showHighest", "showNearThreshold", "showLowest"):
            axes = self.figure(viewer, paramName).axes
            self.assertEqual(len(axes), 17)
            self.assertTrue(all(len(ax.images) == 1 for ax in axes))
            titles = [ax.get_title().split() for ax in axes]  # "0.868", "0.868 dup", ...
            self.assertTrue(all(t[1:] in ([], ["dup"], ["edge"]) for t in titles), titles)
            values = [float(t[0]) for t in titles]
            self.assertEqual(values, sorted(values, reverse=True))
            shown[paramName] = values
            # Every box is one of the run's extracted particles, shown with its score.
            for ax, title in zip(axes[:3], values):
                candidates = np.flatnonzero(np.abs(scores - title) <= 5e-4 + 1e-9)
                shown_image = np.asarray(ax.images[0].get_array())
                self.assertTrue(any(np.array_equal(shown_image, stack[row].astype(np.float32))
                                    for row in candidates),
                                "no particle scored %s looks like the box shown" % title)
        self.assertAlmostEqual(shown["showHighest"][0], np.nanmax(scores), places=3)
        self.assertAlmostEqual(shown["showLowest"][-1], np.nanmin(scores), places=3)
        nearest = np.sort(np.abs(scores - 0.6))[:17]
        self.assertLessEqual(max(abs(v - 0.6) for v in shown["showNearThreshold"]),
                             nearest[-1] + 1e-3)

    def test_overlay_shows_the_chosen_micrograph(self):
        micIds = sorted(self.results.micrographs)
        viewer = self.viewer(micrograph=2, viewThreshold=0.5)
        ax = self.figure(viewer, "showMicrograph").axes[0]
        mic = self.results.micrographs[micIds[2]]
        name, path = mic.name, mic.path
        self.assertIn(name, ax.get_title())
        np.testing.assert_array_equal(ax.images[0].get_array(),
                                      read_micrograph(self.proj.getPath(path)))
        rows = self.results.micrographRows(micIds[2])
        nKept = int(np.sum(self.results.scores[rows] >= 0.5))
        circles = [c for c in ax.collections if isinstance(c, PatchCollection)]
        self.assertEqual([len(c.get_paths()) for c in circles], [nKept, len(rows) - nKept])
        centres = np.array([(p.vertices.min(axis=0) + p.vertices.max(axis=0)) / 2
                            for p in circles[0].get_paths()])
        expected = self.results.table.xy[rows][self.results.scores[rows] >= 0.5]
        np.testing.assert_allclose(np.sort(centres, axis=0), np.sort(expected, axis=0),
                                   atol=0.5)

    def test_picker_table_matches_the_voters(self):
        viewer = self.viewer(viewThreshold=0.5)
        self.assertEqual(viewer.pickerNames(), ["picker 0", "picker 1", "picker 2"])
        figure = self.figure(viewer, "showPickers")
        cells = figure.axes[1].tables[0].get_celld()
        voters = self.results.table.voters
        retained = self.results.retainedMask(0.5)  # duplicates are pruned
        for p in range(3):
            row = [cells[p + 1, c].get_text().get_text() for c in range(3)]
            self.assertEqual(row, ["picker %d" % p, "{:,}".format(voters[:, p].sum()),
                                   "{:,}".format((voters[:, p] & retained).sum())])
        picked = sum(prot.outputCoordinates.getSize() for prot in self.protCoords)
        self.assertLessEqual(voters.sum(), picked)  # duplicates of one picker merge

    def test_figures_write_pngs_headless(self):
        viewer = self.viewer()
        folder = self.proj.getTmpPath("figures")
        os.makedirs(folder, exist_ok=True)
        for paramName in ("showHistogram", "showTraining", "showHighest", "showMicrograph",
                          "showPickers"):
            figure = self.figure(viewer, paramName)
            path = os.path.join(folder, paramName + ".png")
            figure.savefig(path, dpi=40)
            with open(path, "rb") as handle:
                self.assertEqual(handle.read(4), b"\x89PNG")

    def test_viewer_of_a_threshold_run_and_new_sets_from_the_viewer(self):
        cut = self.launchThreshold(threshold=0.35)
        viewer = self.viewer(cut)
        self.assertEqual(viewer.deepConsensusRun().getObjId(), self.dc.getObjId())
        self.assertAlmostEqual(viewer.viewThreshold.get(), 0.35)
        viewer.viewThreshold.set(0.65)
        views = viewer._getVisualizeDict()["createSets"]("createSets")
        self.assertIn("threshold 0.65", views[0].getMessage())
        prot = self.proj.getProtocolsByClass("ProtDeepConsensusThreshold")
        launched = [p for p in prot if p.getObjLabel() == "deep consensus threshold 0.65"]
        self.assertEqual(len(launched), 1)
        launched = launched[0]
        launched.setProject(self.proj)  # _waitOutput reads the run's own database through it
        self._waitOutput(launched, OUTPUT_PRUNED, sleepTime=1, timeOut=60)
        self.assertTrue(launched.isFinished(), launched.getStatus())
        self.assertEqual(launched.outputCoordinatesRetained.getSize(),
                         len(self.results.split(0.65).retained))

    def test_bad_threshold_and_missing_history_give_error_dialogs(self):
        """Errors come back as error MessageViews (a Protocol's ``_error`` String must not
        shadow the viewer's helper)."""
        runs = len(self.proj.getProtocolsByClass("ProtDeepConsensusThreshold"))
        viewer = self.viewer(viewThreshold=1.5)
        views = viewer._getVisualizeDict()["createSets"]("createSets")
        self.assertEqual(len(views), 1)
        self.assertIsInstance(views[0], MessageView)
        self.assertEqual(views[0]._msgType, MSG_ERROR)
        self.assertIn("Score threshold must be in [0, 1]", views[0].getMessage())
        self.assertEqual(len(self.proj.getProtocolsByClass("ProtDeepConsensusThreshold")),
                         runs, "a refused threshold launched a run")

        history = self.results.path("history.csv")
        os.rename(history, history + ".hidden")
        self.addCleanup(os.rename, history + ".hidden", history)
        views = self.viewer()._getVisualizeDict()["showTraining"]("showTraining")
        self.assertEqual(views[0]._msgType, MSG_ERROR)
        self.assertIn("no training history", views[0].getMessage())


class TestRegistration(unittest.TestCase):
    """Scipion finds the viewer, the wizard and the threshold protocol as the GUI does."""

    def test_viewer_wizard_and_protocol_are_found(self):
        for protocolClass in (ProtDeepConsensus, ProtDeepConsensusThreshold):
            self.assertIn(DeepConsensusViewer,
                          Domain.findViewers(protocolClass(), DESKTOP_TKINTER))
        wizards = Domain.findWizards(ProtDeepConsensus(), DESKTOP_TKINTER)
        self.assertIs(wizards["consensusRadius"], DeepConsensusRadiusWizard)
        self.assertIs(wizards["particleDiameter"], DeepConsensusDiameterWizard)
        self.assertIs(Domain.getProtocols()["ProtDeepConsensusThreshold"],
                      ProtDeepConsensusThreshold)
        # The run log's "plugin: NAME - URL" line names this plugin's page, not pwem's.
        self.assertEqual(ProtDeepConsensus.getUrl(), deepconsensus_plugin.URL)
        conf = os.path.join(os.path.dirname(deepconsensus_plugin.__file__), "protocols.conf")
        with open(conf) as handle:
            self.assertIn('"value": "ProtDeepConsensusThreshold"', handle.read())


class TestRadiusWizard(unittest.TestCase):
    """The consensus-radius proposal on picks whose disagreement is known."""

    def test_proposal_covers_the_pickers_disagreement(self):
        rng = np.random.default_rng(0)
        truth = rng.uniform(100, 900, size=(80, 2))
        truth = truth[np.min(np.linalg.norm(truth[:, None] - truth[None], axis=2)
                             + np.eye(len(truth)) * 1e9, axis=1) > 60]
        box, jitter = 64, 3.0
        pickers = [{"mic": truth + rng.normal(scale=jitter, size=truth.shape)}
                   for _ in range(3)]
        fraction, distances = proposeRadius(pickers, box)
        self.assertEqual(len(distances), 3 * len(truth))  # every pair of pickers, every particle
        # Two picks with independent errors of sigma differ by a Rayleigh(sigma*sqrt(2)).
        self.assertAlmostEqual(np.median(distances), 1.1774 * jitter * np.sqrt(2), delta=0.6)
        self.assertGreaterEqual(fraction * box, np.percentile(distances, 95))
        self.assertLess(fraction * box - np.percentile(distances, 95), 0.01 * box + 1e-9)
        self.assertIn("Proposed consensus radius: %.2f" % fraction,
                      describeProposal(fraction, distances, box))

    def test_proposal_is_bounded_and_falls_back_to_the_paper(self):
        picks = {"mic": np.array([[100.0, 100.0], [400.0, 400.0]])}
        fraction, distances = proposeRadius([picks, picks], 64)
        self.assertLess(len(distances), MIN_PAIRS)
        self.assertEqual(fraction, PAPER_RADIUS)
        self.assertIn("too few", describeProposal(fraction, distances, 64))
        same = {"mic": np.stack([np.arange(30) * 100.0, np.zeros(30)], axis=1)}
        self.assertEqual(proposeRadius([same, same], 64)[0], RADIUS_RANGE[0])


class TestDiameterWizard(unittest.TestCase):
    """The particle-diameter proposal on fields whose spacing is known."""

    @staticmethod
    def lattice(spacing, rows=12, columns=12):
        """Particles on a square lattice ``spacing`` px apart, as three pickers see them."""
        grid = np.stack(np.meshgrid(np.arange(columns), np.arange(rows)), -1).reshape(-1, 2)
        xy = 100.0 + spacing * grid
        rng = np.random.default_rng(0)
        return [{"mic": xy + rng.normal(scale=1.0, size=xy.shape)} for _ in range(3)]

    def test_crowded_field_in_a_large_box_gets_its_spacing_proposed(self):
        pickers = self.lattice(60.0)
        spacing = agreed_spacing(pickers, 0.1 * 180, 2)
        self.assertAlmostEqual(spacing, 60.0, delta=2.0)
        self.assertEqual(proposeDiameter(spacing, 180), spacing)
        text = describeDiameter(spacing, 180, 2.0)
        self.assertIn("Proposed particle diameter: %.0f Å" % (2.0 * spacing), text)
        self.assertIn("boxes of %.0f px instead of the coordinates' 180 px" % (1.5 * spacing),
                      text)

    def test_no_proposal_where_the_box_is_already_small_or_the_spacing_unknown(self):
        spacing = agreed_spacing(self.lattice(60.0), 0.1 * 108, 2)
        self.assertIsNone(proposeDiameter(spacing, 108))     # 1.8 spacings, as EMPIAR-10017's
        self.assertIn("leave the diameter at 0", describeDiameter(spacing, 108, 2.0))
        few = [{"mic": np.array([[100.0, 100.0], [300.0, 300.0]])}] * 2
        self.assertIsNone(agreed_spacing(few, 10.0, 2))
        self.assertIsNone(proposeDiameter(None, 180))
        self.assertIn("Too few agreed picks", describeDiameter(None, 180, 2.0))

    def test_only_micrographs_every_picker_has_set_the_spacing(self):
        """As in the run's consensus: a micrograph that two of three pickers have (here with
        particles twice as dense) does not move the spacing."""
        pickers = self.lattice(60.0)
        for picks in pickers[:2]:
            picks["other"] = self.lattice(30.0)[0]["mic"]
        self.assertAlmostEqual(agreed_spacing(pickers, 0.1 * 180, 2), 60.0, delta=2.0)

    def test_only_agreed_picks_set_the_spacing(self):
        """One picker's junk between the particles does not shrink the spacing."""
        pickers = self.lattice(60.0)
        junk = pickers[0]["mic"][:-1] + 30.0                # between the lattice points
        pickers[0] = {"mic": np.concatenate([pickers[0]["mic"], junk])}
        self.assertAlmostEqual(agreed_spacing(pickers, 0.1 * 180, 2), 60.0, delta=2.0)
