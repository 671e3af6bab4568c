"""The on-disk particle stack: a standard ``.npy`` file read and written in place.

Extraction writes every OR and negative particle once; training and scoring
read them back many times.  A memory map would be the obvious tool, but every
page it touches stays in the process's resident memory, so a 250,000-particle
run would hold the whole stack resident by the end of scoring.  This class
reads and writes rows with positioned I/O (``os.pread``/``os.pwrite``)
instead: the operating system still caches the file, but the process holds
only the rows it asked for, so its memory does not grow with the stack.

The files stay plain ``.npy`` (float16, shape (n, size, size)), which
``numpy.load`` opens too.
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np

STACK_DTYPE = np.dtype(np.float16)
"""Normalised images need no more precision; half the bytes of float32 to read back."""

CHUNK_BYTES = 8 << 20
"""Bytes of float64 images that one step of a loop over many boxes works on."""


def boxes_per_chunk(size: int) -> int:
    """How many ``size`` x ``size`` float64 images make :data:`CHUNK_BYTES`: 32 boxes of
    180 px, 1,024 of 32 px; the loops that cut, resize and transform boxes take them that
    many at a time.

    Small enough that a chunk's arrays come from the memory the process already holds:
    numpy asks the C library for every array, and the C library maps an array of more
    than 32 MB fresh from the system each time and hands it back when it is freed, so the
    system zeroes its pages again for the next.  Cutting every box of a micrograph at once
    and resizing 128 at a time, extracting EMPIAR-10017's boxes spent about as long in
    the system as in the arithmetic (``benchmarks/README.md``, *Speed*)."""
    return max(1, CHUNK_BYTES // (size * size * 8))


Key = Union[int, slice, np.ndarray, list]
MAX_READ = 1 << 30
"""Bytes asked of one read call."""


class ParticleStack:
    """An (n, size, size) float16 stack in a ``.npy`` file, indexed like an array.

    Reading takes an int, a slice with step 1 or an array of row numbers and
    returns an in-memory array; consecutive rows are read in one call.
    Writing takes a slice with step 1.
    """

    def __init__(self, path: str, writable: bool = False):
        self.path = path
        self._fd = -1
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            self._offset = handle.tell()
        if len(shape) != 3 or shape[1] != shape[2] or dtype != STACK_DTYPE or fortran:
            raise ValueError(f"{path} is not a particle stack: shape {shape}, dtype {dtype}")
        self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        self.shape: tuple[int, int, int] = tuple(shape)
        self.dtype = STACK_DTYPE
        self._row_bytes = shape[1] * shape[2] * STACK_DTYPE.itemsize

    @classmethod
    def create(cls, path: str, n: int, size: int) -> "ParticleStack":
        """A new zero-filled stack of ``n`` particles of ``size`` x ``size`` px."""
        header = {"descr": np.lib.format.dtype_to_descr(STACK_DTYPE), "fortran_order": False,
                  "shape": (n, size, size)}
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            handle.truncate(handle.tell() + n * size * size * STACK_DTYPE.itemsize)
        return cls(path, writable=True)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        """Side of the particle images in pixels."""
        return self.shape[1]

    def _rows(self, key: Key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            index = int(key) + len(self) if key < 0 else int(key)
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} particles")
            return np.array([index])
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("particle stacks are sliced with step 1 only")
            return np.arange(start, max(start, stop))
        rows = np.asarray(key, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} particles")
        return rows

    def _read_run(self, first: int, count: int) -> np.ndarray:
        want = count * self._row_bytes
        buffer = bytearray(want)
        view = memoryview(buffer)
        done = 0
        while done < want:  # one call reads at most ~2 GB on Linux; also resumes short reads
            got = os.preadv(self._fd, [view[done:done + MAX_READ]],
                            self._offset + first * self._row_bytes + done)
            if got == 0:
                raise OSError(f"{self.path} is truncated: rows {first}..{first + count - 1} "
                              "are missing")
            done += got
        return np.frombuffer(buffer, dtype=STACK_DTYPE).reshape(count, self.size, self.size)

    def __getitem__(self, key: Key) -> np.ndarray:
        rows = self._rows(key)
        if isinstance(key, slice) and len(rows):  # the scoring loop's case: one read
            return self._read_run(int(rows[0]), len(rows))
        out = np.empty((len(rows), self.size, self.size), dtype=STACK_DTYPE)
        if len(rows) == 0:
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        # runs of consecutive row numbers (repeats included) are read in one call
        breaks = np.flatnonzero(np.diff(ordered) > 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            first, last = ordered[run[0]], ordered[run[-1]]
            block = self._read_run(first, last - first + 1)
            out[order[run]] = block[ordered[run] - first]
        return out[0] if isinstance(key, (int, np.integer)) else out

    def __setitem__(self, key: slice, images: np.ndarray) -> None:
        if not isinstance(key, slice):
            raise IndexError("particle stacks are written by slices of rows")
        rows = self._rows(key)
        images = np.ascontiguousarray(images, dtype=STACK_DTYPE)
        if images.shape != (len(rows), self.size, self.size):
            raise ValueError(f"cannot write images of shape {images.shape} to rows "
                             f"{key.start}..{key.stop} of {self.path}")
        if len(rows):
            os.pwrite(self._fd, images.tobytes(), self._offset + rows[0] * self._row_bytes)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        """The whole stack in memory as ``dtype`` (for small stacks: tests, galleries)."""
        return self[:].astype(dtype)

    def flush(self) -> None:
        """Make the written rows durable (they are visible to readers at once)."""
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ParticleStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def create_stack(path: str, n: int, size: int) -> ParticleStack:
    """A new on-disk stack for ``n`` particles of ``size`` x ``size`` px, zero-filled."""
    return ParticleStack.create(path, n, size)


def open_stack(path: str) -> ParticleStack:
    """Open a stack written by :func:`create_stack` for reading."""
    return ParticleStack(path)
