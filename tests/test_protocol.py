"""ProtDeepConsensus in a real Scipion project on synthetic micrographs and pickers.

Runs with plain ``pytest`` and with ``python -m pyworkflow.apps.pw_run_tests``.
"""
import os

import numpy as np
from pyworkflow.protocol.constants import MODE_RESUME
from pyworkflow.tests import BaseTest, setupTestProject

from deepconsensus_plugin.convert import baseName
from deepconsensus_plugin.core.centring import DEFAULT_SEARCH
from deepconsensus_plugin.core.evaluation import agreement
from deepconsensus_plugin.core.extraction import extract_particles, read_micrograph
from deepconsensus_plugin.core.metrics import match_to_truth
from deepconsensus_plugin.core.model_file import read_spec
from deepconsensus_plugin.core.run_folder import RunFolder
from deepconsensus_plugin.core.stack import open_stack
from deepconsensus_plugin.protocols import OUTPUT_PRUNED, OUTPUT_RETAINED, ProtDeepConsensus
from deepconsensus_plugin.results import RunResults
from deepconsensus_plugin.viewers import DeepConsensusViewer

from .scipion_helpers import (BOX, DIAMETER, SHAPE, assertSplitRule, importCoordinates,
                              importParticles, importSynthetic, newDeepConsensus,
                              outputArrays)


def continueWith(test, **values):
    """Continue ``test.prot`` with the form ``values`` changed, and reload it into the test
    class (the continued run re-created the output sets' files)."""
    for _, output in test.prot.iterOutputAttributes():
        output.close()  # the continued run replaces the sets' sqlite files
    for name, value in values.items():
        getattr(test.prot, name).set(value)
    test.prot.runMode.set(MODE_RESUME)
    test.launchProtocol(test.prot)
    type(test).prot = test.proj.getProtocol(test.prot.getObjId())


class TestDeepConsensus(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        # Four pickers: the original failed with an IndexError beyond three.
        cls.protMics, cls.protCoords, cls.truth = importSynthetic(cls, nPickers=4)
        # what a user knows: particles and junk "picked by hand" on the first two micrographs
        known = cls.truth[:2]
        cls.knownGood = importCoordinates(cls, cls.protMics, known,
                                          [m.particles for m in known], "known good")
        cls.knownBad = importCoordinates(cls, cls.protMics, known, [m.junk for m in known],
                                         "known bad")
        cls.prot = newDeepConsensus(cls, cls.protCoords, maxEpochs=12, networkSize=32)
        cls.prot.knownGoodCoordinates.set(cls.knownGood)
        cls.prot.knownGoodCoordinates.setExtended("outputCoordinates")
        cls.prot.knownBadCoordinates.set(cls.knownBad)
        cls.prot.knownBadCoordinates.setExtended("outputCoordinates")
        cls.launchProtocol(cls.prot)

    def _precisionRecall(self, *coordSets):
        """Precision and recall of the union of ``coordSets`` against the synthetic truth."""
        names, values = (np.concatenate(a) for a in zip(*(outputArrays(s) for s in coordSets)))
        tps, found = 0, []
        for mic in self.truth:
            xy = values[names == baseName(mic.path), :2]
            isTp, isFound = match_to_truth(xy, mic.particles, DIAMETER / 4)
            tps += isTp.sum()
            found.append(isFound)
        return tps / max(len(values), 1), np.concatenate(found).mean()

    def test_outputs_partition_or_set(self):
        retained = self.prot.outputCoordinatesRetained
        pruned = self.prot.outputCoordinatesPruned
        self.assertSetSize(retained)
        self.assertSetSize(pruned)
        info = RunFolder(self.prot._getExtraPath()).info()
        self.assertEqual(retained.getSize() + pruned.getSize(), info.consensus.n_or)
        rNames, rValues = outputArrays(retained)
        pNames, pValues = outputArrays(pruned)

        def keys(names, values):
            return {(a, int(x), int(y)) for a, (x, y) in zip(names, values[:, :2])}

        self.assertFalse(keys(rNames, rValues) & keys(pNames, pValues))
        assertSplitRule(self, retained, pruned, self.prot.threshold.get(),
                        info.split.min_distance_px, info.split.edge_margin_px)
        self.assertEqual(info.split.min_distance_px, 0.3 * BOX)
        self.assertEqual(info.split.edge_margin_px, 0.3 * BOX)
        self.assertEqual(info.split.n_duplicates, int(np.sum(pValues[:, 5])))
        self.assertEqual(info.split.n_at_edge, int(np.sum(pValues[:, 6])))
        for values in (rValues, pValues):
            self.assertTrue(np.all((values[:, 2] >= 0) & (values[:, 2] <= 1)))
            self.assertTrue(np.all((values[:, 3] >= 1) & (values[:, 3] <= 4)))

    def test_outputs_are_usable_coordinate_sets(self):
        for coordSet in (self.prot.outputCoordinatesRetained, self.prot.outputCoordinatesPruned):
            self.assertEqual(coordSet.getBoxSize(), BOX)
            mics = coordSet.getMicrographs()
            self.assertIsNotNone(mics)
            self.assertEqual(mics.getSize(), len(self.truth))
            coord = next(iter(coordSet.iterCoordinates()))
            self.assertIsNotNone(coord.getMicrograph())
            self.assertEqual(coord.getMicrograph().getMicName(), coord.getMicName())

    def test_source_relations_to_every_input(self):
        relations = self.proj.mapper.getRelationsByCreator(self.prot)
        parents = {(r["object_parent_id"], r["object_parent_extended"]) for r in relations}
        children = {r["object_child_id"] for r in relations}
        for prot in self.protCoords:
            self.assertIn((prot.getObjId(), "outputCoordinates"), parents)
        self.assertEqual(children, {getattr(self.prot, name).getObjId()
                                    for name in (OUTPUT_RETAINED, OUTPUT_PRUNED)})

    def test_retained_is_more_precise_than_or(self):
        retained, pruned = self.prot.outputCoordinatesRetained, self.prot.outputCoordinatesPruned
        precisionRetained, recallRetained = self._precisionRecall(retained)
        precisionOr, recallOr = self._precisionRecall(retained, pruned)
        print("OR precision %.3f recall %.3f; DC-retained precision %.3f recall %.3f"
              % (precisionOr, recallOr, precisionRetained, recallRetained))
        self.assertGreaterEqual(recallRetained, 0.9)
        self.assertGreater(precisionRetained, precisionOr + 0.1)

    def test_two_rounds_and_the_agreement_made_the_scores(self):
        """The default method: off-centre negatives beside the random ones, a second round
        learnt from the first round's confident decisions, its scores the best-centred box
        of each pick, and the final score combines the network with the four pickers'
        votes."""
        info = RunFolder(self.prot._getExtraPath()).info()
        self.assertGreater(info.negatives.n_offcentre, 0)
        self.assertLessEqual(info.negatives.n_offcentre, info.consensus.n_and)
        rounds = info.training.rounds
        self.assertEqual([r.round for r in rounds], [1, 2])
        self.assertEqual([r.centring_search for r in rounds], [0.0, DEFAULT_SEARCH])
        self.assertGreater(rounds[1].n_hard_negatives, 0)
        self.assertGreaterEqual(rounds[1].n_positives, info.consensus.n_and - 1)
        self.assertTrue(os.path.exists(self.prot._getExtraPath("model_round1.keras")))
        self.assertEqual(len(info.ranking.agreement.sensitivity), 4)
        scores = np.load(self.prot._getExtraPath("scores.npy"))
        cnn = np.load(self.prot._getExtraPath("cnn_scores.npy"))
        self.assertEqual(scores.shape, cnn.shape)
        self.assertFalse(np.allclose(scores, cnn))

    def test_summary_methods_citations(self):
        summary = "\n".join(self.prot.summary())
        self.assertIn("Kept", summary)
        self.assertIn("validation accuracy", summary)
        self.assertIn("round 2", summary)
        info = RunFolder(self.prot._getExtraPath()).info()
        for trained in info.training.rounds:  # the boxes each epoch showed, by round
            self.assertIn("round %d: %d epochs of %d boxes, validation accuracy"
                          % (trained.round, trained.epochs, trained.epoch_size), summary)
        self.assertIn("sensitivity / false-pick rate per input set", summary)
        agreement = info.ranking.agreement
        for name, sensitivity, rate in zip(info.consensus.picker_names, agreement.sensitivity,
                                           agreement.false_pick_rate):
            self.assertIn("%s %.2f / %.2f" % (name, sensitivity, rate), summary)
        self.assertIn("best-centred box within %.1f px" % (DEFAULT_SEARCH * BOX), summary)
        self.assertIn("SanchezGarcia2018", "".join(self.prot.methods()))
        self.assertIn("best of its box and 8 boxes", "".join(self.prot.methods()))
        # the rotational averages: fitted by the merge job, named where a user reads
        self.assertIsNotNone(info.extraction.rotational)
        self.assertIn("Score = network and rotational averages", summary)
        self.assertIn("whitened rotational average", "".join(self.prot.methods()))
        self.assertIn("SanchezGarcia2018", self.prot.getCitations())

    def test_the_known_picks_rate_the_scores(self):
        """The hand-picked particles and junk: the summary and the viewer report precision,
        recall and ROC-AUC, as the core computes them from the run's scores."""
        run = RunFolder(self.prot._getExtraPath())
        info = run.info()
        known = info.evaluation
        self.assertEqual(known.n_good, sum(len(m.particles) for m in self.truth[:2]))
        self.assertEqual(known.n_bad, sum(len(m.junk) for m in self.truth[:2]))
        self.assertEqual(known.threshold, info.split.threshold)
        self.assertGreater(known.roc_auc, 0.9)
        self.assertGreater(known.recall, 0.9)
        self.assertGreater(known.precision, 0.8)
        pairs = run.array(run.KNOWN_LABELS)
        results = RunResults(self.prot._getExtraPath())
        rows, labels = results.knownLabels()
        np.testing.assert_array_equal(rows, pairs[:, 0])
        again = agreement(labels, results.scores[rows],
                          results.retainedMask(info.split.threshold)[rows])
        self.assertAlmostEqual(again.precision, known.precision)
        self.assertAlmostEqual(again.recall, known.recall)
        self.assertIn("Known picks, %d good" % known.n_good, "\n".join(self.prot.summary()))
        viewer = DeepConsensusViewer(project=self.proj)
        viewer.setProtocol(self.prot)
        viewer.viewThreshold.set(0.5)
        views = viewer._getVisualizeDict()["showKnown"]("showKnown")
        self.addCleanup(views[0].close)
        histogram = views[0].getFigure().axes[1]
        atHalf = results.knownAgreement(0.5)
        self.assertEqual(histogram.get_title(), "precision %.2f, recall %.2f"
                         % (atHalf.precision, atHalf.recall))

    def test_continue_with_a_new_threshold_only_recreates_outputs(self):
        """Scipion's continue re-runs from the first changed step: no re-extraction, no
        retraining."""
        stack = self.prot._getExtraPath("or_particles.npy")
        model = self.prot._getExtraPath("model.keras")
        before = (os.path.getmtime(stack), os.path.getmtime(model))
        original = self.prot.threshold.get()
        self.addCleanup(continueWith, self, threshold=original)
        continueWith(self, threshold=0.9)
        self.assertEqual((os.path.getmtime(stack), os.path.getmtime(model)), before)
        retained = self.prot.outputCoordinatesRetained
        pruned = self.prot.outputCoordinatesPruned
        info = RunFolder(self.prot._getExtraPath()).info()
        self.assertEqual(retained.getSize() + pruned.getSize(), info.consensus.n_or)
        assertSplitRule(self, retained, pruned, 0.9, info.split.min_distance_px,
                        info.split.edge_margin_px)
        self.assertEqual(info.evaluation.threshold, 0.9)  # evaluated at the new threshold

    def test_continue_without_the_best_centred_search_rescores_without_retraining(self):
        """Switching the search off re-runs the final scoring and what follows it, not
        the training: each pick then scores its own box, never above its best-centred
        score."""
        extra = self.prot._getExtraPath
        model = os.path.getmtime(extra("model.keras"))
        ranked = os.path.getmtime(extra("scores.npy"))
        best = np.load(extra("cnn_scores.npy"))
        self.addCleanup(continueWith, self, bestCentred=True)
        continueWith(self, bestCentred=False)
        self.assertEqual(os.path.getmtime(extra("model.keras")), model)
        own = np.load(extra("cnn_scores.npy"))
        self.assertTrue((own <= best).all() and (own < best).any())
        info = RunFolder(extra()).info()
        self.assertEqual(info.training.last.centring_search, 0.0)
        self.assertGreater(os.path.getmtime(extra("scores.npy")), ranked)  # ranked again
        self.assertEqual(self.prot.outputCoordinatesRetained.getSize()
                         + self.prot.outputCoordinatesPruned.getSize(), info.consensus.n_or)


class TestTiffMicrographs(BaseTest):
    """Micrographs imported into Scipion as TIFF files: the form passes them and the steps
    read them (``tests/test_cli.py`` shows the boxes equal those of the MRC files)."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, cls.truth = importSynthetic(cls, nMicrographs=2,
                                                                  tiff=True)
        cls.prot = newDeepConsensus(cls, cls.protCoords, maxEpochs=2, networkSize=32,
                                    selfTraining=False)
        cls.launchProtocol(cls.prot)

    def test_a_run_on_tiff_micrographs_uses_every_one(self):
        files = [m.getFileName() for m in self.protMics.outputMicrographs]
        self.assertEqual(len(files), 2)
        self.assertTrue(all(f.endswith(".tif") for f in files), files)
        run = RunFolder(self.prot._getExtraPath())
        info = run.info()
        self.assertEqual(info.extraction.skipped_micrographs, [])
        self.assertEqual({(f.rows, f.columns) for f in run.micrograph_frames().values()},
                         {SHAPE})
        retained, pruned = (getattr(self.prot, name) for name in (OUTPUT_RETAINED, OUTPUT_PRUNED))
        self.assertGreater(retained.getSize(), 0)
        self.assertEqual(retained.getSize() + pruned.getSize(), info.consensus.n_or)


def shortRunInBoxesOf(cls, box, **params):
    """A test project with two synthetic micrographs picked in boxes of ``box`` px and a
    short deep-consensus run on them (one round, not launched)."""
    setupTestProject(cls)
    cls.protMics, cls.protCoords, cls.truth = importSynthetic(cls, nMicrographs=2, box=box)
    return newDeepConsensus(cls, cls.protCoords, maxEpochs=4, networkSize=32,
                            selfTraining=False, **params)


class TestParticleDiameter(BaseTest):
    """Picks in boxes of 3 particle diameters, and the diameter on the form: the run works
    in boxes of 1.5 diameters (the other tests' BOX), the outputs keep the pickers' box."""

    @classmethod
    def setUpClass(cls):
        cls.prot = shortRunInBoxesOf(cls, 3 * DIAMETER, particleDiameter=2.0 * DIAMETER)
        # Known negative particles as a user extracts them: the junk in the pickers' box
        cls.junk = cls.truth[0].junk
        junkParticles = importParticles(cls, cls.truth[0], cls.junk, 3 * DIAMETER)
        cls.prot.inputNegativeParticles.set(junkParticles)
        cls.prot.inputNegativeParticles.setExtended("outputParticles")
        cls.launchProtocol(cls.prot)

    def test_known_negative_particles_are_cut_to_the_run_s_box(self):
        """Extracted in the pickers' 96 px box at 2 Å/px, each is cut to the run's 48 px
        before it is resized: the last rows of the negatives are the run's own boxes of
        the junk."""
        run = RunFolder(self.prot._getExtraPath())
        self.assertEqual(run.known_particles().sampling_rate, 2.0)
        self.assertEqual(run.info().extraction.n_user_particles, len(self.junk))
        with open_stack(run.file(run.NEG_PARTICLES)) as negatives:
            known = np.asarray(negatives[len(negatives) - len(self.junk):])
        expected, _ = extract_particles(read_micrograph(self.truth[0].path), self.junk, BOX, 32)
        np.testing.assert_allclose(known, expected, atol=4e-3)  # the stacks hold float16

    def test_the_run_works_in_the_diameters_box_and_the_outputs_keep_the_pickers(self):
        info = RunFolder(self.prot._getExtraPath()).info()
        self.assertEqual((info.consensus.box, info.consensus.coordinates_box),
                         (BOX, 3 * DIAMETER))
        self.assertAlmostEqual(info.consensus.radius_px, 0.1 * BOX)
        self.assertAlmostEqual(info.split.min_distance_px, 0.3 * BOX)
        self.assertAlmostEqual(info.split.edge_margin_px, 0.3 * BOX)
        for name in (OUTPUT_RETAINED, OUTPUT_PRUNED):
            self.assertEqual(getattr(self.prot, name).getBoxSize(), 3 * DIAMETER)
        summary, methods = "\n".join(self.prot.summary()), "\n".join(self.prot.methods())
        self.assertIn("Worked in boxes of %d px" % BOX, summary)
        self.assertIn("in boxes of %d px (1.5 particle diameters; the coordinates' box was "
                      "%d px)" % (BOX, 3 * DIAMETER), methods)

    def test_without_the_diameter_a_continued_run_merges_again_in_the_pickers_box(self):
        """(Runs after the test above: unittest orders a class's tests by name.)  The
        diameter is an argument of the consensus step, so a continued run without it merges
        again, in the pickers' box, and every later step follows."""
        extra = self.prot._getExtraPath
        before = os.path.getmtime(extra("consensus.npz"))
        continueWith(self, particleDiameter=0)
        prot = self.prot
        info = RunFolder(extra()).info()
        self.assertGreater(os.path.getmtime(extra("consensus.npz")), before)
        self.assertEqual((info.consensus.box, info.consensus.coordinates_box),
                         (3 * DIAMETER, None))
        self.assertAlmostEqual(info.split.min_distance_px, 0.3 * 3 * DIAMETER)
        self.assertEqual(prot.outputCoordinatesRetained.getBoxSize(), 3 * DIAMETER)
        # the synthetic particles lie about 1.7 diameters apart: a box of 3 diameters is
        # under 2 spacings, so the summary does not ask for the diameter
        spacing = info.consensus.and_spacing_px
        self.assertTrue(DIAMETER < spacing < 2 * DIAMETER, spacing)
        self.assertNotIn("nearest neighbour", "\n".join(prot.summary()))


class TestBoxFittedToTheSpacing(BaseTest):
    """Picks in boxes of 4 particle diameters (2.4 spacings of the synthetic particles) and
    no diameter on the form: the run works in boxes of 1.5 AND spacings, every distance of
    the run a share of that box, and the outputs keep the pickers' box."""

    @classmethod
    def setUpClass(cls):
        cls.prot = shortRunInBoxesOf(cls, 4 * DIAMETER)
        cls.launchProtocol(cls.prot)

    def test_the_run_works_in_a_box_of_the_spacing_and_the_outputs_keep_the_pickers(self):
        run = RunFolder(self.prot._getExtraPath())
        info = run.info()
        consensus, spacing = info.consensus, info.consensus.box_spacing_px
        self.assertTrue(DIAMETER < spacing < 2 * DIAMETER, spacing)
        self.assertEqual((consensus.box, consensus.coordinates_box),
                         (round(1.5 * spacing), 4 * DIAMETER))
        self.assertAlmostEqual(consensus.radius_px, 0.1 * consensus.box)
        self.assertAlmostEqual(info.split.min_distance_px, 0.3 * consensus.box)
        self.assertAlmostEqual(info.split.edge_margin_px, 0.3 * consensus.box)
        self.assertEqual(read_spec(run.file(run.MODEL)).box, consensus.box)
        for name in (OUTPUT_RETAINED, OUTPUT_PRUNED):
            self.assertEqual(getattr(self.prot, name).getBoxSize(), 4 * DIAMETER)
        summary, methods = "\n".join(self.prot.summary()), "\n".join(self.prot.methods())
        self.assertIn("Worked in boxes of %d px (1.5 times the AND coordinates' median "
                      "spacing of %.0f px" % (consensus.box, spacing), summary)
        self.assertIn("in boxes of %d px (1.5 times the median spacing of the AND "
                      "coordinates; the coordinates' box was %d px)"
                      % (consensus.box, 4 * DIAMETER), methods)

    def test_known_negative_particles_are_checked_against_the_box_the_run_fits(self):
        """Junk extracted in boxes narrower than the pickers' 128 px but wider than the box
        the run fits is accepted (the check measures the fit on the input sets); narrower
        than that, refused naming the fitted box."""
        fitted = RunFolder(self.prot._getExtraPath()).info().consensus.box
        for width in (3 * DIAMETER, fitted - 10):
            prot = newDeepConsensus(self, self.protCoords)
            prot.inputNegativeParticles.set(importParticles(self, self.truth[0],
                                                            self.truth[0].junk, width))
            prot.inputNegativeParticles.setExtended("outputParticles")
            self.assertEqual(prot._fittedBox(self.protCoords[0].outputCoordinates), fitted)
            errors = [e for e in prot.validate() if "known negative particles" in e]
            if width > fitted:
                self.assertEqual(errors, [])
            else:
                self.assertEqual(len(errors), 1, errors)
                self.assertIn("boxes of %d px at 2.000 Å/px (%d Å), narrower than the run's "
                              "boxes (%d px" % (width, 2 * width, fitted), errors[0])

    def test_a_diameter_or_a_reused_network_keeps_the_box_from_the_fit(self):
        for values, fits in ((dict(), True), (dict(particleDiameter=60.0), False),
                             (dict(modelSource=ProtDeepConsensus.MODEL_RUN), False),
                             (dict(modelSource=ProtDeepConsensus.MODEL_FILE), False)):
            self.assertEqual(self.newProtocol(ProtDeepConsensus, **values)._fitBox(), fits,
                             values)


class TestPublishedMethod(BaseTest):
    """'As published': random negatives, one round, no rotational averages, the network's
    score alone."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, cls.truth = importSynthetic(cls, nMicrographs=3)
        cls.prot = newDeepConsensus(cls, cls.protCoords, maxEpochs=6, networkSize=32,
                                    method=1, minDistance=0)
        cls.launchProtocol(cls.prot)

    def test_continue_with_new_negatives_reruns_every_later_step(self):
        """pyworkflow's continue re-runs a step whose arguments changed, not the ones after
        it; every later step carries the signature of the parameters before it, so new
        negatives are extracted, trained on and scored again, and the record stays whole."""
        extra = self.prot._getExtraPath
        before = {name: os.path.getmtime(extra(name))
                  for name in ("consensus.npz", "neg_particles.npy", "model.keras", "scores.npy")}
        nRandom = RunFolder(extra()).info().negatives.n_random
        continueWith(self, negativeRatio=0.5)
        prot = self.prot
        info = RunFolder(extra()).info()
        self.assertEqual(os.path.getmtime(extra("consensus.npz")), before["consensus.npz"])
        for name in ("neg_particles.npy", "model.keras", "scores.npy"):
            self.assertGreater(os.path.getmtime(extra(name)), before[name], name)
        self.assertLess(info.negatives.n_random, nRandom)
        self.assertIsNotNone(info.training)
        self.assertEqual(info.split.n_retained, prot.outputCoordinatesRetained.getSize())
        self.assertEqual(prot.outputCoordinatesRetained.getSize()
                         + prot.outputCoordinatesPruned.getSize(), info.consensus.n_or)

    def test_one_round_and_the_network_score_alone(self):
        info = RunFolder(self.prot._getExtraPath()).info()
        self.assertEqual([r.round for r in info.training.rounds], [1])
        self.assertEqual(info.training.rounds[0].centring_search, 0.0)  # the pick's box only
        self.assertIsNone(info.ranking.agreement)
        self.assertEqual(info.negatives.n_offcentre, 0)
        self.assertIsNone(info.extraction.rotational)  # the merge job was told so
        self.assertFalse(os.path.exists(self.prot._getExtraPath("rotational_llr.npy")))
        self.assertFalse(os.path.exists(self.prot._getExtraPath("model_round1.keras")))
        np.testing.assert_array_equal(np.load(self.prot._getExtraPath("scores.npy")),
                                      np.load(self.prot._getExtraPath("cnn_scores.npy")))

    def test_zero_minimum_distance_keeps_every_coordinate_above_the_threshold(self):
        split = RunFolder(self.prot._getExtraPath()).info().split
        self.assertEqual(split.min_distance_px, 0)
        self.assertEqual(split.n_duplicates, 0)
        assertSplitRule(self, self.prot.outputCoordinatesRetained,
                        self.prot.outputCoordinatesPruned, self.prot.threshold.get(), 0,
                        split.edge_margin_px)
