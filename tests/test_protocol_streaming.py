"""ProtDeepConsensus on coordinate sets that grow while it runs (issue 14, point 5).

The pickers' sets are fed in streaming by pwem's ProtCreateStreamData, as Scipion's own
streaming tests feed theirs: one micrograph's coordinates per update, the set open until
the last.  Two deep-consensus runs watch the same feeders: one trains when the inputs
close and must end equal to the batch run on the same data and seed; the other scores
with the batch run's model from its first batch on, so its outputs grow while the
inputs are still open.
"""
import os
import time

import numpy as np
from pwem.protocols import ProtCreateStreamData
from pyworkflow.object import Pointer
from pyworkflow.protocol.protocol import getUpdatedProtocol
from pyworkflow.tests import BaseTest, setupTestProject

from deepconsensus_plugin.core.model_file import read_spec
from deepconsensus_plugin.core.run_folder import RunFolder
from deepconsensus_plugin.core.box_policy import spacing_box
from deepconsensus_plugin.protocols import OUTPUT_PRUNED, OUTPUT_RETAINED, ProtDeepConsensus

from .scipion_helpers import (DIAMETER, assertSplitRule, importCoordinates, importSynthetic,
                              newDeepConsensus)

N_MICROGRAPHS = 4
FEED_INTERVAL = 8
"""Seconds between two updates of a fed set."""
PARAMS = dict(maxEpochs=3, networkSize=32, selfTraining=False, seed=2)


def keys(coordSet):
    """{(micName, x, y): score} of a coordinate set."""
    return {(c.getMicName(), c.getX(), c.getY()): c._dcScore.get() for c in coordSet.iterItems()}


class StreamingTest(BaseTest):
    """What the streaming tests share: feeders, runs on them, and reading a running
    protocol's state."""

    @classmethod
    def _feed(cls, protCoords):
        """One feeder per coordinate import, each growing its set by a micrograph's
        coordinates every :data:`FEED_INTERVAL` s; returns once each has an output set."""
        feeders = []
        for prot in protCoords:
            feeder = cls.newProtocol(ProtCreateStreamData, setof=4, nDim=N_MICROGRAPHS,
                                     creationInterval=FEED_INTERVAL)
            feeder.inputCoordinates.set(prot)
            feeder.inputCoordinates.setExtended("outputCoordinates")
            cls.proj.launchProtocol(feeder, wait=False)
            feeders.append(feeder)
        cls.feeders = [cls._waitFor(f, lambda p: p.hasAttribute("outputCoordinates"))
                       for f in feeders]

    @classmethod
    def _streamingRun(cls, **params):
        prot = newDeepConsensus(cls, [], numberOfThreads=3, streamBatchSize=1,
                                streamingSleepOnWait=2, **PARAMS, **params)
        for feeder in cls.feeders:
            prot.inputCoordinates.append(Pointer(feeder, extended="outputCoordinates"))
        return prot

    @classmethod
    def _current(cls, prot):
        """``prot`` as its run is now (its run.db copied into the project, as the GUI does)."""
        cls.proj._updateProtocol(prot)
        return prot

    @classmethod
    def _ownRecord(cls, prot):
        """``prot`` as its own run.db has it, or None before the run has written one.

        The project's update (:meth:`_current`) also checks that an active protocol's
        process is alive, and can read run.db just before the protocol's last write and
        check the process just after it exits: the protocol is then marked failed,
        "Process ... not found running on the machine" (pyworkflow's own note in
        ``Project.checkPid``: "This may be happening even with successfully finished
        protocols").  Run.db is what the protocol itself wrote."""
        if not os.path.exists(os.path.join(cls.proj.path, prot.getDbPath())):
            return None
        return getUpdatedProtocol(prot)

    @classmethod
    def _waitFor(cls, prot, condition, read=None, timeout=300):
        """``prot`` once ``condition`` holds for it as ``read`` (default :meth:`_current`)
        gives it."""
        start = time.time()
        while time.time() - start < timeout:
            current = (read or cls._current)(prot)
            if current is not None and condition(current):
                return current
            time.sleep(2)
        raise AssertionError("%s: timed out" % prot.getRunName())

    @classmethod
    def _waitForEnd(cls, prot):
        """``prot`` as its run.db has it once it is no longer active."""
        return cls._waitFor(prot, lambda p: not p.isActive(), read=cls._ownRecord)


class TestStreaming(StreamingTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, truth = importSynthetic(cls, nMicrographs=N_MICROGRAPHS)
        cls.knownGood = importCoordinates(cls, cls.protMics, truth[:2],
                                          [m.particles for m in truth[:2]], "known good")
        cls.knownJunk = importCoordinates(cls, cls.protMics, truth[:2],
                                          [m.junk for m in truth[:2]], "known junk")
        batch = newDeepConsensus(cls, cls.protCoords, **PARAMS)
        cls._withKnownJunk(batch)
        cls.batch = cls.launchProtocol(batch)
        cls._feed(cls.protCoords)
        atClose = cls._streamingRun(streamTrainAt=10 ** 6)
        cls._withKnownJunk(atClose)
        atClose.knownGoodCoordinates.set(cls.knownGood)
        atClose.knownGoodCoordinates.setExtended("outputCoordinates")
        scoring = cls._streamingRun(modelSource=ProtDeepConsensus.MODEL_RUN,
                                    modelUse=ProtDeepConsensus.USE_SCORE_ONLY)
        scoring.modelRun.set(cls.batch)
        cls.sizesWhileOpen = []
        for prot in (atClose, scoring):
            errors = prot.validate()
            assert not errors, errors
            cls.proj.launchProtocol(prot, wait=False)
        while any(cls._current(f).isActive() for f in cls.feeders):
            current = cls._current(scoring)
            if current.hasAttribute(OUTPUT_RETAINED):
                sizes = (getattr(current, OUTPUT_RETAINED).getSize()
                         + getattr(current, OUTPUT_PRUNED).getSize())
                cls.sizesWhileOpen.append((sizes, getattr(current, OUTPUT_RETAINED)
                                           .isStreamOpen()))
            time.sleep(2)
        cls.atClose = cls._waitForEnd(atClose)
        cls.scoring = cls._waitForEnd(scoring)

    @classmethod
    def _withKnownJunk(cls, prot):
        prot.inputNegativeCoordinates.set(cls.knownJunk)
        prot.inputNegativeCoordinates.setExtended("outputCoordinates")

    def test_the_outputs_grow_while_the_inputs_are_open(self):
        self.assertTrue(self.scoring.isFinished(), self.scoring.getErrorMessage())
        openSizes = [n for n, isOpen in self.sizesWhileOpen if isOpen]
        self.assertGreaterEqual(len(set(openSizes)), 2, self.sizesWhileOpen)
        self.assertEqual(openSizes, sorted(openSizes))
        retained, pruned = (getattr(self.scoring, n) for n in (OUTPUT_RETAINED, OUTPUT_PRUNED))
        self.assertTrue(retained.isStreamClosed() and pruned.isStreamClosed())
        self.assertGreater(openSizes[-1], 0)
        self.assertGreater(retained.getSize() + pruned.getSize(), openSizes[0])

    def test_outputs_partition_the_or_set_with_no_coordinate_twice(self):
        for prot in (self.atClose, self.scoring):
            self.assertTrue(prot.isFinished(), prot.getErrorMessage())
            retained, pruned = (getattr(prot, n) for n in (OUTPUT_RETAINED, OUTPUT_PRUNED))
            kept, dropped = keys(retained), keys(pruned)
            self.assertEqual(len(kept), retained.getSize())  # no coordinate twice
            self.assertEqual(len(dropped), pruned.getSize())
            self.assertFalse(set(kept) & set(dropped))
            info = RunFolder(prot._getExtraPath()).info()
            self.assertEqual(len(kept) + len(dropped), info.consensus.n_or)
            self.assertEqual(info.consensus.n_micrographs, N_MICROGRAPHS)

    def test_trained_when_the_inputs_closed_it_ends_equal_to_the_batch_run(self):
        """Both given the same known negative coordinates, which both train on."""
        self.assertTrue(self.atClose.isFinished(), self.atClose.getErrorMessage())
        known = [RunFolder(prot._getExtraPath()).info().negatives.n_user_coordinates
                 for prot in (self.atClose, self.batch)]
        self.assertEqual(known[0], known[1])
        self.assertGreater(known[0], 0)
        for name in (OUTPUT_RETAINED, OUTPUT_PRUNED):
            streamed, batch = keys(getattr(self.atClose, name)), keys(getattr(self.batch, name))
            self.assertEqual(set(streamed), set(batch))
            np.testing.assert_allclose([streamed[k] for k in sorted(batch)],
                                       [batch[k] for k in sorted(batch)], rtol=1e-6)
        summary = "\n".join(self.atClose.summary())
        self.assertIn("Streaming: %d batches" % N_MICROGRAPHS, summary)
        self.assertIn("inputs closed", summary)
        known = RunFolder(self.atClose._getExtraPath()).info().evaluation
        self.assertGreater(known.recall, 0.8)  # the known picks rate a stream as a batch run
        self.assertIn("Known picks, %d good" % known.n_good, summary)


class TestStreamingInLargeBoxes(StreamingTest):
    """Picks in boxes of 4 particle diameters, fed in streaming, no diameter on the form:
    the first batch fits the box every batch works in (a batch run fits it on all the
    micrographs); the network trains after the second batch and scores the later ones in
    it, and the outputs keep the pickers' box."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, protCoords, _ = importSynthetic(cls, nMicrographs=N_MICROGRAPHS,
                                                      box=4 * DIAMETER)
        cls._feed(protCoords)
        prot = cls._streamingRun(streamTrainAt=100)
        errors = prot.validate()
        assert not errors, errors
        cls.proj.launchProtocol(prot, wait=False)
        cls.prot = cls._waitForEnd(prot)

    def test_the_first_batch_fits_the_box_and_the_outputs_keep_the_pickers(self):
        prot = self.prot
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        run = RunFolder(prot._getExtraPath())
        info = run.info()
        consensus = info.consensus
        self.assertEqual((consensus.box, consensus.coordinates_box),
                         (spacing_box(4 * DIAMETER, consensus.box_spacing_px), 4 * DIAMETER))
        self.assertTrue(DIAMETER < consensus.box_spacing_px < 2 * DIAMETER)
        self.assertAlmostEqual(consensus.radius_px, 0.1 * consensus.box)
        self.assertEqual(read_spec(run.file(run.MODEL)).box, consensus.box)
        self.assertGreater(info.training.rounds[0].n_positives, 0)
        self.assertEqual([b.model for b in prot._stream().state.batches], [1] * N_MICROGRAPHS)
        self.assertAlmostEqual(info.split.min_distance_px, 0.3 * consensus.box)
        self.assertAlmostEqual(info.split.edge_margin_px, 0.3 * consensus.box)
        retained, pruned = (getattr(prot, n) for n in (OUTPUT_RETAINED, OUTPUT_PRUNED))
        self.assertEqual(retained.getSize() + pruned.getSize(), consensus.n_or)
        for coordSet in (retained, pruned):
            self.assertEqual(coordSet.getBoxSize(), 4 * DIAMETER)
        assertSplitRule(self, retained, pruned, prot.threshold.get(), info.split.min_distance_px,
                        info.split.edge_margin_px)
        summary = "\n".join(prot.summary())
        self.assertIn("Worked in boxes of %d px" % consensus.box, summary)
        self.assertIn("The first batch's AND coordinates set the box of %d px" % consensus.box,
                      summary)
