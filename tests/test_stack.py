"""Tests for deepconsensus_plugin.core.stack: the on-disk particle stack."""
import numpy as np
import pytest

from deepconsensus_plugin.core.stack import STACK_DTYPE, ParticleStack, create_stack, open_stack


@pytest.fixture
def filled(tmp_path):
    images = np.random.default_rng(0).normal(size=(50, 8, 8)).astype(STACK_DTYPE)
    path = str(tmp_path / "stack.npy")
    with create_stack(path, 50, 8) as stack:
        stack[0:20] = images[:20]
        stack[20:50] = images[20:]
    return path, images


def test_create_gives_a_zero_filled_npy_that_numpy_reads(tmp_path):
    path = str(tmp_path / "zeros.npy")
    with create_stack(path, 7, 4) as stack:
        assert stack.shape == (7, 4, 4) and len(stack) == 7 and stack.size == 4
        assert stack.dtype == STACK_DTYPE
    loaded = np.load(path)
    assert loaded.shape == (7, 4, 4) and loaded.dtype == STACK_DTYPE
    assert not loaded.any()


def test_written_rows_read_back_by_numpy_and_by_the_stack(filled):
    path, images = filled
    np.testing.assert_array_equal(np.load(path), images)
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack[:], images)
        np.testing.assert_array_equal(np.asarray(stack), images)
        np.testing.assert_array_equal(stack.astype(np.float32), images.astype(np.float32))


@pytest.mark.parametrize("key", [3, -1, slice(5, 9), slice(48, 70), slice(9, 5),
                                 [4, 2, 3, 30, 2, 49], np.array([], dtype=int),
                                 np.array([10, 11, 12, 40, 41]), np.array([-2, 0])])
def test_indexing_matches_numpy(filled, key):
    path, images = filled
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack[key], images[key])


def test_runs_of_rows_are_read_in_one_call(filled, monkeypatch):
    path, images = filled
    stack = open_stack(path)
    calls = []
    original = stack._read_run
    monkeypatch.setattr(stack, "_read_run", lambda first, count: calls.append((first, count))
                        or original(first, count))
    rows = np.array([12, 10, 11, 40, 41, 11])
    np.testing.assert_array_equal(stack[rows], images[rows])
    assert calls == [(10, 3), (40, 2)]


def test_large_runs_are_read_in_several_calls(filled, monkeypatch):
    """Reads are cut below the operating system's per-call limit; the rows come out whole."""
    import deepconsensus_plugin.core.stack as stack_module

    path, images = filled
    monkeypatch.setattr(stack_module, "MAX_READ", 8 * 8 * 2 * 3 + 5)  # 3 rows and a bit
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack[:], images)
        np.testing.assert_array_equal(stack[[49, 0, 1, 2, 3, 4, 5, 6]],
                                      images[[49, 0, 1, 2, 3, 4, 5, 6]])


def test_bad_keys_and_shapes_are_refused(filled):
    path, _ = filled
    with open_stack(path) as stack:
        with pytest.raises(IndexError, match="out of range"):
            stack[50]
        with pytest.raises(IndexError, match="out of range"):
            stack[[1, 60]]
        with pytest.raises(IndexError, match="step 1"):
            stack[::2]
    with ParticleStack(path, writable=True) as stack:
        with pytest.raises(ValueError, match="shape"):
            stack[0:2] = np.zeros((3, 8, 8))
        with pytest.raises(IndexError, match="slices"):
            stack[[0, 1]] = np.zeros((2, 8, 8))


def test_a_read_only_stack_cannot_be_written(filled):
    path, _ = filled
    with open_stack(path) as stack:
        with pytest.raises(OSError):
            stack[0:1] = np.zeros((1, 8, 8))


def test_files_that_are_not_stacks_are_named(tmp_path):
    wrong = str(tmp_path / "wrong.npy")
    np.save(wrong, np.zeros((3, 4, 5), dtype=np.float16))
    with pytest.raises(ValueError, match="wrong.npy is not a particle stack"):
        open_stack(wrong)
    as_float32 = str(tmp_path / "f32.npy")
    np.save(as_float32, np.zeros((3, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="f32.npy"):
        open_stack(as_float32)


def test_a_truncated_stack_names_the_missing_rows(filled, tmp_path):
    path, _ = filled
    with open(path, "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 8 * 8 * 2 * 5)  # drop the last 5 rows
    with open_stack(path) as stack:
        stack[:45]
        with pytest.raises(OSError, match="truncated: rows 40..49"):
            stack[40:50]


def test_reading_does_not_map_the_file(filled):
    """Rows are copied out; nothing of the file stays mapped into the process."""
    path, _ = filled
    with open_stack(path) as stack:
        rows = stack[0:10]
        assert not isinstance(rows, np.memmap)
        with open("/proc/self/maps") as maps:
            assert path not in maps.read()
