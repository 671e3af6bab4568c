"""Building Scipion test projects from synthetic micrographs and pickers."""
import os

import mrcfile
import numpy as np
import tifffile
from pwem.protocols import ProtImportMicrographs
from pyworkflow.object import Pointer

from deepconsensus_plugin.core import synthetic
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
