"""Files written whole or not at all.

Every file a stage or a front end writes (run-folder arrays and records, STAR
files, model records, cached micrographs) is written to a temporary file in
the same folder and moved into place with ``os.replace``: a run stopped
mid-write, or a reader in another process, never sees half a file.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path beside ``path`` to write to: moved onto ``path`` when the block
    ends, removed when it raises.  ``suffix`` is the temporary file's extension (numpy adds
    ``.npy``/``.npz`` to a name without it)."""
    folder, base = os.path.split(os.fspath(path))
    folder = folder or "."
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".%s." % base, suffix=suffix)
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
