"""``benchmarks/scale.py`` at a tiny scale: the scale figures come from this one command, so
it runs here end to end (4 micrographs, about 10^3 OR coordinates, 2 parallel jobs, one
epoch) and its JSON and run folder are checked."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("scipion_inputs", "consensus", "negatives", "extraction_1job", "extraction_2job",
          "merge_extraction", "training", "scoring_1job", "scoring_2job", "merge_scores",
          "ranking", "split", "scipion_outputs")


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "scale.py"), "--out", str(out),
               "--scale", "1000", "--micrographs", "4", "--micrograph-size", "512",
               "--box", "32", "--jobs", "2", "--max-epochs", "1", "--keep"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(out / "scale.json") as handle:
        return out, json.load(handle), done.stdout


def test_every_stage_has_time_and_its_own_memory(scale_run):
    _, results, _ = scale_run
    row = results["scales"]["1000"]
    assert row["micrographs"] == 4 and 900 <= row["n_or"] <= 1100
    assert tuple(row["stages"]) == STAGES
    for name, stage in row["stages"].items():
        jobs = 2 if name.endswith("_2job") else 1
        assert len(stage["processes"]) == jobs, name
        assert stage["seconds"] > 0 and stage["per_s"] > 0, name
        for process in stage["processes"]:
            assert process["seconds"] > 0 and process["peak_mib"] > 0, name
    # Each process's own peak: the light stages stay far below TensorFlow's, which an
    # inherited high-water mark (ru_maxrss across exec) would hide.
    assert row["stages"]["consensus"]["peak_mib"] < row["stages"]["training"]["peak_mib"] / 2
    assert set(row["speedup"]) == {"extraction", "scoring"}
    # the images trained on are those of the epochs the run recorded, not an estimate
    assert row["stages"]["training"]["items"] == \
        row["training"]["epochs"] * row["training"]["images_per_epoch"]
    assert "training capped at 1 epoch" in results["note"]


def test_merged_results_cover_every_or_coordinate_once(scale_run):
    out, results, _ = scale_run
    row = results["scales"]["1000"]
    n_or = row["n_or"]
    assert row["coverage"] == {"scores": n_or, "finite_scores": n_or,
                               "retained": row["coverage"]["retained"],
                               "pruned": n_or - row["coverage"]["retained"], "unscored": 0}
    shards = out / "run_1000" / "shards"
    or_rows = np.concatenate([np.load(shards / ("extract_%dof2.npz" % k))["or_rows"]
                              for k in (1, 2)])
    assert np.array_equal(np.sort(or_rows), np.arange(n_or))
    scored = [np.load(shards / ("score_round1of1_%dof2.npz" % k)) for k in (1, 2)]
    rows = np.concatenate([np.arange(int(s["start"]), int(s["stop"])) for s in scored])
    assert np.array_equal(np.sort(rows), np.arange(n_or))
    assert len(np.load(out / "run_1000" / "or_particles.npy", mmap_mode="r")) == n_or


def test_scipion_stages_read_every_pick_and_write_every_coordinate(scale_run):
    """The Scipion stages' figures count what the child processes read and wrote (the
    command stops where a count differs from what the stage was given), and the output
    sets on disk hold the run's split."""
    from pwem.objects import SetOfCoordinates

    from deepconsensus_plugin.core.run_folder import RunFolder

    out, results, _ = scale_run
    row = results["scales"]["1000"]
    stages = row["stages"]
    assert stages["scipion_inputs"]["processes"][0]["count"] == row["n_picks"] \
        == stages["scipion_inputs"]["items"]
    assert stages["scipion_outputs"]["processes"][0]["count"] == row["n_or"]
    assert row["data"]["scipion_sets_seconds"] > 0
    sets = out / "run_1000" / "scipion"
    retained = SetOfCoordinates(filename=str(sets / "retained.sqlite"))
    pruned = SetOfCoordinates(filename=str(sets / "pruned.sqlite"))
    assert retained.getSize() == row["coverage"]["retained"]
    assert pruned.getSize() == row["coverage"]["pruned"]
    threshold = RunFolder(str(out / "run_1000")).info().split.threshold
    assert min(c._dcScore.get() for c in retained.iterItems()) >= threshold
    assert max(c._dcScore.get() for c in pruned.iterItems() if not c._dcDuplicate) < threshold


def test_prints_the_table(scale_run):
    _, results, stdout = scale_run
    assert "peak MiB per process" in stdout and "speed-up from 1 to 2 jobs" in stdout
    training = results["scales"]["1000"]["stages"]["training"]
    line = next(line for line in stdout.splitlines() if line.split()[:1] == ["training"]
                and "images/s" in line)
    assert "%.0f images/s" % training["per_s"] in line  # the figure the JSON keeps
