"""Scipion objects from the core's tables (convert.py)."""
import numpy as np
from pwem.objects import SetOfCoordinates

from deepconsensus_plugin.convert import fillCoordinates
from deepconsensus_plugin.core.run_folder import Micrograph


def _fill(outSet, rows, rowIds):
    mic = np.array([1, 1, 2, 2])
    xy = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0]])
    scores, votes = np.array([0.9, 0.8, 0.7, 0.6]), np.array([3, 2, 1, 2])
    micInfo = {m: Micrograph(mic_id=m, name="m%d" % m, path="m%d.mrc" % m, label="mic%d" % m)
               for m in (1, 2)}
    fillCoordinates(outSet, rows, mic, xy, scores, votes, np.zeros(4, bool), np.zeros(4, bool),
                    micInfo, rowIds)


def test_row_ids_make_a_repeated_batch_append_nothing(tmp_path):
    """A streaming run stopped after writing a batch and before recording it writes the
    batch again on continue: with row ids no coordinate is there twice."""
    outSet = SetOfCoordinates(filename=str(tmp_path / "coordinates.sqlite"))
    _fill(outSet, [0, 1, 2], rowIds=True)
    _fill(outSet, [1, 2, 3], rowIds=True)
    outSet.write()
    coords = {c.getObjId(): (c.getMicName(), c.getPosition(), c._dcScore.get())
              for c in outSet.iterItems()}
    assert coords == {1: ("mic1", (10, 20), 0.9), 2: ("mic1", (30, 40), 0.8),
                      3: ("mic2", (50, 60), 0.7), 4: ("mic2", (70, 80), 0.6)}


def test_without_row_ids_every_append_is_new(tmp_path):
    outSet = SetOfCoordinates(filename=str(tmp_path / "coordinates.sqlite"))
    _fill(outSet, [0, 1], rowIds=False)
    _fill(outSet, [0, 1], rowIds=False)
    outSet.write()
    assert outSet.getSize() == 4
