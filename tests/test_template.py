"""The shipped workflow template: found by Scipion, filled in, loaded into a project."""
import os

from pyworkflow.template import TemplateList
from pyworkflow.tests import BaseTest, setupTestProject

from deepconsensus_plugin.demo import DEMO_DATA, PICKERS, SAMPLING_RATE

TEMPLATE_ID = "deepconsensus_plugin-deep_consensus"


class TestWorkflowTemplate(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def loadTemplate(self):
        templates = TemplateList()
        templates.addPluginTemplates()
        ours = [t for t in templates.templates if t.getObjId() == TEMPLATE_ID]
        self.assertEqual(len(ours), 1, "the plugin's template is not found by Scipion")
        template = ours[0]
        template.replaceEnvVariables()
        template.parseContent()
        values = {"micsFolder": os.path.join(DEMO_DATA, "micrographs"), "micsPattern": "*.mrc",
                  "samplingRate": str(SAMPLING_RATE), "voltage": "300"}
        for i, picker in enumerate(PICKERS, 1):
            values["picker%dFolder" % i] = os.path.join(DEMO_DATA, "coordinates", picker)
            values["picker%dPattern" % i] = "*.box"
            values["picker%dBox" % i] = "0"
        values["particleDiameter"] = str(60 * SAMPLING_RATE)  # the demo's 90 px box: 1.5 diameters
        for alias, value in values.items():
            self.assertEqual(template.setParamValue(alias, value), 1, alias)
        self.assertEqual({p.getAlias() for p in template.getParams().values()},
                         set(values) | {"sphericalAberration"})
        return template.createTemplateFile()

    def test_template_loads_the_intended_workflow_and_runs_its_imports(self):
        path = self.loadTemplate()
        self.addCleanup(os.remove, path)
        os.chdir(self.proj.getPath())
        loaded = self.proj.loadProtocols(path)
        self.assertEqual({key: prot.getClassName() for key, prot in loaded.items()},
                         {"2": "ProtImportMicrographs", "3": "ProtImportPickerCoordinates",
                          "4": "ProtImportPickerCoordinates", "5": "ProtImportPickerCoordinates",
                          "6": "ProtDeepConsensus"})
        mics, dc = loaded["2"], loaded["6"]
        pickers = [loaded[key] for key in ("3", "4", "5")]
        self.assertAlmostEqual(mics.samplingRate.get(), SAMPLING_RATE)
        self.assertEqual(mics.filesPath.get(), os.path.join(DEMO_DATA, "micrographs"))
        for picker, name in zip(pickers, PICKERS):
            self.assertIs(picker.inputMicrographs.getObjValue(), mics)
            self.assertEqual(picker.inputMicrographs.getExtended(), "outputMicrographs")
            self.assertEqual(picker.filesPath.get(), os.path.join(DEMO_DATA, "coordinates", name))
        self.assertEqual([(p.getObjValue(), p.getExtended()) for p in dc.inputCoordinates],
                         [(picker, "outputCoordinates") for picker in pickers])
        # ready for open inputs: the step generator and the batches need threads of their own
        self.assertEqual((dc.numberOfThreads.get(), dc.streamBatchSize.get(),
                          dc.streamTrainAt.get()), (3, 10, 0))
        self.assertAlmostEqual(dc.particleDiameter.get(), 60 * SAMPLING_RATE)

        # pyworkflow drops the template's labels; the imports are named by their folders.
        self.assertEqual([p.getObjLabel() for p in pickers], list(PICKERS))

        for prot in [mics] + pickers:
            self.launchProtocol(prot)
        self.assertEqual(mics.outputMicrographs.getSize(), 3)
        for picker in pickers:
            self.assertSetSize(picker.outputCoordinates)
            self.assertEqual(picker.outputCoordinates.getBoxSize(), 90)
        self.assertEqual([self.proj.getProtocol(p.getObjId()).getObjLabel() for p in pickers],
                         list(PICKERS))
        dc = self.proj.getProtocol(dc.getObjId())
        self.assertEqual(dc.validate(), [])
