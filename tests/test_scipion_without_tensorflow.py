"""A deep-consensus protocol run from a Scipion process that cannot import TensorFlow, with
the stages in a second environment that has it.

Building a second virtualenv with TensorFlow would take minutes of CI's time and the
network; the test gets the same separation cheaper.  Scipion's processes (the project's
and the protocol's, which inherit this test's environment) start with an import blocker
on PYTHONPATH: any import of TensorFlow or Keras there fails and is written down.  The
jobs run on ``DEEPCONSENSUS_PYTHON``, here a launcher of this venv's Python under
another name, so the plugin treats it as an environment of its own and gives it
PYTHONPATH without the blocker (only the package's source folder), as it would a
virtualenv made by ``scipion installb deepconsensus``.
"""
import os
import re
import subprocess
import sys

from pyworkflow.tests import BaseTest, setupTestProject

from deepconsensus_plugin.core.run_folder import RunFolder

from .scipion_helpers import importSynthetic, newDeepConsensus, runToEnd

BLOCKER = '''"""Test import blocker: this process must not import TensorFlow or Keras."""
import importlib.abc
import importlib.machinery
import os
import sys


class _Blocked(importlib.abc.Loader):
    def create_module(self, spec):
        with open(os.environ["DC_BLOCKED_IMPORTS"], "a") as handle:
            handle.write("%d %s\\n" % (os.getpid(), spec.name))
        raise ImportError("%s is blocked in this Scipion process" % spec.name)

    def exec_module(self, module):
        pass


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            return importlib.machinery.ModuleSpec(name, _Blocked())
        return None


sys.meta_path.insert(0, _Blocker())
'''


class TestScipionWithoutTensorFlow(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, _ = importSynthetic(cls, nMicrographs=3, shape=(640, 640),
                                                          nParticles=80)
        folder = os.path.abspath(cls.proj.getTmpPath("blocker"))
        os.makedirs(folder)
        with open(os.path.join(folder, "sitecustomize.py"), "w") as handle:
            handle.write(BLOCKER)
        cls.launcher = os.path.join(folder, "job-python")
        with open(cls.launcher, "w") as handle:
            handle.write('#!/bin/sh\nexec "%s" "$@"\n' % sys.executable)
        os.chmod(cls.launcher, 0o755)
        cls.report = os.path.join(folder, "blocked.txt")
        source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cls.environ = {"PYTHONPATH": os.pathsep.join([folder, source]),
                       "DC_BLOCKED_IMPORTS": cls.report,
                       "DEEPCONSENSUS_PYTHON": cls.launcher}

    def _withEnviron(self, action):
        saved = {k: os.environ.get(k) for k in self.environ}
        os.environ.update(self.environ)
        try:
            return action()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key)
                else:
                    os.environ[key] = value

    def test_the_blocker_blocks(self):
        result = self._withEnviron(lambda: subprocess.run(
            [sys.executable, "-c", "import tensorflow"], capture_output=True, text=True))
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("tensorflow is blocked in this Scipion process", result.stderr)
        with open(self.report) as handle:
            self.assertIn("tensorflow", handle.read())
        os.unlink(self.report)

    def test_protocol_runs_with_the_stages_in_the_job_environment(self):
        prot = self._withEnviron(lambda: runToEnd(self, newDeepConsensus(
            self, self.protCoords, maxEpochs=2, networkSize=32, method=1, useGpu=False,
            jobsPerStage=2)))
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertFalse(os.path.exists(self.report),
                         "Scipion's process imported TensorFlow: %s"
                         % (open(self.report).read() if os.path.exists(self.report) else ""))
        with open(prot.getStdoutLog()) as handle:
            log = handle.read()
        self.assertRegex(log, r"%s -m deepconsensus_plugin\.cli -v --error-file \S+ job train "
                         % re.escape(self.launcher))
        environment = RunFolder(self.proj.getPath(prot._getExtraPath())).environment()
        self.assertTrue(environment["tensorflow"])  # the jobs had TensorFlow
        self.assertGreater(prot.outputCoordinatesRetained.getSize(), 0)
