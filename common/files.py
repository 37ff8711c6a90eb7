"""Atomic writes: a file appears under its final name complete, or not at all.

Every output of ours (videos aside, which `dataset/video_io.py` writes the same way) goes through
these: an interrupted run, a full disk or a crash never leaves a truncated file under the final
name, and a previous file of that name stays intact until the new one is complete.
"""

import contextlib
import errno
import json
import os
import uuid
from typing import Any, Callable, Iterator, Optional

import torch

from common.errors import DiskFullError

#: What the system says when a write finds no room: a full disk, a full quota, or a size limit
#: (RLIMIT_FSIZE, with SIGXFSZ ignored). All are the same fix for the user: free space or move.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from or during, is an OSError for lack of
    space (libraries such as torch wrap the OSError of a failed write in their own error)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path, atomic: bool = True) -> DiskFullError:
    """The one line for a write into `path` (a file or its folder) that found no space; `atomic`:
    the write was one of ours, so nothing stands under the final name."""
    path = os.path.abspath(os.fspath(path))
    folder, name = (path, "") if os.path.isdir(path) else (os.path.dirname(path), f" (writing '{os.path.basename(path)}')")
    kept = ": nothing was written under the final name and earlier files there are intact" if atomic else ""
    return DiskFullError(
        f"no space left on the disk of '{folder}'{name}{kept}; free some space there or give another output folder"
    )


@contextlib.contextmanager
def reporting_full_disk(path) -> Iterator[None]:
    """Within: a write that fails for lack of space raises `disk_full_error(path)` instead of the
    library's own error (PyAV's OSError, torch's RuntimeError), which the entry points print as
    one line. Other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full_error(path) from None
        raise


def atomic_write(path, write: Callable[[str], None]) -> None:
    """Let `write(tmp)` produce the file under a temporary name in the same folder, then rename it
    to `path`: an interrupted write never leaves a truncated file under the final name."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with reporting_full_disk(path):
            write(tmp)
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path: str) -> None:
    """`torch.save` of `obj` to `path`, atomically (`atomic_write`)."""

    def write(tmp: str) -> None:
        # Through a Python file object: saved to a path, torch's own writer turns a full disk into
        # "unexpected pos" with no errno, which no one could read as a full disk.
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def atomic_write_bytes(path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj: Any, indent: Optional[int] = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))


def reserve_space(path, nbytes: int) -> None:
    """Allocate the first `nbytes` of the existing file `path` on disk now (`disk_full_error` when
    they do not fit). For memory maps: one over a sparse file that meets a full disk ends the
    process with SIGBUS, past any error handling."""
    with reporting_full_disk(os.path.dirname(os.path.abspath(os.fspath(path)))):
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, max(int(nbytes), 1))
        finally:
            os.close(fd)
