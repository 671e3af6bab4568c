"""Mapping between Scipion objects and the core's plain arrays.

Micrographs of different input sets are matched by name, never by id: each
picker's output may point to its own copy of the micrograph set, with ids of
its own.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Optional

import numpy as np
from pwem.objects import Coordinate, SetOfCoordinates, SetOfMicrographs
from pyworkflow.object import Boolean, Float, Integer


IMAGE_EXTENSIONS = (".mrc", ".mrcs", ".st", ".tif", ".tiff", ".eer", ".dm4", ".em", ".spi",
                    ".jpg", ".jpeg", ".png", ".xmp")


def baseName(name: str) -> str:
    """A micrograph or coordinate file name without folder and image extension.

    Scipion's import keeps the extension in micName ("mic_001.mrc") while
    pickers name their files after the bare name ("mic_001.box"); only known
    image extensions are cut, so a name such as "grid_1.5um" survives.
    """
    name = os.path.basename(name)
    root, ext = os.path.splitext(name)
    return root if ext.lower() in IMAGE_EXTENSIONS else name


def micrographKey(mic) -> str:
    """The name a micrograph is matched by: its micName, else its file's name."""
    return baseName(mic.getMicName() or mic.getFileName())


def micrographsByName(micSet: SetOfMicrographs) -> Dict[str, tuple]:
    """matching name -> (micId, file name, micName) of every micrograph of a set."""
    return {micrographKey(mic): (mic.getObjId(), mic.getFileName(), mic.getMicName())
            for mic in micSet.iterItems()}


def coordinatesByMicrograph(coordSet: SetOfCoordinates, idToName: Dict[int, str],
                            onlyThese: bool = False) -> Dict[str, np.ndarray]:
    """micrograph name -> (n, 2) float x/y of a coordinate set; unknown micIds are dropped.

    With ``onlyThese`` only the coordinates of the micrographs in ``idToName``
    are read from the set's database (a few micrographs of a large set).
    """
    grouped: Dict[str, list] = {}
    if onlyThese and not idToName:
        return {}
    # pyworkflow maps attribute names to columns only in "a=1 OR a=2" terms, not in IN (...)
    where = " OR ".join("_micId=%d" % micId for micId in idToName) if onlyThese else None
    for coord in coordSet.iterItems(where=where):
        name = idToName.get(coord.getMicId())
        if name is not None:
            grouped.setdefault(name, []).append((coord.getX(), coord.getY()))
    return {name: np.asarray(xy, dtype=np.float64) for name, xy in grouped.items()}


def samplingRate(coordSet: SetOfCoordinates) -> Optional[float]:
    mics = coordSet.getMicrographs()
    return mics.getSamplingRate() if mics is not None else None


def fillCoordinates(outSet: SetOfCoordinates, rows: Iterable[int], mic: np.ndarray,
                    xy: np.ndarray, scores: np.ndarray, votes: np.ndarray,
                    duplicate: np.ndarray, micInfo: Dict[int, tuple]) -> None:
    """Append scored coordinates to ``outSet``.

    ``micInfo`` maps a micrograph id to (name, file, micName); every
    coordinate gets its micrograph id and micName, ``_dcScore``, ``_dcVotes``
    and ``_dcDuplicate``.
    """
    coord = Coordinate()
    for row in rows:
        micId = int(mic[row])
        coord.cleanObjId()
        coord.setMicId(micId)
        coord.setMicName(micInfo[micId][2])
        coord.setPosition(int(round(xy[row, 0])), int(round(xy[row, 1])))
        coord._dcScore = Float(float(scores[row]))
        coord._dcVotes = Integer(int(votes[row]))
        coord._dcDuplicate = Boolean(bool(duplicate[row]))
        outSet.append(coord)
