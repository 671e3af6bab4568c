"""Scale: every stage end to end on a synthetic set of 10^4 to 10^6 OR coordinates.

    python benchmarks/scale.py --out OUT --scale 1e4,1e5,1e6 --jobs 2 [--max-epochs 1]

For each scale the synthetic dataset (cached under ``OUT/data``) goes through the
core's stages, each stage a process of its own, as Scipion's protocol runs them:

    Scipion inputs -> consensus -> negatives -> extraction shards (1 job, then --jobs
        jobs at once) -> merge-extraction -> training -> scoring shards (1 job, then
        --jobs jobs) -> merge-scores -> ranking -> split -> Scipion outputs

Extraction, merges, training and scoring run as the ``deepconsensus job ...``
sub-commands the protocol runs; consensus, negatives, ranking and split (which
the protocol runs in its own process) call the stage functions.  The two Scipion
stages are what the protocol adds around the core, timed on the same picks: reading
the pickers' ``SetOfCoordinates`` into the consensus input (``convert.consensusInput``,
the first half of the consensus step; the sets are written to SQLite first, untimed, as
the pickers' protocols would have) and filling the retained and pruned sets
(``outputs.splitSets``, the output step's work per coordinate).  Per stage it
reports the wall time, the throughput (coordinates or boxes per second) and the
peak resident memory of each process, and per scale the speed-up of extraction
and scoring from 1 to ``--jobs`` parallel jobs; it prints a table and writes
``OUT/scale.json`` (after every stage, so a run stopped early keeps its figures).

Memory is each process's own: the child reads its ``VmHWM`` (the high-water mark of
its resident memory) from ``/proc/self/status`` as its last act.  ``VmHWM`` belongs
to the process's address space, which ``exec`` replaces, so it starts afresh in the
child.  ``ru_maxrss`` does not: Linux keeps the larger of it and the forking
process's high-water mark across ``exec`` (and Python's subprocess forks with
``vfork``, sharing the parent's address space until ``exec``), so every child of a
1.7 GB parent reads at least 1.7 GB.

Training is capped at ``--max-epochs`` (default 1): it trains on the AND set with
early stopping, so its time is epochs x boxes an epoch / images per second, and memory
is what the scale figures are about.  An epoch holds at most ``--epoch-particles`` boxes
of each class (the run's default; 0: all, twice the AND set, as the paper's epoch).  The
run is one round (the published method's): the agreement method's second round repeats
training and scoring at the same cost per box, and its final scoring looks for each
pick's best-centred box (``--centring-search 0.05``: 9 boxes per pick, the 8 shifted ones
cut from the micrographs while scoring).  ``--max-train-scale N`` trains only at scales up
to N and scores the larger ones with the network trained at the largest of those, for
scales where even one epoch does not fit the time at hand (their training is then not
measured).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

PICKERS = 3
TRUE_SHARE = 0.7
"""Of the requested OR coordinates per micrograph, this share are true particles..."""
FALSE_SHARE = 0.1
"""...and each picker adds this share of its own false picks on the background, so that
the OR set (particles found by any picker, plus every false pick) is about the request."""
SENSITIVITY = 0.9
"""Each picker finds this share of the particles..."""
JITTER = 0.7
"""...at its true centre plus Gaussian error of this many pixels."""
CONTRAST = 1.5
"""Peak height of a particle against unit noise."""
NETWORK_SIZE = 32


def picker_name(p: int) -> str:
    """Picker ``p``'s name (from 0), as the consensus input and the Scipion sets give it."""
    return "picker%d" % (p + 1)


# ------------------------------------------------------------------ synthetic data

def _atomic_mrc(path: str, image: np.ndarray) -> None:
    """Write ``image`` to ``path`` via a temporary name: an interrupted run leaves no
    half-written micrograph in the cache."""
    import mrcfile

    from deepconsensus_plugin.core.atomic import atomic_path

    with atomic_path(path, ".mrc") as temporary, mrcfile.new(temporary, overwrite=True) as mrc:
        mrc.set_data(image)
        mrc.voxel_size = 1.0


def synthetic_micrograph(index: int, size: int, box: int, per_micrograph: int, seed: int,
                         path: Optional[str]) -> List[np.ndarray]:
    """The three pickers' picks on micrograph ``index``, and the micrograph itself written
    to ``path`` (unless None): Gaussian blobs (sigma = box / 8) at the true centres on
    unit Gaussian noise.  Everything follows from (seed, index), so the first micrographs
    of a large set are those of a smaller one and the cache serves every scale."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng([seed, index])
    margin = box / 2.0
    n_true = int(round(TRUE_SHARE * per_micrograph))
    n_false = int(round(FALSE_SHARE * per_micrograph))
    truth = rng.uniform(margin, size - margin, size=(n_true, 2))
    picks = []
    for _ in range(PICKERS):
        found = truth[rng.random(n_true) < SENSITIVITY]
        found = found + rng.normal(scale=JITTER, size=found.shape)
        false = rng.uniform(margin, size - margin, size=(n_false, 2))
        picks.append(np.vstack([found, false]))
    if path is not None:
        sigma = box / 8.0
        spikes = np.zeros((size, size), dtype=np.float32)
        np.add.at(spikes, (truth[:, 1].astype(int), truth[:, 0].astype(int)),
                  CONTRAST * 2 * np.pi * sigma ** 2)
        image = gaussian_filter(spikes, sigma) + rng.standard_normal((size, size),
                                                                     dtype=np.float32)
        _atomic_mrc(path, image.astype(np.float32))
    return picks


def dataset(out: str, n_or: int, n_micrographs: int, size: int, box: int, seed: int) -> dict:
    """The synthetic set of about ``n_or`` OR coordinates over ``n_micrographs``
    micrographs: micrograph files and the pickers' picks (``picks_M.npz``), made on the
    first call and read from ``out/data`` afterwards."""
    per_micrograph = int(round(n_or / n_micrographs))
    folder = os.path.join(out, "data", "s%d_b%d_p%d_seed%d" % (size, box, per_micrograph, seed))
    os.makedirs(folder, exist_ok=True)
    picks_file = os.path.join(folder, "picks_%d.npz" % n_micrographs)
    paths = [os.path.join(folder, "mic_%05d.mrc" % i) for i in range(n_micrographs)]
    start = time.perf_counter()
    made = 0
    if not os.path.exists(picks_file) or not all(map(os.path.exists, paths)):
        mic, picker, xy = [], [], []
        for i, path in enumerate(paths):
            missing = not os.path.exists(path)
            made += missing
            for p, picks in enumerate(synthetic_micrograph(i, size, box, per_micrograph, seed,
                                                           path if missing else None)):
                mic.append(np.full(len(picks), i))
                picker.append(np.full(len(picks), p))
                xy.append(picks)
        np.savez(picks_file, mic=np.concatenate(mic), picker=np.concatenate(picker),
                 xy=np.concatenate(xy))
    return {"folder": folder, "picks": picks_file, "micrographs": paths,
            "micrographs_written": made, "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------ measured children

def vm_hwm_mib() -> float:
    """This process's own peak resident memory (``VmHWM``), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("/proc/self/status has no VmHWM: the memory figures need Linux")


def child_main(argv: Sequence[str]) -> int:
    """``scale.py child REPORT STAGE RUN [ARGS...]``: run one stage (or job) and write
    its peak memory to REPORT (JSON) as the process's last act."""
    report, stage, run_path, *rest = argv
    from deepconsensus_plugin.core import box_policy, stages
    from deepconsensus_plugin.core.selection import DEFAULT_MIN_DISTANCE
    from deepconsensus_plugin.core.run_folder import RunFolder

    run = RunFolder(run_path)
    count = None  # what a stage counts as it runs, where it reports that itself
    if stage == "job":
        from deepconsensus_plugin.cli import main as cli_main

        status = cli_main(["job"] + list(rest))
        if status:
            return status
    elif stage == "consensus":
        consensus_child(run, *rest)
    elif stage == "negatives":
        stages.negatives_stage(run, stages.NegativeParams())
    elif stage == "ranking":
        stages.ranking_stage(run, combine=True)
    elif stage == "split":
        box = run.info().consensus.box
        stages.split_stage(run, None, box_policy.length_px(-1, DEFAULT_MIN_DISTANCE, box, None))
    elif stage == "scipion_inputs":
        count = scipion_inputs_child(*rest)
    elif stage == "scipion_outputs":
        count = scipion_outputs_child(run_path, *rest)
    else:
        raise ValueError("unknown stage %r" % stage)
    with open(report, "w") as handle:
        json.dump({"peak_mib": vm_hwm_mib(), "count": count}, handle)
    return 0


def consensus_child(run, picks_file: str, micrographs_json: str, box: str) -> None:
    """The consensus stage on the cached picks, gathered as a front end gathers them
    (micrograph ids from 1, one picks mapping per picker)."""
    from deepconsensus_plugin.core import stages
    from deepconsensus_plugin.core.run_folder import Micrograph

    with open(micrographs_json) as handle:
        paths = json.load(handle)
    data = np.load(picks_file)
    mic, picker, xy = data["mic"], data["picker"], data["xy"]
    pickers = []
    for p in range(PICKERS):
        mine = picker == p
        mic_p, xy_p = mic[mine], xy[mine]
        cuts = np.flatnonzero(np.diff(mic_p)) + 1
        groups = dict(zip(mic_p[np.r_[0, cuts]].tolist(), np.split(xy_p, cuts)))
        pickers.append(stages.PickerInput(picker_name(p),
                                          {i + 1: groups.get(i, np.empty((0, 2)))
                                           for i in range(len(paths))}))
    micrographs = [Micrograph(mic_id=i + 1, name="mic_%05d" % i, path=path, label=path)
                   for i, path in enumerate(paths)]
    stages.consensus_stage(run, stages.ConsensusInput(micrographs=micrographs, pickers=pickers,
                                                      box=int(box), sampling_rate=1.0))


def scipion_sets(folder: str, picks_file: str, paths: Sequence[str], box: int) -> float:
    """The cached picks as Scipion would hold them: a ``SetOfMicrographs`` (ids 1, 2, ...
    as the consensus child numbers them) and one ``SetOfCoordinates`` per picker, written
    to SQLite in ``folder``.  The pickers' protocols pay this, not the run: its seconds,
    returned, are recorded apart."""
    from pwem.objects import Coordinate, Micrograph, SetOfCoordinates, SetOfMicrographs

    start = time.perf_counter()
    os.makedirs(folder)
    micrographs = SetOfMicrographs(filename=os.path.join(folder, "micrographs.sqlite"))
    micrographs.setSamplingRate(1.0)
    for path in paths:
        micrograph = Micrograph(location=path)
        micrograph.setMicName(os.path.basename(path))
        micrographs.append(micrograph)
    micrographs.write()
    data = np.load(picks_file)
    coordinate = Coordinate()
    for p in range(PICKERS):
        coordinates = SetOfCoordinates(filename=os.path.join(folder, picker_name(p) + ".sqlite"))
        coordinates.setBoxSize(box)  # the micrographs are set where the sets are read
        mine = data["picker"] == p
        for mic, (x, y) in zip(data["mic"][mine].tolist(), data["xy"][mine].tolist()):
            coordinate.cleanObjId()
            coordinate.setMicId(mic + 1)
            coordinate.setPosition(int(round(x)), int(round(y)))
            coordinates.append(coordinate)
        coordinates.write()
    return time.perf_counter() - start


def _set(kind, folder: str, name: str):
    """A set that :func:`scipion_sets` wrote, with its properties (pixel size, box) read
    as a project's database gives them."""
    loaded = kind(filename=os.path.join(folder, name + ".sqlite"))
    loaded.loadAllProperties()
    return loaded


def scipion_inputs_child(folder: str) -> int:
    """The consensus step's reading: the pickers' sets into the core's consensus input, as
    the protocol gathers them (``convert.consensusInput``).  Returns the picks read."""
    from pwem.objects import SetOfCoordinates, SetOfMicrographs

    from deepconsensus_plugin import convert

    micrographs = _set(SetOfMicrographs, folder, "micrographs")
    sets = []
    for p in range(PICKERS):
        coordinates = _set(SetOfCoordinates, folder, picker_name(p))
        coordinates.setMicrographs(micrographs)
        sets.append(coordinates)
    inputs = convert.consensusInput(sets, [picker_name(p) for p in range(PICKERS)])
    return sum(len(xy) for picker in inputs.pickers for xy in picker.picks.values())


def scipion_outputs_child(run_path: str, folder: str) -> int:
    """The output step's work per coordinate: the run's split (at its threshold) into the
    retained and pruned ``SetOfCoordinates``, filled and written as the protocols fill
    them (``outputs.splitSets``).  Returns the coordinates written."""
    from pwem.objects import SetOfCoordinates, SetOfMicrographs

    from deepconsensus_plugin.protocols.outputs import splitSets
    from deepconsensus_plugin.results import RunResults

    results = RunResults(run_path)
    micrographs = _set(SetOfMicrographs, folder, "micrographs")

    def new_set(suffix: str) -> SetOfCoordinates:
        coordinates = SetOfCoordinates(filename=os.path.join(folder, "%s.sqlite" % suffix))
        coordinates.setMicrographs(micrographs)
        return coordinates

    outputs = splitSets(results, results.split(results.threshold), new_set)
    for coordinates in outputs.values():
        coordinates.write()
    return sum(coordinates.getSize() for coordinates in outputs.values())


class Process:
    """One measured child: the stage's process, its wall time and its own peak memory."""

    def __init__(self, folder: str, name: str, stage: str, run: str, args: Sequence[str]):
        self.name = name
        self.report = os.path.join(folder, "%s.json" % name)
        self.log = os.path.join(folder, "%s.log" % name)
        if os.path.exists(self.report):
            os.unlink(self.report)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
            TF_CPP_MIN_LOG_LEVEL="2")
        self.start = time.perf_counter()
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "child", self.report, stage, run,
                 *map(str, args)], stdout=log, stderr=subprocess.STDOUT, env=env)
        self.seconds = None

    def wait(self) -> dict:
        # wait4 gives the child's CPU time too (user + system, all its threads): CPU time
        # divided by wall time says how many cores one job kept busy.
        _, wait_status, usage = os.wait4(self.process.pid, 0)
        self.seconds = time.perf_counter() - self.start
        status = self.process.returncode = os.waitstatus_to_exitcode(wait_status)
        if status != 0 or not os.path.exists(self.report):
            with open(self.log) as log:
                tail = log.read()[-3000:]
            raise RuntimeError("%s failed (exit status %d):\n%s" % (self.name, status, tail))
        with open(self.report) as handle:
            report = json.load(handle)
        figures = {"seconds": self.seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                   "peak_mib": report["peak_mib"]}
        if report.get("count") is not None:
            figures["count"] = report["count"]
        return figures


def measure(folder: str, name: str, stage: str, run: str, args_of: Sequence[Sequence[str]]
            ) -> dict:
    """Run ``len(args_of)`` processes of ``stage`` at once; the group's wall time (first
    start to last end) and each process's time and peak memory."""
    processes = []
    start = time.perf_counter()
    try:
        for k, args in enumerate(args_of):
            processes.append(Process(folder, "%s_%d" % (name, k + 1), stage, run, args))
        each = [p.wait() for p in processes]
    finally:  # stopped or failed: leave no stage running behind
        for p in processes:
            if p.process.poll() is None:
                p.process.terminate()
                p.process.wait()
    return {"seconds": time.perf_counter() - start, "processes": each,
            "peak_mib": max(e["peak_mib"] for e in each)}


# ------------------------------------------------------------------ one scale

def run_scale(out: str, n_or: int, n_micrographs: int, args, results: dict, save,
              model: Optional[str]) -> dict:
    """One scale end to end in ``out/run_N``; ``model``: score with this network instead
    of training."""
    from deepconsensus_plugin.core.centring import boxes_per_pick
    from deepconsensus_plugin.core.run_folder import RunFolder

    data = dataset(out, n_or, n_micrographs, args.micrograph_size, args.box, args.seed)
    row: dict = {"requested_or": n_or, "micrographs": n_micrographs,
                 "micrograph_size": args.micrograph_size, "box": args.box,
                 "network_size": NETWORK_SIZE, "jobs": args.jobs,
                 "max_epochs": args.max_epochs, "epoch_particles": args.epoch_particles,
                 "centring_search": args.centring_search,
                 "data": {"seconds": data["seconds"],
                          "micrographs_written": data["micrographs_written"]},
                 "stages": {}}
    results["scales"][str(n_or)] = row
    folder = os.path.join(out, "run_%d" % n_or)
    if os.path.exists(folder):
        shutil.rmtree(folder)
    logs = os.path.join(folder, "processes")
    os.makedirs(logs)
    micrographs_json = os.path.join(folder, "micrograph_paths.json")
    with open(micrographs_json, "w") as handle:
        json.dump(data["micrographs"], handle)
    run = RunFolder(folder)
    stages_row = row["stages"]

    def stage(name: str, kind: str, args_of: Sequence[Sequence[str]],
              items: Union[int, Callable[[], int]], unit: str) -> dict:
        """Measure one stage (``len(args_of)`` processes at once), record it and print it;
        ``items`` is how many it handled, or what counts them once it has run."""
        figures = measure(logs, name, kind, folder, args_of)
        items = items() if callable(items) else items
        counted = [p["count"] for p in figures["processes"] if "count" in p]
        if counted and sum(counted) != items:
            raise RuntimeError("%s handled %d %s, not the %d it was given"
                               % (name, sum(counted), unit, items))
        figures.update(items=items, unit=unit, per_s=items / figures["seconds"])
        stages_row[name] = figures
        save()
        print("  %-28s %8.1f s %12.0f %s/s  %.2f cores  peak %s MiB" % (
            name, figures["seconds"], figures["per_s"], unit,
            sum(p["cpu_seconds"] for p in figures["processes"]) / figures["seconds"],
            " + ".join("%.0f" % p["peak_mib"] for p in figures["processes"])), flush=True)
        return figures

    n_picks = int(np.load(data["picks"])["mic"].size)
    sets = os.path.join(folder, "scipion")
    row["data"]["scipion_sets_seconds"] = scipion_sets(sets, data["picks"], data["micrographs"],
                                                       args.box)
    stage("scipion_inputs", "scipion_inputs", [[sets]], n_picks, "picks")
    stage("consensus", "consensus", [[data["picks"], micrographs_json, args.box]], n_picks,
          "picks")
    consensus = run.info().consensus
    row.update(n_or=consensus.n_or, n_and=consensus.n_and, n_picks=n_picks)
    stage("negatives", "negatives", [[]], consensus.n_or, "coordinates")
    n_neg = len(run.negatives())
    row["n_negatives"] = n_neg
    boxes = consensus.n_or + n_neg
    size = ["--network-size", NETWORK_SIZE]
    job_counts = [1, args.jobs] if args.jobs > 1 else [1]
    for jobs in job_counts:
        stage("extraction_%djob" % jobs, "job",
              [["extract", "--out", folder, "--shard", k, "--shards", jobs] + size
               for k in range(1, jobs + 1)], boxes, "boxes")
        if jobs != args.jobs:  # only the --jobs shards are merged; these copy the stacks
            for name in os.listdir(run.file(run.SHARDS)):
                if name.startswith("extract_%dof%d" % (jobs, jobs)):
                    os.unlink(os.path.join(run.file(run.SHARDS), name))
    stage("merge_extraction", "job", [["merge-extraction", "--out", folder, "--shards",
                                       args.jobs] + size], boxes, "boxes")
    rounds = ["--round", 1, "--rounds", 1]
    if model is not None:
        shutil.copy(model, run.file(run.MODEL))
        row["training"] = "not run at this scale (--max-train-scale): scored with the " \
                          "network trained at %s" % model
    else:
        def trained_boxes() -> int:
            """The boxes of the epochs trained, as the round recorded them: as many
            negatives as particles (balanced batches), at most --epoch-particles of each."""
            last = run.info().training.last
            return last.epochs * last.epoch_size

        stage("training", "job",
              [["train", "--out", folder, *rounds, "--network", "fast",
                "--max-epochs", args.max_epochs, "--patience", 4,
                "--learning-rate", 1e-4, "--batch-size", 64, "--seed", args.seed,
                "--epoch-particles", args.epoch_particles, "--gpus", "cpu"]],
              trained_boxes, "images")
        trained = run.info().training.last
        row["training"] = {"epochs": trained.epochs, "val_accuracy": trained.val_accuracy,
                           "images_per_epoch": trained.epoch_size}
    for jobs in job_counts:
        stage("scoring_%djob" % jobs, "job",
              [["score", "--out", folder, *rounds, "--shard", k, "--shards", jobs, "--seed",
                args.seed, "--gpus", "cpu", "--centring-search", args.centring_search]
               for k in range(1, jobs + 1)],
              consensus.n_or * boxes_per_pick(args.centring_search), "boxes")
    stage("merge_scores", "job", [["merge-scores", "--out", folder, *rounds, "--shards",
                                   args.jobs]], consensus.n_or, "boxes")
    stage("ranking", "ranking", [[]], consensus.n_or, "coordinates")
    stage("split", "split", [[]], consensus.n_or, "coordinates")
    split = run.info().split
    stage("scipion_outputs", "scipion_outputs", [[sets]], split.n_retained + split.n_pruned,
          "coordinates")
    scores = run.scores()
    row["coverage"] = {"scores": int(len(scores)), "finite_scores": int(np.isfinite(scores).sum()),
                       "retained": split.n_retained, "pruned": split.n_pruned,
                       "unscored": split.n_unscored}
    if args.jobs > 1:
        row["speedup"] = {
            what: stages_row["%s_1job" % what]["seconds"]
            / stages_row["%s_%djob" % (what, args.jobs)]["seconds"]
            for what in ("extraction", "scoring")}
    save()
    if not args.keep:  # the stacks of 10^6 boxes take gigabytes, the sets hundreds of MB
        for path in [run.file(name) for name in (run.OR_PARTICLES, run.NEG_PARTICLES,
                                                 run.SHARDS)] + [sets]:
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    return row


# ------------------------------------------------------------------ report

def memory_growth(results: dict) -> Dict[str, dict]:
    """Per stage, the peak memory at each scale and its ratio from the smallest to the
    largest scale (next to the ratio of OR coordinates)."""
    scales = [r for r in results["scales"].values() if "coverage" in r]
    if len(scales) < 2:
        return {}
    scales.sort(key=lambda r: r["n_or"])
    growth = {}
    for name in scales[0]["stages"]:
        rows = [r for r in scales if name in r["stages"]]
        if len(rows) > 1:
            peaks = [r["stages"][name]["peak_mib"] for r in rows]
            growth[name] = {"or_coordinates": [r["n_or"] for r in rows], "peak_mib": peaks,
                            "ratio": peaks[-1] / peaks[0],
                            "or_ratio": rows[-1]["n_or"] / rows[0]["n_or"]}
    return growth


def print_table(results: dict) -> None:
    print("\n%s; %s" % (results["machine"], results["note"]))
    for key, row in results["scales"].items():
        if "n_or" not in row:
            continue
        print("\n%s OR coordinates (%s requested), %d AND, %d negatives, %d micrographs "
              "%dx%d, box %d px -> %d px, %d parallel jobs, training capped at %d epoch(s)"
              % (format(row["n_or"], ","), format(row["requested_or"], ","), row["n_and"],
                 row.get("n_negatives", 0), row["micrographs"], row["micrograph_size"],
                 row["micrograph_size"], row["box"], row["network_size"], row["jobs"],
                 row["max_epochs"]))
        print("  %-20s %10s %14s %-12s %6s  %s" % ("stage", "wall s", "per s", "unit",
                                                   "cores", "peak MiB per process"))
        for name, s in row["stages"].items():
            cores = sum(p["cpu_seconds"] for p in s["processes"]) / s["seconds"]
            print("  %-20s %10.1f %14.0f %-12s %6.2f  %s" % (
                name, s["seconds"], s["per_s"], s["unit"], cores,
                " + ".join("%.0f" % p["peak_mib"] for p in s["processes"])))
        if isinstance(row.get("training"), str):
            print("  training: " + row["training"])
        if "speedup" in row:
            print("  speed-up from 1 to %d jobs (same run): extraction x%.2f, scoring x%.2f"
                  % (row["jobs"], row["speedup"]["extraction"], row["speedup"]["scoring"]))
        if "coverage" in row:
            c = row["coverage"]
            print("  every OR coordinate scored once: %d scores, %d retained + %d pruned + "
                  "%d unscored" % (c["scores"], c["retained"], c["pruned"], c["unscored"]))
    growth = memory_growth(results)
    if growth:
        print("\npeak memory growth (MiB) over the scales above:")
        for name, g in growth.items():
            print("  %-20s %s  (x%.2f for x%.0f OR coordinates)"
                  % (name, " -> ".join("%.0f" % p for p in g["peak_mib"]), g["ratio"],
                     g["or_ratio"]))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    from deepconsensus_plugin.core.stages import TrainingParams

    # ``kill`` ends the run like Ctrl-C: the running stages are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="data cache, run folders and scale.json")
    parser.add_argument("--scale", default="1e4,1e5",
                        help="comma-separated OR set sizes (default: %(default)s)")
    parser.add_argument("--micrographs", type=int, default=None,
                        help="micrographs at the largest scale; smaller scales keep the same "
                             "picks per micrograph (default: one per 1,000 coordinates)")
    parser.add_argument("--micrograph-size", type=int, default=2048, metavar="PX")
    parser.add_argument("--box", type=int, default=64, metavar="PX",
                        help="box size in micrograph pixels, cut to %d px for the network "
                             "(default: %%(default)s)" % NETWORK_SIZE)
    parser.add_argument("--jobs", type=int, default=2,
                        help="parallel extraction and scoring jobs, against 1 (default: "
                             "%(default)s)")
    parser.add_argument("--max-epochs", type=int, default=1,
                        help="cap on training epochs (default: %(default)s)")
    parser.add_argument("--epoch-particles", type=int,
                        default=TrainingParams.epoch_particles,
                        help="at most this many boxes of each class an epoch; 0: all of them "
                             "(default: %(default)s)")
    parser.add_argument("--max-train-scale", type=float, default=None, metavar="N",
                        help="train only at scales up to N; larger ones score with the network "
                             "trained at the largest of those (their training is not measured)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--centring-search", type=float, default=0.0, metavar="SHARE",
                        help="score each pick as the best of its box and 8 boxes this share "
                             "of the box around it, as the agreement method's final round "
                             "does (0.05); default: 0, the published method's scoring")
    parser.add_argument("--keep", action="store_true",
                        help="keep the particle stacks of each run folder")
    args = parser.parse_args(argv)
    scales = sorted(int(float(s)) for s in args.scale.split(","))
    per_micrograph = (scales[-1] / args.micrographs) if args.micrographs else 1000
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "scale.json")
    results = {"machine": "%d CPU cores, no GPU, shared with other work" % os.cpu_count(),
               "note": "training capped at %d epoch(s): its time is not a full training's"
                       % args.max_epochs,
               "command": "python benchmarks/scale.py " + " ".join(argv), "scales": {}}

    def save() -> None:
        results["memory_growth"] = memory_growth(results)
        with open(path, "w") as handle:
            json.dump(results, handle, indent=1)

    print(results["note"], flush=True)
    for n_or in scales:
        n_micrographs = max(1, int(round(n_or / per_micrograph)))
        print("\n%s OR coordinates over %d micrographs:" % (format(n_or, ","), n_micrographs),
              flush=True)
        model = None
        if args.max_train_scale is not None and n_or > args.max_train_scale:
            trained = [n for n in scales if n <= args.max_train_scale]
            if not trained:
                parser.error("--max-train-scale %g is below every scale" % args.max_train_scale)
            model = os.path.join(args.out, "run_%d" % trained[-1], "model.keras")
        run_scale(args.out, n_or, n_micrographs, args, results, save, model)
    save()
    print_table(results)
    print("\nwritten: %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
