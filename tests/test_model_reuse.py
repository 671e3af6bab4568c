"""Reusing a model (issue 14, point 2) in the core: the facts a model file records, the
check that refuses a model trained on other boxes, and the stages fine-tuning a reused
model or scoring with it alone.  The Scipion paths are in test_protocol_model_reuse.py,
the command line's in test_cli.py."""
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deepconsensus_plugin.core import (box_policy, run_folder, run_summary,  # noqa: E402
                                       stages, synthetic)
from deepconsensus_plugin.core.model import build_model  # noqa: E402
from deepconsensus_plugin.core.model_file import (  # noqa: E402
    MODEL_SCHEMA, SPEC_MEMBER, ModelFileError, ModelSpec, compatibility_errors, read_spec,
    write_spec)
from deepconsensus_plugin.core.run_folder import RunFolder, RunFolderError  # noqa: E402

from .synthetic_inputs import consensus_input  # noqa: E402

BOX = 48
SIZE = 16
SPEC = ModelSpec(architecture="fast", network_size=SIZE, invert=False, box=BOX,
                 sampling_rate=2.0)


def test_the_facts_travel_inside_the_keras_file_and_keras_still_loads_it(tmp_path):
    import keras

    path = str(tmp_path / "model.keras")
    build_model("fast", SIZE).save(path)
    write_spec(path, SPEC)
    assert read_spec(path) == SPEC
    write_spec(path, ModelSpec("fast", SIZE, True, BOX, 2.0))  # replaced, not duplicated
    assert read_spec(path).invert is True
    assert zipfile.ZipFile(path).namelist().count(SPEC_MEMBER) == 1
    assert keras.models.load_model(path, compile=False).input_shape == (None, SIZE, SIZE, 1)


def test_a_file_that_is_no_deep_consensus_model_is_refused_naming_it(tmp_path):
    with pytest.raises(ModelFileError, match="missing.keras does not exist"):
        read_spec(str(tmp_path / "missing.keras"))
    text = tmp_path / "notes.keras"
    text.write_text("not a zip")
    with pytest.raises(ModelFileError, match="notes.keras is not a Keras model file"):
        read_spec(str(text))
    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ModelFileError, match="foreign.keras is not a Deep Consensus model"):
        read_spec(str(foreign))
    newer = tmp_path / "newer.keras"
    with zipfile.ZipFile(newer, "w") as archive:
        archive.writestr(SPEC_MEMBER, '{"schema": %d}' % (MODEL_SCHEMA + 1))
    with pytest.raises(ModelFileError, match="schema %d; this version of Deep Consensus reads "
                                             "schema %d" % (MODEL_SCHEMA + 1, MODEL_SCHEMA)):
        read_spec(str(newer))


@pytest.mark.parametrize("change, expected", [
    (dict(network_size=32), "network box size of 16 px; this run's is 32 px"),
    (dict(invert=True), "trained on original contrast; this run uses inverted contrast"),
    (dict(architecture="paper"), "is a 'fast' network; this run's network is 'paper'"),
    (dict(box=64), "boxes of 48 px at 2 A/px (96 A); this run's boxes are 64 px at 2 A/px "
                   "(128 A)"),
    (dict(sampling_rate=1.5), "(96 A); this run's boxes are 48 px at 1.5 A/px (72 A)"),
])
def test_each_mismatch_is_refused_naming_both_values(change, expected):
    run = ModelSpec(**{**SPEC.__dict__, **change})
    errors = compatibility_errors(SPEC, run, "The model of run 'first'")
    assert len(errors) == 1
    assert errors[0].startswith("The model of run 'first'") and expected in errors[0]


def test_the_same_field_of_view_at_another_pixel_size_fits():
    """The box is downsampled to the network size: what matters is its size in A."""
    assert compatibility_errors(SPEC, ModelSpec("fast", SIZE, False, 96, 1.0), "m") == []
    assert compatibility_errors(SPEC, ModelSpec("fast", SIZE, False, 97, 1.0), "m") == []
    assert compatibility_errors(SPEC, ModelSpec("fast", SIZE, False, 100, 1.0), "m") != []
    unknown = ModelSpec("fast", SIZE, False, BOX, None)  # no pixel size: boxes in pixels
    assert compatibility_errors(unknown, SPEC, "m") == []


def test_a_run_reusing_a_network_works_in_the_network_s_field_unless_given_a_diameter():
    """The network was trained in a box of its own run's choosing (here 48 px at 2 A/px,
    96 A); a run reusing it on coordinates in 128 px boxes works in the boxes that show
    the same 96 A, and the outputs keep 128 px.  A diameter chooses the box instead."""
    assert box_policy.network_box(SPEC, 2.0) == BOX
    assert box_policy.network_box(SPEC, 1.0) == 96                 # the same field, finer pixels
    assert box_policy.network_box(ModelSpec("fast", SIZE, False, 64, None), None) == 64
    assert box_policy.network_box(SPEC, None) is None               # the field cannot be told
    assert box_policy.run_boxes(128, 0, 2.0, BOX) == (BOX, 128, True)
    assert box_policy.run_boxes(BOX, 0, 2.0, BOX) == (BOX, None, True)
    assert box_policy.run_boxes(128, 80.0, 2.0, BOX) == (60, 128, False)  # the diameter's
    assert box_policy.run_boxes(128, 0, 2.0) == (128, None, False)        # a new network
    ours = ModelSpec(**{**SPEC.__dict__, "box": box_policy.run_boxes(128, 0, 2.0, BOX).box})
    assert stages.reuse_errors(SPEC, ours, "--model m") == []


def test_a_network_of_another_field_is_refused_with_the_diameter_that_gives_its_box():
    """Given a particle diameter whose boxes are not the network's (or where the field
    cannot be told in the run's pixels), the network is refused: the refusal says to leave
    the diameter at 0 or which diameter gives the network's box."""
    run = ModelSpec(**{**SPEC.__dict__, "box": 128})
    errors = stages.reuse_errors(SPEC, run, "--model m")
    assert len(errors) == 2 and errors[:1] == compatibility_errors(SPEC, run, "--model m")
    assert ("To work in the network's boxes (96 A), give no particle diameter (the protocol "
            "and 'deepconsensus run --model' then work in them) or 64 A (the run then works "
            "in boxes of 1.5 diameters)") in errors[1]
    fitted = ModelSpec(**{**run.__dict__, "box": box_policy.working_box(128, 64.0, 2.0)})
    assert stages.reuse_errors(SPEC, fitted, "--model m") == []
    assert stages.reuse_errors(SPEC, SPEC, "--model m") == []
    unknown = ModelSpec("fast", SIZE, False, 64, None)  # no pixel size: no diameter to give
    assert len(stages.reuse_errors(unknown, SPEC, "m")) == 1


# ------------------------------------------------------------------ the stages


def _dataset(folder, seed):
    mics, pickers = synthetic.make_dataset(str(folder), n_micrographs=3, shape=(512, 512),
                                           n_particles=60, diameter=32, seed=seed)
    return consensus_input(mics, pickers, BOX, name="synthetic_%03d")


def _prepare(folder, seed, network_size=SIZE):
    """A run folder with consensus, negatives and extraction done."""
    run = RunFolder(str(folder / "run"))
    stages.consensus_stage(run, _dataset(folder / "data", seed))
    stages.negatives_stage(run, stages.NegativeParams(seed=seed))
    stages.extraction_stage(run, stages.ExtractionParams(network_size=network_size))
    return run


ONE_EPOCH = stages.TrainingParams(max_epochs=1, rounds=1)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A run that trained its own network (one round, one epoch)."""
    run = _prepare(tmp_path_factory.mktemp("first"), seed=0)
    stages.model_stage(run)
    stages.training_stage(run, 1, ONE_EPOCH)
    stages.scoring_stage(run, 1, 1)
    return run


def _first_kernel(path):
    import keras

    model = keras.models.load_model(path, compile=False)
    return next(layer for layer in model.layers if layer.name.startswith("conv2d")) \
        .get_weights()[0]


def test_a_trained_model_records_the_boxes_it_was_trained_on(first_run):
    spec = read_spec(first_run.file(first_run.MODEL))
    assert spec == ModelSpec("fast", SIZE, False, BOX, 2.0)
    assert first_run.info().model.use == run_folder.MODEL_NEW
    assert "Model:" not in "\n".join(run_summary.summary_lines(first_run.info()))


def test_score_only_scores_with_the_reused_model_without_training(first_run, tmp_path):
    run = _prepare(tmp_path, seed=1)
    info = stages.model_stage(run, run_folder.MODEL_SCORE_ONLY, first_run.file(first_run.MODEL),
                              "the model of run 'first'")
    assert info.trained_box == BOX and info.architecture == "fast"
    with pytest.raises(RunFolderError, match="without training: there is nothing to train"):
        stages.training_stage(run, 1, ONE_EPOCH)
    assert stages.scoring_round(run.info()) == 1
    scores = stages.scoring_stage(run, 1, 1)
    assert scores.shape == (len(run.consensus()),) and np.all((scores >= 0) & (scores <= 1))
    stages.ranking_stage(run)
    stages.split_stage(run, 0.5, 0)
    summary = "\n".join(run_summary.summary_lines(run.info()))
    assert "Model: the model of run 'first', scoring without training." in summary
    assert run.info().training is None and not run.has(run.HISTORY)


def test_fine_tuning_starts_from_the_reused_weights(first_run, tmp_path):
    """At a learning rate of 1e-12 one epoch moves no weight measurably: the fine-tuned
    network is the reused one, where a new network would start from random weights."""
    run = _prepare(tmp_path, seed=1)
    stages.model_stage(run, run_folder.MODEL_FINE_TUNE, first_run.file(first_run.MODEL), "first")
    stages.training_stage(run, 1, stages.TrainingParams(max_epochs=1, rounds=1,
                                                        learning_rate=1e-12))
    reused = _first_kernel(first_run.file(first_run.MODEL))
    np.testing.assert_allclose(_first_kernel(run.file(run.MODEL)), reused, atol=1e-6)
    assert read_spec(run.file(run.MODEL)) == read_spec(first_run.file(first_run.MODEL))
    assert "fine-tuned on this data from first" in "\n".join(
        run_summary.summary_lines(run.info()))


def test_a_model_trained_on_other_boxes_is_refused_before_it_is_copied(first_run, tmp_path):
    run = _prepare(tmp_path, seed=1, network_size=24)
    with pytest.raises(ModelFileError, match="network box size of 16 px; this run's is 24 px"):
        stages.model_stage(run, run_folder.MODEL_SCORE_ONLY, first_run.file(first_run.MODEL))
    assert not run.has(run.MODEL) and run.info().model is None
