"""ProtImportPickerCoordinates: pickers' coordinate files into a SetOfCoordinates.

Scipion's own coordinate import reads .box, .star and .pos only through the
EMAN, RELION and Xmipp plugins.  Deep Consensus users often have just the
pickers' output files, so this protocol reads them with the core readers
(``core.coordinate_files``, ``core.pick_inputs``) and needs no other plugin.
"""
import glob
import os
import re

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import Coordinate
from pwem.protocols import ProtParticlePicking

from .. import convert
from ..core.coordinate_files import SUPPORTED_EXTENSIONS
from ..core.pick_inputs import match_micrographs, read_coordinate_folder


class ProtImportPickerCoordinates(ProtParticlePicking):
    """Import particle coordinates from picker files (.box, .star, .csv, .pos).

    Each file holds the picks of one micrograph and is matched to it by name:
    the file's name without extension equals the micrograph's name, possibly
    followed by RELION's ``_<suffix>`` (``mic001_autopick.star``) or with
    cryoSPARC's uid prefix (``core.pick_inputs.match_micrographs``).
    Coordinates are particle centres in the micrograph's pixels (EMAN .box
    corners are converted).
    """

    _label = "import picker coordinates"

    def _defineParams(self, form):
        ProtParticlePicking._defineParams(self, form)
        form.addParam("filesPath", params.PathParam, label="Folder with coordinate files",
                      help="Folder holding one coordinate file per micrograph.")
        form.addParam("filesPattern", params.StringParam, default="*.box",
                      label="Pattern",
                      help="Which files of the folder to read, e.g. *.box, *.star, "
                           "*_autopick.star. Supported: %s." % ", ".join(SUPPORTED_EXTENSIONS))
        form.addParam("boxSize", params.IntParam, default=0, label="Box size (px)",
                      help="Box size of the particles. 0 takes it from the .box files' "
                           "width column.")

    def getObjLabel(self):
        """The run's label; where it is pyworkflow's default, the coordinate folder's name.

        Several imports (one per picker) would otherwise all read "deepconsensus_plugin -
        import picker coordinates (n)": pyworkflow 3.11 drops the labels a workflow
        template gives (``Project.loadProtocols`` passes them to a constructor that
        ignores them) and labels new runs by class.  The folder ("crYOLO", "topaz")
        tells them apart; a label the user sets is kept.
        """
        label = super().getObjLabel()
        folder = self.filesPath.get() if hasattr(self, "filesPath") else None
        if folder and (not label or re.fullmatch(r"%s( \(\d*\))?" % re.escape(
                self.getClassLabel()), label.strip())):
            return os.path.basename(os.path.normpath(folder))
        return label

    def _insertAllSteps(self):
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def createOutputStep(self):
        mics = self.getInputMicrographs()
        byName = {convert.micrographKey(mic): mic.clone() for mic in mics.iterItems()}
        picks = read_coordinate_folder(self.filesPath.get(), self.filesPattern.get())
        match = match_micrographs(picks, byName, file_suffixes=True)
        if not match.picks.micrographs:
            raise ValueError("No coordinate file matches a micrograph of %s by name "
                             "(files: %s; micrographs e.g. %s)"
                             % (self.getObjectTag(mics), ", ".join(match.unmatched[:5]),
                                ", ".join(sorted(byName)[:5])))
        if match.unmatched:
            self.warning("%d files match no micrograph name and were ignored: %s"
                         % (len(match.unmatched), ", ".join(match.unmatched)))
        coordSet = self._createSetOfCoordinates(self.getInputMicrographsPointer())
        coordSet.setBoxSize(self._boxSize(picks.box_size))
        coord = Coordinate()
        for name, micPicks in match.picks.micrographs.items():
            for x, y in np.rint(micPicks.xy).astype(int):
                coord.cleanObjId()
                coord.setMicrograph(byName[name])
                coord.setPosition(int(x), int(y))
                coordSet.append(coord)
        self._defineOutputs(outputCoordinates=coordSet)
        self._defineSourceRelation(self.getInputMicrographsPointer(), coordSet)

    def _files(self):
        return sorted(glob.glob(os.path.join(self.filesPath.get(), self.filesPattern.get())))

    def _boxSize(self, fromFiles):
        """The form's box size, else the .box files' median width."""
        if self.boxSize.get():
            return self.boxSize.get()
        if fromFiles:
            return int(round(fromFiles))
        raise ValueError("No box size: set 'Box size' (the files give none).")

    def _validate(self):
        errors = []
        files = self._files() if self.filesPath.get() else []
        if not files:
            errors.append("No file matches %s in %s."
                          % (self.filesPattern.get(), self.filesPath.get()))
        elif not self.boxSize.get() and not any(f.lower().endswith(".box") for f in files):
            errors.append("Set the box size: only .box files carry one.")
        return errors
