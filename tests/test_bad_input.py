"""ProtDeepConsensus on bad input while running: clear errors, or skipped and counted."""
import os
import time

import numpy as np
import pytest
from pyworkflow.protocol.constants import MODE_RESUME
from pyworkflow.tests import BaseTest, setupTestProject

from deepconsensus_plugin.core.run_folder import (ConsensusInfo, ExtractionInfo, RunFolder,
                                                  RunInfo, SplitInfo)
from deepconsensus_plugin.core.run_summary import summary_lines
from deepconsensus_plugin.protocols import ProtImportPickerCoordinates

from .scipion_helpers import importSynthetic, newDeepConsensus, runToEnd

FAST = {"maxEpochs": 2, "networkSize": 32}


class TestBadMicrograph(BaseTest):
    """One of three micrographs is truncated after import."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, cls.truth = importSynthetic(
            cls, nMicrographs=3, shape=(640, 640), nParticles=90)
        mic = list(cls.protMics.outputMicrographs.iterItems())[1]
        cls.badName = os.path.basename(mic.getFileName())
        path = os.path.realpath(os.path.join(cls.proj.getPath(), mic.getFileName()))
        with open(path, "r+b") as handle:
            handle.truncate(2048)  # the header survives, the image does not

    def runDeepConsensus(self, **params):
        return runToEnd(self, newDeepConsensus(self, self.protCoords, **FAST, **params))

    def test_error_names_the_file(self):
        prot = self.runDeepConsensus()
        self.assertTrue(prot.isFailed())
        self.assertIn(self.badName, prot.getErrorMessage())

    def test_skipping_leaves_out_and_counts_its_coordinates(self):
        prot = self.runDeepConsensus(skipBadMicrographs=True)
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        summary = "\n".join(prot.summary())
        self.assertIn("Skipped 1 unreadable micrographs", summary)
        self.assertIn(self.badName, summary)
        kept = [c.getMicName() for name in ("outputCoordinatesRetained",
                                            "outputCoordinatesPruned")
                for c in getattr(prot, name).iterItems()]
        self.assertNotIn(self.badName, set(kept))
        run = RunFolder(prot._getExtraPath())
        info = run.info()
        onBad = int(np.isin(run.consensus().mic, info.extraction.skipped_mic_ids).sum())
        self.assertGreater(onBad, 0)
        self.assertEqual(len(kept), info.consensus.n_or - onBad)


class TestTooFewPositives(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, _ = importSynthetic(cls, nMicrographs=1, shape=(512, 512),
                                                          nParticles=30)

    def test_a_small_and_set_fails_with_advice_before_anything_is_extracted(self):
        prot = runToEnd(self, newDeepConsensus(self, self.protCoords, **FAST))
        self.assertTrue(prot.isFailed())
        message = prot.getErrorMessage()
        self.assertIn("too few", message)
        self.assertIn("at least k pickers", message)
        self.assertIn("larger consensus radius", message)
        run = RunFolder(prot._getExtraPath())
        self.assertIsNotNone(run.info().consensus)  # the consensus ran and said so
        self.assertIsNone(run.info().extraction)
        self.assertFalse(run.has(RunFolder.OR_PARTICLES))


def test_the_and_set_is_checked_against_what_training_needs():
    from deepconsensus_plugin.core import stages

    stages.require_training_set(consensusInfo(n_and=stages.MIN_POSITIVES))
    with pytest.raises(ValueError, match="Only 99 coordinates were picked by at least 3 "
                                         "pickers"):
        stages.require_training_set(consensusInfo(n_and=stages.MIN_POSITIVES - 1))


class TestOnePickerTwice(BaseTest):
    """One picker's files imported twice: two sets, one picker."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, truth = importSynthetic(cls, nMicrographs=1,
                                                              shape=(512, 512), nParticles=30)
        cls.again = cls.newProtocol(ProtImportPickerCoordinates, filesPattern="*.box",
                                    filesPath=os.path.join(os.path.dirname(truth[0].path),
                                                           "picker_0"))
        cls.again.setObjLabel("picker 0 again")
        cls.again.inputMicrographs.set(cls.protMics)
        cls.again.inputMicrographs.setExtended("outputMicrographs")
        cls.launchProtocol(cls.again)

    def test_the_run_stops_at_the_consensus_naming_both_sets(self):
        prot = runToEnd(self, newDeepConsensus(self, [*self.protCoords, self.again], **FAST))
        self.assertTrue(prot.isFailed())
        self.assertIn("the picks of 'picker 0' (outputCoordinates) and 'picker 0 again' "
                      "(outputCoordinates) are the same", prot.getErrorMessage())
        self.assertIsNone(RunFolder(prot._getExtraPath()).info().consensus)


def consensusInfo(**values):
    fields = dict(n_pickers=3, picker_names=["a", "b", "c"], n_micrographs=2, box=90,
                  sampling_rate=1.0, radius_px=9.0, min_votes=3, n_or=100, n_and=40,
                  votes_histogram=[0, 30, 30, 40], picker_counts=[50, 60, 70])
    fields.update(values)
    return ConsensusInfo(**fields)


def splitInfo(nRetained, nPruned):
    return SplitInfo(threshold=0.5, threshold_mode="fixed", min_distance_px=0.0,
                     n_retained=nRetained, n_pruned=nPruned, n_duplicates=0)


def test_summary_warns_when_every_score_is_on_one_side():
    info = RunInfo(consensus=consensusInfo(), split=splitInfo(100, 0))
    lines = summary_lines(info)
    assert lines[0].startswith("Kept 100 of 100 coordinates (100.0%)")
    assert any(line.startswith("WARNING: every score is on one side") for line in lines)
    info.split = splitInfo(60, 40)
    assert not any("WARNING" in line for line in summary_lines(info))


def test_summary_reports_partial_overlap_rescaling_and_border_boxes():
    info = RunInfo(
        consensus=consensusInfo(n_pickers=2, n_micrographs=5, n_or=10, min_votes=2, n_and=4,
                                ignored_micrograph_entries=3,
                                rescaled_sets=["'topaz' (2.000 A/px)"], other_box_sizes=[180]),
        extraction=ExtractionInfo(network_size=32, invert=False, n_crossing_border=7,
                                  skipped_micrographs=[], skipped_mic_ids=[],
                                  n_user_particles=0, seconds=1.0))
    text = "\n".join(summary_lines(info))
    assert "3 micrograph entries were left out" in text
    assert "Rescaled to 1.000 A/px: 'topaz' (2.000 A/px)" in text
    assert "other box sizes too (180 px); the first set's 90 px was used" in text
    assert "7 boxes crossed the micrograph border" in text


def test_summary_warns_when_the_box_is_large_for_the_spacing_of_the_particles():
    """Without a particle diameter, a box over twice the AND coordinates' median spacing
    (whole neighbours in every box) gets a line that names both and asks for the diameter;
    a box of 1.8 spacings (EMPIAR-10017's own), a run that worked in the diameter's box,
    and a record without the spacing (too few AND coordinates) get none."""
    def text(**values):
        return "\n".join(summary_lines(RunInfo(consensus=consensusInfo(**values))))

    warned = text(box=168, and_spacing_px=58.0)
    assert ("The AND coordinates lie a median 58 px from their nearest neighbour, under 0.5 "
            "of the 168 px box") in warned
    assert ("give the particle diameter (the run then works in boxes of 1.5 diameters; in "
            "Scipion the form's wizard proposes one from this distance)") in warned
    for quiet in (dict(box=180, and_spacing_px=99.0),
                  dict(box=88, coordinates_box=168, and_spacing_px=58.0),
                  dict(box=168, and_spacing_px=None)):
        assert "nearest neighbour" not in text(**quiet)


class TestInterruption(BaseTest):
    """A run stopped during training and continued ends as an uninterrupted one."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, _ = importSynthetic(cls, nMicrographs=3, shape=(640, 640),
                                                          nParticles=80)

    def newRun(self):
        return newDeepConsensus(self, self.protCoords, maxEpochs=6, patience=6, networkSize=32)

    def waitForLog(self, prot, text, timeout=300):
        deadline = time.time() + timeout
        log = os.path.join(self.proj.getPath(), prot.getLogPaths()[0])
        while time.time() < deadline:
            if os.path.exists(log) and text in open(log).read():
                return
            time.sleep(0.5)
        self.fail("%r never appeared in %s" % (text, log))

    def test_stopped_during_training_resumes_without_redoing_extraction(self):
        reference = runToEnd(self, self.newRun())
        self.assertTrue(reference.isFinished(), reference.getErrorMessage())

        prot = self.newRun()
        self.proj.launchProtocol(prot, wait=False)
        self.waitForLog(prot, "Epoch 2/")
        self.proj.stopProtocol(self.proj.getProtocol(prot.getObjId()))
        prot = self.proj.getProtocol(prot.getObjId())
        self.assertFalse(prot.isFinished())
        kept = [prot._getExtraPath(name) for name in ("consensus.npz", "or_particles.npy",
                                                      "neg_particles.npy")]
        before = [os.path.getmtime(path) for path in kept]

        prot.runMode.set(MODE_RESUME)
        prot = runToEnd(self, prot)
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertEqual([os.path.getmtime(path) for path in kept], before)
        np.testing.assert_array_equal(np.load(prot._getExtraPath("scores.npy")),
                                      np.load(reference._getExtraPath("scores.npy")))
        self.assertEqual(prot.outputCoordinatesRetained.getSize(),
                         reference.outputCoordinatesRetained.getSize())
