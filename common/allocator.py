"""Keep freed tensor memory in the process instead of handing it back to the system at once.

PyTorch allocates CPU tensors with the C library's malloc, and glibc serves every block above its
mmap threshold (128 KiB, raised to at most 32 MiB as blocks are freed) with a fresh mmap, then
unmaps it when the tensor dies. A network step makes and frees hundreds of such activations, and
every new one is zero-filled page by page by the kernel: on a 2-core AMD EPYC, generate.py on the
demo's 6 cross clips spent 8-10 s of 35 s in the kernel (page faults), 1.3 s with the two
thresholds below raised, 16 % less wall time (`benchmarks/bench_pipeline.py --parts allocator`).

glibc's `mallopt` is the switch; no Python library wraps it (jemalloc or tcmalloc through
LD_PRELOAD do the same from outside the process, and stay the user's choice: a process started
with MALLOC_* or GLIBC_TUNABLES set in its environment is left as the user configured it). On
other C libraries (macOS, musl) this does nothing. The price: memory freed by the run stays
counted in the process's resident size up to the peak it reached, which it had to fit anyway.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h: free memory at the heap's top above this goes back to the system
M_MMAP_THRESHOLD = -3  # blocks at least this large get a mapping of their own
THRESHOLD = 1 << 30

def _user_tunes_malloc() -> bool:
    """A MALLOC_* variable (glibc's MALLOC_ARENA_MAX, MALLOC_TRIM_THRESHOLD_, ...) or GLIBC_TUNABLES."""
    return any(name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" for name in os.environ)


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to `THRESHOLD` for this process (and the processes
    it forks). Returns whether both were set: False off Linux/glibc or where the environment
    already tunes malloc."""
    if not sys.platform.startswith("linux") or _user_tunes_malloc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Both together: setting either turns off glibc's sliding threshold, so the mmap one alone
    # would leave the trim at its 128 KiB default, and the trim one alone maps every block.
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
