"""Tests for deepconsensus_plugin.core.model, .training and .scoring (TensorFlow on CPU).

The expensive part, training a small network twice, is shared through a
module-scoped fixture so that the file stays within about a minute on two cores.
"""
import dataclasses
import logging
import os
import shutil
import threading
import warnings
from collections import OrderedDict

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deepconsensus_plugin.core.metrics import roc_auc  # noqa: E402
from deepconsensus_plugin.core.model import ARCHITECTURES, build_model, paper_width  # noqa: E402
from deepconsensus_plugin.core import scoring  # noqa: E402
from deepconsensus_plugin.core.scoring import score_on_devices, score_stack  # noqa: E402
from deepconsensus_plugin.core.stack import create_stack  # noqa: E402
from deepconsensus_plugin.core.training import (  # noqa: E402
    ParticleBatches, TrainingConfig, TrainingResult, dihedral_augment, fit_batches,
    read_history, split_validation, train_classifier, whole)

SIZE = 32


def _particles(n, positive, rng, size=SIZE):
    """Noise images; positives add a centred dark disc (radius 6 px)."""
    yy, xx = np.mgrid[:size, :size] - size // 2
    disc = (np.hypot(xx, yy) < 6).astype(np.float32)
    images = rng.normal(size=(n, size, size)).astype(np.float32)
    if positive:
        images -= 1.5 * disc
    return images


# --------------------------------------------------------------------------- model

@pytest.mark.parametrize("architecture", ["fast", "paper"])
@pytest.mark.parametrize("size", [32, 64])
def test_build_model_output_shape(architecture, size):
    model = build_model(architecture, size, n_train=1000)
    assert model.input_shape == (None, size, size, 1)
    assert model.output_shape == (None, 1)
    out = np.asarray(model(np.random.default_rng(0).normal(size=(3, size, size, 1))
                           .astype(np.float32), training=False))
    assert out.shape == (3, 1)
    assert np.all((out >= 0) & (out <= 1))


def test_paper_network_grows_with_training_set():
    assert [paper_width(n) for n in (0, 1499, 1500, 19999, 20000, 10**6)] == [2, 2, 4, 4, 8, 8]
    params = [build_model("paper", 32, n_train=n).count_params() for n in (1000, 5000, 50000)]
    assert params[0] < params[1] < params[2]
    # the fast network does not depend on the training-set size
    assert (build_model("fast", 32, n_train=100).count_params()
            == build_model("fast", 32, n_train=10**6).count_params())


def test_unknown_architecture():
    assert set(ARCHITECTURES) == {"fast", "paper"}
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model("resnet", 32)


# ------------------------------------------------------------------ augmentation and splits

def _dihedral(image):
    out = []
    for k in range(4):
        r = np.rot90(image, k)
        out += [r, r[:, ::-1]]
    return out


def test_dihedral_augment_keeps_values_and_reaches_all_eight_transforms():
    image = np.arange(25, dtype=np.float32).reshape(5, 5)
    images = np.repeat(image[None], 400, axis=0)
    out = dihedral_augment(images, np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    for o in out:
        np.testing.assert_array_equal(np.sort(o, axis=None), np.sort(image, axis=None))
    seen = {o.tobytes() for o in out}
    allowed = {t.tobytes() for t in _dihedral(image)}
    assert len(allowed) == 8
    assert seen == allowed
    # the input is left untouched
    np.testing.assert_array_equal(images[0], image)


def test_dihedral_augment_is_seeded_and_per_image():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(50, 6, 6)).astype(np.float32)
    a = dihedral_augment(images, np.random.default_rng(5))
    b = dihedral_augment(images, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    for o, i in zip(a, images):
        assert any(np.array_equal(o, t) for t in _dihedral(i))


@pytest.mark.parametrize("n,fraction,n_val", [(100, 0.1, 10), (101, 0.1, 10), (10, 0.25, 2),
                                              (2, 0.1, 1), (10, 0.0, 1), (10, 1.0, 9),
                                              (1, 0.1, 0), (0, 0.1, 0)])
def test_split_validation_sizes(n, fraction, n_val):
    train, val = split_validation(n, fraction, np.random.default_rng(0))
    assert len(val) == n_val
    assert len(train) == n - n_val
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_split_validation_holds_out_at_most_the_bound():
    """The bound a large dataset's validation keeps to; below it the split is unchanged."""
    train, val = split_validation(10_000, 0.1, np.random.default_rng(0), most=300)
    assert len(val) == 300 and len(train) == 9_700
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(10_000))
    for most in (0, 1_000, 5_000):
        np.testing.assert_array_equal(
            split_validation(10_000, 0.1, np.random.default_rng(0), most=most)[1],
            split_validation(10_000, 0.1, np.random.default_rng(0))[1])


def test_split_validation_is_seeded_and_random():
    a = split_validation(50, 0.2, np.random.default_rng(3))
    b = split_validation(50, 0.2, np.random.default_rng(3))
    c = split_validation(50, 0.2, np.random.default_rng(4))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert not np.array_equal(a[1], np.arange(40, 50))  # not just the tail


# --------------------------------------------------------------------------- ParticleBatches

def _identity_stacks(n_pos, n_neg, size=4):
    """Constant images whose value names them: positive i is i + 1, negative i is -(i + 1)."""
    pos = np.repeat(np.arange(1, n_pos + 1, dtype=np.float32), size * size)
    neg = -np.repeat(np.arange(1, n_neg + 1, dtype=np.float32), size * size)
    return pos.reshape(n_pos, size, size), neg.reshape(n_neg, size, size)
    return pos, neg


def _pairs(source, rows):
    """(source, row) sample pairs for ParticleBatches."""
    rows = np.asarray(rows)
    return np.column_stack([np.full(len(rows), source), rows])


def test_particle_batches_draw_a_class_from_several_stacks():
    """A class can mix rows of two stacks (e.g. extracted negatives and user particles)."""
    pos, neg = _identity_stacks(4, 4)
    extra = neg - 100  # a second negative stack: -101 .. -104
    batches = ParticleBatches([neg, extra, pos],
                              [np.vstack([_pairs(0, [1, 3]), _pairs(1, [0, 2])]),
                               _pairs(2, [0, 1, 2, 3])],
                              batch_size=3, seed=0, augment=True)
    images, labels = (np.concatenate(a) for a in zip(*list(batches)))
    values = images[:, 0, 0, 0]
    assert sorted(values[labels == 0].tolist()) == [-103.0, -101.0, -4.0, -2.0]
    assert sorted(values[labels == 1].tolist()) == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("augment", [False, True])
def test_particle_batches_are_balanced_and_shaped(augment):
    pos, neg = _identity_stacks(10, 3)
    batches = ParticleBatches([neg, pos], [_pairs(0, np.arange(3)), _pairs(1, np.arange(10))],
                              batch_size=6, seed=0, augment=augment)
    assert len(batches) == 4  # ceil(2 * 10 / 6)
    for _ in range(2):  # two epochs
        got = list(batches)
        assert len(got) == len(batches)
        values, labels = [], []
        for images, lab in got:
            assert images.ndim == 4 and images.shape[1:] == (4, 4, 1)
            assert images.dtype == np.float32 and lab.dtype == np.float32
            assert len(images) == len(lab) <= 6
            v = images[:, 0, 0, 0]
            np.testing.assert_array_equal(images, v[:, None, None, None] * np.ones_like(images))
            values.append(v)
            labels.append(lab)
        values, labels = np.concatenate(values), np.concatenate(labels)
        assert len(labels) == 20
        assert labels.sum() == 10                      # balanced: 10 of each
        np.testing.assert_array_equal(values > 0, labels == 1)   # right stack for each label
        # every positive exactly once; the 3 negatives cycled to 10 (3 or 4 times each)
        assert sorted(values[values > 0].tolist()) == list(range(1, 11))
        counts = np.bincount((-values[values < 0]).astype(int))[1:]
        assert counts.sum() == 10 and set(counts.tolist()) <= {3, 4}


def test_particle_batches_respect_index_subsets_and_unbalanced_mode():
    pos, neg = _identity_stacks(8, 8)
    batches = ParticleBatches([neg, pos], [_pairs(0, [0, 2, 7]), _pairs(1, [1, 5])],
                              batch_size=256, seed=0, augment=False, balance=False)
    assert len(batches) == 1
    (images, labels), = list(batches)
    values = images[:, 0, 0, 0]
    assert sorted(values.tolist()) == [-8.0, -3.0, -1.0, 2.0, 6.0]
    np.testing.assert_array_equal(values > 0, labels == 1)
    # without augmentation the order is fixed: negatives then positives, as indexed
    np.testing.assert_array_equal(values, [-1, -3, -8, 2, 6])
    again = list(batches)[0][0]
    np.testing.assert_array_equal(again, images)


def test_particle_batches_bounded_per_class_go_through_a_large_class_in_turn():
    """At most ``per_class`` of each class an epoch: the larger class's boxes come in
    turn, so that 3 epochs of 4 show each of its 12 boxes exactly once; the smaller class
    is cycled to the bound as without one."""
    pos, neg = _identity_stacks(3, 12)
    batches = ParticleBatches([neg, pos], [_pairs(0, np.arange(12)), _pairs(1, np.arange(3))],
                              batch_size=3, seed=0, augment=True, per_class=4)
    assert batches.class_count == 4 and batches.epoch_size == 8 and len(batches) == 3
    seen = []
    for _ in range(3):
        images, labels = (np.concatenate(a) for a in zip(*list(batches)))
        values = images[:, 0, 0, 0]
        assert len(labels) == 8 and labels.sum() == 4
        np.testing.assert_array_equal(values > 0, labels == 1)
        assert set(values[values > 0].tolist()) == {1.0, 2.0, 3.0}
        seen += (-values[values < 0]).astype(int).tolist()
    assert sorted(seen) == list(range(1, 13))
    # a fourth epoch starts another turn, in another order
    images, labels = (np.concatenate(a) for a in zip(*list(batches)))
    assert len(set((-images[labels == 0, 0, 0, 0]).astype(int).tolist())) == 4


def test_particle_batches_below_the_bound_are_those_without_one():
    """A bound no class reaches changes nothing, to the order of the boxes: the
    development datasets train as before it."""
    pos, neg = _identity_stacks(7, 20)
    samples = [_pairs(0, np.arange(20)), _pairs(1, np.arange(7))]
    for bound in (20, 1_000):
        bounded = ParticleBatches([neg, pos], samples, 8, 3, True, per_class=bound)
        free = ParticleBatches([neg, pos], samples, 8, 3, True)
        assert len(bounded) == len(free) == 5
        for _ in range(2):
            for (a, la), (b, lb) in zip(bounded, free):
                np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(la, lb)


def test_particle_batches_seeded_shuffle():
    pos, neg = _identity_stacks(20, 20)
    samples = [_pairs(0, np.arange(20)), _pairs(1, np.arange(20))]
    first = [lab for _, lab in ParticleBatches([neg, pos], samples, 8, 3, True)]
    second = [lab for _, lab in ParticleBatches([neg, pos], samples, 8, 3, True)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))
    labels = np.concatenate(first)
    assert not (np.all(labels[:20] == 0) and np.all(labels[20:] == 1))  # shuffled


# --------------------------------------------------------------------------- training and scoring

CONFIG = TrainingConfig(architecture="fast", max_epochs=5, patience=3, lr_patience=2,
                        learning_rate=1e-3, batch_size=32, seed=11)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {"pos": _particles(200, True, rng), "neg": _particles(200, False, rng),
            "test_pos": _particles(100, True, rng), "test_neg": _particles(100, False, rng)}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("training")
    model_path = str(folder / "model.keras")
    history_path = str(folder / "history.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_classifier([whole(data["pos"])], [whole(data["neg"])], CONFIG,
                                  model_path, history_path)
    stack = create_stack(str(folder / "test.npy"), 200, SIZE)
    stack[:100] = data["test_pos"]
    stack[100:] = data["test_neg"]
    stack.flush()
    scores = score_stack(model_path, stack, batch_size=64, seed=CONFIG.seed)
    return {"result": result, "model_path": model_path, "history_path": history_path,
            "stack": stack, "scores": scores, "warnings": [str(w.message) for w in caught]}


def test_train_classifier_learns_an_easy_problem(trained):
    result = trained["result"]
    assert isinstance(result, TrainingResult)
    assert result.val_accuracy >= 0.9
    assert 1 <= result.epochs <= CONFIG.max_epochs
    assert result.epoch_size == 2 * 180  # every box (180 of each class), under the bound
    assert result.val_loss == pytest.approx(min(result.history["val_loss"]))
    assert result.seconds > 0
    assert os.path.getsize(trained["model_path"]) > 0
    assert result.model_path == trained["model_path"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(result.history[key]) == result.epochs
    # the batches come shuffled from ParticleBatches, and Keras has nothing to warn about
    assert not [w for w in trained["warnings"] if "shuffl" in w or "interrupted" in w]


def test_train_classifier_bounds_the_epoch_and_the_validation(data, tmp_path, caplog):
    """``epoch_particles``: an epoch of 60 particles and 60 negatives out of 180 each, and
    a fifth of that held out (12 of each, not 10% = 20)."""
    config = dataclasses.replace(CONFIG, max_epochs=1, epoch_particles=60)
    with caplog.at_level(logging.INFO, logger="deepconsensus_plugin.core.training"):
        result = train_classifier([whole(data["pos"])], [whole(data["neg"])], config,
                                  str(tmp_path / "model.keras"), str(tmp_path / "history.csv"))
    assert result.epoch_size == 120 and result.epochs == 1
    assert ("on 188 positive and 188 negative particles (12 + 12 held out for validation), "
            "%d x %d px, 120 boxes an epoch (at most 60 of each class, the rest in turn in "
            "later epochs)" % (SIZE, SIZE)) in caplog.text


def test_history_csv(trained):
    result = trained["result"]
    history = read_history(trained["history_path"])
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == result.epochs
        assert all(isinstance(v, float) for v in history[key])
    assert history["epoch"] == [float(e) for e in range(result.epochs)]
    np.testing.assert_allclose(history["val_loss"], result.history["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(history["accuracy"], result.history["accuracy"], rtol=1e-5)


def test_read_history_of_an_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert read_history(str(path)) == {}


def test_score_stack_separates_held_out_particles(trained):
    scores = trained["scores"]
    assert scores.shape == (200,) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    assert roc_auc(labels, scores) >= 0.95
    assert np.mean(scores[:100] > 0.5) >= 0.9 and np.mean(scores[100:] < 0.5) >= 0.9


def test_score_stack_batching_does_not_change_scores(trained):
    whole = score_stack(trained["model_path"], trained["stack"], batch_size=1000)
    odd = score_stack(trained["model_path"], trained["stack"][:37], batch_size=10)
    np.testing.assert_allclose(whole, trained["scores"], atol=1e-5)
    np.testing.assert_allclose(odd, trained["scores"][:37], atol=1e-5)
    assert score_stack(trained["model_path"], trained["stack"][:0]).shape == (0,)


def test_the_network_sees_every_batch_in_one_shape(trained, monkeypatch):
    """The last batch is padded to the batch size and its padding's scores dropped: a
    batch of another shape would make TensorFlow trace the network again."""
    import keras

    shapes = []
    load = keras.models.load_model

    class Recorder:
        def __init__(self, model):
            self.model = model

        def predict_on_batch(self, batch):
            shapes.append(batch.shape)
            return self.model.predict_on_batch(batch)

    monkeypatch.setattr(scoring, "_IDLE_MODELS", OrderedDict())  # load through the recorder
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: Recorder(load(*a, **k)))
    odd = score_stack(trained["model_path"], trained["stack"][:37], batch_size=10)
    size = trained["stack"].shape[-1]
    assert shapes == [(10, size, size, 1)] * 4
    np.testing.assert_allclose(odd, trained["scores"][:37], atol=1e-5)


def _counting_loads(monkeypatch) -> list:
    """Start with no network kept, and record the path of every network loaded."""
    import keras

    loads, load = [], keras.models.load_model
    monkeypatch.setattr(scoring, "_IDLE_MODELS", OrderedDict())
    monkeypatch.setattr(keras.models, "load_model",
                        lambda path, **k: loads.append(path) or load(path, **k))
    return loads


def test_a_network_is_loaded_once_for_many_stacks_and_again_when_its_file_changes(
        trained, tmp_path, monkeypatch):
    """The best-centred search scores a stack twice with one network and a stream scores
    every batch with it: the loaded network is kept.  A stream also retrains into the same
    file, so what is kept is the file's content: the retrained network scores."""
    loads = _counting_loads(monkeypatch)
    path = str(tmp_path / "model.keras")
    shutil.copyfile(trained["model_path"], path)
    first = score_stack(path, trained["stack"], batch_size=64)
    again = score_stack(path, trained["stack"][:50], batch_size=64)
    assert loads == [path]
    np.testing.assert_array_equal(first, trained["scores"])
    np.testing.assert_array_equal(again, trained["scores"][:50])

    build_model("fast", SIZE).save(path)  # retrained in place: another network, same name
    other = score_stack(path, trained["stack"], batch_size=64)
    assert loads == [path, path]
    assert not np.allclose(other, trained["scores"], atol=1e-3)


def test_scoring_at_the_same_time_never_shares_a_network(trained, tmp_path, monkeypatch):
    """Two scorings of one network running together (scoring steps in threads of one
    Scipion process) each hold a copy of their own; one copy is kept after (the later
    returned, under the same key)."""
    loads = _counting_loads(monkeypatch)
    inside, release = threading.Barrier(2), threading.Event()
    in_use = []

    class Held(list):
        """A stack that waits, at its first read, until both scorings are inside."""

        def __getitem__(self, key):
            if not release.is_set():
                in_use.append(dict(scoring._IDLE_MODELS))
                inside.wait(timeout=60)
                release.set()
            return trained["stack"][key]

        def __len__(self):
            return len(trained["stack"])

    results = [None, None]

    def run(i: int) -> None:
        results[i] = score_stack(trained["model_path"], Held(), batch_size=64)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(loads) == 2 and in_use == [{}, {}]  # neither found the other's copy idle
    for result in results:
        np.testing.assert_array_equal(result, trained["scores"])
    assert len(scoring._IDLE_MODELS) == 1  # one key: the later copy replaced the earlier


def test_scoring_split_over_several_devices_gives_the_same_scores(trained, caplog):
    """The multi-GPU path (one model copy and thread per device, contiguous parts),
    exercised with the CPU named three times."""
    caplog.set_level("INFO", logger="deepconsensus_plugin.core.scoring")
    split = score_on_devices(trained["model_path"], trained["stack"], ["/CPU:0"] * 3,
                             batch_size=16, log_every=50)
    np.testing.assert_allclose(split, trained["scores"], atol=1e-5)
    assert "Scored 200 particles" in caplog.text and "/CPU:0, /CPU:0, /CPU:0" in caplog.text
    assert caplog.text.count("Scored ") >= 4  # progress lines from the parts, then the total
    few = score_on_devices(trained["model_path"], trained["stack"][:2], ["/CPU:0"] * 3)
    np.testing.assert_allclose(few, trained["scores"][:2], atol=1e-5)  # a device with no part


def test_training_is_deterministic_on_cpu(data, trained, tmp_path):
    """The same seed and data give the same model: identical history and scores."""
    result = train_classifier([whole(data["pos"])], [whole(data["neg"])], CONFIG,
                              str(tmp_path / "again.keras"),
                              str(tmp_path / "again.csv"))
    assert result.history == trained["result"].history
    scores = score_stack(str(tmp_path / "again.keras"), trained["stack"], batch_size=64,
                         seed=CONFIG.seed)
    np.testing.assert_array_equal(scores, trained["scores"])


def test_training_loop_computes_what_keras_fit_computes(data):
    """The training's own loop steps through Keras' train and test functions; given the
    same batches, ``model.fit`` arrives at the same history and the same weights, bit for
    bit, so the loop changes the speed of training and nothing else."""
    import keras

    from deepconsensus_plugin.core.runtime import configure_tensorflow

    configure_tensorflow(None, 0)
    stacks = [data["neg"], data["pos"]]
    samples = [np.column_stack([np.full(200, label), np.arange(200)]) for label in (0, 1)]
    train = ParticleBatches(stacks, samples, 32, 0, augment=False, balance=False)
    val = ParticleBatches(stacks, [s[:40] for s in samples], 64, 0, augment=False,
                          balance=False)
    x, y = (np.concatenate(parts) for parts in zip(*train))
    x_val, y_val = (np.concatenate(parts) for parts in zip(*val))

    def fresh_model():
        keras.utils.set_random_seed(5)
        model = build_model("fast", SIZE)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                      metrics=["accuracy"])
        return model

    ours, keras_fit = fresh_model(), fresh_model()
    history = fit_batches(ours, train, val, 3, [])
    fitted = keras_fit.fit(x, y, batch_size=32, epochs=3, validation_data=(x_val, y_val),
                           validation_batch_size=64, shuffle=False, verbose=0)
    assert len(history["val_loss"]) == 3
    assert history == fitted.history
    for mine, theirs in zip(ours.get_weights(), keras_fit.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_train_classifier_refuses_too_few_particles(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="cannot train on 1 positive"):
        train_classifier([whole(_particles(1, True, rng))], [whole(_particles(10, False, rng))],
                         CONFIG,
                         str(tmp_path / "m.keras"), str(tmp_path / "h.csv"))
    assert not (tmp_path / "m.keras").exists()
