"""How every command-line entry point ends: bad input is one `error:` line (exit 1), SIGINT and
SIGTERM unwind the run (exit 130 / 143), and output folders are checked before any work.

A stop signal raises `Interrupted` in the main thread. It is a BaseException, so the per-item
`except Exception` of a list run does not swallow it, while every `finally` and
`except BaseException` on the way out still runs: the video writer deletes its hidden temporary
file, the frame cache and part files are removed, and a list run prints what it finished.
"""

import atexit
import contextlib
import gc
import os
import queue
import signal
import sys
import tempfile
import threading
from typing import Callable, Iterator, Sequence

from common.allocator import keep_freed_memory
from common.errors import Diff2LipError, DiskFullError, ReportedError
from common.files import disk_full_error, is_disk_full

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the command exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise `Interrupted` (the first one only: a second signal during
    the clean-up is ignored, so the clean-up finishes). Outside the main thread, where handlers
    cannot be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = []

    def handle(signum, frame):
        if not raised:
            raised.append(signum)
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def print_error(message: str) -> None:
    """The one `error:` line a command ends with, on stderr, flushed (a rank may be stopped right after)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def run_command(body: Callable[[], int]) -> int:
    """Run a command's `body` and return its exit code: a `Diff2LipError` is printed as one
    `error:` line (1); a stop signal is one line saying so (128 + signal). A command keeps the
    tensor memory it frees for its next steps (`common.allocator`)."""
    keep_freed_memory()
    try:
        with stop_signals():
            return body()
    except Diff2LipError as exc:
        if not isinstance(exc, ReportedError):
            print_error(str(exc))
        return 1
    except Interrupted as exc:
        _drop_background_work()
        print(f"stopped by {exc.name}; unfinished outputs were removed, finished ones kept", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        # The net under every writer: one that did not name its folder (a log line, a library's
        # own file) still ends in one line when the disk is full, not a traceback.
        if not is_disk_full(exc):
            raise
        print_error(_disk_full_message(exc))
        return 1


def _drop_background_work() -> None:
    """After a stop signal unwound the command: cancel the work still queued in thread pools and
    send SIGTERM to child processes still running, so that the interpreter's exit, which joins
    the pools' threads after they run their whole queue, ends within seconds.

    torch.compile's inductor compiles C++ in a thread pool, one g++ per kernel: after SIGTERM the
    queue held 40 s of compiling. The objects left alive are not collected at exit either. Our own children (pool workers, ranks' part writers) were ended
    by the unwinding already; what is left is a library's.
    """
    from concurrent.futures import thread as futures_thread

    for work_queue in list(getattr(futures_thread, "_threads_queues", {}).values()):
        kept = []  # the None that a shut-down pool's threads stop at
        while True:
            try:
                item = work_queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                kept.append(item)
            else:
                item.future.cancel()
        for item in kept:
            work_queue.put(item)
    for pid in _child_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    # The interpreter's last garbage collection, at exit, walks every object left alive: after
    # torch.compile that took 5-7 s of the stop. The command has cleaned up; the objects go with the
    # process. At exit only (atexit runs before that collection), so that an in-process caller
    # (the tests, the web app) keeps collecting until then.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def _child_pids() -> list:
    """The running children of this process, every thread's (Linux's /proc; none elsewhere)."""
    pids = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as f:
                pids.extend(int(p) for p in f.read().split())
    return pids


def _disk_full_message(exc: BaseException) -> str:
    """The line for a full disk that escaped as a library's error: a writer's own `DiskFullError`
    that this one was raised during (e.g. a log flushed on the way out), else the file it names."""
    cause, seen = exc, set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, DiskFullError):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    filename = getattr(exc, "filename", None)
    if filename:
        return str(disk_full_error(filename, atomic=False))
    return f"no space left on a disk this command writes to ({exc}); free some space there or give another output folder"


def worker_signals() -> None:
    """In a pool worker, once: ignore SIGINT (a terminal's Ctrl-C reaches the whole process group;
    the parent stops the pool) and keep SIGTERM's default, ending the process at once, while idle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """In a pool worker, around one item: SIGTERM (what `Pool.terminate` sends) raises SystemExit,
    so the item's clean-up runs and the worker ends without a traceback. Only around an item: the
    pool's own code, outside it, may hold locks that an exception there would leave taken.

    The exit is raised again when the block ends: a handler that fires inside a ctypes callback
    (numba compiling librosa's kernels, say) has its SystemExit printed and dropped by ctypes, and
    `Pool.terminate` sends one SIGTERM only, then waits for the worker forever. That dropped exit
    is not printed either (it would be a traceback in the run's output for a stop that went well)."""
    received = []
    previous_hook = sys.unraisablehook

    def handle(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        received.append(signum)
        raise SystemExit(128 + signum)

    def quiet_about_the_stop(unraisable):
        if not (received and isinstance(unraisable.exc_value, SystemExit)):
            previous_hook(unraisable)

    signal.signal(signal.SIGTERM, handle)
    sys.unraisablehook = quiet_about_the_stop
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.unraisablehook = previous_hook
        if received:
            raise SystemExit(128 + received[0])


def check_outputs(outputs: Sequence[str], inputs: Sequence[str], example: str = "result.mp4") -> None:
    """Refuse an output that is a folder (suggesting `example` in it) or one of the inputs
    (writing it would destroy the input)."""
    for out in outputs:
        if os.path.isdir(out):
            raise Diff2LipError(f"output '{out}' is a folder; give a file name such as '{os.path.join(out, example)}'")
        for source in inputs:
            if _same_file(out, source):
                raise Diff2LipError(f"output '{out}' is the input '{source}'; writing it would destroy the input, give another name")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_output_folder(folder: str, flag: str) -> None:
    """Fail now, before any work, if `folder` cannot receive files: it is a file, a file stands
    where it would be created, or its nearest existing folder cannot be written (tried with a
    hidden probe file, which is removed). Creates nothing."""
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise Diff2LipError(f"{flag}: '{folder}' is a file, not a folder; give a folder for the outputs")
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise Diff2LipError(f"{flag}: folder '{folder}' cannot be created, '{existing}' is a file; give another folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise Diff2LipError(
            f"{flag}: folder '{folder}' cannot be written ({exc.strerror or exc} in '{existing}'); give a writable folder"
        ) from None
