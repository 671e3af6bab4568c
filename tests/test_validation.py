"""ProtDeepConsensus refuses bad input before running, with messages that name the culprit."""
import os
import shutil

import mrcfile
import numpy as np
from pwem.objects import Micrograph, Particle, SetOfMicrographs
from pwem.protocols import ProtImportMicrographs, ProtImportParticles
from pyworkflow.tests import BaseTest, setupTestProject

from deepconsensus_plugin.protocols import ProtDeepConsensus, ProtImportPickerCoordinates

from .scipion_helpers import importSynthetic, newDeepConsensus, writeBoxFiles


class TestValidation(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, cls.truth = importSynthetic(
            cls, nMicrographs=2, shape=(256, 256), nParticles=12)
        # The same micrographs under other names: a set that shares none with the first.
        folder = os.path.abspath(cls.proj.getTmpPath("renamed"))
        os.makedirs(folder)
        for mic in cls.truth:
            shutil.copy(mic.path, os.path.join(folder, "other_" + os.path.basename(mic.path)))
        cls.otherMics = cls.newProtocol(ProtImportMicrographs, filesPath=folder,
                                        filesPattern="other_*.mrc", samplingRate=2.0)
        cls.launchProtocol(cls.otherMics)
        boxes = os.path.join(folder, "boxes")
        renamed = [type(m)(os.path.join(folder, "other_" + os.path.basename(m.path)),
                           m.particles, m.junk) for m in cls.truth]
        writeBoxFiles(boxes, renamed, [m.particles for m in cls.truth], 48)
        cls.otherCoords = cls.newProtocol(ProtImportPickerCoordinates, filesPath=boxes,
                                          filesPattern="*.box")
        cls.otherCoords.setObjLabel("renamed picker")
        cls.otherCoords.inputMicrographs.set(cls.otherMics)
        cls.otherCoords.inputMicrographs.setExtended("outputMicrographs")
        cls.launchProtocol(cls.otherCoords)
        # Known negatives on the junk (which pickers pick now and then), and on the particles.
        cls.junkNegatives, cls.particleNegatives = (
            cls.importKnownNegatives(label, [getattr(m, attr) for m in cls.truth])
            for label, attr in (("junk", "junk"), ("particles", "particles")))

    @classmethod
    def importKnownNegatives(cls, label, picks):
        folder = os.path.abspath(cls.proj.getTmpPath("known_" + label))
        writeBoxFiles(folder, cls.truth, picks, 48)
        prot = cls.newProtocol(ProtImportPickerCoordinates, filesPath=folder,
                               filesPattern="*.box")
        prot.setObjLabel("known " + label)
        prot.inputMicrographs.set(cls.protMics)
        prot.inputMicrographs.setExtended("outputMicrographs")
        return cls.launchProtocol(prot)

    def assertError(self, prot, *fragments):
        errors = "\n".join(prot.validate())
        for fragment in fragments:
            self.assertIn(fragment, errors)

    def test_valid_input_passes(self):
        self.assertEqual(newDeepConsensus(self, self.protCoords).validate(), [])

    def test_fewer_than_two_sets(self):
        self.assertError(newDeepConsensus(self, self.protCoords[:1]),
                         "at least two pickers", "1 set(s) given")

    def test_sets_without_common_micrographs_are_named(self):
        prot = newDeepConsensus(self, [self.protCoords[0], self.otherCoords])
        self.assertError(prot, "share no micrograph", "'picker 0'", "'renamed picker'")

    def test_a_set_selected_twice_is_named(self):
        prot = newDeepConsensus(self, [self.protCoords[0], self.protCoords[1], self.protCoords[0]])
        self.assertEqual(prot.validate(),
                         ["The input coordinate set 'picker 0' (outputCoordinates) is selected "
                          "twice (also as 'picker 0' (outputCoordinates)): deep consensus needs "
                          "the picks of different pickers."])

    def test_empty_set_is_named(self):
        prot = newDeepConsensus(self, self.protCoords)
        coords = prot.inputCoordinates[1].get()
        coords.getSize = lambda: 0  # the import protocol's in-memory set, restored below
        self.addCleanup(delattr, coords, "getSize")
        self.assertError(prot, "'picker 1' (outputCoordinates) is empty")

    def micrographsNamed(self, label, names):
        """A SetOfMicrographs of files ``names`` (never read: the form looks at names)."""
        micSet = SetOfMicrographs(filename=self.proj.getTmpPath("%s.sqlite" % label))
        micSet.setSamplingRate(2.0)
        for name in names:
            mic = Micrograph(location=os.path.join("/data", name))
            mic.setMicName(name)
            micSet.append(mic)
        micSet.write()
        return micSet

    def test_micrographs_in_a_format_not_read_are_named(self):
        """SPIDER or DM4 micrographs would fail at extraction: the form names the set, the
        format, how many and one file.  Pickers on one set of micrographs say it once;
        TIFF micrographs pass."""
        prot = newDeepConsensus(self, self.protCoords)
        mixed = self.micrographsNamed("mixed", ["a.spi", "b.spi", "c.mrc", "d.dm4"])
        for pointer in prot.inputCoordinates[:2]:
            coords = pointer.get()
            coords.getMicrographs = lambda: mixed
            self.addCleanup(delattr, coords, "getMicrographs")
        errors = [e for e in prot.validate() if "cannot be read" in e]
        self.assertEqual(errors, [
            "The micrographs of 'picker 0' (outputCoordinates): .spi files cannot be read: "
            "deep consensus reads MRC (.mrc) and TIFF (.tif) micrographs; convert them to MRC "
            "first (2 of 4 files, e.g. /data/a.spi).",
            "The micrographs of 'picker 0' (outputCoordinates): .dm4 files cannot be read: "
            "deep consensus reads MRC (.mrc) and TIFF (.tif) micrographs; convert them to MRC "
            "first (1 of 4 files, e.g. /data/d.dm4)."])
        tiffs = self.micrographsNamed("tiffs", ["a.tif", "b.tiff"])
        for pointer in prot.inputCoordinates[:2]:
            pointer.get().getMicrographs = lambda: tiffs
        self.assertFalse([e for e in prot.validate() if "cannot be read" in e])

    def test_known_negative_particles_in_a_format_not_read_are_named(self):
        prot = newDeepConsensus(self, self.protCoords)
        prot.inputNegativeParticles.set(self.importParticles())
        prot.inputNegativeParticles.setExtended("outputParticles")
        self.assertEqual(prot.validate(), [])
        particles = prot.inputNegativeParticles.get()
        stk = [Particle(location=(i, "/data/ice.stk")) for i in (1, 2)]
        particles.iterItems = lambda: iter(stk)
        self.addCleanup(delattr, particles, "iterItems")
        errors = prot.validate()
        self.assertEqual(len(errors), 1, errors)
        self.assertRegex(errors[0], r"^The known negative particles '.*import particles.*' "
                                    r"\(outputParticles\): ")
        self.assertTrue(errors[0].endswith(
            ": .stk files cannot be read: deep consensus reads MRC particle stacks (.mrcs); "
            "convert them to MRC first (1 of 1 files, e.g. /data/ice.stk)."), errors[0])

    def test_missing_or_tiny_box_size(self):
        coords = self.protCoords[0].outputCoordinates
        self.addCleanup(coords.setBoxSize, coords.getBoxSize())
        for box in (None, 4):
            coords.setBoxSize(box)
            self.assertError(newDeepConsensus(self, self.protCoords), "box size of 'picker 0'")
        coords.setBoxSize(None)  # and with known negatives, which are compared within a radius
        prot = self.withKnownNegatives(self.junkNegatives)
        self.assertEqual(prot.validate(), ["The box size of 'picker 0' (outputCoordinates) is "
                                           "None: set it (at least 8 px) when picking."])

    def test_a_particle_diameter_in_other_units_is_named(self):
        """The synthetic picks: 48 px boxes at 2 Å/px.  A diameter wider than the box, or
        one that gives boxes under 8 px, is in nm or px, not Å."""
        self.assertEqual(newDeepConsensus(self, self.protCoords, particleDiameter=64).validate(),
                         [])
        self.assertError(newDeepConsensus(self, self.protCoords, particleDiameter=640),
                         "particle diameter 640 Å (320 px) is larger than the box of "
                         "'picker 0' (outputCoordinates) (48 px at 2.000 Å/px)")
        self.assertError(newDeepConsensus(self, self.protCoords, particleDiameter=6.4),
                         "particle diameter 6.4 Å is under 5 px at 2.000 Å/px")

    def test_parameters_out_of_range(self):
        cases = {"consensusRadius": (1.5, "Consensus radius"),
                 "negativeRatio": (0, "Negatives per positive"),
                 "networkSize": (8, "Network box size"),
                 "maxEpochs": (0, "Maximum epochs"),
                 "learningRate": (2.0, "Learning rate"),
                 "batchSize": (1, "Batch size"),
                 "threshold": (1.2, "Score threshold")}
        for name, (value, fragment) in cases.items():
            with self.subTest(name):
                self.assertError(newDeepConsensus(self, self.protCoords, **{name: value}),
                                 fragment)

    def withKnownNegatives(self, producer):
        prot = newDeepConsensus(self, self.protCoords)
        prot.inputNegativeCoordinates.set(producer)
        prot.inputNegativeCoordinates.setExtended("outputCoordinates")
        return prot

    def test_known_negatives_off_the_picks_pass(self):
        self.assertEqual(self.withKnownNegatives(self.junkNegatives).validate(), [])

    def test_known_negatives_that_are_an_input_set_are_refused(self):
        self.assertError(self.withKnownNegatives(self.protCoords[1]),
                         "known negatives 'picker 1' (outputCoordinates) are the input set "
                         "'picker 1' (outputCoordinates)")

    def test_known_negatives_on_an_input_sets_picks_are_refused(self):
        """A picker's particles given as negatives (e.g. a picker run that was selected when
        the form opened) would teach the network that particles are background."""
        prot = self.withKnownNegatives(self.particleNegatives)
        self.assertError(prot, "of the 24 known negatives 'known particles' (outputCoordinates) "
                               "on the micrographs they share with the input set 'picker 0'",
                         "'picker 1'", "'picker 2'", "within the consensus radius")

    def test_known_picks_on_the_input_micrographs_pass_others_and_empty_ones_are_named(self):
        prot = newDeepConsensus(self, self.protCoords)
        for pointer, producer in ((prot.knownGoodCoordinates, self.particleNegatives),
                                  (prot.knownBadCoordinates, self.junkNegatives)):
            pointer.set(producer)
            pointer.setExtended("outputCoordinates")
        self.assertEqual(prot.validate(), [])
        prot.knownBadCoordinates.set(self.otherCoords)
        prot.knownBadCoordinates.setExtended("outputCoordinates")
        self.assertError(prot, "The known bad picks 'renamed picker' (outputCoordinates) are "
                               "on none of the input micrographs")
        good = self.particleNegatives.outputCoordinates
        good.getSize = lambda: 0  # the import protocol's in-memory set, restored below
        self.addCleanup(delattr, good, "getSize")
        self.assertError(prot, "The known good picks 'known particles' (outputCoordinates) "
                               "are empty.")

    def importParticles(self, box=64, samplingRate=2.0):
        """A run whose output is a SetOfParticles (as an extraction's would be): four
        images of ``box`` px at ``samplingRate`` Å/px."""
        folder = os.path.abspath(self.proj.getTmpPath("particles_%d_%g" % (box, samplingRate)))
        os.makedirs(folder, exist_ok=True)
        mrcfile.write(os.path.join(folder, "boxes.mrcs"), np.zeros((4, box, box), np.float32),
                      overwrite=True)
        prot = self.newProtocol(ProtImportParticles, filesPath=folder, filesPattern="*.mrcs",
                                samplingRate=samplingRate)
        return self.launchProtocol(prot)

    def test_known_negative_particles_narrower_than_the_run_s_boxes_are_named(self):
        """They are cut to the run's field of view (48 px at 2 Å/px: 96 Å) at their own
        pixel size: 64 px at 1 Å/px cannot show it; at 2 Å/px they can."""
        prot = newDeepConsensus(self, self.protCoords)
        prot.inputNegativeParticles.set(self.importParticles(box=64, samplingRate=1.0))
        prot.inputNegativeParticles.setExtended("outputParticles")
        errors = prot.validate()
        self.assertEqual(len(errors), 1, errors)
        self.assertTrue(errors[0].endswith(
            "(outputParticles) are boxes of 64 px at 1.000 Å/px (64 Å), narrower than the "
            "run's boxes (48 px at 2.000 Å/px, 96 Å): extract them with a box of at least "
            "96 px."), errors[0])
        prot.inputNegativeParticles.set(self.importParticles(box=48, samplingRate=2.0))
        prot.inputNegativeParticles.setExtended("outputParticles")
        self.assertEqual(prot.validate(), [])

    def test_form_leaves_known_negatives_empty_when_a_run_is_selected(self):
        """pyworkflow's form fills empty pointers from the run selected in the project
        (FormWindow.getWidgetValue); a picker's coordinates or a run's particles must not
        become known negatives that way, while the pickers' outputs stay selectable."""
        import pyworkflow.gui.project  # noqa: F401  (pyworkflow.gui.form's import order)
        from pyworkflow.gui.form import FormWindow, SubclassesTreeProvider

        for selected in (self.protCoords[0], self.particleNegatives, self.importParticles()):
            prot = self.newProtocol(ProtDeepConsensus)
            form = FormWindow.__new__(FormWindow)  # its filling logic, without a window
            form.protocol, form.previousProt = prot, selected
            for name, param in prot.getDefinition().iterParams():
                form.getWidgetValue(getattr(prot, name), param)
            self.assertIsNone(prot.inputNegativeCoordinates.get(), selected.getObjLabel())
            self.assertIsNone(prot.inputNegativeParticles.get(), selected.getObjLabel())

        # The object browser still offers every coordinate set for the known negatives.
        self.proj.getRuns(refresh=True)  # the browser reads the project's cached runs
        browser = SubclassesTreeProvider(prot, prot.getParam("inputNegativeCoordinates"))
        offered = {(p.getObjValue().getObjId(), p.getExtended()) for p in browser.getObjects()}
        self.assertLessEqual({(c.getObjId(), "outputCoordinates")
                              for c in self.protCoords + [self.junkNegatives]}, offered)

    def test_input_and_range_errors_come_in_one_round(self):
        """The form shows every problem at once, not the range errors on the next try."""
        prot = newDeepConsensus(self, self.protCoords[:1], threshold=2.0)
        self.assertError(prot, "at least two pickers", "Score threshold must be in [0, 1]")

    def test_every_parameter_out_of_range_gets_its_own_message(self):
        """The ranges are the core's (core.parameters, which the command line checks too);
        the messages name each parameter in the form's words."""
        bad = dict(consensusRadius=0, negativeRatio=0, negativeDistance=3, networkSize=8,
                   maxEpochs=0, epochParticles=50, patience=0, learningRate=1, batchSize=1,
                   threshold=-0.1,
                   minDistance=-2, edgeMargin=-0.5, seed=-1)
        errors = newDeepConsensus(self, self.protCoords, **bad).validate()
        self.assertEqual(len(errors), len(bad), errors)
        self.assertEqual(errors, [
            "Consensus radius must be in (0, 1].", "Negatives per positive must be positive.",
            "Exclusion distance must be in [0, 2] boxes.",
            "Network box size must be in [16, 512] px.", "Maximum epochs must be at least 1.",
            "Boxes of each class per epoch must be 0 (every box) or at least 100.",
            "Early-stopping patience must be at least 1.", "Learning rate must be in (0, 1).",
            "Batch size must be at least 2.", "Score threshold must be in [0, 1].",
            "Minimum distance between particles must be -1 (automatic) or at least 0 A.",
            "Edge margin must be -1 (automatic) or at least 0 A.",
            "Random seed must be at least 0."])

    def test_hidden_parameters_are_not_range_checked(self):
        """The fixed threshold and k are hidden (and unused) under other choices."""
        prot = newDeepConsensus(self, self.protCoords, threshold=2.0, minVotes=9,
                                thresholdMode=ProtDeepConsensus.THRESHOLD_AUTOMATIC)
        self.assertEqual(prot.validate(), [])
        prot.thresholdMode.set(ProtDeepConsensus.THRESHOLD_FIXED)
        self.assertError(prot, "Score threshold must be in [0, 1]")

    def test_and_rules_give_the_votes_a_positive_needs(self):
        """Majority (the default) is more than half the pickers; only 'at least k' checks
        k."""
        cases = [(self.protCoords[:2], ProtDeepConsensus.AND_MAJORITY, 2),
                 (self.protCoords, ProtDeepConsensus.AND_MAJORITY, 2),
                 (self.protCoords, ProtDeepConsensus.AND_ALL, 3),
                 (self.protCoords, ProtDeepConsensus.AND_AT_LEAST, 1)]
        for inputs, rule, expected in cases:
            prot = newDeepConsensus(self, inputs, andRule=rule, minVotes=1)
            self.assertEqual(prot._minVotes(), expected)
            self.assertEqual(prot.validate(), [])
        self.assertEqual(newDeepConsensus(self, self.protCoords).andRule.get(),
                         ProtDeepConsensus.AND_MAJORITY)
        prot = newDeepConsensus(self, self.protCoords, andRule=ProtDeepConsensus.AND_MAJORITY,
                                minVotes=9)  # ignored by the majority rule
        self.assertEqual(prot.validate(), [])

    def test_k_above_the_number_of_pickers(self):
        prot = newDeepConsensus(self, self.protCoords, andRule=ProtDeepConsensus.AND_AT_LEAST,
                                minVotes=4)
        self.assertError(prot, "k must be between 1 and the number of input sets (3)")
