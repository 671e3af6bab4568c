"""Tests for core.pick_inputs and core.pick_outputs: RELION and cryoSPARC files in and out.

Every input is a small file in the real format, written here: RELION 3.0 and
3.1+ STAR files, a micrographs.star, a RELION 4 coordinate list, a cryoSPARC
.cs file (a numpy structured array with cryoSPARC's field names and dtypes),
EMAN .box and Xmipp .pos files.  The STAR outputs are read back by starfile.
"""
import csv
from pathlib import Path

import numpy as np
import pytest
import starfile
from hypothesis import given, settings, strategies as st

from deepconsensus_plugin.core.coordinate_files import CoordinateFileError
from deepconsensus_plugin.core.pick_inputs import (
    MicrographPicks, Optics, PickSet, match_micrographs, micrograph_key, read_coordinate_folder,
    read_cryosparc_particles, read_picks, read_relion_coordinate_list, read_relion_micrographs,
    read_relion_particles, strip_cryosparc_name)
from deepconsensus_plugin.core.pick_outputs import (
    VOTES_LABEL, ScoredPicks, write_coordinate_stars, write_particle_star, write_picks_csv)

RELION31_PARTICLES = """
# version 30001

data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnMicrographOriginalPixelSize #3
_rlnVoltage #4
_rlnImagePixelSize #5
_rlnImageSize #6
_rlnImageDimensionality #7
1 opticsGroup1 0.885000 300.000000 3.540000 64 2

# version 30001

data_particles

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnImageName #3
_rlnMicrographName #4
_rlnOpticsGroup #5
_rlnAutopickFigureOfMerit #6
 1084.000000   348.000000 000001@Extract/job007/Movies/001.mrcs MotionCorr/job002/Movies/001.mrc 1 1.25
  512.500000  1790.250000 000002@Extract/job007/Movies/001.mrcs MotionCorr/job002/Movies/001.mrc 1 0.75
 3612.235315  2991.382371 000001@Extract/job007/Movies/002.mrcs MotionCorr/job002/Movies/002.mrc 1 -0.5
"""

RELION30_PARTICLES = """
data_

loop_
_rlnMicrographName #1
_rlnCoordinateX #2
_rlnCoordinateY #3
_rlnMagnification #4
_rlnDetectorPixelSize #5
Micrographs/mic_a.mrc 10.0 20.0 10000.000000 5.000000
Micrographs/mic_b.mrc 30.5 40.5 10000.000000 5.000000
Micrographs/mic_a.mrc 50.0 60.0 10000.000000 5.000000
"""

MICROGRAPHS_STAR = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographOriginalPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
_rlnMicrographPixelSize #7
opticsGroup1 1 0.885000 200.000000 1.400000 0.100000 1.770000

# version 30001

data_micrographs

loop_
_rlnMicrographName #1
_rlnMicrographMetadata #2
_rlnOpticsGroup #3
MotionCorr/job002/Movies/20170629_00021_frameImage.mrc MotionCorr/job002/Movies/20170629_00021_frameImage.star 1
MotionCorr/job002/Movies/20170629_00022_frameImage.mrc MotionCorr/job002/Movies/20170629_00022_frameImage.star 1
"""

AUTOPICK_COORDINATES = """
# version 30001

data_

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnClassNumber #3
_rlnAutopickFigureOfMerit #4
_rlnAnglePsi #5
  100.000000   200.000000            0     2.500000   -999.00000
  300.000000   400.000000            0     1.500000   -999.00000
"""


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def assert_error(call, *fragments: str) -> None:
    with pytest.raises(CoordinateFileError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


# --------------------------------------------------------------------- RELION in

def test_relion31_particles_grouped_per_micrograph_with_pixel_and_box_size(tmp_path):
    picks = read_relion_particles(write(tmp_path / 'particles.star', RELION31_PARTICLES))
    assert list(picks.micrographs) == ['001', '002']
    first = picks.micrographs['001']
    np.testing.assert_array_equal(first.xy, [[1084.0, 348.0], [512.5, 1790.25]])
    np.testing.assert_array_equal(first.scores, [1.25, 0.75])
    assert first.path == 'MotionCorr/job002/Movies/001.mrc'  # names keep their leading zeros
    np.testing.assert_allclose(picks.micrographs['002'].xy, [[3612.235315, 2991.382371]])
    assert picks.n_picks == 3
    # No _rlnMicrographPixelSize: the movies' pixel size, and the rescaled box
    # (64 px of 3.54 A) in micrograph pixels.
    assert picks.pixel_size == pytest.approx(0.885)
    assert picks.pixel_size_source == '_rlnMicrographOriginalPixelSize'
    assert picks.box_size == pytest.approx(64 * 3.54 / 0.885)
    assert picks.optics is None  # voltage but no Cs in this optics table


def test_relion31_micrograph_pixel_size_is_preferred(tmp_path):
    content = RELION31_PARTICLES.replace(
        '_rlnImageDimensionality #7\n', '_rlnImageDimensionality #7\n_rlnMicrographPixelSize #8\n')
    content = content.replace('64 2\n', '64 2 1.77\n')
    picks = read_relion_particles(write(tmp_path / 'particles.star', content))
    assert picks.pixel_size == pytest.approx(1.77)
    assert picks.pixel_size_source == '_rlnMicrographPixelSize'
    assert picks.box_size == pytest.approx(64 * 3.54 / 1.77)


def test_relion30_particles_pixel_size_from_detector_and_magnification(tmp_path):
    picks = read_relion_particles(write(tmp_path / 'particles.star', RELION30_PARTICLES))
    np.testing.assert_array_equal(picks.micrographs['mic_a'].xy, [[10.0, 20.0], [50.0, 60.0]])
    np.testing.assert_array_equal(picks.micrographs['mic_b'].xy, [[30.5, 40.5]])
    assert picks.micrographs['mic_a'].scores is None
    assert picks.pixel_size == pytest.approx(5.0)
    assert picks.box_size is None


def test_relion_coordinate_star_with_micrograph_names_and_no_optics(tmp_path):
    content = ('data_\nloop_\n_rlnMicrographName\n_rlnCoordinateX\n_rlnCoordinateY\n'
               '_rlnAutopickFigureOfMerit\nmics/a.mrc 1 2 0.5\nmics/b.mrc 3 4 0.25\n')
    picks = read_relion_particles(write(tmp_path / 'coords.star', content))
    assert sorted(picks.micrographs) == ['a', 'b']
    np.testing.assert_array_equal(picks.micrographs['b'].scores, [0.25])
    assert picks.pixel_size is None and picks.pixel_size_source is None


@pytest.mark.parametrize('content, fragments', [
    (AUTOPICK_COORDINATES, ['missing required column _rlnMicrographName', 'line 6']),
    (RELION31_PARTICLES.replace('512.500000', 'abc'), ['line 28', "'abc' is not a number"]),
    (RELION31_PARTICLES.replace('1790.250000', 'nan'), ['line 28', 'non-finite value (nan)']),
    (RELION31_PARTICLES.replace(' 1 0.75', ' 1'), ['line 28', 'expected 6 values, got 5']),
    (RELION31_PARTICLES.replace('0.885000', '-1'),
     ['line 14', '_rlnMicrographOriginalPixelSize must be positive']),
    (RELION31_PARTICLES.replace('1 opticsGroup1 0.885000 300.000000 3.540000 64 2',
                                '1 opticsGroup1 0.885000 300.000000 3.540000 64 2\n'
                                '2 opticsGroup2 1.000000 300.000000 3.540000 64 2'),
     ['line 15', '_rlnMicrographOriginalPixelSize is 1 here but 0.885 on line 14']),
    ('', ['no STAR table found']),
])
def test_relion_particles_malformed(tmp_path, content, fragments):
    path = write(tmp_path / 'bad.star', content)
    assert_error(lambda: read_relion_particles(path), 'bad.star', *fragments)


def test_relion_micrographs_star(tmp_path):
    mics = read_relion_micrographs(write(tmp_path / 'micrographs_ctf.star', MICROGRAPHS_STAR))
    assert [m.name for m in mics.micrographs] == ['20170629_00021_frameImage',
                                                  '20170629_00022_frameImage']
    assert mics.micrographs[0].path == 'MotionCorr/job002/Movies/20170629_00021_frameImage.mrc'
    assert mics.pixel_size == pytest.approx(1.77)
    assert mics.optics == Optics(1.77, 200.0, 1.4, 0.1, 'opticsGroup1')


def test_relion30_micrographs_star_and_duplicate_names(tmp_path):
    content = ('data_\nloop_\n_rlnMicrographName\n_rlnMagnification\n_rlnDetectorPixelSize\n'
               'a/m1.mrc 50000 14\nb/m2.mrc 50000 14\n')
    mics = read_relion_micrographs(write(tmp_path / 'mics.star', content))
    assert mics.pixel_size == pytest.approx(2.8)
    assert mics.optics is None  # no voltage or Cs: the caller must supply them
    with_ctf = content.replace('_rlnDetectorPixelSize\n', '_rlnDetectorPixelSize\n_rlnVoltage\n'
                               '_rlnSphericalAberration\n').replace(' 14\n', ' 14 300 2.7\n')
    optics = read_relion_micrographs(write(tmp_path / 'ctf.star', with_ctf)).optics
    assert optics.pixel_size == pytest.approx(2.8)
    assert (optics.voltage, optics.spherical_aberration,
            optics.amplitude_contrast) == (300, 2.7, None)
    path = write(tmp_path / 'dup.star', content + 'c/m1.mrc 50000 14\n')
    assert_error(lambda: read_relion_micrographs(path), 'dup.star', 'line 8',
                 "micrograph name 'm1' also on line 6")


def test_relion4_coordinate_list_resolves_paths_from_the_project(tmp_path):
    project = tmp_path / 'project'
    write(project / 'AutoPick/job006/Movies/mic1_autopick.star', AUTOPICK_COORDINATES)
    write(project / 'AutoPick/job006/Movies/mic2_autopick.star',
          'data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n')
    listing = write(project / 'AutoPick/job006/autopick.star', (
        '# version 30001\n\ndata_coordinate_files\n\nloop_\n'
        '_rlnMicrographName #1\n_rlnMicrographCoordinates #2\n'
        'MotionCorr/job002/Movies/mic1.mrc AutoPick/job006/Movies/mic1_autopick.star\n'
        'MotionCorr/job002/Movies/mic2.mrc AutoPick/job006/Movies/mic2_autopick.star\n'))
    picks = read_relion_coordinate_list(listing)
    np.testing.assert_array_equal(picks.micrographs['mic1'].xy, [[100, 200], [300, 400]])
    np.testing.assert_array_equal(picks.micrographs['mic1'].scores, [2.5, 1.5])
    assert picks.micrographs['mic1'].path == 'MotionCorr/job002/Movies/mic1.mrc'
    assert picks.micrographs['mic2'].xy.shape == (0, 2)
    # Outside a job folder, paths are relative to an explicit project folder.
    moved = write(tmp_path / 'list.star', listing.read_text())
    assert read_relion_coordinate_list(moved, project_dir=project).n_picks == 2
    assert_error(lambda: read_relion_coordinate_list(moved), 'list.star', 'line 8',
                 'coordinate file AutoPick/job006/Movies/mic1_autopick.star not found')


# ------------------------------------------------------------------ cryoSPARC in

def cs_records(paths, shapes, x_frac, y_frac, *, path_dtype='S', extra=()):
    """A particle .cs array laid out as cryoSPARC's: these field names and dtypes."""
    dtype = [('uid', '<u8'), ('location/micrograph_uid', '<u8'), ('location/exp_group_id', '<u4'),
             ('location/micrograph_path', path_dtype if path_dtype == 'O' else 'S200'),
             ('location/micrograph_shape', '<u4', (2,)), ('location/center_x_frac', '<f4'),
             ('location/center_y_frac', '<f4')] + [spec for spec, _ in extra]
    records = np.zeros(len(paths), dtype=dtype)
    records['uid'] = np.arange(len(paths)) + 10 ** 18
    records['location/micrograph_path'] = (paths if path_dtype == 'O'
                                           else [p.encode() for p in paths])
    records['location/micrograph_shape'] = shapes
    records['location/center_x_frac'] = x_frac
    records['location/center_y_frac'] = y_frac
    for spec, values in extra:
        records[spec[0]] = values
    return records


# Named as cryoSPARC names Patch Motion output: <uid>_<movie>_patch_aligned_doseweighted.mrc
CS_MIC_A = ('J14/motioncorrected/'
            '008578565574161745010_14sep05c_00003es_patch_aligned_doseweighted.mrc')
CS_MIC_B = ('J14/motioncorrected/'
            '012951868257382468663_14sep05c_00024sq_patch_aligned_doseweighted.mrc')


@pytest.mark.parametrize('path_dtype', ['S', 'O'])
def test_cryosparc_cs_fractions_times_columns_and_rows(tmp_path, path_dtype):
    records = cs_records([CS_MIC_A, CS_MIC_B, CS_MIC_A], [(7676, 7420)] * 3,
                         [0.5, 0.25, 0.0], [0.25, 0.5, 1.0], path_dtype=path_dtype,
                         extra=[(('pick_stats/ncc_score', '<f4'), [0.5, 0.25, 0.125]),
                                (('location/micrograph_psize_A', '<f4'), 0.6575),
                                (('blob/shape', '<u4', (2,)), (256, 256)),
                                (('blob/psize_A', '<f4'), 1.315),
                                (('ctf/accel_kv', '<f4'), 300.0),
                                (('ctf/cs_mm', '<f4'), 2.7),
                                (('ctf/amp_contrast', '<f4'), 0.1)])
    path = tmp_path / 'P1_J20_picked_particles.cs'
    with open(path, 'wb') as handle:  # np.save appends .npy to a plain path
        np.save(handle, records)
    picks = read_cryosparc_particles(path)
    key_a = micrograph_key(CS_MIC_A)
    assert list(picks.micrographs) == [key_a, micrograph_key(CS_MIC_B)]
    # x = x_frac * cols (7420), y = y_frac * rows (7676)
    np.testing.assert_allclose(picks.micrographs[key_a].xy, [[3710.0, 1919.0], [0.0, 7676.0]])
    np.testing.assert_allclose(picks.micrographs[key_a].scores, [0.5, 0.125])
    assert picks.micrographs[key_a].path == CS_MIC_A
    assert picks.pixel_size == pytest.approx(0.6575)
    assert picks.box_size == pytest.approx(256 * 1.315 / 0.6575, rel=1e-6)
    assert picks.optics.voltage == 300 and picks.optics.spherical_aberration == pytest.approx(2.7)
    assert picks.optics.amplitude_contrast == pytest.approx(0.1)
    assert picks.optics.pixel_size == picks.pixel_size


def test_cryosparc_cs_without_optional_fields_and_flipped_y(tmp_path):
    path = tmp_path / 'picks.cs'
    with open(path, 'wb') as handle:
        np.save(handle, cs_records(['mic.mrc'], [(100, 200)], [0.5], [0.25]))
    picks = read_cryosparc_particles(path)
    np.testing.assert_allclose(picks.micrographs['mic'].xy, [[100.0, 25.0]])
    assert picks.micrographs['mic'].scores is None
    assert picks.pixel_size is None and picks.box_size is None
    flipped = read_cryosparc_particles(path, flip_y=True)  # for MotionCor2/RELION micrographs
    np.testing.assert_allclose(flipped.micrographs['mic'].xy, [[100.0, 75.0]])


@pytest.mark.parametrize('make, fragments', [
    (lambda: np.zeros(2, dtype=[('location/micrograph_path', 'S10'),
                                ('location/center_x_frac', '<f4')]),
     ["missing field 'location/micrograph_shape'", 'location/center_x_frac']),
    (lambda: np.zeros(2, dtype=[('location/micrograph_path', 'S10'),
                                ('location/micrograph_shape', '<u4', (3,)),
                                ('location/center_x_frac', '<f4'),
                                ('location/center_y_frac', '<f4')]),
     ["field 'location/micrograph_shape' has shape (3,)", 'expected (2,)']),
    (lambda: cs_records(['a.mrc', 'a.mrc'], [(10, 10)] * 2, [0.5, np.nan], [0.5, 0.5]),
     ['location/center_x_frac / location/center_y_frac', 'non-finite', 'row 1']),
    (lambda: cs_records(['a.mrc'], [(0, 10)], [0.5], [0.5]),
     ["'location/micrograph_shape'", 'non-positive']),
    (lambda: np.arange(5.0), ['not a cryoSPARC .cs file', 'structured array']),
])
def test_cryosparc_cs_malformed(tmp_path, make, fragments):
    path = tmp_path / 'bad.cs'
    with open(path, 'wb') as handle:
        np.save(handle, make())
    assert_error(lambda: read_cryosparc_particles(path), 'bad.cs', *fragments)


def test_cryosparc_cs_that_is_not_numpy(tmp_path):
    path = write(tmp_path / 'text.cs', 'not numpy\n')
    assert_error(lambda: read_cryosparc_particles(path), 'text.cs', 'not a cryoSPARC .cs file')


def test_a_plain_pickle_is_never_unpickled(tmp_path):
    import pickle
    path = tmp_path / 'evil.cs'
    path.write_bytes(pickle.dumps({'a': 1}))
    assert_error(lambda: read_cryosparc_particles(path), 'evil.cs', 'not a cryoSPARC .cs file')


# --------------------------------------------------------------------- dispatch

def test_read_picks_tells_the_inputs_apart(tmp_path):
    star = write(tmp_path / 'particles.star', RELION31_PARTICLES)
    assert read_picks(star).n_picks == 3
    project = tmp_path / 'project'
    write(project / 'AutoPick/job006/Movies/mic1_autopick.star', AUTOPICK_COORDINATES)
    listing = write(project / 'AutoPick/job006/autopick.star',
                    'data_coordinate_files\nloop_\n_rlnMicrographName\n_rlnMicrographCoordinates\n'
                    'Movies/mic1.mrc AutoPick/job006/Movies/mic1_autopick.star\n')
    assert list(read_picks(listing).micrographs) == ['mic1']
    cs = tmp_path / 'picks.cs'
    with open(cs, 'wb') as handle:
        np.save(handle, cs_records(['mic.mrc'], [(100, 200)], [0.5], [0.25]))
    np.testing.assert_allclose(read_picks(cs, flip_y=True).micrographs['mic'].xy, [[100, 75]])
    folder = project / 'AutoPick/job006/Movies'
    assert list(read_picks(folder, pattern='*_autopick.star').micrographs) == ['mic1_autopick']
    assert_error(lambda: read_picks(folder / 'mic1_autopick.star'), 'mic1_autopick.star',
                 'the coordinates of one micrograph', 'give the folder')
    assert_error(lambda: read_picks(write(tmp_path / 'picks.txt', '')), 'picks.txt',
                 'not a folder, .star or .cs file')


# --------------------------------------------------------------- folder, match

def test_coordinate_folder_of_box_and_pos_files(tmp_path):
    write(tmp_path / 'mic1.box', '10 20 100 100 0.5\n30 40 100 100 0.25\n')
    write(tmp_path / 'mic2.pos', '# XMIPP_STAR_1 *\ndata_header\nloop_\n _pickingMicrographState\n'
                                 'Auto\ndata_particles\nloop_\n _xcoor\n _ycoor\n 120 340\n')
    write(tmp_path / 'notes.txt', 'ignored')
    picks = read_coordinate_folder(tmp_path)
    np.testing.assert_array_equal(picks.micrographs['mic1'].xy, [[60, 70], [80, 90]])
    np.testing.assert_array_equal(picks.micrographs['mic2'].xy, [[120, 340]])
    assert picks.box_size == 100
    assert sorted(read_coordinate_folder(tmp_path, '*.pos').micrographs) == ['mic2']
    assert_error(lambda: read_coordinate_folder(tmp_path, '*.csv'), 'no coordinate file matches')
    assert_error(lambda: read_coordinate_folder(tmp_path / 'absent'), 'not a folder')


def picks_of(*names):
    return PickSet('picks.star', {n: MicrographPicks(n, np.array([[float(i), 0.0]]), None)
                                  for i, n in enumerate(names)})


def test_match_exact_cryosparc_and_relion_suffix_names():
    micrographs = ['14sep05c_00003es', 'mic1', 'mic1_b', 'other']
    picks = picks_of('008578565574161745010_14sep05c_00003es_patch_aligned_doseweighted',
                     'mic1_b_autopick', 'other', 'stray')
    match = match_micrographs(picks, micrographs, file_suffixes=True)
    assert sorted(match.picks.micrographs) == ['14sep05c_00003es', 'mic1_b', 'other']
    assert match.picks.micrographs['mic1_b'].name == 'mic1_b'  # longest name wins
    np.testing.assert_array_equal(match.picks.micrographs['mic1_b'].xy, [[1.0, 0.0]])
    assert match.unmatched == ('stray',)
    # Names read from inside a file: mic1_b_autopick is its own micrograph.
    match = match_micrographs(picks, micrographs)
    assert match.unmatched == ('mic1_b_autopick', 'stray')
    # cryoSPARC names on the micrograph side too (micrographs exported from cryoSPARC)
    match = match_micrographs(picks_of('14sep05c_00003es'),
                              ['008578565574161745010_14sep05c_00003es'])
    assert list(match.picks.micrographs) == ['008578565574161745010_14sep05c_00003es']


def test_match_two_picks_on_one_micrograph_is_an_error():
    picks = picks_of('mic1', 'mic1_autopick')
    assert_error(lambda: match_micrographs(picks, ['mic1', 'mic1_autopick_x'], file_suffixes=True),
                 "'mic1'", "'mic1_autopick'", 'both match micrograph')


def test_name_helpers():
    assert micrograph_key('MotionCorr\\job002\\mic.tiff') == 'mic'
    assert strip_cryosparc_name('123_mic') == '123_mic'  # a short number is part of the name
    assert strip_cryosparc_name('012345678901234567_mic_patch_aligned') == 'mic'


# ------------------------------------------------------------------ RELION out

def scored(name, xy, scores, votes, kept):
    return ScoredPicks(name, np.array(xy, dtype=float).reshape(-1, 2),
                       np.array(scores, dtype=float), np.array(votes), np.array(kept, dtype=bool))


OPTICS = Optics(pixel_size=1.77, voltage=300.0, spherical_aberration=2.7, amplitude_contrast=0.1)
PICKS = [scored('MotionCorr/job002/Movies/mic 1.mrc', [[10.5, 20.25], [30, 40]], [0.9, 0.1],
                [3, 1], [True, False]),
         scored('MotionCorr/job002/Movies/mic2.mrc', [[50, 60]], [0.75], [2], [True]),
         scored('MotionCorr/job002/Movies/mic3.mrc', [], [], [], [])]


def test_particle_star_read_back_by_starfile_column_by_column(tmp_path):
    path = tmp_path / 'retained.star'
    write_particle_star(path, [p.subset(kept=True) for p in PICKS], optics=OPTICS, box_size=128)
    blocks = starfile.read(path, always_dict=True)
    assert list(blocks) == ['optics', 'particles']
    optics = blocks['optics']
    assert list(optics.columns) == ['rlnOpticsGroup', 'rlnOpticsGroupName',
                                    'rlnMicrographPixelSize', 'rlnVoltage',
                                    'rlnSphericalAberration', 'rlnAmplitudeContrast',
                                    'rlnImageSize', 'rlnImageDimensionality']
    assert optics.iloc[0].tolist() == [1, 'opticsGroup1', 1.77, 300.0, 2.7, 0.1, 128, 2]
    particles = blocks['particles']
    assert list(particles.columns) == ['rlnMicrographName', 'rlnCoordinateX', 'rlnCoordinateY',
                                       'rlnOpticsGroup', 'rlnAutopickFigureOfMerit', VOTES_LABEL]
    assert particles['rlnMicrographName'].tolist() == ['MotionCorr/job002/Movies/mic 1.mrc',
                                                       'MotionCorr/job002/Movies/mic2.mrc']
    np.testing.assert_allclose(particles['rlnCoordinateX'], [10.5, 50])
    np.testing.assert_allclose(particles['rlnCoordinateY'], [20.25, 60])
    assert particles['rlnOpticsGroup'].tolist() == [1, 1]
    np.testing.assert_allclose(particles['rlnAutopickFigureOfMerit'], [0.9, 0.75])
    assert particles[VOTES_LABEL].tolist() == [3, 2]
    # RELION ends a loop at an empty line: the rows follow the labels without one.
    text = path.read_text().splitlines()
    last_label = max(i for i, line in enumerate(text) if line.startswith('_'))
    assert text[last_label + 1].startswith('"MotionCorr/job002/Movies/mic 1.mrc"')
    assert text[last_label + 2].startswith('MotionCorr/job002/Movies/mic2.mrc')
    # And our own reader takes it back, pixel size and box included.
    picks = read_relion_particles(path)
    assert picks.pixel_size == pytest.approx(1.77) and picks.box_size == pytest.approx(128)
    np.testing.assert_allclose(picks.micrographs['mic 1'].xy, [[10.5, 20.25]])


def test_particle_star_rejects_bad_box_size_and_optics(tmp_path):
    with pytest.raises(ValueError, match='box size must be positive'):
        write_particle_star(tmp_path / 'x.star', PICKS, optics=OPTICS, box_size=0)
    with pytest.raises(ValueError, match='pixel size and voltage must be positive'):
        Optics(0.0, 300.0, 2.7)
    with pytest.raises(ValueError, match='amplitude contrast'):
        Optics(1.0, 300.0, 2.7, 1.5)


def test_coordinate_stars_in_relion_extract_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a RELION project: paths relative to it
    written = write_coordinate_stars('DeepConsensus/job001', PICKS, suffix='deepconsensus',
                                     micrographs_star='CtfFind/job003/micrographs_ctf.star')
    expected = [Path('DeepConsensus/job001/Movies/mic 1_deepconsensus.star'),
                Path('DeepConsensus/job001/Movies/mic2_deepconsensus.star'),
                Path('DeepConsensus/job001/Movies/mic3_deepconsensus.star')]
    assert list(written.coordinate_files) == expected
    first = starfile.read(expected[0])
    assert list(first.columns) == ['rlnCoordinateX', 'rlnCoordinateY',
                                   'rlnAutopickFigureOfMerit', VOTES_LABEL]
    np.testing.assert_allclose(first['rlnCoordinateX'], [10.5, 30])
    np.testing.assert_allclose(first['rlnCoordinateY'], [20.25, 40])
    np.testing.assert_allclose(first['rlnAutopickFigureOfMerit'], [0.9, 0.1])
    assert first[VOTES_LABEL].tolist() == [3, 1]
    assert 'data_\n' in expected[2].read_text()  # empty micrograph: labels, no rows
    listing = starfile.read(written.coordinate_list, always_dict=True)
    assert written.coordinate_list == Path('DeepConsensus/job001/deepconsensus.star')
    table = listing['coordinate_files']
    assert table['rlnMicrographName'].tolist() == [p.micrograph for p in PICKS]
    assert table['rlnMicrographCoordinates'].tolist() == [str(p) for p in expected]
    assert written.suffix_file.read_text() == 'CtfFind/job003/micrographs_ctf.star\n'
    # The RELION 4 list reads back through our own reader.
    picks = read_relion_coordinate_list(written.coordinate_list, project_dir=tmp_path)
    assert picks.n_picks == 3 and picks.micrographs['mic2'].path == PICKS[1].micrograph


def test_coordinate_stars_of_names_outside_a_relion_job(tmp_path):
    written = write_coordinate_stars(tmp_path, [scored('/data/mics/a.mrc', [[1, 2]], [0.5], [2],
                                                       [True])], suffix='dc')
    assert written.coordinate_files == (tmp_path / 'data/mics/a_dc.star',)
    assert written.suffix_file is None
    with pytest.raises(ValueError, match='suffix'):
        write_coordinate_stars(tmp_path, PICKS, suffix='bad suffix')


def test_picks_csv(tmp_path):
    path = tmp_path / 'picks.csv'
    write_picks_csv(path, PICKS)
    with open(path, newline='') as handle:
        rows = list(csv.reader(handle))
    assert rows == [['micrograph', 'x', 'y', 'score', 'votes', 'kept'],
                    ['MotionCorr/job002/Movies/mic 1.mrc', '10.50', '20.25', '0.9', '3', '1'],
                    ['MotionCorr/job002/Movies/mic 1.mrc', '30.00', '40.00', '0.1', '1', '0'],
                    ['MotionCorr/job002/Movies/mic2.mrc', '50.00', '60.00', '0.75', '2', '1']]


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    path = tmp_path / 'out' / 'retained.star'
    write_particle_star(path, PICKS, optics=OPTICS, box_size=64)
    before = path.read_text()
    with pytest.raises(ValueError):  # a failed write keeps the previous file whole
        write_particle_star(path, PICKS, optics=OPTICS, box_size=-64)
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ['retained.star']


def test_scored_picks_checks_shapes():
    with pytest.raises(ValueError, match='scores must have shape'):
        ScoredPicks('m', np.zeros((2, 2)), np.zeros(3), np.zeros(2), np.zeros(2, dtype=bool))


# ------------------------------------------------------------ property tests

finite = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, allow_infinity=False)
mic_names = st.text(alphabet='abcXYZ019_- .', min_size=1, max_size=12).map(str.strip).filter(
    lambda n: n and not n.startswith('.'))


@st.composite
def scored_micrographs(draw):
    names = draw(st.lists(mic_names, min_size=1, max_size=4, unique_by=micrograph_key))
    picks = []
    for name in names:
        n = draw(st.integers(0, 6))
        xy = np.array(draw(st.lists(st.tuples(finite, finite), min_size=n, max_size=n)),
                      dtype=float).reshape(-1, 2)
        scores = np.array(draw(st.lists(finite, min_size=n, max_size=n)), dtype=float)
        votes = np.array(draw(st.lists(st.integers(1, 5), min_size=n, max_size=n)), dtype=int)
        picks.append(ScoredPicks(f'MotionCorr/job002/Movies/{name}.mrc', xy, scores, votes,
                                 np.ones(n, dtype=bool)))
    return picks


@pytest.fixture(scope='module')
def round_trip_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('round_trip')


@settings(max_examples=50, deadline=None)
@given(picks=scored_micrographs())
def test_written_star_files_read_back_through_our_readers(round_trip_dir, picks):
    star = round_trip_dir / 'retained.star'
    write_particle_star(star, picks, optics=Optics(1.5, 300.0, 2.7), box_size=96)
    particles = read_relion_particles(star)
    folder = round_trip_dir / f'coords{len(list(round_trip_dir.iterdir()))}'
    written = write_coordinate_stars(folder, picks)
    listed = read_relion_coordinate_list(written.coordinate_list, project_dir=Path.cwd())
    for mic in picks:
        key = micrograph_key(mic.micrograph)
        assert listed.micrographs[key].path == mic.micrograph
        reads = [listed.micrographs[key]] + ([particles.micrographs[key]] if len(mic.xy) else [])
        for read in reads:
            np.testing.assert_allclose(read.xy, mic.xy, rtol=0, atol=1e-6)
            np.testing.assert_allclose(read.scores, mic.scores, rtol=0, atol=1e-6)
    assert set(particles.micrographs) == {micrograph_key(m.micrograph) for m in picks if len(m.xy)}
    assert particles.pixel_size == 1.5 and particles.box_size == 96
    assert particles.optics == Optics(1.5, 300.0, 2.7)
