"""Picks and micrographs as RELION and cryoSPARC users have them, grouped per micrograph.

Each reader returns a :class:`PickSet`: micrograph name -> :class:`MicrographPicks`
with particle centres in pixels of that micrograph (x = column, y = row of
``data[row, col]``, as in :mod:`.coordinate_files`), plus the pixel size and
box size when the input carries them.  Micrograph names are keys made by
:func:`micrograph_key` (the file name without folder and extension), so picks
from different programs meet on the same names; :func:`match_micrographs`
maps them onto the micrographs actually given, tolerating the prefixes and
suffixes RELION and cryoSPARC add.

Inputs (:func:`read_picks` tells them apart):

* :func:`read_relion_particles`: a RELION particle STAR file or a coordinate
  STAR file listing many micrographs (``_rlnMicrographName``), RELION 3.0
  (one ``data_`` block) or 3.1+/4 (``data_optics`` + ``data_particles``);
* :func:`read_relion_micrographs`: a RELION ``micrographs.star`` (motion
  correction or CTF estimation output);
* :func:`read_relion_coordinate_list`: a RELION 4 ``autopick.star`` /
  ``manualpick.star`` (``data_coordinate_files``: ``_rlnMicrographName`` ->
  ``_rlnMicrographCoordinates``);
* :func:`read_cryosparc_particles`: a cryoSPARC ``.cs`` file of particles;
* :func:`read_coordinate_folder`: one .box/.star/.csv/.pos file per micrograph.

Errors are :class:`~.coordinate_files.CoordinateFileError` naming the file and
the line or field at fault.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coordinate_files import (SUPPORTED_EXTENSIONS, CoordinateFileError, PathLike, StarTable,
                               find_star_table, read_coordinates, read_star_tables)

_MICROGRAPH_NAME = 'rlnMicrographName'
_COORDINATES_FILE = 'rlnMicrographCoordinates'
_X, _Y, _SCORE = 'rlnCoordinateX', 'rlnCoordinateY', 'rlnAutopickFigureOfMerit'
_IMAGE_SIZE, _IMAGE_PIXEL_SIZE = 'rlnImageSize', 'rlnImagePixelSize'
_MICROGRAPH_PIXEL_SIZE = 'rlnMicrographPixelSize'
_ORIGINAL_PIXEL_SIZE = 'rlnMicrographOriginalPixelSize'
_DETECTOR_PIXEL_SIZE, _MAGNIFICATION = 'rlnDetectorPixelSize', 'rlnMagnification'
_VOLTAGE, _CS, _AMPLITUDE_CONTRAST = 'rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast'
_OPTICS_GROUP_NAME = 'rlnOpticsGroupName'

_CS_PATH = 'location/micrograph_path'
_CS_SHAPE = 'location/micrograph_shape'
_CS_X, _CS_Y = 'location/center_x_frac', 'location/center_y_frac'
_CS_PIXEL_SIZE = 'location/micrograph_psize_A'
_CS_SCORE = 'pick_stats/ncc_score'
_CS_BOX, _CS_BOX_PIXEL_SIZE = 'blob/shape', 'blob/psize_A'
_CS_VOLTAGE, _CS_CS, _CS_AMPLITUDE_CONTRAST = 'ctf/accel_kv', 'ctf/cs_mm', 'ctf/amp_contrast'

#: cryoSPARC names every imported file ``<uid>_<name>`` with a 21-digit,
#: zero-padded uid (e.g. ``008578565574161745010_14sep05c_00024sq.mrc``).
_CRYOSPARC_UID = re.compile(r'^\d{15,21}_')
#: Suffixes cryoSPARC's Patch Motion Correction appends to a movie's name.
_CRYOSPARC_MOTION_SUFFIXES = ('_patch_aligned_doseweighted', '_patch_aligned')


@dataclass(frozen=True, eq=False)
class MicrographPicks:
    """The picks of one micrograph.

    ``xy`` is an ``(n, 2)`` float64 array of centres in pixels of this
    micrograph (x = column, y = row); ``scores`` an ``(n,)`` float64 array of
    the picker's scores, or None when the input has none.  ``path`` is the
    micrograph as the input spells it (RELION's ``_rlnMicrographName``,
    cryoSPARC's ``location/micrograph_path``), or None when it names none.
    """

    name: str
    xy: np.ndarray
    scores: np.ndarray | None
    path: str | None = None


@dataclass(frozen=True)
class Optics:
    """What RELION needs to know about the optics of a set of micrographs.

    RELION 3.1+ refuses a particle STAR file whose ``data_optics`` lacks
    ``_rlnVoltage``, ``_rlnSphericalAberration`` or a pixel size
    (``ObservationModel`` in RELION's ``src/jaz/single_particle/obs_model.cpp``:
    "not all necessary variables defined in _optics.star file"), so the
    writers take them from here.  ``pixel_size`` is the micrographs' (Å),
    ``voltage`` in kV, ``spherical_aberration`` in mm; ``amplitude_contrast``
    is None when unknown.
    """

    pixel_size: float
    voltage: float
    spherical_aberration: float
    amplitude_contrast: float | None = None
    name: str = 'opticsGroup1'

    def __post_init__(self) -> None:
        if not (self.pixel_size > 0 and self.voltage > 0 and self.spherical_aberration >= 0):
            raise ValueError(f'optics {self.name}: pixel size and voltage must be positive and '
                             f'Cs not negative, got {self.pixel_size} A, {self.voltage} kV, '
                             f'{self.spherical_aberration} mm')
        if self.amplitude_contrast is not None and not 0 <= self.amplitude_contrast < 1:
            raise ValueError(f'optics {self.name}: amplitude contrast must be in [0, 1), got '
                             f'{self.amplitude_contrast}')


@dataclass(frozen=True, eq=False)
class PickSet:
    """One picker's picks on many micrographs, read from one file or folder.

    ``micrographs`` maps a micrograph name to its picks.  ``pixel_size`` (Å
    per pixel of the micrographs the coordinates refer to) and ``box_size``
    (pixels of those micrographs) are None when the input does not carry
    them; ``pixel_size_source`` says which label or field gave the pixel size,
    because RELION's particle files often carry only a related one (see
    :func:`read_relion_particles`) and a user should be told which was used.
    ``optics`` is set when the input also gives the voltage and spherical
    aberration (a RELION optics table, cryoSPARC's ``ctf/`` fields).
    """

    source: str
    micrographs: dict[str, MicrographPicks]
    pixel_size: float | None = None
    box_size: float | None = None
    pixel_size_source: str | None = None
    optics: Optics | None = None

    @property
    def n_picks(self) -> int:
        """Number of picks over all micrographs."""
        return sum(len(picks.xy) for picks in self.micrographs.values())


@dataclass(frozen=True)
class ListedMicrograph:
    """A micrograph listed by a micrographs STAR file: its name key and its path as written."""

    name: str
    path: str


@dataclass(frozen=True)
class MicrographList:
    """The micrographs of a RELION ``micrographs.star``, their pixel size (Å) and optics.

    ``pixel_size`` is None when the file has none; ``optics`` is None unless
    the file gives the pixel size, voltage and spherical aberration.
    """

    source: str
    micrographs: tuple[ListedMicrograph, ...]
    pixel_size: float | None
    optics: Optics | None = None


@dataclass(frozen=True)
class PickMatch:
    """Picks renamed onto given micrograph names, and the pick names that matched none."""

    picks: PickSet
    unmatched: tuple[str, ...]


def micrograph_key(path: str) -> str:
    """The name a micrograph is known by: its file name without folder and last extension.

    ``MotionCorr/job002/Movies/mic_001.mrc`` -> ``mic_001``.  Both ``/`` and
    ``\\`` separate folders, since the files may come from another system.
    """
    base = re.split(r'[/\\]', path)[-1]
    return os.path.splitext(base)[0] or base


def strip_cryosparc_name(name: str) -> str:
    """``name`` without cryoSPARC's uid prefix and Patch Motion suffix, if it has them.

    ``008578565574161745010_14sep05c_00003es_patch_aligned_doseweighted`` ->
    ``14sep05c_00003es``: cryoSPARC prefixes every imported file with the
    uid it gives it, and Patch Motion Correction names its micrographs after
    the movie plus ``_patch_aligned[_doseweighted]``.
    """
    name = _CRYOSPARC_UID.sub('', name, count=1)
    for suffix in _CRYOSPARC_MOTION_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name


def match_micrographs(picks: PickSet, micrograph_names: Iterable[str], *,
                      file_suffixes: bool = False) -> PickMatch:
    """Rename ``picks`` onto ``micrograph_names``, the names of the micrographs to prune.

    A pick name matches a micrograph name when, in this order of preference:

    1. they are equal;
    2. they are equal after :func:`strip_cryosparc_name` on both (cryoSPARC's
       uid prefix and Patch Motion suffix);
    3. with ``file_suffixes`` (picks named after per-micrograph files, as by
       :func:`read_coordinate_folder`), the pick name is a micrograph name
       plus ``_<suffix>``: RELION names coordinate files
       ``<micrograph>_<suffix>.star`` (``_autopick``, ``_manualpick``); the
       longest such micrograph name wins.  It is off for names read from
       inside a file, where ``mic_2`` is another micrograph, not ``mic``.

    Two pick names landing on one micrograph is ambiguous and raises
    :class:`CoordinateFileError` naming both.
    """
    names = list(micrograph_names)
    exact = set(names)
    stripped: dict[str, list[str]] = {}
    for name in names:
        stripped.setdefault(strip_cryosparc_name(name), []).append(name)

    renamed: dict[str, MicrographPicks] = {}
    origin: dict[str, str] = {}
    unmatched = []
    for pick_name, micrograph_picks in picks.micrographs.items():
        target = _match_one(pick_name, exact, stripped, file_suffixes)
        if target is None:
            unmatched.append(pick_name)
            continue
        if target in renamed:
            raise CoordinateFileError(f'{picks.source}: picks of {origin[target]!r} and '
                                      f'{pick_name!r} both match micrograph {target!r}')
        origin[target] = pick_name
        renamed[target] = MicrographPicks(target, micrograph_picks.xy, micrograph_picks.scores,
                                          micrograph_picks.path)
    matched = PickSet(picks.source, renamed, picks.pixel_size, picks.box_size,
                      picks.pixel_size_source)
    return PickMatch(matched, tuple(unmatched))


def _match_one(pick_name: str, exact: set, stripped: Mapping[str, list],
               file_suffixes: bool) -> str | None:
    """The micrograph name ``pick_name`` matches by the rules of :func:`match_micrographs`."""
    if pick_name in exact:
        return pick_name
    candidates = stripped.get(strip_cryosparc_name(pick_name), [])
    if len(candidates) == 1:
        return candidates[0]
    if file_suffixes:
        cut = pick_name.rfind('_')
        while cut > 0:  # longest prefix first
            if pick_name[:cut] in exact:
                return pick_name[:cut]
            cut = pick_name.rfind('_', 0, cut)
    return None


def read_picks(path: PathLike, *, pattern: str = '*', project_dir: PathLike | None = None,
               flip_y: bool = False) -> PickSet:
    """Read one picker's picks from whatever form a RELION or cryoSPARC user has them in.

    * a folder: one coordinate file per micrograph (:func:`read_coordinate_folder`
      with ``pattern``);
    * a ``.cs`` file: cryoSPARC particles (:func:`read_cryosparc_particles`
      with ``flip_y``);
    * a ``.star`` file: a RELION 4 coordinate list when it has
      ``_rlnMicrographCoordinates`` (:func:`read_relion_coordinate_list` with
      ``project_dir``), else a particle or coordinate STAR file listing
      micrographs (:func:`read_relion_particles`).  One micrograph's
      coordinate file (no ``_rlnMicrographName``) is an error that says to
      give its folder instead.
    """
    if Path(path).is_dir():
        return read_coordinate_folder(path, pattern)
    extension = Path(path).suffix.lower()
    if extension == '.cs':
        return read_cryosparc_particles(path, flip_y=flip_y)
    if extension != '.star':
        raise CoordinateFileError(f'{os.fspath(path)}: not a folder, .star or .cs file; picks '
                                  'come as a folder of per-micrograph files, a RELION STAR file '
                                  'or a cryoSPARC .cs file')
    tables = read_star_tables(path)
    if any({_MICROGRAPH_NAME, _COORDINATES_FILE} <= set(t.columns) for t in tables):
        return _coordinate_list_from_tables(path, tables, project_dir)
    if not any(_MICROGRAPH_NAME in t.columns for t in tables) and any(
            {_X, _Y} <= set(t.columns) for t in tables):
        raise CoordinateFileError(f'{os.fspath(path)}: the coordinates of one micrograph (no '
                                  '_rlnMicrographName); give the folder of such files instead')
    return _particles_from_tables(path, tables)


# ----------------------------------------------------------------------- RELION

def read_relion_particles(path: PathLike) -> PickSet:
    """Read a RELION particle or coordinate STAR file that lists many micrographs.

    The particle table is the first one with ``_rlnMicrographName``,
    ``_rlnCoordinateX`` and ``_rlnCoordinateY`` (RELION 3.0's single
    ``data_`` block or 3.1+'s ``data_particles``); ``_rlnAutopickFigureOfMerit``
    is the score when present.  Particles are grouped by micrograph in file
    order.  Refined origin shifts (``_rlnOriginXAngst``) are not applied: the
    coordinates are the picks as extracted.

    Pixel size of the micrographs, first found of (RELION's conventions):

    * ``_rlnMicrographPixelSize`` in ``data_optics`` (the micrographs' pixel
      size, written by motion correction and picking);
    * ``_rlnMicrographOriginalPixelSize`` in ``data_optics`` (the movies'
      pixel size; equal to the micrographs' unless motion correction binned);
    * ``_rlnImagePixelSize`` in ``data_optics`` (the extracted particles'
      pixel size; equal to the micrographs' unless extraction rescaled);
    * RELION 3.0: ``10000 * _rlnDetectorPixelSize / _rlnMagnification`` in
      the particle rows.

    ``pixel_size_source`` names the label used.  The box size is
    ``_rlnImageSize`` of ``data_optics`` converted to micrograph pixels
    (times ``_rlnImagePixelSize / pixel_size`` when both are known).  Optics
    groups must agree on both, since one run uses one box.
    """
    return _particles_from_tables(path, read_star_tables(path))


def _particles_from_tables(path: PathLike, tables: list[StarTable]) -> PickSet:
    """:func:`read_relion_particles` on a file's tables."""
    particles = find_star_table(path, tables, (_MICROGRAPH_NAME, _X, _Y),
                                'a particle STAR file lists micrographs in _rlnMicrographName; '
                                'for one coordinate file per micrograph read the folder')
    names = particles.texts(_MICROGRAPH_NAME)
    xy = particles.numbers(_X, _Y)
    scores = particles.numbers(_SCORE)[:, 0] if _SCORE in particles.columns else None
    optics = _optics_table(tables)
    pixel_size, pixel_size_source = _relion_pixel_size(optics, particles)
    box_size = _relion_box_size(optics, pixel_size)
    optics_source = optics if optics is not None else particles  # RELION 3.0: in the rows
    return PickSet(os.fspath(path), _group_by_micrograph(names, xy, scores), pixel_size,
                   box_size, pixel_size_source, _relion_optics(optics_source, pixel_size))


def read_relion_micrographs(path: PathLike) -> MicrographList:
    """Read a RELION ``micrographs.star``: the micrographs, their pixel size and optics.

    The micrograph table is the first with ``_rlnMicrographName``; the pixel
    size is ``_rlnMicrographPixelSize`` of ``data_optics`` (RELION 3.1+), or
    ``10000 * _rlnDetectorPixelSize / _rlnMagnification`` in the rows (3.0),
    or None.  ``_rlnVoltage``, ``_rlnSphericalAberration`` and
    ``_rlnAmplitudeContrast`` come from the same table (``data_optics``, or
    the rows in 3.0), for the :class:`Optics` of the outputs.  Two
    micrographs with the same name key would make the picks' matching
    ambiguous and are rejected.
    """
    tables = read_star_tables(path)
    table = find_star_table(path, tables, (_MICROGRAPH_NAME,),
                            'a micrographs STAR file lists them in _rlnMicrographName')
    paths = table.texts(_MICROGRAPH_NAME)
    seen: dict[str, int] = {}
    for row, mic_path in enumerate(paths):
        key = micrograph_key(mic_path)
        if key in seen:
            raise table.error(f'micrograph name {key!r} also on line '
                              f'{table.line_numbers[seen[key]]}', row)
        seen[key] = row
    optics = _optics_table(tables)
    if optics is not None and _MICROGRAPH_PIXEL_SIZE in optics.columns:
        pixel_size = _one_value(optics, _MICROGRAPH_PIXEL_SIZE)
    else:
        pixel_size = _relion30_pixel_size(table)
    micrographs = tuple(ListedMicrograph(micrograph_key(p), p) for p in paths)
    return MicrographList(os.fspath(path), micrographs, pixel_size,
                          _relion_optics(optics if optics is not None else table, pixel_size))


def _relion_optics(table: StarTable, pixel_size: float | None) -> Optics | None:
    """The :class:`Optics` in ``table``, or None when it lacks the pixel size, voltage or Cs."""
    if pixel_size is None or not {_VOLTAGE, _CS} <= set(table.columns):
        return None
    contrast = (_one_value(table, _AMPLITUDE_CONTRAST, positive=False)
                if _AMPLITUDE_CONTRAST in table.columns else None)
    name = (table.texts(_OPTICS_GROUP_NAME)[0] if _OPTICS_GROUP_NAME in table.columns
            else Optics.name)
    try:
        return Optics(pixel_size, _one_value(table, _VOLTAGE),
                      _one_value(table, _CS, positive=False), contrast, name)
    except ValueError as exc:
        raise table.error(str(exc)) from None


def read_relion_coordinate_list(path: PathLike, project_dir: PathLike | None = None) -> PickSet:
    """Read a RELION 4 coordinate list (``autopick.star``) and the files it names.

    The list's table (``data_coordinate_files``) maps ``_rlnMicrographName``
    to ``_rlnMicrographCoordinates``, a per-micrograph coordinate file read
    by :func:`~.coordinate_files.read_coordinates`.  RELION writes both paths
    relative to its project directory; ``project_dir`` defaults to the
    folder above the job folder holding the list (``<project>/AutoPick/job006/
    autopick.star``), or the list's own folder when that is not a job folder.
    A coordinate file that does not exist is an error naming the list's line.
    """
    return _coordinate_list_from_tables(path, read_star_tables(path), project_dir)


def _coordinate_list_from_tables(path: PathLike, tables: list[StarTable],
                                 project_dir: PathLike | None) -> PickSet:
    """:func:`read_relion_coordinate_list` on a file's tables."""
    table = find_star_table(path, tables, (_MICROGRAPH_NAME, _COORDINATES_FILE),
                            'a RELION coordinate list maps micrographs to coordinate files')
    root = Path(project_dir) if project_dir is not None else _relion_project_dir(Path(path))
    micrographs: dict[str, MicrographPicks] = {}
    for row, (mic_path, coord_path) in enumerate(zip(table.texts(_MICROGRAPH_NAME),
                                                     table.texts(_COORDINATES_FILE))):
        resolved = root / coord_path
        if not resolved.is_file():
            raise table.error(f'coordinate file {coord_path} not found (looked for {resolved})',
                              row)
        key = micrograph_key(mic_path)
        if key in micrographs:
            raise table.error(f'micrograph {key!r} listed twice', row)
        coords = read_coordinates(resolved)
        micrographs[key] = MicrographPicks(key, coords.xy, coords.scores, mic_path)
    return PickSet(os.fspath(path), micrographs)


def _relion_project_dir(list_path: Path) -> Path:
    """``<project>`` for a list at ``<project>/<JobType>/jobNNN/<name>.star``, else its folder."""
    folder = list_path.resolve().parent
    if re.fullmatch(r'job\d+', folder.name):
        return folder.parent.parent
    return folder


def _optics_table(tables: list[StarTable]) -> StarTable | None:
    """RELION 3.1+'s ``data_optics`` table, or None (RELION 3.0 and coordinate files have none)."""
    return next((table for table in tables if table.block == 'optics'), None)


def _one_value(table: StarTable, name: str, positive: bool = True) -> float:
    """The single value of column ``name`` over all rows (optics groups), positive if asked."""
    values = table.numbers(name)[:, 0]
    if len(values) == 0:
        raise table.error(f'data_{table.block} has no rows for _{name}')
    bad = ~(values > 0) if positive else np.zeros(len(values), dtype=bool)
    if bad.any():
        row = int(np.argmax(bad))
        raise table.error(f'_{name} must be positive, got {values[row]:g}', row)
    differs = np.abs(values - values[0]) > 1e-6 * np.abs(values).max()
    if differs.any():
        row = int(np.argmax(differs))
        raise table.error(f'_{name} is {values[row]:g} here but {values[0]:g} on line '
                          f'{table.line_numbers[0]}; Deep Consensus needs one value (split the '
                          'file by optics group)', row)
    return float(values[0])


def _relion30_pixel_size(table: StarTable) -> float | None:
    """RELION 3.0's pixel size, ``10000 * detector pixel (µm) / magnification``, or None."""
    if not {_DETECTOR_PIXEL_SIZE, _MAGNIFICATION} <= set(table.columns):
        return None
    detector = _one_value(table, _DETECTOR_PIXEL_SIZE)
    return 10000.0 * detector / _one_value(table, _MAGNIFICATION)


def _relion_pixel_size(optics: StarTable | None,
                       particles: StarTable) -> tuple[float | None, str | None]:
    """The micrographs' pixel size and the label it came from (see read_relion_particles)."""
    if optics is not None:
        for name in (_MICROGRAPH_PIXEL_SIZE, _ORIGINAL_PIXEL_SIZE, _IMAGE_PIXEL_SIZE):
            if name in optics.columns:
                return _one_value(optics, name), f'_{name}'
    pixel_size = _relion30_pixel_size(particles)
    if pixel_size is not None:
        return pixel_size, f'_{_DETECTOR_PIXEL_SIZE} / _{_MAGNIFICATION}'
    return None, None


def _relion_box_size(optics: StarTable | None, pixel_size: float | None) -> float | None:
    """``_rlnImageSize`` in micrograph pixels, or None without an optics table that has it."""
    if optics is None or _IMAGE_SIZE not in optics.columns:
        return None
    box = _one_value(optics, _IMAGE_SIZE)
    if pixel_size is not None and _IMAGE_PIXEL_SIZE in optics.columns:
        box *= _one_value(optics, _IMAGE_PIXEL_SIZE) / pixel_size
    return box


def _group_by_micrograph(paths: list[str], xy: np.ndarray,
                         scores: np.ndarray | None) -> dict[str, MicrographPicks]:
    """Group rows by micrograph name key, keeping first-appearance and row order.

    Keys are computed once per distinct path, and rows grouped with one
    stable sort, since particle files have up to millions of rows.
    """
    path_index: dict[str, int] = {}
    row_paths = np.fromiter((path_index.setdefault(p, len(path_index)) for p in paths),
                            dtype=np.intp, count=len(paths))
    key_index: dict[str, int] = {}
    first_path: list[str] = []
    path_to_key = np.empty(len(path_index), dtype=np.intp)
    for mic_path, index in path_index.items():
        key = micrograph_key(mic_path)
        if key not in key_index:
            key_index[key] = len(key_index)
            first_path.append(mic_path)
        path_to_key[index] = key_index[key]
    row_keys = path_to_key[row_paths]
    order = np.argsort(row_keys, kind='stable')
    bounds = np.searchsorted(row_keys[order], np.arange(len(key_index) + 1))
    groups = {}
    for key, index in key_index.items():
        rows = order[bounds[index]:bounds[index + 1]]
        groups[key] = MicrographPicks(key, xy[rows], None if scores is None else scores[rows],
                                      first_path[index])
    return groups


# -------------------------------------------------------------------- cryoSPARC

def read_cryosparc_particles(path: PathLike, flip_y: bool = False) -> PickSet:
    """Read a cryoSPARC ``.cs`` file of particles (picks, extracted or selected particles).

    A ``.cs`` file is a numpy structured array saved with ``np.save``.  Fields
    used: ``location/micrograph_path`` (bytes or str; bytes decode as UTF-8),
    ``location/micrograph_shape`` (``(rows, cols)`` of the micrograph, two
    unsigned ints), ``location/center_x_frac`` and ``location/center_y_frac``
    (the centre as fractions of the width and height), and when present
    ``pick_stats/ncc_score`` (the score), ``location/micrograph_psize_A``
    (the pixel size), ``blob/shape`` with ``blob/psize_A`` (the box) and
    ``ctf/accel_kv``, ``ctf/cs_mm``, ``ctf/amp_contrast`` (the optics).

    Centres in pixels are ``x = center_x_frac * cols`` and ``y =
    center_y_frac * rows``, in the micrograph array as cryoSPARC stores it
    (the layout of cryosparc-tools' own test data: movie shape ``[frames,
    7676, 7420]`` with micrograph shape ``[7676, 7420]``, i.e. ``(ny, nx)``).
    pyem's ``csparc2star`` uses the same product ("'location/micrograph_shape'
    is [y, x]", so it multiplies by the reversed shape) and by default also
    flips y (``1 - center_y_frac``), noting that cryoSPARC's Patch Motion
    writes micrographs flipped relative to MotionCor2's, so that no flip is
    needed on cryoSPARC's own micrographs.  Hence: on the micrographs
    cryoSPARC picked on, leave ``flip_y`` off; on the same movies motion
    corrected by RELION or MotionCor2, set ``flip_y`` (``y = (1 -
    center_y_frac) * rows``).

    Micrograph names are :func:`micrograph_key` of the path and keep
    cryoSPARC's uid prefix (``<uid>_<movie>...``); :func:`match_micrographs`
    strips it when matching other micrograph names.  Files with object
    (``'O'``) fields hold pickled strings and are loaded with pickling
    allowed, which is only safe for files you trust, like your own
    cryoSPARC project's.
    """
    records = _load_cs(path)
    fields = records.dtype.names or ()
    for name in (_CS_PATH, _CS_SHAPE, _CS_X, _CS_Y):
        if name not in fields:
            raise CoordinateFileError(f'{os.fspath(path)}: missing field {name!r} (fields: '
                                      f'{", ".join(fields) or "none"}); is it a particle file?')
    shape = np.asarray(records[_CS_SHAPE])
    if shape.shape != (len(records), 2):
        raise CoordinateFileError(f'{os.fspath(path)}: field {_CS_SHAPE!r} has shape '
                                  f'{shape.shape[1:]} per particle, expected (2,) (rows, cols)')
    fractions = np.column_stack([records[_CS_X], records[_CS_Y]]).astype(np.float64)
    _check_cs_values(path, _CS_SHAPE, shape, positive=True)
    _check_cs_values(path, f'{_CS_X} / {_CS_Y}', fractions)
    if flip_y:
        fractions[:, 1] = 1.0 - fractions[:, 1]
    xy = fractions * shape[:, ::-1].astype(np.float64)  # (x_frac * cols, y_frac * rows)
    scores = None
    if _CS_SCORE in fields:
        scores = np.asarray(records[_CS_SCORE], dtype=np.float64)
        _check_cs_values(path, _CS_SCORE, scores)
    paths = [_decode(path, value) for value in records[_CS_PATH]]
    pixel_size = _cs_one_value(path, records, _CS_PIXEL_SIZE)
    return PickSet(os.fspath(path), _group_by_micrograph(paths, xy, scores), pixel_size,
                   _cs_box_size(path, records, pixel_size),
                   _CS_PIXEL_SIZE if pixel_size is not None else None,
                   _cs_optics(path, records, pixel_size))


def _cs_optics(path: PathLike, records: np.ndarray, pixel_size: float | None) -> Optics | None:
    """:class:`Optics` from the ``ctf/`` fields of extracted particles, or None without them."""
    voltage = _cs_one_value(path, records, _CS_VOLTAGE)
    cs = _cs_one_value(path, records, _CS_CS, positive=False)
    if pixel_size is None or voltage is None or cs is None:
        return None
    contrast = _cs_one_value(path, records, _CS_AMPLITUDE_CONTRAST, positive=False)
    return Optics(pixel_size, voltage, cs, contrast)


def _load_cs(path: PathLike) -> np.ndarray:
    """Load a ``.cs`` file as a 1-D structured array."""
    try:
        try:
            records = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if 'Object arrays' not in str(exc):
                raise  # e.g. a plain pickle file: never unpickled
            records = np.load(path, allow_pickle=True)  # an .npy whose 'O' fields are pickled
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise CoordinateFileError(f'{os.fspath(path)}: not a cryoSPARC .cs file '
                                  f'(numpy cannot load it: {exc})') from None
    if not isinstance(records, np.ndarray) or records.dtype.names is None or records.ndim != 1:
        raise CoordinateFileError(f'{os.fspath(path)}: not a cryoSPARC .cs file (expected a '
                                  'one-dimensional numpy structured array)')
    return records


def _decode(path: PathLike, value) -> str:
    """A path field value as text: bytes decode as UTF-8."""
    if isinstance(value, bytes):
        try:
            return value.decode('utf-8')
        except UnicodeDecodeError as exc:
            raise CoordinateFileError(f'{os.fspath(path)}: field {_CS_PATH!r} is not UTF-8 '
                                      f'({value!r}: {exc.reason})') from None
    return str(value)


def _check_cs_values(path: PathLike, name: str, values: np.ndarray,
                     positive: bool = False) -> None:
    """Reject NaN, infinities (and non-positive values where asked), naming the row."""
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    bad = ~np.isfinite(flat) | ((flat <= 0) if positive else False)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        kind = 'non-positive or non-finite' if positive else 'non-finite'
        raise CoordinateFileError(f'{os.fspath(path)}: field {name!r} has a {kind} value in row '
                                  f'{row} ({flat[row].tolist()})')


def _cs_one_value(path: PathLike, records: np.ndarray, name: str,
                  positive: bool = True) -> float | None:
    """The one value of field ``name`` over all rows, or None without the field or rows."""
    if name not in records.dtype.names or len(records) == 0:
        return None
    values = np.asarray(records[name], dtype=np.float64).reshape(-1)
    _check_cs_values(path, name, values, positive=positive)
    if np.ptp(values) > 1e-6 * np.abs(values).max():
        raise CoordinateFileError(f'{os.fspath(path)}: field {name!r} differs between particles '
                                  f'({values.min():g} to {values.max():g}); Deep Consensus needs '
                                  'one value')
    return float(values[0])


def _cs_box_size(path: PathLike, records: np.ndarray, pixel_size: float | None) -> float | None:
    """The extracted box (``blob/shape``) in micrograph pixels, or None without it."""
    if _CS_BOX not in records.dtype.names or len(records) == 0:
        return None
    boxes = np.asarray(records[_CS_BOX], dtype=np.float64).reshape(len(records), -1)[:, 0]
    _check_cs_values(path, _CS_BOX, boxes, positive=True)
    box = float(np.median(boxes))
    blob_pixel_size = _cs_one_value(path, records, _CS_BOX_PIXEL_SIZE)
    if pixel_size is not None and blob_pixel_size is not None:
        box *= blob_pixel_size / pixel_size
    return box


# ----------------------------------------------------------------------- folder

def read_coordinate_folder(folder: PathLike, pattern: str = '*') -> PickSet:
    """Read one coordinate file per micrograph from ``folder`` (.box, .star, .csv, .pos).

    Files matching ``pattern`` with a supported extension are read; each is
    named by its file name without extension (match it to micrographs with
    :func:`match_micrographs`, which also accepts RELION's ``_<suffix>``).
    The box size is the median box width of the .box files, if any.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CoordinateFileError(f'{os.fspath(folder)}: not a folder')
    files = sorted(p for p in root.glob(pattern)
                   if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
    if not files:
        raise CoordinateFileError(f'{os.fspath(folder)}: no coordinate file matches {pattern!r} '
                                  f'(supported: {", ".join(SUPPORTED_EXTENSIONS)})')
    micrographs: dict[str, MicrographPicks] = {}
    widths = []
    for file in files:
        if file.stem in micrographs:
            raise CoordinateFileError(f'{file}: a second coordinate file for micrograph '
                                      f'{file.stem!r}')
        coords = read_coordinates(file)
        if coords.box_sizes is not None:
            widths.append(coords.box_sizes)
        micrographs[file.stem] = MicrographPicks(file.stem, coords.xy, coords.scores)
    all_widths = np.concatenate(widths) if widths else np.empty(0)
    box_size = float(np.median(all_widths)) if len(all_widths) else None
    return PickSet(os.fspath(folder), micrographs, box_size=box_size)
