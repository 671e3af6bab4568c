"""The ``deepconsensus`` command: end to end on the demo data, re-thresholding, bad input,
and the same scores as the Scipion protocol on the same input and seed."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import starfile
from pyworkflow.tests import BaseTest, setupTestProject

from deepconsensus_plugin import cli
from deepconsensus_plugin.convert import coordinatesByMicrograph, micrographsByName
from deepconsensus_plugin.core.centring import DEFAULT_SEARCH
from deepconsensus_plugin.core.pick_outputs import VOTES_LABEL
from deepconsensus_plugin.core.run_folder import RunFolder
from deepconsensus_plugin.core.selection import split_scores
from deepconsensus_plugin.demo import DEMO_DATA, PICKERS, SAMPLING_RATE

from .scipion_helpers import BOX, importSynthetic, newDeepConsensus, runToEnd


def writeCentresAsBoxFiles(folder, picks, box):
    """EMAN .box files (lower-left corners) of micrograph name -> (n, 2) centres."""
    os.makedirs(folder, exist_ok=True)
    for name, xy in picks.items():
        np.savetxt(os.path.join(folder, name + ".box"),
                   np.column_stack([np.asarray(xy) - box / 2, np.full((len(xy), 2), box)]),
                   fmt="%.1f", delimiter="\t")


QUICK = ["--max-epochs", "2", "--gpus", "cpu"]


def deepconsensus(*args, cwd=None):
    """Run the command as a user does, in a subprocess; the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "deepconsensus_plugin.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def demo_arguments():
    args = ["--micrographs", os.path.join(DEMO_DATA, "micrographs", "*.mrc")]
    for picker in PICKERS:
        args += ["--picks", os.path.join(DEMO_DATA, "coordinates", picker)]
    return args + ["--voltage", "300", "--cs", "2.7"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = deepconsensus("run", *demo_arguments(), *QUICK, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def read_particles(path):
    blocks = starfile.read(path, always_dict=True)
    return blocks["optics"], blocks["particles"]


def test_run_prunes_the_demo_data_into_star_files(demo_run):
    out, result = demo_run
    run = RunFolder(out)
    info = run.info()
    assert info.consensus.n_pickers == 3 and info.consensus.box == 90
    assert info.method.centring_search == DEFAULT_SEARCH  # the agreement method's default
    assert [r.centring_search for r in info.training.rounds] == [0.0, DEFAULT_SEARCH]
    assert info.export.pixel_size == pytest.approx(SAMPLING_RATE)  # from the MRC header
    optics, retained = read_particles(out / "retained.star")
    _, pruned = read_particles(out / "pruned.star")
    assert optics["rlnMicrographPixelSize"][0] == pytest.approx(SAMPLING_RATE)
    assert optics["rlnVoltage"][0] == 300 and optics["rlnSphericalAberration"][0] == 2.7
    assert optics["rlnImageSize"][0] == 90
    for table in (retained, pruned):
        assert list(table.columns) == ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY",
                                       "rlnOpticsGroup", "rlnAutopickFigureOfMerit",
                                       VOTES_LABEL]
    # retained + pruned = OR, cut as the core's rule cuts the saved scores
    assert len(retained) + len(pruned) == info.consensus.n_or == len(run.consensus())
    split = split_scores(run.scores(), info.split.threshold, run.consensus().mic,
                         run.consensus().xy, info.split.min_distance_px,
                         run.edge_distances(run.consensus().mic, run.consensus().xy),
                         info.split.edge_margin_px)
    assert info.split.edge_margin_px == pytest.approx(0.3 * 90)
    assert len(retained) == len(split.retained) == info.split.n_retained
    assert (retained["rlnAutopickFigureOfMerit"] >= info.split.threshold - 1e-6).all()
    assert set(retained[VOTES_LABEL]) <= {1, 2, 3}
    names = {os.path.basename(n) for n in retained["rlnMicrographName"]}
    assert names == {os.path.basename(p) for p in
                     os.listdir(os.path.join(DEMO_DATA, "micrographs"))}
    # RELION 4's coordinate list names one STAR file per micrograph, retained picks only
    listing = starfile.read(out / "coordinates" / "deepconsensus.star")
    assert len(listing) == 3
    assert sum(len(starfile.read(f)) for f in listing["rlnMicrographCoordinates"]) \
        == len(retained)
    rows = (out / "picks.csv").read_text().splitlines()
    assert len(rows) == 1 + info.consensus.n_or
    for name in ("retained.star", "pruned.star", "picks.csv", "deepconsensus.star"):
        assert name in result.stdout
    assert "Kept {:,} of {:,}".format(len(retained), info.consensus.n_or) in result.stdout


def test_split_rethresholds_a_finished_run_without_retraining(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    untouched = [run.file(n) for n in (run.MODEL, run.SCORES, run.OR_PARTICLES)]
    before = [os.path.getmtime(p) for p in untouched]
    result = deepconsensus("split", "--out", str(out), "--threshold", "0.95",
                           "--min-distance", "0", "--edge-margin", "0")
    assert result.returncode == 0, result.stderr
    assert [os.path.getmtime(p) for p in untouched] == before
    _, retained = read_particles(out / "retained.star")
    _, pruned = read_particles(out / "pruned.star")
    scores = run.scores()
    assert len(retained) == int(np.sum(scores >= 0.95))
    assert len(retained) + len(pruned) == len(scores)
    info = run.info()
    assert (info.split.threshold, info.split.min_distance_px,
            info.split.edge_margin_px) == (0.95, 0.0, 0.0)
    result = deepconsensus("split", "--out", str(out), "--threshold", "auto")
    assert result.returncode == 0, result.stderr
    assert run.info().split.threshold == pytest.approx(run.info().ranking.auto_threshold)


def test_split_rates_the_scores_against_known_picks(demo_run, tmp_path):
    """--known-good/--known-bad: the labelled centres as good picks, deepPicker's picks far
    from every label as bad ones; the record and the printed summary give the figures."""
    out, _ = demo_run
    good, bad = {}, {}
    for csv in sorted(os.listdir(os.path.join(DEMO_DATA, "ground_truth"))):
        name = os.path.splitext(csv)[0]
        truth = np.loadtxt(os.path.join(DEMO_DATA, "ground_truth", csv), delimiter=",",
                           skiprows=1, ndmin=2)
        picks = np.loadtxt(os.path.join(DEMO_DATA, "coordinates", "deepPicker", name + ".box"),
                           ndmin=2)
        centres = picks[:, :2] + picks[:, 2:4] / 2
        far = np.min(np.linalg.norm(centres[:, None] - truth[None], axis=2), axis=1) > 60
        good[name], bad[name] = truth[:100], centres[far]
    writeCentresAsBoxFiles(tmp_path / "good", good, 64)
    writeCentresAsBoxFiles(tmp_path / "bad", bad, 64)
    result = deepconsensus("split", "--out", str(out), "--known-good", str(tmp_path / "good"),
                           "--known-bad", str(tmp_path / "bad"))
    assert result.returncode == 0, result.stderr
    known = RunFolder(out).info().evaluation
    assert known.n_good == 300 and known.n_bad == sum(len(xy) for xy in bad.values())
    assert known.recall > 0.8 and known.roc_auc > 0.8
    assert "Known picks, 300 good" in result.stdout
    missing = deepconsensus("split", "--out", str(out), "--known-bad", str(tmp_path / "none"))
    assert missing.returncode == 1
    assert "--known-bad %s: no such file or folder" % (tmp_path / "none") in missing.stderr


def test_score_only_with_the_model_of_an_earlier_run(demo_run, tmp_path):
    """--model FOLDER --score-only: no training; the earlier run's network scores the same
    boxes to the same network scores."""
    out, _ = demo_run
    result = deepconsensus("run", *demo_arguments(), "--gpus", "cpu", "--model", str(out),
                           "--score-only", "--out", str(tmp_path / "reuse"))
    assert result.returncode == 0, result.stderr
    run = RunFolder(tmp_path / "reuse")
    info = run.info()
    assert info.training is None and info.model.use == "score-only"
    assert info.model.path == os.path.abspath(out / "model.keras")
    assert not run.has(run.HISTORY)
    np.testing.assert_array_equal(run.array(run.CNN_SCORES), RunFolder(out).array(run.CNN_SCORES))
    assert "scoring without training" in result.stdout
    rescored = deepconsensus("score", "--out", str(tmp_path / "reuse"), "--gpus", "cpu")
    assert rescored.returncode == 0, rescored.stderr


def test_fine_tune_the_model_of_an_earlier_run(demo_run, tmp_path):
    out, _ = demo_run
    result = deepconsensus("run", *demo_arguments(), "--gpus", "cpu", "--max-epochs", "1",
                           "--no-self-training", "--model", str(out / "model.keras"),
                           "--out", str(tmp_path / "tuned"))
    assert result.returncode == 0, result.stderr
    info = RunFolder(tmp_path / "tuned").info()
    assert info.model.use == "fine-tune" and [r.epochs for r in info.training.rounds] == [1]
    assert "fine-tuned on this data from" in result.stdout


def test_a_reused_network_brings_its_box_whatever_the_pickers(demo_run, tmp_path):
    """Picks in boxes twice the earlier run's: with its --model the run works in the
    network's boxes and the export keeps the pickers'; a --diameter of other boxes is
    refused with the way out."""
    from deepconsensus_plugin.cli import build_parser
    from deepconsensus_plugin.cli.common import gather

    out, _ = demo_run
    trained = RunFolder(out).info().consensus.box
    wide = ["--box-size", str(2 * trained), "--model", str(out)]
    inputs, export, _ = gather(build_parser().parse_args(["run", *demo_arguments(), *wide,
                                                          "--out", "o"]))
    assert (inputs.box, inputs.coordinates_box, inputs.box_from_network) == (
        trained, 2 * trained, True)
    assert export.box == 2 * trained and not inputs.fit_box
    result = deepconsensus("run", *demo_arguments(), *wide, "--score-only", "--gpus", "cpu",
                           "--out", str(tmp_path / "wide"))
    assert result.returncode == 0, result.stderr
    consensus = RunFolder(tmp_path / "wide").info().consensus
    assert (consensus.box, consensus.coordinates_box) == (trained, 2 * trained)
    assert "Worked in boxes of %d px (the reused network's field of view" % trained \
        in result.stdout
    other = deepconsensus("run", *demo_arguments(), *wide, "--score-only", "--diameter",
                          str(trained * SAMPLING_RATE), "--out", str(tmp_path / "other"))
    assert other.returncode == 1 and "give no particle diameter" in other.stderr


def test_a_model_of_other_boxes_is_refused_naming_both_values(demo_run, tmp_path):
    out, _ = demo_run
    result = deepconsensus("run", *demo_arguments(), "--network-size", "64", "--model",
                           str(out), "--score-only", "--out", str(tmp_path / "refused"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "network box size of 32 px; this run's is 64 px" in result.stderr
    assert not (tmp_path / "refused" / "or_particles.npy").exists()  # refused before extracting
    result = deepconsensus("run", *demo_arguments(), "--score-only",
                           "--out", str(tmp_path / "no_model"))
    assert result.returncode == 1 and "--score-only needs --model" in result.stderr


MICROGRAPHS_STAR = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnVoltage #3
_rlnSphericalAberration #4
_rlnAmplitudeContrast #5
_rlnMicrographPixelSize #6
opticsGroup1 1 200.0 2.0 0.07 3.54

# version 30001

data_micrographs

loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
{rows}
"""


def test_a_relion_project_in_and_out(tmp_path):
    """micrographs.star and a RELION particle STAR file in; pixel size and optics from the
    former; names as RELION wrote them in the STAR files out, with RELION 3.1's suffix file."""
    from deepconsensus_plugin.core.coordinate_files import read_coordinates
    from deepconsensus_plugin.core import stages

    movies = tmp_path / "MotionCorr" / "job002" / "Movies"
    movies.mkdir(parents=True)
    names = sorted(os.listdir(os.path.join(DEMO_DATA, "micrographs")))
    for name in names:
        os.symlink(os.path.join(DEMO_DATA, "micrographs", name), movies / name)
    written = ["MotionCorr/job002/Movies/" + name for name in names]
    (tmp_path / "micrographs_ctf.star").write_text(
        MICROGRAPHS_STAR.format(rows="\n".join(n + " 1" for n in written)))
    rows = []  # the second picker as a RELION 3.0 particle STAR file (no box size in it)
    for name, mic in zip(names, written):
        box = os.path.join(DEMO_DATA, "coordinates", PICKERS[1], name.replace(".mrc", ".box"))
        rows += ["%s %.1f %.1f" % (mic, x, y) for x, y in read_coordinates(box).xy]
    (tmp_path / "topaz.star").write_text(
        "data_\nloop_\n_rlnMicrographName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        + "\n".join(rows) + "\n")
    result = deepconsensus("consensus", "--micrographs", "micrographs_ctf.star",
                           "--picks", os.path.join(DEMO_DATA, "coordinates", PICKERS[0]),
                           "--picks", "topaz.star", "--out", "DeepConsensus/run1",
                           cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    run = RunFolder(tmp_path / "DeepConsensus" / "run1")
    info = run.info()
    assert (info.export.pixel_size, info.export.voltage, info.export.spherical_aberration,
            info.export.amplitude_contrast, info.export.box) == (3.54, 200.0, 2.0, 0.07, 90)
    assert [m.label for m in run.micrographs().values()] == written
    assert info.consensus.n_pickers == 2 and info.consensus.n_micrographs == 3

    # scores without training (a stand-in for the network's), then the command's split
    run.write_array(run.CNN_SCORES, np.resize([0.2, 0.8], info.consensus.n_or))
    stages.ranking_stage(run, combine=False)
    result = deepconsensus("split", "--out", "DeepConsensus/run1", "--threshold", "0.5",
                           cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    optics, retained = read_particles(run.file(run.RETAINED_STAR))
    assert optics["rlnVoltage"][0] == 200.0 and optics["rlnAmplitudeContrast"][0] == 0.07
    assert set(retained["rlnMicrographName"]) == set(written)
    suffix = tmp_path / "DeepConsensus/run1/coordinates/coords_suffix_deepconsensus.star"
    assert suffix.read_text().strip() == "micrographs_ctf.star"
    listing = starfile.read(tmp_path / "DeepConsensus/run1/coordinates/deepconsensus.star")
    assert list(listing["rlnMicrographName"]) == written
    for coordinates in listing["rlnMicrographCoordinates"]:  # relative to the project
        assert coordinates.startswith("DeepConsensus/run1/coordinates/Movies/")
        assert (tmp_path / coordinates).exists()


def test_command_defaults_are_the_protocol_defaults():
    """Each flag starts where the protocol's form does, so both front ends run the same
    method unless told otherwise."""
    from deepconsensus_plugin.cli import build_parser
    from deepconsensus_plugin.core.model import ARCHITECTURES
    from deepconsensus_plugin.core.stages import AND_RULES, METHODS
    from deepconsensus_plugin.protocols import ProtDeepConsensus

    args = build_parser().parse_args(["run", "--micrographs", "m", "--picks", "a", "--out", "o"])
    form = ProtDeepConsensus()
    rules = {form.AND_ALL: "all", form.AND_AT_LEAST: "at-least", form.AND_MAJORITY: "majority"}
    assert set(rules.values()) == set(AND_RULES)
    expected = {
        "method": METHODS[form.method.get()], "radius": form.consensusRadius.get(),
        "and_rule": rules[form.andRule.get()], "k": form.minVotes.get(),
        "negative_ratio": form.negativeRatio.get(),
        "negative_distance": form.negativeDistance.get(),
        "offcentre_negatives": form.offCentreNegatives.get(),
        "network_size": form.networkSize.get(), "invert_contrast": form.invertContrast.get(),
        "skip_bad_micrographs": form.skipBadMicrographs.get(),
        "network": ARCHITECTURES[form.architecture.get()],
        "no_self_training": not form.selfTraining.get(), "max_epochs": form.maxEpochs.get(),
        "epoch_particles": form.epochParticles.get(),
        "patience": form.patience.get(), "learning_rate": form.learningRate.get(),
        "batch_size": form.batchSize.get(), "seed": form.seed.get(),
        "no_combine_votes": not form.combineVotes.get(),
        "no_best_centred": not form.bestCentred.get(),
        "no_rotational_average": not form.rotationalAverage.get(),
        "min_distance": form.minDistance.get(), "edge_margin": form.edgeMargin.get(),
        "threshold": str(form.threshold.get()), "diameter": form.particleDiameter.get(),
    }
    assert form.thresholdMode.get() == form.THRESHOLD_FIXED
    assert {name: getattr(args, name) for name in expected} == expected


def test_pickers_are_named_by_their_paths_below_the_folder_they_share(tmp_path, monkeypatch):
    """The demo's absolute picker folders are named by their last part; RELION's relative
    job paths stay whole; where one path is the shared folder, the paths stay as given."""
    from deepconsensus_plugin.cli import build_parser
    from deepconsensus_plugin.cli.common import gather, picker_names

    inputs, _, _ = gather(build_parser().parse_args(["run", *demo_arguments(), "--out", "o"]))
    assert [p.name for p in inputs.pickers] == list(PICKERS)
    monkeypatch.chdir(tmp_path)
    relion = ["AutoPick/job006/autopick.star", "External/job010/crYOLO_boxes/"]
    assert picker_names(relion) == ["AutoPick/job006/autopick.star",
                                    "External/job010/crYOLO_boxes"]
    assert picker_names([str(tmp_path / "picks" / "a.star"), "picks/b.star"]) == [
        "a.star", "b.star"]
    assert picker_names(["picks/", "picks/b.star"]) == ["picks", "picks/b.star"]


def test_a_particle_diameter_sets_the_box_the_run_works_in_and_the_export_keeps_the_picks():
    """``--diameter`` (Å): the run works in boxes of 1.5 diameters, the STAR files keep
    the pickers' box; a diameter wider than that box is refused as in other units."""
    from deepconsensus_plugin.cli import build_parser
    from deepconsensus_plugin.cli.common import InputError, gather

    def inputs(*extra):
        return gather(build_parser().parse_args(["run", *demo_arguments(), "--out", "o",
                                                 *extra]))

    plain, plain_export, _ = inputs()
    assert plain.coordinates_box is None and plain_export.box == plain.box
    diameter = plain.box * SAMPLING_RATE / 2  # the pickers' box is 2 diameters
    worked, export, _ = inputs("--diameter", str(diameter))
    assert worked.box == round(0.75 * plain.box) and worked.coordinates_box == plain.box
    assert export.box == plain.box
    with pytest.raises(InputError, match="is not within the %d px box" % plain.box):
        inputs("--diameter", str(10 * diameter))


def test_tiff_micrographs_give_the_boxes_of_the_mrc_ones(tmp_path):
    """The demo micrographs as TIFF files: the command reads them (the pixel size from
    --pixel-size, as TIFF carries none it reads), and the consensus, negatives and
    extraction give the very boxes of the MRC files.  Micrographs in a format not read
    are refused at once, naming one and how many."""
    import mrcfile
    import tifffile
    from deepconsensus_plugin.cli import build_parser
    from deepconsensus_plugin.cli.common import InputError, gather
    from deepconsensus_plugin.core import stages

    mrc_glob = os.path.join(DEMO_DATA, "micrographs", "*.mrc")
    for path in sorted(glob.glob(mrc_glob)):
        name = os.path.splitext(os.path.basename(path))[0]
        tifffile.imwrite(str(tmp_path / (name + ".tif")), mrcfile.read(path))
        (tmp_path / (name + ".spi")).write_bytes(b"\0" * 1024)

    def inputs(micrographs, *extra):
        arguments = ["run", *demo_arguments(), "--out", "o", *extra]
        arguments[arguments.index("--micrographs") + 1] = micrographs
        return gather(build_parser().parse_args(arguments))[0]

    with pytest.raises(InputError, match="pixel size is unknown: give --pixel-size"):
        inputs(str(tmp_path / "*.tif"))
    with pytest.raises(InputError, match=r"3 of 3 micrograph files cannot be read, e.g. "
                                         r".*\.spi: \.spi files cannot be read"):
        inputs(str(tmp_path / "*.spi"), "--pixel-size", str(SAMPLING_RATE))
    stacks = []
    for name, consensus in (("mrc", inputs(mrc_glob)),
                            ("tif", inputs(str(tmp_path / "*.tif"),
                                           "--pixel-size", str(SAMPLING_RATE)))):
        run = RunFolder(tmp_path / name)
        stages.consensus_stage(run, consensus)
        stages.negatives_stage(run)
        stages.extraction_stage(run)
        stacks.append([np.load(run.file(f)) for f in (run.OR_PARTICLES, run.NEG_PARTICLES)])
    for from_mrc, from_tiff in zip(*stacks):
        assert len(from_mrc) > 100
        np.testing.assert_array_equal(from_mrc, from_tiff)


def test_known_negatives_join_the_negatives_and_a_picker_s_picks_are_refused(tmp_path):
    """``--known-negatives`` (hand-picked ice, any picks format) become negatives of the
    run in its micrographs and pixels; one picker's own picks given as known negatives
    are refused before anything is trained, naming the picker, as the form refuses them."""
    from deepconsensus_plugin.cli import build_parser
    from deepconsensus_plugin.cli.common import InputError, known_negatives, run_consensus
    from deepconsensus_plugin.core import stages
    from deepconsensus_plugin.core.extraction import micrograph_shape

    out = tmp_path / "run"
    run = RunFolder(out)
    run_consensus(build_parser().parse_args(["consensus", *demo_arguments(),
                                             "--out", str(out)]), run)
    table = run.consensus()
    micrographs = run.micrographs()
    # "ice": a grid of points inside each micrograph, a box from every pick
    box = run.info().consensus.box
    ice = {}
    for mic, rows in table.per_micrograph():
        height, width = micrograph_shape(micrographs[mic].path)
        grid = np.stack(np.meshgrid(np.arange(box, width - box, box),
                                    np.arange(box, height - box, box)),
                        -1).reshape(-1, 2).astype(float)
        far = np.min(np.hypot(*(grid[:, None] - table.xy[rows][None]).transpose(2, 0, 1)),
                     axis=1) > box
        ice[micrographs[mic].name] = grid[far][:5]
    writeCentresAsBoxFiles(str(tmp_path / "ice"), ice, box)

    def known(path):
        return known_negatives(run, build_parser().parse_args(
            ["train", "--out", str(out), "--known-negatives", path]))

    table_known = known(str(tmp_path / "ice"))
    assert len(table_known) == sum(len(xy) for xy in ice.values()) > 0
    info = stages.negatives_stage(run, known=table_known)
    assert info.n_user_coordinates == len(table_known)
    with pytest.raises(InputError, match=r"--known-negatives .*crYOLO: 2224 of the 2224 known "
                                         r"negatives .* share with .*crYOLO lie within the "
                                         r"consensus radius of its picks"):
        known(os.path.join(DEMO_DATA, "coordinates", "crYOLO"))


def test_a_small_and_set_is_refused_before_anything_is_extracted(tmp_path):
    """Two pickers that agree on 30 points: the command stops after the consensus, with
    the advice, before the negatives and the extraction take their time."""
    from deepconsensus_plugin.core.extraction import micrograph_shape

    micrograph = sorted(glob.glob(os.path.join(DEMO_DATA, "micrographs", "*.mrc")))[0]
    name = os.path.splitext(os.path.basename(micrograph))[0]
    height, width = micrograph_shape(micrograph)
    grid = np.stack(np.meshgrid(np.arange(100, width - 100, 100),
                                np.arange(100, height - 100, 100)), -1).reshape(-1, 2)[:90]
    writeCentresAsBoxFiles(str(tmp_path / "a"), {name: grid[:60]}, 90)
    writeCentresAsBoxFiles(str(tmp_path / "b"), {name: grid[30:]}, 90)
    out = tmp_path / "run"
    result = deepconsensus("run", "--micrographs", micrograph, "--picks", str(tmp_path / "a"),
                           "--picks", str(tmp_path / "b"), "--voltage", "300", "--cs", "2.7",
                           *QUICK, "--out", str(out))
    assert result.returncode == 1
    assert "Only 30 coordinates were picked by at least 2 pickers" in result.stderr
    assert "Traceback" not in result.stderr
    run = RunFolder(out)
    assert run.info().consensus.n_and == 30
    assert run.info().negatives is None and not run.has(RunFolder.OR_PARTICLES)


def test_bad_input_ends_with_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "picks"
    bad.mkdir()
    (bad / "mic.box").write_text("10\t20\t90\t90\nnot a number\n")
    args = ["run", "--micrographs", os.path.join(DEMO_DATA, "micrographs", "*.mrc"),
            "--picks", os.path.join(DEMO_DATA, "coordinates", PICKERS[0]), "--picks", str(bad),
            "--voltage", "300", "--cs", "2.7", "--out", str(tmp_path / "run")]
    result = deepconsensus(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "mic.box" in lines[0] and "line 2" in lines[0]
    result = deepconsensus("split", "--out", str(tmp_path / "nothing"))
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_flags_out_of_range_are_refused_together_before_anything_is_read(tmp_path, capsys):
    """Every flag outside its range (core.parameters, as the Scipion form checks them) in
    one line, before the inputs are read or the run folder is touched: a negative radius
    or no epoch would otherwise fail deep inside a stage, and a negative pixel size or a
    learning rate of 0 run and mean nothing."""
    out = tmp_path / "run"
    bad = ["--radius", "-0.1", "--pixel-size", "-1", "--network-size", "7", "--max-epochs",
           "0", "--batch-size", "0", "--learning-rate", "0", "--seed", "-1", "--min-distance",
           "-5", "--amplitude-contrast", "1", "--threshold", "1.5"]
    assert cli.main(["run", *demo_arguments(), *bad, "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    for flag, value, text in [("--radius", "-0.1", "in (0, 1]"),
                              ("--pixel-size", "-1", "positive (A per pixel)"),
                              ("--network-size", "7", "in [16, 512] px"),
                              ("--max-epochs", "0", "at least 1"),
                              ("--batch-size", "0", "at least 2"),
                              ("--learning-rate", "0", "in (0, 1)"),
                              ("--seed", "-1", "at least 0"),
                              ("--min-distance", "-5", "-1 (automatic) or at least 0 A"),
                              ("--amplitude-contrast", "1", "in [0, 1)")]:
        assert "%s %s: must be %s" % (flag, value, text) in error
    assert "--threshold 1.5: a score must be in [0, 1]" in error
    assert not out.exists()
    # the other commands check the flags they take, before they look for the run folder
    assert cli.main(["split", "--min-distance", "-5", "--out", str(out)]) == 1
    assert "--min-distance -5: must be -1 (automatic)" in capsys.readouterr().err


def test_an_unquoted_glob_is_named_as_the_likely_cause(tmp_path, capsys):
    """``--micrographs mics/*.mrc`` unquoted: the shell gives the flag the first file and
    argparse the others; the error says why and how to quote it."""
    micrographs = sorted(glob.glob(os.path.join(DEMO_DATA, "micrographs", "*.mrc")))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--micrographs", *micrographs, "--picks", "a", "--picks", "b",
                  "--out", str(tmp_path / "run")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert ("(%d files: the shell expanded a glob that was not quoted; quote it, e.g. "
            "--micrographs '%s')" % (len(micrographs) - 1,
                                     os.path.join(DEMO_DATA, "micrographs", "*.mrc"))) in error
    with pytest.raises(SystemExit):
        cli.main(["split", "--out", str(tmp_path), "--bogus", "3"])
    error = capsys.readouterr().err
    assert "unrecognized arguments: --bogus 3" in error and "glob" not in error


def test_every_range_is_a_flag_and_a_field_of_the_form():
    """A range added to core.parameters reaches both front ends' checks, and both front
    ends' defaults lie inside it."""
    from deepconsensus_plugin.core import parameters
    from deepconsensus_plugin.protocols import ProtDeepConsensus
    from deepconsensus_plugin.protocols.validation import DeepConsensusValidation

    args = vars(cli.build_parser().parse_args(
        ["run", "--out", "run", "--micrographs", "*.mrc", "--picks", "a", "--picks", "b"]))
    assert set(parameters.RANGES) | set(parameters.INPUT_RANGES) <= set(args)
    assert parameters.out_of_range({name: args[name] for name in parameters.RANGES
                                    if name != "threshold"}) == []
    assert set(DeepConsensusValidation.RANGE_PARAMETERS) == set(parameters.RANGES)
    form = ProtDeepConsensus()
    defaults = {name: getattr(form, attribute).get()
                for name, (attribute, _) in DeepConsensusValidation.RANGE_PARAMETERS.items()}
    assert parameters.out_of_range(defaults) == []


def test_resumed_stages_need_the_earlier_ones(tmp_path):
    result = deepconsensus("train", "--out", str(tmp_path), *QUICK)
    assert result.returncode == 1
    assert "consensus" in result.stderr and "Traceback" not in result.stderr


class TestSameScoresAsTheProtocol(BaseTest):
    """The protocol and the command run the same stage functions: same input and seed,
    same scores."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.protMics, cls.protCoords, cls.mics = importSynthetic(
            cls, nMicrographs=3, shape=(640, 640), nParticles=80)

    def test_protocol_and_command_line_give_identical_scores(self):
        prot = runToEnd(self, newDeepConsensus(self, self.protCoords, maxEpochs=2,
                                               networkSize=32, seed=3))
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        folder = os.path.dirname(self.mics[0].path)
        out = self.proj.getTmpPath("cli_run")
        args = ["run", "--micrographs", os.path.join(folder, "synthetic_*.mrc"),
                "--pixel-size", "2.0", "--voltage", "300", "--cs", "2.7",
                "--max-epochs", "2", "--network-size", "32", "--seed", "3", "--out", out]
        for p, protCoords in enumerate(self.protCoords):
            # the picks as the protocol saw them: Scipion keeps whole-pixel coordinates
            picks = self.proj.getTmpPath("scipion_picker%d" % p)
            coordSet = protCoords.outputCoordinates
            names = {i: n for n, (i, *_) in micrographsByName(coordSet.getMicrographs()).items()}
            writeCentresAsBoxFiles(picks, coordinatesByMicrograph(coordSet, names), BOX)
            args += ["--picks", picks]
        result = deepconsensus(*args)
        self.assertEqual(result.returncode, 0, result.stderr)

        protocolRun = RunFolder(self.proj.getPath(prot._getExtraPath()))
        commandRun = RunFolder(out)
        keys = []
        for run in (protocolRun, commandRun):
            names = {m.mic_id: m.name for m in run.micrographs().values()}
            table = run.consensus()
            keys.append([(names[m], round(x, 3), round(y, 3))
                         for m, (x, y) in zip(table.mic, table.xy)])
        self.assertEqual(keys[0], keys[1])
        self.assertEqual(len(protocolRun.negatives()), len(commandRun.negatives()))
        np.testing.assert_array_equal(protocolRun.scores(), commandRun.scores())
        self.assertEqual(protocolRun.info().split.n_retained,
                         commandRun.info().split.n_retained)
