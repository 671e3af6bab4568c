"""Building Scipion test projects from synthetic micrographs and pickers, and reading
what a run put in its output sets."""
import os

import mrcfile
import numpy as np
import tifffile
from pwem.protocols import ProtImportMicrographs, ProtImportParticles
from pyworkflow.object import Pointer
from scipy.spatial import cKDTree

from deepconsensus_plugin.convert import baseName
from deepconsensus_plugin.core import synthetic
from deepconsensus_plugin.core.extraction import cut_boxes, read_micrograph
from deepconsensus_plugin.protocols import ProtDeepConsensus, ProtImportPickerCoordinates

BOX = 48
DIAMETER = 32
SHAPE = (768, 768)
"""(rows, columns) of the synthetic micrographs."""


def writeBoxFiles(folder, mics, picks, box):
    """One EMAN .box file per micrograph, named like it (lower-left corners)."""
    os.makedirs(folder, exist_ok=True)
    for mic, xy in zip(mics, picks):
        name = os.path.splitext(os.path.basename(mic.path))[0]
        corners = np.asarray(xy) - box / 2
        with open(os.path.join(folder, name + ".box"), "w") as handle:
            for x, y in corners:
                handle.write("%.1f\t%.1f\t%d\t%d\n" % (x, y, box, box))


def importSynthetic(test, nMicrographs=4, nPickers=3, seed=0, shape=SHAPE,
                    nParticles=70, box=BOX, tiff=False):
    """Import synthetic micrographs and pickers (their coordinates in boxes of ``box`` px)
    into the test's project; the micrographs as TIFF files if ``tiff``.

    Returns (micrograph import protocol, list of coordinate import protocols,
    list of SyntheticMicrograph with the truth).
    """
    folder = os.path.abspath(test.proj.getTmpPath("synthetic"))
    mics, pickers = synthetic.make_dataset(folder, n_micrographs=nMicrographs, shape=shape,
                                           n_particles=nParticles, n_junk=nParticles // 3,
                                           diameter=DIAMETER, n_pickers=nPickers, seed=seed)
    pattern = "synthetic_*.mrc"
    if tiff:  # the same images written as TIFF files, and those imported
        for mic in mics:
            tifffile.imwrite(os.path.splitext(mic.path)[0] + ".tif", mrcfile.read(mic.path))
        pattern = "synthetic_*.tif"
    protMics = test.newProtocol(ProtImportMicrographs, filesPath=folder,
                                filesPattern=pattern, samplingRate=2.0, voltage=300)
    test.launchProtocol(protMics)
    protCoords = [importCoordinates(test, protMics, mics, picks, "picker %d" % p, box)
                  for p, picks in enumerate(pickers)]
    return protMics, protCoords, mics


def importCoordinates(test, protMics, mics, picks, label, box=BOX):
    """Import per-micrograph centres ``picks`` (aligned with ``mics``) as coordinates in
    boxes of ``box`` px on the micrographs of ``protMics``; the import protocol."""
    boxFolder = os.path.join(os.path.dirname(mics[0].path), label.replace(" ", "_"))
    writeBoxFiles(boxFolder, mics, picks, box)
    prot = test.newProtocol(ProtImportPickerCoordinates, filesPath=boxFolder,
                            filesPattern="*.box")
    prot.setObjLabel(label)  # pyworkflow 3.11 drops an objLabel keyword
    prot.inputMicrographs.set(protMics)
    prot.inputMicrographs.setExtended("outputMicrographs")
    test.launchProtocol(prot)
    return prot


def importParticles(test, mic, centres, box):
    """Import the boxes of ``box`` px around ``centres`` on the synthetic micrograph ``mic``
    as a particle set at its 2 Å/px, as a user extracts known junk; the import protocol."""
    folder = os.path.abspath(test.proj.getTmpPath("particles_%d" % box))
    os.makedirs(folder)
    boxes, _ = cut_boxes(read_micrograph(mic.path), centres, box)
    mrcfile.write(os.path.join(folder, "particles.mrcs"), boxes.astype(np.float32))
    prot = test.newProtocol(ProtImportParticles, filesPath=folder,
                            filesPattern="particles.mrcs", samplingRate=2.0)
    return test.launchProtocol(prot)


def newDeepConsensus(test, protCoords, **params):
    """A ProtDeepConsensus on the outputs of ``protCoords``, as the form's pointers give them."""
    prot = test.newProtocol(ProtDeepConsensus, **params)
    for p in protCoords:
        prot.inputCoordinates.append(Pointer(p, extended="outputCoordinates"))
    return prot


def runToEnd(test, prot):
    """Run ``prot`` in the test's project and return it reloaded, finished or failed."""
    test.proj.launchProtocol(prot, wait=True)
    return test.proj.getProtocol(prot.getObjId())


def outputArrays(coordSet):
    """(micName, [x, y, score, votes, micId, duplicate, atEdge]) arrays of an output set."""
    rows = [(baseName(c.getMicName()), c.getX(), c.getY(), c._dcScore.get(), c._dcVotes.get(),
             c.getMicId(), c._dcDuplicate.get(), c._dcAtEdge.get())
            for c in coordSet.iterItems()]
    names = np.array([r[0] for r in rows])
    values = np.array([r[1:] for r in rows], dtype=float).reshape(-1, 7)
    return names, values


def edgeDistance(values, shape=SHAPE):
    """Distance of each output coordinate to its (synthetic, ``shape``) micrograph's edge."""
    x, y = values[:, 0], values[:, 1]
    return np.minimum.reduce([x + 0.5, y + 0.5, shape[1] - 0.5 - x, shape[0] - 0.5 - y])


def assertSplitRule(test, retained, pruned, threshold, minDistance, edgeMargin):
    """Retained: at or above the threshold, no two closer than the minimum distance, none
    nearer the micrograph's edge than the margin; pruned: below it, or a duplicate of a
    better retained coordinate, or at the edge (and marked as one of these)."""
    _, rValues = outputArrays(retained)
    _, pValues = outputArrays(pruned)
    test.assertTrue(np.all(rValues[:, 2] >= threshold))
    test.assertFalse(rValues[:, 5].any() or rValues[:, 6].any())
    # positions are rounded to whole pixels in the sets: allow a pixel
    test.assertTrue(np.all(edgeDistance(rValues) >= edgeMargin - 1))
    above = pValues[:, 2] >= threshold
    test.assertTrue(np.all(pValues[above, 5] + pValues[above, 6] == 1))
    test.assertTrue(np.all(pValues[~above, 5] + pValues[~above, 6] == 0))
    atEdge = pValues[:, 6] == 1
    test.assertTrue(np.all(edgeDistance(pValues[atEdge]) < edgeMargin + 1))
    pValues = pValues[~atEdge]
    above = pValues[:, 2] >= threshold
    for micId in np.unique(rValues[:, 4]) if minDistance > 1.5 else ():
        xy = rValues[rValues[:, 4] == micId, :2]
        test.assertEqual(len(cKDTree(xy).query_pairs(minDistance - 1.5)), 0)
    for x, y, score, _, micId, _, _ in pValues[above]:
        better = rValues[(rValues[:, 4] == micId) & (rValues[:, 2] >= score)]
        test.assertTrue((np.hypot(better[:, 0] - x, better[:, 1] - y) <= minDistance + 1.5).any())
