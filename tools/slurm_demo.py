"""The demo's deep-consensus run locally and through a Scipion queue, compared.

``tools/slurm_demo.sh`` starts a one-node Slurm and writes the hosts.conf
(``SCIPION_HOSTS``) this script uses; run it through that script.  It imports the
bundled demo data into a new project, runs the protocol twice with the same
settings (locally, then with the queue taking one job per step), checks with
``sacct`` that the second run's stages ran as Slurm jobs that completed, and that
both runs gave the same scores and outputs.  It prints the figures
benchmarks/README.md quotes and exits non-zero when a check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user-data", required=True, help="folder for the Scipion project")
    parser.add_argument("--queue", default="dc", help="the hosts.conf queue (default: dc)")
    parser.add_argument("--jobs", type=int, default=3, help="jobs per stage (default: 3)")
    return parser.parse_args(argv)


def sacct_jobs(prefix: str, since: str) -> list:
    """(job id, name, state, elapsed s, exit code) of this user's Slurm jobs named
    ``prefix*`` since ``since``, from the accounting database."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "--starttime", since,
                          "--format=JobID,JobName%60,State,ElapsedRaw,ExitCode"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows if r[1].startswith(prefix)]


def expected_jobs(jobs: int, rounds: int) -> int:
    """check + extraction shards + merge + per round (training + scoring shards)."""
    return 1 + jobs + 1 + rounds * (1 + jobs)


def main(argv=None) -> int:
    args = parse_args(argv)
    from deepconsensus_plugin import headless

    headless.configure(args.user_data)
    import numpy as np
    from pyworkflow.object import Pointer
    from pyworkflow.project import Manager

    from deepconsensus_plugin.core.run_folder import RunFolder
    from deepconsensus_plugin.demo import import_demo_inputs, new_protocol, run_protocol
    from deepconsensus_plugin.protocols import ProtDeepConsensus

    name = "DeepConsensusSlurm-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    project = Manager().createProject(name)
    os.chdir(project.path)
    print("Scipion project: %s" % project.path, flush=True)
    _, pickers = import_demo_inputs(project)
    pickers = list(pickers.values())

    def deep_consensus(label, queue):
        prot = new_protocol(project, ProtDeepConsensus, label, useGpu=False,
                            jobsPerStage=args.jobs, numberOfThreads=args.jobs + 1)
        for picker in pickers:
            prot.inputCoordinates.append(Pointer(picker, extended="outputCoordinates"))
        if queue:
            prot._useQueue.set(True)
            prot._queueParams.set(json.dumps([args.queue, {"JOB_MEMORY": "4096",
                                                           "QUEUE_FOR_JOBS": "Y"}]))
        start = time.perf_counter()
        prot = run_protocol(project, prot)
        return prot, time.perf_counter() - start

    print("Running deep consensus locally (%d jobs per stage, threads)" % args.jobs, flush=True)
    local, local_s = deep_consensus("deep consensus, local", queue=False)
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    print("Running deep consensus through Slurm (queue '%s')" % args.queue, flush=True)
    queued, queued_s = deep_consensus("deep consensus, Slurm", queue=True)

    local_run = RunFolder(local._getExtraPath())
    queued_run = RunFolder(queued._getExtraPath())
    rounds = queued_run.info().training.n_rounds
    jobs = sacct_jobs(queued.strId(), since)
    print("\nSlurm jobs of the queued run (sacct):")
    print("%-8s %-40s %-10s %8s %s" % ("JobID", "JobName", "State", "Elapsed", "ExitCode"))
    for job_id, job_name, state, elapsed, code in jobs:
        print("%-8s %-40s %-10s %7ds %s" % (job_id, job_name, state, elapsed, code))
    completed = sum(state == "COMPLETED" for _, _, state, _, _ in jobs)
    expected = expected_jobs(args.jobs, rounds)
    same_scores = bool(np.array_equal(local_run.scores(), queued_run.scores(), equal_nan=True))
    outputs = [(p.outputCoordinatesRetained.getSize(), p.outputCoordinatesPruned.getSize())
               for p in (local, queued)]
    print("\nJobs: %d seen in sacct, %d completed, %d expected (1 check + %d extraction + 1 "
          "merge + %d rounds x (1 training + %d scoring))"
          % (len(jobs), completed, expected, args.jobs, rounds, args.jobs))
    print("Sum of the jobs' elapsed times: %d s" % sum(j[3] for j in jobs))
    print("Wall time: local %.0f s, Slurm %.0f s" % (local_s, queued_s))
    print("Scores equal: %s; retained/pruned local %s, Slurm %s"
          % (same_scores, outputs[0], outputs[1]))
    ok = completed == expected == len(jobs) and same_scores and outputs[0] == outputs[1]
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
