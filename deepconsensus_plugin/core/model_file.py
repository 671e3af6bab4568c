"""A trained classifier as a self-describing file, and the check that it fits a new run.

A network trained on one data collection can score (or be fine-tuned on) the
next collection of the same sample, but only if it sees the same kind of
boxes: the same network input size, the same contrast convention, the same
architecture, and the same field of view in Å (box size times pixel size; the
box is Fourier-downsampled to the network size, so a box of another physical
size shows the particle at another scale; a run that reuses a network works in
boxes of its field, :func:`.box_policy.network_box`, unless a particle diameter
chooses others).  Each model a run saves carries
these facts inside its Keras file, as an extra ``deepconsensus.json`` member
of the ``.keras`` zip archive (Keras ignores members it does not know), so a
single file is all a user copies between projects, and reading them back
needs neither TensorFlow nor the run folder that made it.

:func:`compatibility_errors` is the one check both front ends use: Scipion's
``_validate`` and the ``deepconsensus`` command refuse a model whose facts
differ from the run's, with a message that names both values.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass
from typing import List, Optional

from .atomic import atomic_path

MODEL_SCHEMA = 1
"""Version of the facts' layout; a model recording another one is refused."""
SPEC_MEMBER = "deepconsensus.json"
BOX_EXTENT_TOLERANCE = 0.02
"""Fields of view (box x pixel size) within 2% of each other show the particle at the same
scale to within half a pixel of a 32-px network box."""


class ModelFileError(ValueError):
    """A model file that cannot be reused: missing, not a Deep Consensus model, or unfit."""


@dataclass(frozen=True)
class ModelSpec:
    """What reusing a model needs to know about the boxes it was trained on."""

    architecture: str
    network_size: int
    invert: bool
    box: int
    """Box size in micrograph pixels."""
    sampling_rate: Optional[float]
    """Micrograph pixel size in Å (None: unknown, then boxes are compared in pixels)."""
    schema: int = MODEL_SCHEMA

    @property
    def box_extent(self) -> str:
        """The box as a user reads it: '90 px at 1.34 A/px (121 A)'."""
        if self.sampling_rate:
            return "%d px at %.3g A/px (%.0f A)" % (self.box, self.sampling_rate,
                                                    self.box * self.sampling_rate)
        return "%d px (pixel size unknown)" % self.box


def write_spec(model_path: str, spec: ModelSpec) -> None:
    """Record ``spec`` inside the Keras file ``model_path`` (replacing an earlier record)."""
    with zipfile.ZipFile(model_path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()
                   if name != SPEC_MEMBER}
    with atomic_path(model_path, ".keras") as temporary, \
            zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(SPEC_MEMBER, json.dumps(asdict(spec), indent=1))


def read_spec(model_path: str) -> ModelSpec:
    """The facts recorded in ``model_path``; a :class:`ModelFileError` naming the file when it
    is missing, not a Keras file, not made by Deep Consensus or of another schema."""
    if not os.path.isfile(model_path):
        raise ModelFileError("model file %s does not exist" % model_path)
    try:
        with zipfile.ZipFile(model_path) as archive:
            if SPEC_MEMBER not in archive.namelist():
                raise ModelFileError("%s is not a Deep Consensus model (a .keras file saved by "
                                     "a deep-consensus run records how it was trained)"
                                     % model_path)
            data = json.loads(archive.read(SPEC_MEMBER))
    except zipfile.BadZipFile as error:
        raise ModelFileError("%s is not a Keras model file (%s)" % (model_path, error)) from error
    if data.get("schema") != MODEL_SCHEMA:
        raise ModelFileError("%s records its training in schema %s; this version of Deep "
                             "Consensus reads schema %d" % (model_path, data.get("schema"),
                                                            MODEL_SCHEMA))
    try:
        return ModelSpec(**data)
    except TypeError as error:
        raise ModelFileError("%s: the training record does not match schema %d (%s)"
                             % (model_path, MODEL_SCHEMA, error)) from error


def compatibility_errors(model: ModelSpec, run: ModelSpec, model_name: str) -> List[str]:
    """One message per fact in which ``model`` (named ``model_name`` in the messages) differs
    from the ``run`` that wants to reuse it; empty when it fits."""
    errors = []
    if model.network_size != run.network_size:
        errors.append("%s was trained at a network box size of %d px; this run's is %d px: "
                      "set the network box size to %d." % (model_name, model.network_size,
                                                           run.network_size, model.network_size))
    if model.invert != run.invert:
        errors.append("%s was trained on %s contrast; this run uses %s contrast: set "
                      "'invert contrast' to %s." % (model_name, _contrast(model.invert),
                                                    _contrast(run.invert),
                                                    "yes" if model.invert else "no"))
    if model.architecture != run.architecture:
        errors.append("%s is a '%s' network; this run's network is '%s': choose '%s'."
                      % (model_name, model.architecture, run.architecture, model.architecture))
    if not same_extent(model, run):
        errors.append("%s was trained on boxes of %s; this run's boxes are %s: the particle "
                      "would appear at another scale."
                      % (model_name, model.box_extent, run.box_extent))
    return errors


def _contrast(invert: bool) -> str:
    return "inverted" if invert else "original"


def _extent(model: ModelSpec, run: ModelSpec):
    """Both boxes in Å when both pixel sizes are known, else both in pixels."""
    if model.sampling_rate and run.sampling_rate:
        return model.box * model.sampling_rate, run.box * run.sampling_rate
    return float(model.box), float(run.box)


def same_extent(model: ModelSpec, run: ModelSpec) -> bool:
    """Whether both boxes show the same field (within :data:`BOX_EXTENT_TOLERANCE`)."""
    ours, theirs = _extent(model, run)
    return abs(ours - theirs) <= BOX_EXTENT_TOLERANCE * max(ours, theirs)
