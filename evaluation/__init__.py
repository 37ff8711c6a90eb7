"""Metrics of generated lip-sync videos: FID (full frame and mouth region), PSNR / SSIM and LMD."""

import contextlib
import os
import pickle

from common.errors import CheckpointError
from face_detection import is_oom_error


@contextlib.contextmanager
def loading_weights(what: str, filename: str, path: str, source: str):
    """Turn a failed load of cached pretrained weights into a one-line `CheckpointError`:
    missing (no network to download) names the file and the folder it goes in; unreadable
    (truncated, another network's) names the file to replace it with. Out-of-memory passes."""
    try:
        yield
    except OSError as e:  # URLError, HTTPError, timeouts: no network and no file in the cache
        raise CheckpointError(
            f"{what} weights not found: put {filename} in {os.path.dirname(path)} "
            f"(`python -m scripts.fetch_weights {filename}` or {source} downloads it there on a connected machine)"
        ) from e
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError) as e:
        if is_oom_error(e):  # the device is full, the file may be fine
            raise
        # torch.load of a truncated file, or a state dict of another network.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"'{path}' is not a readable {what} state dict ({reason}); replace it with {source}'s {filename}") from e
