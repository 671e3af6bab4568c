"""Readers for particle-picker coordinate files (EMAN .box, RELION .star, .csv, Xmipp .pos).

Every reader returns particle *centres* in pixels with x = column and y = row of
the micrograph array ``data[row, col]``, so that callers never have to know which
picker wrote the file or whether it stored corners or centres.

The module is deliberately free of Scipion and TensorFlow: it works on paths and
numpy arrays only.  STAR files (RELION and Xmipp) are read by ``starfile``
(:func:`read_star_tables`), behind a small tokenizer that checks the file's
structure first: ``starfile`` (0.5) reports neither the line of a bad row nor
most structural faults (it pads a short row with NaN, skips a ``loop_``
outside a ``data_`` block, fails on a comment after a key-value pair), and
the line numbers the tokenizer records let every value error name its line.

Malformed content raises :class:`CoordinateFileError` naming the file and the
line, so a user can open the file and fix it; a missing file raises the usual
:class:`FileNotFoundError`, whose message already contains the path.
"""
from __future__ import annotations

import csv
import linecache
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: A file path as the readers accept it.  ``typing.Union`` rather than
#: ``str | os.PathLike``: this alias is evaluated at import time, and ``|``
#: between classes needs Python 3.10 while the package supports 3.9.
PathLike = Union[str, os.PathLike]

#: Minimum number of columns of an EMAN box line: x y width height.
_BOX_MIN_COLUMNS = 4
_BOX_SCORE_COLUMN = 4

_RELION_X, _RELION_Y = 'rlnCoordinateX', 'rlnCoordinateY'
_RELION_SCORE = 'rlnAutopickFigureOfMerit'
_XMIPP_X, _XMIPP_Y = 'xcoor', 'ycoor'
_XMIPP_SCORE = 'cost'


class CoordinateFileError(ValueError):
    """Raised for a malformed coordinate file.

    The message names the file and, where known, the line, because the only
    useful reaction to a broken picker output is to open it at that line.
    """


@dataclass(frozen=True, eq=False)
class PickedCoordinates:
    """Particle centres read from one coordinate file.

    ``xy`` is an ``(n, 2)`` float64 array of centres in pixels, x = column and
    y = row of ``data[row, col]``.  ``scores`` is an ``(n,)`` float64 array of
    picker scores when the file has a score column (even if it has no rows),
    else ``None``, so callers can tell "no scores" from "zero particles".
    ``box_sizes`` holds the box width of each pick for formats that store one
    (EMAN ``.box``), so an import can take the box size from the files.
    Equality is identity (``eq=False``) because element-wise array comparison
    has no single truth value.
    """

    xy: np.ndarray
    scores: np.ndarray | None
    box_sizes: np.ndarray | None = None


def _error(path: PathLike, message: str, line: int | None = None) -> CoordinateFileError:
    """Build an error whose message starts with the file and, if known, the line."""
    where = os.fspath(path) if line is None else f'{os.fspath(path)}, line {line}'
    return CoordinateFileError(f'{where}: {message}')


def _read_lines(path: PathLike) -> list[str]:
    """Return the file's lines (universal newlines, UTF-8 with optional BOM).

    Decoding failures become CoordinateFileError: a binary file handed in by
    mistake is a malformed coordinate file, not a programming error.
    """
    try:
        with open(path, encoding='utf-8-sig') as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise _error(path, f'not a UTF-8 text file ({exc.reason} at byte {exc.start})') from None
    return text.split('\n')


def _tokens(line: str) -> list[str]:
    """Split a line on whitespace, dropping a comment that starts with a '#' token."""
    tokens = line.split()
    for index, token in enumerate(tokens):
        if token.startswith('#'):
            return tokens[:index]
    return tokens


def _to_float_table(path: PathLike, rows: Sequence[Sequence[str]], line_numbers: Sequence[int],
                    n_columns: int) -> np.ndarray:
    """Convert equal-length rows of number strings to a finite ``(n, n_columns)`` float64 array.

    The conversion is one vectorised numpy call; only when it fails is the slow
    per-token pass run, to report the first bad token with its line number
    (numpy parses strings with Python's ``float``, so both passes agree).
    """
    try:
        table = np.array(rows, dtype=np.float64).reshape(len(rows), n_columns)
    except ValueError:
        for row, line in zip(rows, line_numbers):
            for token in row:
                try:
                    float(token)
                except ValueError:
                    raise _error(path, f'{token!r} is not a number', line) from None
        raise  # numpy rejected what float() accepts: surface numpy's own error
    _check_finite(path, table, line_numbers)
    return table


def _check_finite(path: PathLike, table: np.ndarray, line_numbers: Sequence[int]) -> None:
    """Reject NaN and infinities, which would silently poison every later step."""
    bad = ~np.isfinite(table)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise _error(path, f'non-finite value ({table[row, column]})', line_numbers[row])


def _coordinates(xy: np.ndarray, scores: np.ndarray | None,
                 box_sizes: np.ndarray | None = None) -> PickedCoordinates:
    """Wrap arrays into PickedCoordinates with the documented dtypes and shapes."""
    xy = np.ascontiguousarray(xy, dtype=np.float64).reshape(-1, 2)
    if scores is not None:
        scores = np.ascontiguousarray(scores, dtype=np.float64).reshape(-1)
    if box_sizes is not None:
        box_sizes = np.ascontiguousarray(box_sizes, dtype=np.float64).reshape(-1)
    return PickedCoordinates(xy=xy, scores=scores, box_sizes=box_sizes)


def read_box(path: PathLike) -> PickedCoordinates:
    """Read an EMAN ``.box`` file: ``x y width height [score ...]`` per line.

    EMAN stores the lower-left corner of the box, so the centre is
    ``(x + width / 2, y + height / 2)``.  A fifth column is the picker score;
    further columns are accepted (and must be numbers) but ignored.  All lines
    must have the same number of columns, since a score on only some lines
    cannot be represented.  Blank lines and ``#`` comments are skipped.
    """
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(_read_lines(path), start=1):
        tokens = _tokens(line)
        if not tokens:
            continue
        if len(tokens) < _BOX_MIN_COLUMNS:
            raise _error(path, 'expected at least 4 numbers (x y width height [score]), '
                               f'got {len(tokens)}', number)
        if rows and len(tokens) != len(rows[0]):
            raise _error(path, f'expected {len(rows[0])} numbers like line {line_numbers[0]}, '
                               f'got {len(tokens)}', number)
        rows.append(tokens)
        line_numbers.append(number)
    if not rows:
        return _coordinates(np.empty((0, 2)), None)

    n_columns = len(rows[0])
    table = _to_float_table(path, rows, line_numbers, n_columns)
    sizes = table[:, 2:4]
    not_positive = ~(sizes > 0).all(axis=1)
    if not_positive.any():
        row = int(np.argmax(not_positive))
        raise _error(path, f'box width and height must be positive, got {sizes[row, 0]:g} '
                           f'x {sizes[row, 1]:g}', line_numbers[row])
    with np.errstate(over='ignore'):  # overflow is reported below, with its line
        xy = table[:, 0:2] + sizes / 2
    overflow = ~np.isfinite(xy).all(axis=1)
    if overflow.any():
        raise _error(path, 'box centre is too large to represent',
                     line_numbers[int(np.argmax(overflow))])
    scores = table[:, _BOX_SCORE_COLUMN] if n_columns > _BOX_SCORE_COLUMN else None
    return _coordinates(xy, scores, sizes[:, 0])


@dataclass
class _StarTable:
    """One table of a STAR file as the tokenizer reads it: a ``loop_`` or a block's pairs.

    Column names are stored without the leading underscore; each row keeps its
    tokens as strings, and ``line_numbers`` the line of each row.
    """

    block: str
    is_loop: bool
    line: int
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)


def _star_split(path: PathLike, line: str, number: int) -> list[str]:
    """Tokenise a STAR line, honouring quotes only where the line has any (as RELION does)."""
    if "'" not in line and '"' not in line:
        return _tokens(line)
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise _error(path, f'cannot split line: {exc}', number) from None


def _parse_star(path: PathLike) -> list[_StarTable]:
    """Check a STAR file's structure and return its tables, one per ``loop_`` and per pair block.

    Supports what RELION and Xmipp write: ``data_<name>`` blocks, ``loop_``
    tables with one row per line, ``_label value`` pairs, ``#`` comments and
    a ``data_`` line directly after the last row of the previous loop.
    """
    tables: list[_StarTable] = []
    block: str | None = None
    loop: _StarTable | None = None  # the loop currently being read, if any
    pairs: _StarTable | None = None  # the key-value table of the current block
    for number, line in enumerate(_read_lines(path), start=1):
        tokens = _star_split(path, line, number)
        if not tokens:
            continue
        keyword = tokens[0]
        if keyword.startswith('data_'):
            block, loop, pairs = keyword[len('data_'):], None, None
        elif block is None:
            raise _error(path, f'{keyword!r} outside a data_ block', number)
        elif keyword == 'loop_':
            loop = _StarTable(block, is_loop=True, line=number)
            tables.append(loop)
        elif keyword.startswith('_') and loop is not None and not loop.rows:
            _add_column(path, loop, keyword[1:], number)
        elif keyword.startswith('_') and loop is None:
            if len(tokens) != 2:
                raise _error(path, f'expected one value after {keyword}, got {len(tokens) - 1}',
                             number)
            if pairs is None:
                pairs = _StarTable(block, is_loop=False, line=number, rows=[[]],
                                   line_numbers=[number])
                tables.append(pairs)
            _add_column(path, pairs, keyword[1:], number)
            pairs.rows[0].append(tokens[1])
        elif keyword.startswith('_'):
            raise _error(path, f'label {keyword} after the rows of a loop_', number)
        elif loop is None or not loop.columns:
            raise _error(path, f'value {keyword!r} outside a loop_ with labels', number)
        elif len(tokens) != len(loop.columns):
            raise _error(path, f'expected {len(loop.columns)} values, got {len(tokens)}', number)
        else:
            loop.rows.append(tokens)
            loop.line_numbers.append(number)
    return tables


def _add_column(path: PathLike, table: _StarTable, name: str, number: int) -> None:
    """Append a column label, rejecting duplicates, which would make a lookup ambiguous."""
    if name in table.columns:
        raise _error(path, f'duplicate label _{name}', number)
    table.columns.append(name)


@dataclass(frozen=True, eq=False)
class StarTable:
    """One table of a STAR file: its values as ``starfile`` read them, and the line of each row.

    ``frame`` has one column per label (without the leading underscore) and
    holds the values as strings, so micrograph names keep leading zeros and
    numbers are converted by :meth:`numbers`, which names the line of a bad
    value.  RELION's spellings of a missing value (``nan``, ``NaN``,
    ``<NA>``) are NaN.  ``line`` is where the table starts (its ``loop_`` or
    first pair), for errors about the table as a whole.
    """

    path: str
    block: str
    line: int
    frame: pd.DataFrame
    line_numbers: tuple[int, ...]

    @property
    def columns(self) -> list[str]:
        """The table's labels, without the leading underscore."""
        return list(self.frame.columns)

    def error(self, message: str, row: int | None = None) -> CoordinateFileError:
        """An error naming the file and the line of ``row`` (the table's line when None)."""
        return _error(self.path, message, self.line if row is None else self.line_numbers[row])

    def numbers(self, *names: str) -> np.ndarray:
        """Return columns ``names`` as a finite ``(n, len(names))`` float64 array.

        A value that is not a number, or is NaN or infinite, raises
        :class:`CoordinateFileError` naming its line.
        """
        self.require(*names)
        values = self.frame[list(names)].to_numpy(dtype=object)
        return _to_float_table(self.path, values, self.line_numbers, len(names))

    def texts(self, name: str) -> list[str]:
        """Return column ``name`` as strings; a missing value raises an error naming its line."""
        self.require(name)
        column = self.frame[name]
        missing = column.isna().to_numpy()
        if missing.any():
            raise self.error(f'_{name} has no value', int(np.argmax(missing)))
        return [str(value) for value in column]

    def require(self, *names: str) -> None:
        """Raise an error naming the table's line when any of ``names`` is not a column."""
        missing = [f'_{name}' for name in names if name not in self.frame.columns]
        if missing:
            raise self.error(f'data_{self.block} has no column {", ".join(missing)}')


def read_star_tables(path: PathLike) -> list[StarTable]:
    """Read every table of a STAR file with ``starfile``, after checking its structure.

    The tokenizer runs first: a structural fault raises
    :class:`CoordinateFileError` at its line before ``starfile`` sees the
    file.  Loops are then read by ``starfile``, every column as strings, and
    checked value by value against the tokenizer's: where ``starfile`` reads
    a loop differently (a ``#`` inside a value, an apostrophe inside a quoted
    value, an empty data block before a loop, lone carriage-return line ends)
    the file is rejected at the line concerned rather than misread.
    Key-value blocks and loops without rows come from the tokenizer, since
    ``starfile`` cannot read a comment after a pair; a file that has such a
    comment as well as loops is rejected (RELION writes no such comments).
    """
    parsed = _parse_star(path)
    frames = _starfile_loops(path, parsed) if any(t.is_loop and t.rows for t in parsed) else {}
    tables = []
    for table in parsed:
        if table.is_loop and table.rows:
            frame = frames.get(table.block)
            _check_starfile_read(path, table, frame)
        else:
            frame = _frame_from_tokens(table)
        tables.append(StarTable(os.fspath(path), table.block, table.line, frame,
                                tuple(table.line_numbers)))
    return tables


def _starfile_loops(path: PathLike, parsed: list[_StarTable]) -> dict[str, pd.DataFrame]:
    """Return ``starfile``'s loop tables by block name, every column read as strings."""
    import starfile  # deferred: pandas is only needed once a STAR file is read

    names = sorted({name for table in parsed for name in table.columns})
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=names)
    except Exception as exc:  # starfile raises pandas' and its own errors without a line
        hint = ('; starfile cannot read a comment after a "_label value" pair'
                if any(not table.is_loop for table in parsed) else '')
        raise _error(path, f'starfile cannot read it ({exc}){hint}') from None
    finally:
        # starfile reads through linecache and leaves stale lines there when it
        # fails, so a corrected file re-read in the same process would be misread.
        linecache.clearcache()
    import pandas as pd
    return {name: block for name, block in blocks.items() if isinstance(block, pd.DataFrame)}


def _check_starfile_read(path: PathLike, table: _StarTable, frame: pd.DataFrame | None) -> None:
    """Reject a loop that ``starfile`` read with other columns, rows or values than the file's."""
    shape = (len(table.rows), len(table.columns))
    if frame is None or list(frame.columns) != table.columns or frame.shape != shape:
        found = ('no such table' if frame is None
                 else f'{frame.shape[0]} rows x {frame.shape[1]} columns')
        raise _error(path, f'starfile reads the loop of data_{table.block} as {found}, not '
                           f'{shape[0]} rows x {shape[1]} columns; write one loop per data block '
                           'and no "#" inside values', table.line)
    # Every value must be the tokenizer's: pandas, under starfile, cuts a row at
    # any '#' and turns apostrophes into quotes, which would silently change a name.
    tokens = np.empty(shape, dtype=object)
    tokens[:] = table.rows
    values = frame.to_numpy(dtype=object)
    missing = frame.isna().to_numpy()
    differs = (values != tokens) & ~(missing & np.isin(tokens, _STAR_MISSING))
    if differs.any():
        row, column = np.argwhere(differs)[0]
        raise _error(path, f'starfile reads {values[row, column]!r} where the file has '
                           f'{tokens[row, column]!r}; avoid "#" and quotes inside values',
                     table.line_numbers[row])


#: Values that starfile (and RELION) read as missing.
_STAR_MISSING = ('nan', 'NaN', '<NA>')


def _frame_from_tokens(table: _StarTable) -> pd.DataFrame:
    """A frame of the tokenizer's strings, for tables starfile cannot read or that have no rows."""
    import pandas as pd

    frame = pd.DataFrame(table.rows, columns=table.columns, dtype=object)
    return frame.mask(frame.isin(_STAR_MISSING))


def find_star_table(path: PathLike, tables: list[StarTable], required: Sequence[str],
                    why: str) -> StarTable:
    """The first table with every ``required`` column, else an error naming the missing ones.

    Choosing the table by its columns lets one reader handle RELION 3.0
    (``data_``), RELION 3.1+/4 (``data_optics`` + ``data_particles``) and Xmipp
    (``data_header`` + ``data_particles``) without knowing block names.  The
    error names the line of the table that has most of the columns, and
    ``why`` says what the columns are for.
    """
    for table in tables:
        if all(name in table.columns for name in required):
            return table
    labelled = [table for table in tables if table.columns]
    if not labelled:
        raise _error(path, f'no STAR table found ({why})')
    best = max(labelled, key=lambda t: sum(name in t.columns for name in required))
    missing = ', '.join(f'_{name}' for name in required if name not in best.columns)
    raise best.error(f'missing required column {missing} ({why})')


def _read_star_columns(path: PathLike, x_name: str, y_name: str,
                       score_name: str) -> PickedCoordinates:
    """Read centres (and optional scores) from the first STAR table with the x and y columns.

    A file without any labels at all (empty, comments only) has no particles.
    """
    tables = read_star_tables(path)
    if not any(table.columns for table in tables):
        return _coordinates(np.empty((0, 2)), None)
    table = find_star_table(path, tables, (x_name, y_name),
                            f'no data block has both _{x_name} and _{y_name}')
    names = [x_name, y_name] + ([score_name] if score_name in table.columns else [])
    values = table.numbers(*names)
    scores = values[:, 2] if len(names) == 3 else None
    return _coordinates(values[:, :2], scores)


def read_star(path: PathLike) -> PickedCoordinates:
    """Read a RELION ``.star`` file: centres in ``_rlnCoordinateX``/``_rlnCoordinateY``.

    ``_rlnAutopickFigureOfMerit``, when present, is the score.  The data block
    may be a ``loop_`` or key-value pairs (a single particle) and may have any
    name (``data_``, ``data_particles``), as RELION 3.0, 3.1 and 4 write.
    """
    return _read_star_columns(path, _RELION_X, _RELION_Y, _RELION_SCORE)


def read_pos(path: PathLike) -> PickedCoordinates:
    """Read an Xmipp ``.pos`` metadata file: centres in ``_xcoor``/``_ycoor``.

    Xmipp writes a ``data_header`` block (picking state) before
    ``data_particles``; the block holding ``_xcoor``/``_ycoor`` is used.
    ``_cost``, written by Xmipp's automatic picker, is the score when present.
    """
    return _read_star_columns(path, _XMIPP_X, _XMIPP_Y, _XMIPP_SCORE)


def read_csv(path: PathLike) -> PickedCoordinates:
    """Read a comma-separated file whose header names ``x`` and ``y`` (and optionally ``score``).

    Header names are matched case-insensitively after stripping spaces; other
    columns are allowed and ignored.  Blank lines and lines starting with ``#``
    are skipped; every other row must have as many fields as the header.
    """
    header: list[str] | None = None
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    reader = csv.reader(_read_lines(path))
    try:
        for fields in reader:
            number = reader.line_num
            if not fields or fields[0].lstrip().startswith('#') or not ''.join(fields).strip():
                continue
            if header is None:
                header = [name.strip().lower() for name in fields]
                indices = _csv_columns(path, header, number)
            elif len(fields) != len(header):
                raise _error(path, f'expected {len(header)} fields like the header, '
                                   f'got {len(fields)}', number)
            else:
                rows.append([fields[i] for i in indices])
                line_numbers.append(number)
    except csv.Error as exc:
        raise _error(path, f'invalid CSV: {exc}', reader.line_num) from None
    if header is None:
        return _coordinates(np.empty((0, 2)), None)
    values = _to_float_table(path, rows, line_numbers, len(indices))
    scores = values[:, 2] if len(indices) == 3 else None
    return _coordinates(values[:, :2], scores)


def _csv_columns(path: PathLike, header: list[str], number: int) -> list[int]:
    """Return the indices of the x, y and (if present) score columns of a CSV header."""
    indices = []
    for name in ('x', 'y', 'score'):
        count = header.count(name)
        if count > 1:
            raise _error(path, f'header has {count} columns named {name!r}', number)
        if count == 1:
            indices.append(header.index(name))
        elif name != 'score':
            raise _error(path, f'header has no {name!r} column (found {header})', number)
    return indices


_READERS: dict[str, Callable[[PathLike], PickedCoordinates]] = {
    '.box': read_box,
    '.star': read_star,
    '.csv': read_csv,
    '.pos': read_pos,
}

#: Lower-case file extensions understood by :func:`read_coordinates`.
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_READERS)


def read_coordinates(path: PathLike) -> PickedCoordinates:
    """Read any supported coordinate file, choosing the reader by its extension (any case)."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    try:
        reader = _READERS[extension]
    except KeyError:
        raise _error(path, f'unsupported coordinate file extension {extension!r}; supported: '
                           f'{", ".join(SUPPORTED_EXTENSIONS)}') from None
    return reader(path)
