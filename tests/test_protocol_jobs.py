"""ProtDeepConsensus runs its heavy stages as jobs: shards in parallel give the one-job
scores, a failed shard runs again alone on continue, and a GPU booked that TensorFlow
cannot see is said at the top of the log and in the summary (the run goes on on the CPU)."""
import os
import shutil

import numpy as np
from pyworkflow.protocol.constants import MODE_RESUME
from pyworkflow.tests import BaseTest, setupTestProject

from deepconsensus_plugin.core.run_folder import RunFolder

from .scipion_helpers import importSynthetic, newDeepConsensus, runToEnd

QUICK = dict(maxEpochs=2, networkSize=32, seed=3, method=1)  # the published method: one round
NO_SUCH_GPU = "97"
"""A GPU id no machine has: TensorFlow sees no GPU among those booked, with or without one."""


def stepNames(prot):
    return [step.funcName.get() for step in prot.loadSteps()]


def runLog(prot):
    with open(prot.getStdoutLog()) as handle:
        return handle.read()


class TestJobs(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, cls.mics = importSynthetic(
            cls, nMicrographs=3, shape=(640, 640), nParticles=80)

    def _run(self, **params):
        prot = runToEnd(self, newDeepConsensus(self, self.protCoords, **dict(QUICK, **params)))
        return prot, RunFolder(self.proj.getPath(prot._getExtraPath()))

    def test_shards_in_parallel_threads_give_the_one_job_scores(self):
        one, oneRun = self._run(useGpu=False)
        self.assertTrue(one.isFinished(), one.getErrorMessage())
        three, threeRun = self._run(jobsPerStage=3, numberOfThreads=4, useGpu=False)
        self.assertTrue(three.isFinished(), three.getErrorMessage())
        np.testing.assert_array_equal(threeRun.scores(), oneRun.scores())
        self.assertEqual(three.outputCoordinatesRetained.getSize(),
                         one.outputCoordinatesRetained.getSize())
        names = stepNames(three)
        self.assertEqual([names.count(n) for n in ("extractStep", "trainStep", "scoreStep")],
                         [3, 1, 3])
        log = runLog(three)
        for piece in ("extract", "merge-extraction", "train", "score"):
            self.assertRegex(log, r"-m deepconsensus_plugin\.cli -v --error-file \S+ job %s "
                                  % piece)
        self.assertIn("ThreadStepExecutor", open(three.getLogPaths()[0]).read() + log)
        # no GPU booked: the scoring shards claim no GPU slot and run at the same time
        scoring = [s for s in three.loadSteps() if s.funcName.get() == "scoreStep"]
        self.assertLess(max(s.initTime.datetime() for s in scoring),
                        min(s.endTime.datetime() for s in scoring))
        self.assertNotIn("WARNING: GPU", "\n".join(three.summary()))  # no GPU was booked

    def test_a_failed_shard_runs_again_alone_on_continue(self):
        last = self.proj.getPath(list(self.protMics.outputMicrographs)[-1].getFileName())
        backup = self.proj.getTmpPath("intact.mrc")
        shutil.copyfile(last, backup)
        with open(last, "r+b") as handle:  # the header stays: the shard fails, not negatives
            handle.truncate(2048)
        try:
            prot = runToEnd(self, newDeepConsensus(self, self.protCoords, jobsPerStage=2,
                                                   useGpu=False, **QUICK))
        finally:
            shutil.copyfile(backup, os.path.realpath(last))
        self.assertTrue(prot.isFailed())
        run = RunFolder(self.proj.getPath(prot._getExtraPath()))
        steps = {(s.funcName.get(), s.argsStr.get()): s for s in prot.loadSteps()}
        statuses = [s.getStatus() for (name, _), s in steps.items() if name == "extractStep"]
        self.assertEqual(sorted(statuses), ["failed", "finished"])
        first = run.file(RunFolder.shard_name("extract", 1, 2, ".npz"))
        before = os.stat(first).st_mtime_ns
        prot.runMode.set(MODE_RESUME)
        self.proj.launchProtocol(prot, wait=True)
        prot = self.proj.getProtocol(prot.getObjId())
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertEqual(os.stat(first).st_mtime_ns, before)  # the finished shard kept
        log = runLog(prot)
        # both shards in the first run, only shard 2 in the second
        self.assertEqual(log.count("job extract --out"), 3)
        self.assertEqual(log.count("--shard 1 --shards 2 --network-size"), 1)

    def test_gpus_booked_and_unseen_are_said_first_and_the_run_goes_on(self):
        prot, run = self._run(useGpu=True, gpuList=NO_SUCH_GPU)
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        summary = prot.summary()
        self.assertTrue(summary[0].startswith("WARNING: GPU %s booked, but TensorFlow"
                                              % NO_SUCH_GPU), summary)
        self.assertIn("tensorflow[and-cuda]", summary[0])
        self.assertIn("list_physical_devices('GPU')", summary[0])
        self.assertIn("Kept ", summary[1])  # the result follows: it ran on the CPU
        log = runLog(prot)
        self.assertLess(log.index("WARNING: GPU"), log.index("consensusStep"))
        self.assertEqual(run.environment()["gpus_booked"], [int(NO_SUCH_GPU)])
