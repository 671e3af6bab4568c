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

from .core.consensus import rescale
from .core.run_folder import Micrograph
from .core.box_policy import run_boxes
from .core.stages import ConsensusInput, PickerInput


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


def picksInReferenceFrame(sets, setNames):
    """Each set's picks by micrograph name, in the first set's pixel size.

    Returns (per set: name -> (n, 2) picks, per set: its micrograph names,
    the descriptions of the sets that were rescaled).  The protocol and the
    radius wizard both see the pickers through this.
    """
    reference = samplingRate(sets[0])
    pickers, names, rescaled = [], [], []
    for coordSet, setName in zip(sets, setNames):
        micsByName = micrographsByName(coordSet.getMicrographs())
        idToName = {info[0]: name for name, info in micsByName.items()}
        picks = coordinatesByMicrograph(coordSet, idToName)
        sampling = samplingRate(coordSet)
        if sampling and reference and abs(sampling - reference) > 1e-6:
            rescaled.append("%s (%.3f A/px)" % (setName, sampling))
            picks = {name: rescale(xy, sampling, reference) for name, xy in picks.items()}
        pickers.append(picks)
        names.append(set(micsByName))
    return pickers, names, rescaled


def inputPicks(sets):
    """Per set, micrograph name -> picks, in the first set's pixel size (as the protocol's
    consensus takes them): what the wizards and the form's checks measure before a run."""
    return picksInReferenceFrame(sets, [s.getObjLabel() for s in sets])[0]


def consensusInput(sets, setNames, diameter: float = 0.0, fitBox: bool = False,
                   networkBox: int = 0) -> ConsensusInput:
    """The core's consensus input from coordinate sets: the micrographs common to all sets
    (ids, files and micNames of the first set's), each set's picks on them in the first
    set's pixel size, the box the run works in (1.5 times ``diameter`` (Å) where one is
    given, else a reused network's ``networkBox`` (px; 0: none), else the first set's; with
    ``fitBox`` the consensus may fit it to the particles' spacing) and the notes the summary
    gives (entries left out, other boxes)."""
    reference = sets[0]
    refMics = micrographsByName(reference.getMicrographs())
    pickers, names, rescaled = picksInReferenceFrame(sets, setNames)
    common = sorted(set(refMics).intersection(*names))
    micrographs = [Micrograph(mic_id=refMics[n][0], name=n, path=refMics[n][1],
                              label=refMics[n][2]) for n in common]
    ids = {m.name: m.mic_id for m in micrographs}
    box = reference.getBoxSize()
    sampling = samplingRate(reference)
    boxes = run_boxes(box, diameter, sampling, networkBox or None)
    return ConsensusInput(
        micrographs=micrographs,
        pickers=[PickerInput(name, {ids[n]: picks[n] for n in common if n in picks})
                 for name, picks in zip(setNames, pickers)],
        box=boxes.box, sampling_rate=sampling,
        ignored_micrograph_entries=sum(len(n) for n in names) - len(common) * len(sets),
        other_box_sizes=sorted({s.getBoxSize() for s in sets[1:]} - {box}),
        rescaled_sets=rescaled, coordinates_box=boxes.coordinates_box,
        box_from_network=boxes.from_network, fit_box=fitBox)


def fillCoordinates(outSet: SetOfCoordinates, rows: Iterable[int], mic: np.ndarray,
                    xy: np.ndarray, scores: np.ndarray, votes: np.ndarray,
                    duplicate: np.ndarray, atEdge: np.ndarray, micInfo: Dict[int, Micrograph],
                    rowIds: bool = False) -> None:
    """Append scored coordinates to ``outSet``.

    ``micInfo`` maps a micrograph id to its :class:`Micrograph` record; every
    coordinate gets its micrograph id and micName, ``_dcScore``, ``_dcVotes``,
    ``_dcDuplicate`` and ``_dcAtEdge`` (pruned as a particle cut by the micrograph's
    edge).  With ``rowIds`` a coordinate's id is its row of the OR table plus one
    and rows already in the set are skipped: a streaming run
    stopped after writing a batch and before recording it writes the batch
    again on continue, and must not add a second copy.
    """
    coord = Coordinate()
    for row in rows:
        micId = int(mic[row])
        if rowIds:
            if outSet.getSize() and int(row) + 1 in outSet:
                continue
            coord.setObjId(int(row) + 1)
        else:
            coord.cleanObjId()
        coord.setMicId(micId)
        coord.setMicName(micInfo[micId].label)
        coord.setPosition(int(round(xy[row, 0])), int(round(xy[row, 1])))
        coord._dcScore = Float(float(scores[row]))
        coord._dcVotes = Integer(int(votes[row]))
        coord._dcDuplicate = Boolean(bool(duplicate[row]))
        coord._dcAtEdge = Boolean(bool(atEdge[row]))
        outSet.append(coord)
