"""Tests for deepconsensus_plugin.core.coordinate_files (pure core, no Scipion needed)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepconsensus_plugin.core.coordinate_files import (
    SUPPORTED_EXTENSIONS, CoordinateFileError, PickedCoordinates, read_box, read_coordinates,
    read_csv, read_pos, read_star, read_star_tables)

READERS = {'.box': read_box, '.star': read_star, '.csv': read_csv, '.pos': read_pos}

RELION30_STAR = """
data_

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnClassNumber #3
_rlnAutopickFigureOfMerit #4
_rlnAnglePsi #5
 1084.000000   348.000000            0     1.227814     0.000000
  512.500000  1790.250000            0     0.750000   -999.00000
"""

RELION31_STAR = """
# version 30001

data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnImagePixelSize #3
1 opticsGroup1 1.244000

# version 30001

data_particles

loop_
_rlnMicrographName #1
_rlnCoordinateX #2
_rlnCoordinateY #3
_rlnImageName #4
MotionCorr/job002/mic_001.mrc 100.0 200.0 000001@Extract/job007/mic_001.mrcs
'MotionCorr/job002/mic 002.mrc' 300.5 400.5 000002@Extract/job007/mic_001.mrcs
"""

XMIPP_POS = """# XMIPP_STAR_1 *
#
data_header
loop_
 _pickingMicrographState
Auto
data_particles
loop_
 _xcoor
 _ycoor
 _cost
 120 340 0.9
 56 78 0.25
"""


def write(directory: Path, name: str, content: str) -> Path:
    path = directory / name
    path.write_text(content)
    return path


def assert_error(path: Path, reader, *fragments: str) -> None:
    """Assert the reader raises CoordinateFileError naming the file and each fragment."""
    with pytest.raises(CoordinateFileError) as info:
        reader(path)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message


# --------------------------------------------------------------------------- box

def test_box_corners_become_centres_and_fifth_column_is_score(tmp_path):
    path = write(tmp_path, 'mic.box', '10 20 100 50 0.5\n0\t-5  64 64  1.25\n')
    coords = read_box(path)
    np.testing.assert_array_equal(coords.xy, [[60.0, 45.0], [32.0, 27.0]])
    np.testing.assert_array_equal(coords.scores, [0.5, 1.25])
    assert coords.xy.dtype == np.float64 and coords.scores.dtype == np.float64


def test_box_without_score_and_with_extra_columns(tmp_path):
    plain = read_box(write(tmp_path, 'a.box', '# comment\n\n1 2 4 6\n  \n3.5 4.5 1 1\n'))
    np.testing.assert_array_equal(plain.xy, [[3.0, 5.0], [4.0, 5.0]])
    assert plain.scores is None
    extra = read_box(write(tmp_path, 'b.box', '0 0 10 10 0.3 -3\n'))
    np.testing.assert_array_equal(extra.xy, [[5.0, 5.0]])
    np.testing.assert_array_equal(extra.scores, [0.3])


@pytest.mark.parametrize('content, fragments', [
    ('1 2 3 4\n1 2 3\n', ['line 2', 'expected at least 4 numbers', 'got 3']),
    ('1 2 3 4\n\n1 abc 3 4\n', ['line 3', "'abc' is not a number"]),
    ('1 2 3 4\n1 2 3 4\n1 2 3 4\nnan 2 3 4\n', ['line 4', 'non-finite value (nan)']),
    ('1 2 3 4 inf\n', ['line 1', 'non-finite value (inf)']),
    ('1 2 3 4\n1 2 0 4\n', ['line 2', 'box width and height must be positive']),
    ('1 2 3 -4\n', ['line 1', 'must be positive']),
    ('1 2 3 4 5\n1 2 3 4\n', ['line 2', 'expected 5 numbers like line 1', 'got 4']),
    ('1.7e308 0 1.7e308 1\n', ['line 1', 'too large']),
])
def test_box_malformed(tmp_path, content, fragments):
    assert_error(write(tmp_path, 'bad.box', content), read_box, *fragments)


# -------------------------------------------------------------------------- star

def test_star_relion30_loop_with_score(tmp_path):
    coords = read_star(write(tmp_path, 'mic_autopick.star', RELION30_STAR))
    np.testing.assert_array_equal(coords.xy, [[1084.0, 348.0], [512.5, 1790.25]])
    np.testing.assert_array_equal(coords.scores, [1.227814, 0.75])


def test_star_relion31_picks_block_with_coordinates_and_honours_quotes(tmp_path):
    coords = read_star(write(tmp_path, 'particles.star', RELION31_STAR))
    np.testing.assert_array_equal(coords.xy, [[100.0, 200.0], [300.5, 400.5]])
    assert coords.scores is None


def test_star_key_value_block_is_one_particle(tmp_path):
    content = 'data_particles\n_rlnCoordinateX 12.5 # x\n_rlnCoordinateY 7\n'
    coords = read_star(write(tmp_path, 'one.star', content))
    np.testing.assert_array_equal(coords.xy, [[12.5, 7.0]])


def test_star_columns_without_rows_is_empty_and_keeps_score_column(tmp_path):
    content = ('data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n'
               '_rlnAutopickFigureOfMerit\n')
    coords = read_star(write(tmp_path, 'none.star', content))
    assert coords.xy.shape == (0, 2)
    assert coords.scores.shape == (0,)


@pytest.mark.parametrize('content, fragments', [
    ('data_\nloop_\n_rlnCoordinateX\n1\n', ['_rlnCoordinateY', 'missing']),
    ('data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2\n3\n', ['line 6', 'expected 2 values',
                                                                  'got 1']),
    ('data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 x2\n', ['line 5', "'x2' is not a number"]),
    ('data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2\n3 nan\n', ['line 6', 'non-finite']),
    ('loop_\n_rlnCoordinateX\n', ['line 1', 'outside a data_ block']),
    ('data_\n1 2\n', ['line 2', 'outside a loop_']),
    ('data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateX\n', ['line 4', 'duplicate label']),
    ('data_\nloop_\n_rlnCoordinateX\n1\n_rlnCoordinateY\n', ['line 5', 'after the rows']),
    ('data_\n_rlnCoordinateX\n', ['line 2', 'expected one value']),
    ("data_\nloop_\n_a\n'unclosed\n", ['line 4', 'cannot split']),
])
def test_star_malformed(tmp_path, content, fragments):
    assert_error(write(tmp_path, 'bad.star', content), read_star, *fragments)


def test_star_value_starfile_cannot_read_is_named_by_line(tmp_path):
    # starfile (pandas) cuts a row at any '#'; the tokenizer only at a '#' token.
    content = ('data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnMicrographName\n'
               '1 2 mic.mrc\n3 4 mic#2.mrc\n')
    assert_error(write(tmp_path, 'hash.star', content), read_star, 'line 7',
                 "starfile reads 'mic' where the file has 'mic#2.mrc'")


def test_star_that_starfile_reads_differently_is_rejected(tmp_path):
    # Lone carriage returns end lines for Python but not for starfile's line count.
    path = tmp_path / 'mac.star'
    path.write_bytes(b'data_\rloop_\r_rlnCoordinateX\r_rlnCoordinateY\r1 2\r3 4\r')
    assert_error(path, read_star, 'line 2', 'starfile reads the loop of data_')


def test_star_corrected_after_an_error_is_read_afresh(tmp_path):
    # starfile reads through linecache; a failed read must not leave stale lines.
    path = write(tmp_path, 'fixed.star', 'data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n'
                 '1 2\n3 4 5\n')
    assert_error(path, read_star, 'line 6')
    path.write_text('data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n10 20\n30 40\n')
    np.testing.assert_array_equal(read_star(path).xy, [[10, 20], [30, 40]])


def test_star_pair_with_comment_beside_loops_is_a_named_starfile_limit(tmp_path):
    content = RELION31_STAR + '\ndata_extra\n_rlnMicrographName 007.mrc # a comment\n'
    assert_error(write(tmp_path, 'pair.star', content), read_star,
                 'starfile cannot read a comment after a "_label value" pair')


def test_star_tables_keep_strings_and_lines(tmp_path):
    content = RELION31_STAR + '\ndata_extra\n_rlnMicrographName 007.mrc\n'
    tables = read_star_tables(write(tmp_path, 'tables.star', content))
    assert [t.block for t in tables] == ['optics', 'particles', 'extra']
    particles = tables[1]
    assert particles.texts('rlnMicrographName') == ['MotionCorr/job002/mic_001.mrc',
                                                    'MotionCorr/job002/mic 002.mrc']
    assert particles.line_numbers == (21, 22)
    assert tables[2].texts('rlnMicrographName') == ['007.mrc']  # a key-value block
    with pytest.raises(CoordinateFileError, match='line 16: data_particles has no column _rlnX'):
        particles.numbers('rlnX')


# --------------------------------------------------------------------------- pos

def test_pos_with_header_block_and_cost_score(tmp_path):
    coords = read_pos(write(tmp_path, 'mic.pos', XMIPP_POS))
    np.testing.assert_array_equal(coords.xy, [[120.0, 340.0], [56.0, 78.0]])
    np.testing.assert_array_equal(coords.scores, [0.9, 0.25])


def test_pos_missing_columns_names_them(tmp_path):
    content = '# XMIPP_STAR_1 *\ndata_header\nloop_\n _pickingMicrographState\nAuto\n'
    assert_error(write(tmp_path, 'header_only.pos', content), read_pos, '_xcoor', '_ycoor')


# --------------------------------------------------------------------------- csv

def test_csv_case_insensitive_header_extra_columns_and_score(tmp_path):
    content = 'id, X ,Y,Score\n# comment\n1,10.5,20,0.5\n\n2,"30",40.25,1\n'
    coords = read_csv(write(tmp_path, 'mic.csv', content))
    np.testing.assert_array_equal(coords.xy, [[10.5, 20.0], [30.0, 40.25]])
    np.testing.assert_array_equal(coords.scores, [0.5, 1.0])


def test_csv_without_score(tmp_path):
    coords = read_csv(write(tmp_path, 'mic.csv', 'y,x\n1,2\n'))
    np.testing.assert_array_equal(coords.xy, [[2.0, 1.0]])
    assert coords.scores is None


@pytest.mark.parametrize('content, fragments', [
    ('x,z\n1,2\n', ['line 1', "no 'y' column"]),
    ('x,y,x\n1,2,3\n', ['line 1', "2 columns named 'x'"]),
    ('x,y\n1,2\n1,2,3\n', ['line 3', 'expected 2 fields', 'got 3']),
    ('x,y\n1,2\n\n1,abc\n', ['line 4', "'abc' is not a number"]),
    ('x,y\n1,\n', ['line 2', "'' is not a number"]),
    ('x,y,score\n1,2,inf\n', ['line 2', 'non-finite value (inf)']),
])
def test_csv_malformed(tmp_path, content, fragments):
    assert_error(write(tmp_path, 'bad.csv', content), read_csv, *fragments)


# ----------------------------------------------------------------- all formats

@pytest.mark.parametrize('extension', SUPPORTED_EXTENSIONS)
@pytest.mark.parametrize('content', ['', '\n\n  \n', '# only a comment\n\n'])
def test_empty_files_have_no_coordinates(tmp_path, extension, content):
    coords = read_coordinates(write(tmp_path, 'empty' + extension, content))
    assert coords.xy.shape == (0, 2) and coords.xy.dtype == np.float64
    assert coords.scores is None


def test_windows_line_endings_and_byte_order_mark(tmp_path):
    path = tmp_path / 'excel.csv'
    path.write_bytes(b'\xef\xbb\xbfx,y\r\n1,2\r\n3,oops\r\n')
    assert_error(path, read_csv, 'line 3', "'oops'")
    path = tmp_path / 'dos.box'
    path.write_bytes(b'0 0 2 2\r\n4 4 2 2\r\n')
    np.testing.assert_array_equal(read_box(path).xy, [[1.0, 1.0], [5.0, 5.0]])


@pytest.mark.parametrize('extension', SUPPORTED_EXTENSIONS)
def test_binary_file_is_a_coordinate_file_error(tmp_path, extension):
    path = tmp_path / ('binary' + extension)
    path.write_bytes(b'\x89PNG\r\n\x1a\n\xff\xfe')
    assert_error(path, READERS[extension], 'UTF-8')


@pytest.mark.parametrize('extension', SUPPORTED_EXTENSIONS)
def test_missing_file_raises_file_not_found_naming_path(tmp_path, extension):
    path = tmp_path / ('absent' + extension)
    with pytest.raises(FileNotFoundError, match='absent'):
        read_coordinates(path)


def test_dispatch_is_case_insensitive(tmp_path):
    coords = read_coordinates(write(tmp_path, 'MIC.BOX', '0 0 2 2\n'))
    np.testing.assert_array_equal(coords.xy, [[1.0, 1.0]])
    coords = read_coordinates(str(write(tmp_path, 'mic.Pos', XMIPP_POS)))
    assert coords.xy.shape == (2, 2)


def test_unknown_extension_names_file_and_supported_ones(tmp_path):
    path = write(tmp_path, 'mic.txt', '1 2 3 4\n')
    assert_error(path, read_coordinates, "'.txt'", *SUPPORTED_EXTENSIONS)


# ------------------------------------------------------------ property tests

finite = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, allow_infinity=False)
centres_strategy = st.lists(st.tuples(finite, finite), max_size=20)


def write_coordinates(path: Path, xy: np.ndarray, scores: np.ndarray | None) -> None:
    """Write centres (and scores) in the format of path's extension, as the pickers do."""
    extension = path.suffix
    columns = [xy[:, 0], xy[:, 1]] + ([scores] if scores is not None else [])
    if extension == '.box':
        width, height = 64.0, 48.0
        columns[:2] = [xy[:, 0] - width / 2, xy[:, 1] - height / 2,
                       np.full(len(xy), width), np.full(len(xy), height)]
        lines = [' '.join(repr(float(v)) for v in row) for row in zip(*columns)]
        path.write_text(''.join(line + '\n' for line in lines))
    elif extension == '.csv':
        with open(path, 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(['x', 'y'] + (['score'] if scores is not None else []))
            writer.writerows(zip(*columns))
    else:
        names = (['rlnCoordinateX', 'rlnCoordinateY', 'rlnAutopickFigureOfMerit']
                 if extension == '.star' else ['xcoor', 'ycoor', 'cost'])
        header = ('# XMIPP_STAR_1 *\ndata_header\nloop_\n _pickingMicrographState\nAuto\n'
                  if extension == '.pos' else '# version 30001\n')
        labels = ''.join(f'_{name} #{i + 1}\n' for i, name in enumerate(names[:len(columns)]))
        rows = ''.join(' '.join(repr(float(v)) for v in row) + '\n' for row in zip(*columns))
        path.write_text(f'{header}\ndata_particles\n\nloop_\n{labels}{rows}\n')


@pytest.fixture(scope='module')
def property_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('property')


@settings(max_examples=100, deadline=None)
@given(extension=st.sampled_from(SUPPORTED_EXTENSIONS), centres=centres_strategy,
       with_scores=st.booleans(), data=st.data())
def test_round_trip(property_dir, extension, centres, with_scores, data):
    xy = np.array(centres, dtype=np.float64).reshape(-1, 2)
    scores = (np.array(data.draw(st.lists(finite, min_size=len(xy), max_size=len(xy))))
              if with_scores else None)
    path = property_dir / ('round_trip' + extension)
    write_coordinates(path, xy, scores)
    coords = read_coordinates(path)
    np.testing.assert_allclose(coords.xy, xy, rtol=0, atol=1e-6)
    if scores is None or (extension == '.box' and len(xy) == 0):
        assert coords.scores is None  # an empty .box file has no columns to carry scores
    else:
        np.testing.assert_allclose(coords.scores, scores.reshape(-1), rtol=0, atol=1e-6)


# Text built from the formats' own vocabulary reaches deeper than random bytes.
fuzz_tokens = st.sampled_from([
    'data_', 'data_particles', 'loop_', '_rlnCoordinateX', '_rlnCoordinateY',
    '_rlnAutopickFigureOfMerit', '_xcoor', '_ycoor', '_cost', 'x', 'y', 'score', 'X,Y',
    '#', '# XMIPP_STAR_1 *', '1', '-2.5', '1e308', '1e400', 'nan', 'inf', '0', 'abc', "'",
    '"', ',', '"a b"', '\\', '\x00', '\u00e9', '\u0661'])
fuzz_line = (st.lists(fuzz_tokens, max_size=6).map(' '.join)
             | st.lists(fuzz_tokens, max_size=6).map(','.join))
fuzz_text = st.lists(fuzz_line, max_size=12).map('\n'.join)


def assert_valid_or_coordinate_error(path: Path) -> None:
    try:
        coords = read_coordinates(path)
    except CoordinateFileError:
        return
    assert isinstance(coords, PickedCoordinates)
    assert coords.xy.dtype == np.float64 and coords.xy.ndim == 2 and coords.xy.shape[1] == 2
    assert np.isfinite(coords.xy).all()
    if coords.scores is not None:
        assert coords.scores.shape == (len(coords.xy),)
        assert np.isfinite(coords.scores).all()


@settings(max_examples=100, deadline=None)
@given(extension=st.sampled_from(SUPPORTED_EXTENSIONS), content=st.binary(max_size=200))
def test_fuzz_random_bytes(property_dir, extension, content):
    path = property_dir / ('fuzz_bytes' + extension)
    path.write_bytes(content)
    assert_valid_or_coordinate_error(path)


@settings(max_examples=100, deadline=None)
@given(extension=st.sampled_from(SUPPORTED_EXTENSIONS), content=st.text(max_size=200) | fuzz_text)
def test_fuzz_text(property_dir, extension, content):
    path = property_dir / ('fuzz_text' + extension)
    path.write_text(content, encoding='utf-8', errors='surrogatepass')
    assert_valid_or_coordinate_error(path)
