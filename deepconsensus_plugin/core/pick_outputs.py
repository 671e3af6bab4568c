"""Files RELION users import: particle STAR files, per-micrograph coordinate STAR files, a CSV.

* :func:`write_particle_star` writes ``retained.star`` / ``pruned.star`` as a
  RELION 3.1+ particle STAR file (``data_optics`` + ``data_particles``).
* :func:`write_coordinate_stars` writes one coordinate STAR file per
  micrograph plus the list RELION 4's Extract job takes as "Input
  coordinates", and (when given the micrographs STAR file) RELION 3.1's
  ``coords_suffix_<suffix>.star``.
* :func:`write_picks_csv` writes every pick with its score, votes and verdict.

RELION conventions followed (read from RELION's source: ``src/preprocessing.cpp``,
``src/metadata_table.cpp``, ``src/jaz/single_particle/obs_model.cpp``):

* RELION 3.1+ loads a particle file only if ``data_optics`` has
  ``_rlnVoltage``, ``_rlnSphericalAberration`` and one of
  ``_rlnImagePixelSize``, ``_rlnMicrographPixelSize`` or
  ``_rlnMicrographOriginalPixelSize`` (``ObservationModel``), hence
  :class:`~.pick_inputs.Optics`.

* Extract (3.1) finds a micrograph's coordinates at ``<coord_dir>/<path>_
  <suffix>.star`` where ``<path>`` is the micrograph name without extension
  and without its leading ``<JobType>/jobNNN/`` (``getCoordinateFileName``);
  Extract (4) reads the ``data_coordinate_files`` table mapping
  ``_rlnMicrographName`` to ``_rlnMicrographCoordinates`` and looks the
  micrographs up by the exact name string, so names must be written as the
  micrographs STAR file spells them.
* A label RELION does not know is kept, with a warning ("will ignore (but
  maintain) values for the unknown label"), so the votes go in
  :data:`VOTES_LABEL`, a label without RELION's ``rln`` prefix that no RELION
  label can clash with.
* RELION ends a loop at the first empty line, so rows are written without any.

Everything is written through ``starfile`` to a temporary file in the target
folder and moved into place with ``os.replace``, so a reader never sees a
half-written file.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .coordinate_files import PathLike
from .pick_inputs import Optics

#: STAR label of the number of pickers that picked a particle (kept by RELION as unknown).
VOTES_LABEL = 'dcVotes'

#: RELION's decomposePipelineFileName: everything up to the folder after the first '/jobNNN'.
_PIPELINE_PREFIX = re.compile(r'^.+?/job\d{3}[^/]*/')


@dataclass(frozen=True, eq=False)
class ScoredPicks:
    """Deep Consensus' verdict on the picks of one micrograph.

    ``micrograph`` is the micrograph as RELION should see it (the
    ``_rlnMicrographName`` of the user's micrographs STAR file, or the path
    given); ``xy`` an ``(n, 2)`` array of centres in its pixels (x = column,
    y = row); ``scores`` the network's scores, ``votes`` how many pickers
    picked each particle and ``kept`` whether it is retained, all ``(n,)``.
    """

    micrograph: str
    xy: np.ndarray
    scores: np.ndarray
    votes: np.ndarray
    kept: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.xy)
        if np.shape(self.xy) != (n, 2):
            raise ValueError(f'{self.micrograph}: xy must be (n, 2), got {np.shape(self.xy)}')
        for name in ('scores', 'votes', 'kept'):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f'{self.micrograph}: {name} must have shape ({n},), got '
                                 f'{np.shape(getattr(self, name))}')

    def subset(self, kept: bool) -> ScoredPicks:
        """The retained (``kept=True``) or pruned picks only."""
        mask = np.asarray(self.kept, dtype=bool) == kept
        return ScoredPicks(self.micrograph, self.xy[mask], self.scores[mask],
                           self.votes[mask], self.kept[mask])


@dataclass(frozen=True)
class CoordinateStarFiles:
    """What :func:`write_coordinate_stars` wrote: the list file, the per-micrograph files, and
    RELION 3.1's suffix file (None unless a micrographs STAR file was given)."""

    coordinate_list: Path
    coordinate_files: tuple[Path, ...]
    suffix_file: Path | None


def write_particle_star(path: PathLike, picks: Sequence[ScoredPicks], *, optics: Optics,
                        box_size: int) -> None:
    """Write a RELION 3.1+ particle STAR file of ``picks`` (e.g. ``retained.star``).

    ``data_optics`` holds one group: ``_rlnOpticsGroup`` 1,
    ``_rlnOpticsGroupName``, ``_rlnMicrographPixelSize`` (Å, the
    micrographs' pixel size, in which the coordinates are), ``_rlnVoltage``,
    ``_rlnSphericalAberration`` (both required by RELION to load the file),
    ``_rlnAmplitudeContrast`` when known, ``_rlnImageSize`` (the box in
    pixels) and ``_rlnImageDimensionality`` 2.  ``data_particles`` has
    ``_rlnMicrographName``, ``_rlnCoordinateX/Y``, ``_rlnOpticsGroup``, the
    score in ``_rlnAutopickFigureOfMerit`` and the votes in
    :data:`VOTES_LABEL`.
    """
    import pandas as pd

    if not box_size > 0:
        raise ValueError(f'{os.fspath(path)}: box size must be positive, got {box_size}')
    group = {
        'rlnOpticsGroup': [1],
        'rlnOpticsGroupName': [optics.name],
        'rlnMicrographPixelSize': [float(optics.pixel_size)],
        'rlnVoltage': [float(optics.voltage)],
        'rlnSphericalAberration': [float(optics.spherical_aberration)],
    }
    if optics.amplitude_contrast is not None:
        group['rlnAmplitudeContrast'] = [float(optics.amplitude_contrast)]
    group['rlnImageSize'] = [int(box_size)]
    group['rlnImageDimensionality'] = [2]
    particles = _coordinate_frame(picks, with_micrograph=True)
    particles.insert(3, 'rlnOpticsGroup', np.ones(len(particles), dtype=np.int64))
    _write_star(path, {'optics': pd.DataFrame(group), 'particles': particles})


def write_coordinate_stars(directory: PathLike, picks: Sequence[ScoredPicks], *,
                           suffix: str = 'deepconsensus',
                           micrographs_star: str | None = None) -> CoordinateStarFiles:
    """Write per-micrograph coordinate STAR files in the layout RELION's Extract job imports.

    For each micrograph, ``<directory>/<path>_<suffix>.star`` (``<path>``: the
    micrograph name without extension and without a leading
    ``<JobType>/jobNNN/``) with ``_rlnCoordinateX/Y``,
    ``_rlnAutopickFigureOfMerit`` and :data:`VOTES_LABEL`; a micrograph with
    no picks still gets its (empty) file, as RELION's pickers write.  Then:

    * ``<directory>/<suffix>.star``, RELION 4's list: ``data_coordinate_files``
      with ``_rlnMicrographName`` and ``_rlnMicrographCoordinates``
      (``directory`` joined with each file, so give ``directory`` relative to
      the RELION project when it lies inside it);
    * with ``micrographs_star`` (the micrographs STAR file the coordinates
      belong to), ``<directory>/coords_suffix_<suffix>.star`` holding that
      name, which RELION 3.1's Extract takes as "Input coordinates".
    """
    import pandas as pd

    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', suffix):
        raise ValueError(f'coordinate file suffix {suffix!r}: use letters, digits, _ . -')
    root = Path(directory)
    files: list[Path] = []
    seen: set[Path] = set()
    for mic in picks:
        # RELION concatenates <coord_dir> and the rest of the name, so an absolute
        # name lands inside the directory too.
        relative = Path(_PIPELINE_PREFIX.sub('', mic.micrograph.replace('\\', '/')).lstrip('/'))
        file = root / relative.parent / f'{relative.stem}_{suffix}.star'
        if file in seen:
            raise ValueError(f'micrographs {mic.micrograph!r} and another one share the '
                             f'coordinate file {file}')
        _write_star(file, {'': _coordinate_frame([mic], with_micrograph=False)})
        files.append(file)
        seen.add(file)
    listing = pd.DataFrame({'rlnMicrographName': [mic.micrograph for mic in picks],
                            'rlnMicrographCoordinates': [os.fspath(f) for f in files]})
    coordinate_list = root / f'{suffix}.star'
    _write_star(coordinate_list, {'coordinate_files': listing})
    suffix_file = None
    if micrographs_star is not None:
        suffix_file = root / f'coords_suffix_{suffix}.star'
        _write_atomically(suffix_file, f'{micrographs_star}\n')
    return CoordinateStarFiles(coordinate_list, tuple(files), suffix_file)


def write_picks_csv(path: PathLike, picks: Sequence[ScoredPicks]) -> None:
    """Write every pick as ``micrograph,x,y,score,votes,kept`` (kept is 1 or 0)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['micrograph', 'x', 'y', 'score', 'votes', 'kept'])
    for mic in picks:
        for (x, y), score, votes, kept in zip(mic.xy, mic.scores, mic.votes, mic.kept):
            writer.writerow([mic.micrograph, f'{x:.2f}', f'{y:.2f}', f'{score:.6g}',
                             int(votes), int(bool(kept))])
    _write_atomically(path, buffer.getvalue())


def _coordinate_frame(picks: Sequence[ScoredPicks], with_micrograph: bool):
    """The coordinate columns of ``picks`` as a DataFrame, in RELION's label order."""
    import pandas as pd

    xy = np.concatenate([np.asarray(m.xy, dtype=np.float64).reshape(-1, 2) for m in picks]
                        or [np.empty((0, 2))])
    columns = {}
    if with_micrograph:
        columns['rlnMicrographName'] = [m.micrograph for m in picks for _ in range(len(m.xy))]
    columns['rlnCoordinateX'] = xy[:, 0]
    columns['rlnCoordinateY'] = xy[:, 1]
    columns['rlnAutopickFigureOfMerit'] = np.concatenate(
        [np.asarray(m.scores, dtype=np.float64) for m in picks] or [np.empty(0)])
    columns[VOTES_LABEL] = np.concatenate(
        [np.asarray(m.votes, dtype=np.int64) for m in picks] or [np.empty(0, dtype=np.int64)])
    return pd.DataFrame(columns)


def _write_star(path: PathLike, blocks: dict) -> None:
    """Write STAR ``blocks`` (name -> DataFrame) through starfile, atomically."""
    import starfile

    _write_atomically(path, starfile.to_string(blocks, float_format='%.6f', sep='\t'))


def _write_atomically(path: PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and move it into place."""
    with atomic_path(path) as temporary, \
            open(temporary, 'w', encoding='utf-8', newline='\n') as stream:
        stream.write(text)
