"""Atomic writes: a file appears under its final name complete, or not at all.

Every output of ours (videos aside, which `dataset/video_io.py` writes the same way) goes through
these: an interrupted run, a full disk or a crash never leaves a truncated file under the final
name, and a previous file of that name stays intact until the new one is complete.
"""

import json
import os
import uuid
from typing import Any, Callable, Optional

import torch


def atomic_write(path, write: Callable[[str], None]) -> None:
    """Let `write(tmp)` produce the file under a temporary name in the same folder, then rename it
    to `path`: an interrupted write never leaves a truncated file under the final name."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path: str) -> None:
    """`torch.save` of `obj` to `path`, atomically (`atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_bytes(path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj: Any, indent: Optional[int] = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))
