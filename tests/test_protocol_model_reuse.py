"""Reusing a model in Scipion (issue 14, point 2): fine-tuning the model of a previous run,
a model trained on other boxes refused by _validate, and scoring alone in a second project
with the model file of the first."""
import os

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject
from pyworkflow.viewer import MessageView

from deepconsensus_plugin.core.model_file import read_spec
from deepconsensus_plugin.core.run_folder import RunFolder
from deepconsensus_plugin.protocols import OUTPUT_PRUNED, OUTPUT_RETAINED, ProtDeepConsensus
from deepconsensus_plugin.viewers import DeepConsensusViewer

from .scipion_helpers import BOX, importSynthetic, newDeepConsensus


class SecondProject(BaseTest):
    """Another Scipion project (a later data collection of the same sample)."""


class ThirdProject(BaseTest):
    """A third project, its micrographs picked in boxes twice the first's."""


class TestModelReuse(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, _ = importSynthetic(cls, nMicrographs=3)
        cls.first = newDeepConsensus(cls, cls.protCoords, maxEpochs=4, networkSize=32,
                                     selfTraining=False)
        cls.first.setObjLabel("first collection")
        cls.launchProtocol(cls.first)
        cls.firstModel = os.path.abspath(cls.proj.getPath(cls.first._getExtraPath("model.keras")))

    def reuse(self, protCoords, test=None, **params):
        prot = newDeepConsensus(test or self, protCoords, networkSize=32, **params)
        return prot

    def runFolder(self, prot, test=None):
        return RunFolder((test or self).proj.getPath(prot._getExtraPath()))

    def test_the_first_run_model_records_its_boxes(self):
        spec = read_spec(self.firstModel)
        self.assertEqual((spec.architecture, spec.network_size, spec.invert, spec.box,
                          spec.sampling_rate), ("fast", 32, False, BOX, 2.0))

    def test_fine_tune_the_model_of_a_previous_run(self):
        prot = self.reuse(self.protCoords, modelSource=ProtDeepConsensus.MODEL_RUN,
                          modelUse=ProtDeepConsensus.USE_FINE_TUNE, maxEpochs=1,
                          selfTraining=False)
        prot.modelRun.set(self.first)
        self.assertEqual(prot.validate(), [])
        self.launchProtocol(prot)
        info = self.runFolder(prot).info()
        self.assertEqual(info.model.use, "fine-tune")
        self.assertEqual(info.model.source, "the model of run 'first collection'")
        self.assertEqual([r.epochs for r in info.training.rounds], [1])
        summary = "\n".join(prot.summary())
        self.assertIn("Model: fine-tuned on this data from the model of run 'first "
                      "collection'.", summary)
        self.assertIn("fine-tuned", "".join(prot.methods()))
        viewer = DeepConsensusViewer(project=self.proj)
        viewer.setProtocol(prot)
        views = viewer._getVisualizeDict()["showTraining"]("showTraining")
        self.addCleanup(views[0].close)
        self.assertIn("fine-tuned on this data from the model of run 'first collection'",
                      views[0].getFigure()._suptitle.get_text())

    def test_a_model_of_other_boxes_is_refused_naming_both_values(self):
        prot = self.reuse(self.protCoords, modelSource=ProtDeepConsensus.MODEL_RUN,
                          modelUse=ProtDeepConsensus.USE_SCORE_ONLY, invertContrast=True)
        prot.networkSize.set(64)
        prot.modelRun.set(self.first)
        errors = prot.validate()
        self.assertEqual(len(errors), 2, errors)
        self.assertIn("The model of run 'first collection' was trained at a network box size "
                      "of 32 px; this run's is 64 px", errors[0])
        self.assertIn("trained on original contrast; this run uses inverted contrast",
                      errors[1])
        prot.modelSource.set(ProtDeepConsensus.MODEL_FILE)
        prot.modelFile.set(self.proj.getPath("nothing.keras"))
        self.assertIn("does not exist", "\n".join(prot.validate()))
        prot.modelSource.set(ProtDeepConsensus.MODEL_RUN)
        prot.modelRun.set(None)
        self.assertIn("Choose the previous run whose model to reuse", "\n".join(prot.validate()))

    def test_score_only_in_a_second_project_with_the_model_file_of_the_first(self):
        here = os.getcwd()
        self.addCleanup(os.chdir, here)
        setupTestProject(SecondProject)  # changes into the second project
        _, protCoords, _ = importSynthetic(SecondProject, nMicrographs=2, seed=5)
        prot = self.reuse(protCoords, test=SecondProject,
                          modelSource=ProtDeepConsensus.MODEL_FILE,
                          modelUse=ProtDeepConsensus.USE_SCORE_ONLY)
        prot.modelFile.set(self.firstModel)
        self.assertEqual(prot.validate(), [])
        SecondProject.launchProtocol(prot)
        run = self.runFolder(prot, SecondProject)
        info = run.info()
        self.assertIsNone(info.training)
        self.assertEqual(info.model.use, "score-only")
        self.assertEqual(info.model.path, self.firstModel)
        self.assertFalse(run.has(run.HISTORY))
        retained, pruned = getattr(prot, OUTPUT_RETAINED), getattr(prot, OUTPUT_PRUNED)
        self.assertEqual(retained.getSize() + pruned.getSize(), info.consensus.n_or)
        scores = run.scores()
        self.assertTrue(np.all((scores >= 0) & (scores <= 1)))
        self.assertIn("Model: the model file %s, scoring without training." % self.firstModel,
                      "\n".join(prot.summary()))
        self.assertIn("trained earlier", "".join(prot.methods()))
        viewer = DeepConsensusViewer(project=SecondProject.proj)
        viewer.setProtocol(prot)
        views = viewer._getVisualizeDict()["showTraining"]("showTraining")
        self.assertIsInstance(views[0], MessageView)

    def test_score_only_on_picks_in_larger_boxes_works_in_the_network_s(self):
        """The first run's network (48 px at 2 A/px) on coordinates picked in 96 px boxes:
        accepted, and the run works in the network's boxes while the outputs keep 96 px; a
        particle diameter whose boxes are not the network's is refused with the way out."""
        here = os.getcwd()
        self.addCleanup(os.chdir, here)
        setupTestProject(ThirdProject)
        _, protCoords, _ = importSynthetic(ThirdProject, nMicrographs=2, seed=6, box=2 * BOX)
        prot = self.reuse(protCoords, test=ThirdProject,
                          modelSource=ProtDeepConsensus.MODEL_FILE,
                          modelUse=ProtDeepConsensus.USE_SCORE_ONLY)
        prot.modelFile.set(self.firstModel)
        self.assertEqual(prot.validate(), [])
        prot.particleDiameter.set(100.0)  # boxes of 75 px
        self.assertIn("give no particle diameter (the protocol and 'deepconsensus run --model' "
                      "then work in them) or 64 A", "\n".join(prot.validate()))
        prot.particleDiameter.set(0.0)
        ThirdProject.launchProtocol(prot)
        consensus = self.runFolder(prot, ThirdProject).info().consensus
        self.assertEqual((consensus.box, consensus.coordinates_box, consensus.box_from_network),
                         (BOX, 2 * BOX, True))
        for name in (OUTPUT_RETAINED, OUTPUT_PRUNED):
            self.assertEqual(getattr(prot, name).getBoxSize(), 2 * BOX)
        self.assertIn("Worked in boxes of %d px (the reused network's field of view" % BOX,
                      "\n".join(prot.summary()))
        self.assertIn("in boxes of %d px (the reused network's; the coordinates' box was %d "
                      "px)" % (BOX, 2 * BOX), "".join(prot.methods()))
