"""Progress of long jobs: a tqdm bar on a terminal, plain lines in logs, and a callback for the web app.

A bar that redraws with carriage returns is unreadable in a log file or a CI console, so when the
stream is not a terminal, `Progress` prints a plain line instead (at most one per `PLAIN_LINE_SECONDS`,
and always the last one), each with the count, the rate and the time left:

    result.mp4: 64/250 frames (26%), 1.30 frames/s, 2:23 left

Counts may be fractional: the generator reports each network pass as its share of a batch's frames,
so the figure moves with every pass, not once per 32-frame batch.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")

# The shortest gap between two plain lines (the last line is always printed).
PLAIN_LINE_SECONDS = 2.0


def format_duration(seconds: float) -> str:
    """`h:mm:ss` above an hour, `m:ss` below it."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plain_line(desc: str, done: float, total: Optional[float], unit: str, elapsed: float, counted: Optional[float] = None,
               decimals: int = 0) -> str:
    """One progress line: count, share, rate since the start and the time left at that rate.
    `counted`: the units done by this run (a resumed download starts past 0), `done` by default."""
    counted = done if counted is None else counted
    rate = counted / elapsed if elapsed > 0 else 0.0
    units = unit + "s" if unit.isalpha() and unit.islower() else unit  # frames, clips; MiB
    if total is None:
        line = f"{desc}: {done:.{decimals}f} {units}"
    else:
        share = 100.0 * done / total if total else 100.0
        line = f"{desc}: {done:.{decimals}f}/{total:.{decimals}f} {units} ({share:.0f}%)"
    if rate > 0:
        line += f", {rate:.2f} {units}/s"
        if total is not None:
            line += f", {format_duration((total - done) / rate)} left"
    return line


class Progress:
    """Counts `unit`s of a job towards `total`; see the module docstring.

    :param total: None when unknown (no share, no time left).
    :param enabled: False shows nothing (the callback still runs).
    :param stream: where to write (stderr by default); a terminal gets a tqdm bar.
    :param callback: called as `callback(done, total)` after every update (the web app's bar).
    :param scale: `total`, `initial` and updates come in units of 1/scale (bytes for unit "MiB"
        with scale 2**20); counts are then shown with one decimal.
    :param initial: already done before this run (a resumed download); not counted in the rate.
    """

    def __init__(
        self,
        total: Optional[float],
        desc: str,
        unit: str = "frame",
        enabled: bool = True,
        stream: Optional[TextIO] = None,
        callback: Optional[Callable[[float, float], None]] = None,
        clock: Callable[[], float] = time.perf_counter,
        scale: float = 1.0,
        initial: float = 0.0,
    ):
        self.scale = scale
        self.total = None if total is None else total / scale
        self.desc = desc
        self.unit = unit
        self.done = self.initial = initial / scale
        self.decimals = 0 if scale == 1 else 1
        self.callback = callback
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self._last_line = None  # time of the last plain line
        self._finished = False  # the last plain line is out
        self._bar = None
        self._plain = False
        if enabled:
            if _is_terminal(self.stream):
                from tqdm import tqdm

                count = f"{{n:.{self.decimals}f}}/{{total:.{self.decimals}f}}" if self.total is not None else f"{{n:.{self.decimals}f}}"
                self._bar = tqdm(
                    total=self.total, initial=self.done, desc=desc, unit=unit, leave=False, file=self.stream,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| " + count + " [{elapsed}<{remaining}, {rate_fmt}]"
                    if self.total is not None else "{desc}: " + count + " [{elapsed}, {rate_fmt}]",
                )
            else:
                self._plain = True

    def update(self, n: float) -> None:
        n = n / self.scale
        self.done = self.done + n if self.total is None else min(self.total, self.done + n)
        if self._bar is not None:
            self._bar.update(n)
        elif self._plain and not self._finished:
            now = self.clock()
            self._finished = self.total is not None and self.done >= self.total
            if self._finished or self._last_line is None or now - self._last_line >= PLAIN_LINE_SECONDS:
                self._write_line(now)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def _write_line(self, now: float) -> None:
        self._last_line = now
        line = plain_line(self.desc, self.done, self.total, self.unit, now - self.started, self.done - self.initial, self.decimals)
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def track(items: Iterable[T], total: int, desc: str, unit: str, enabled: bool = True) -> Iterator[T]:
    """Yield `items`, counting one `unit` per item (a `Progress` over an iterable)."""
    with Progress(total, desc, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update(1)
