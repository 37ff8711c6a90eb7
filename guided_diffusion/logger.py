"""Key/value metrics and text logging, in the style of openai's guided-diffusion logger.

Each `dumpkvs` writes the metrics gathered since the previous dump to stdout (a table),
`progress.csv` and TensorBoard; `log` writes text to stdout. `log.txt` gets both. Only the
main rank writes anything; with `dist_average` the `logkv_mean` values are averaged over
all ranks at dump time, so every rank must call `dumpkvs` together.
"""

from __future__ import annotations

import csv
import datetime
import numbers
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from . import dist_util

DEFAULT_FORMATS = ("stdout", "csv", "tensorboard")
# "log" is accepted for call sites written for openai's logger; log.txt is always written.
_KNOWN_FORMATS = frozenset(DEFAULT_FORMATS) | {"log"}

_warned_no_tensorboard = False


class HumanOutputFormat:
    """Metrics as an aligned table, plus text lines; to a file, or to stdout when `path` is None."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", encoding="utf-8") if path is not None else None

    @property
    def _stream(self) -> TextIO:
        # Looked up at each write so that redirected stdout (pytest, notebooks) is honoured.
        return self._file if self._file is not None else sys.stdout

    def writekvs(self, kvs: Mapping[str, Any], step: int) -> None:
        rows = [(_truncate(key), _truncate(_format_value(val))) for key, val in kvs.items()]
        rows.sort(key=lambda row: row[0].lower())
        key_width = max(len(key) for key, _ in rows)
        val_width = max(len(val) for _, val in rows)
        dashes = "-" * (key_width + val_width + 7)
        lines = [dashes]
        lines += [f"| {key:<{key_width}} | {val:<{val_width}} |" for key, val in rows]
        lines.append(dashes)
        self.writetext("\n".join(lines))

    def writetext(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class CSVOutputFormat:
    """One row per dump; a new key widens the header and pads the earlier rows. An existing
    file is continued (a resumed run keeps the history of the run it resumes)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a+", encoding="utf-8", newline="")
        self._file.seek(0)
        header = self._file.readline()
        self._keys: list[str] = next(csv.reader([header])) if header.strip() else []

    def writekvs(self, kvs: Mapping[str, Any], step: int) -> None:
        new_keys = sorted(key for key in kvs if key not in self._keys)
        if new_keys:
            # Rewrite the file, as openai's logger does, so the header always names every column.
            self._keys += new_keys
            self._file.seek(0)
            old_rows = self._file.read().splitlines()[1:]
            self._file.seek(0)
            self._file.truncate()
            csv.writer(self._file).writerow(self._keys)
            for row in old_rows:
                self._file.write(row + "," * len(new_keys) + "\n")
        csv.writer(self._file).writerow(["" if kvs.get(key) is None else kvs[key] for key in self._keys])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardOutputFormat:
    """Numeric metrics as TensorBoard scalars, at the dump's step."""

    def __init__(self, log_dir: str, summary_writer: Any) -> None:
        self._writer = summary_writer(log_dir=log_dir)

    def writekvs(self, kvs: Mapping[str, Any], step: int) -> None:
        for key, val in kvs.items():
            try:
                scalar = float(val)
            except (TypeError, ValueError):
                continue  # strings and other non-numbers have no scalar plot
            self._writer.add_scalar(key, scalar, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


OutputFormat = HumanOutputFormat | CSVOutputFormat | TensorBoardOutputFormat


def _format_value(val: Any) -> str:
    if isinstance(val, numbers.Integral) and not isinstance(val, bool):
        return str(val)  # steps and sample counts stay exact, not 1e+05
    if hasattr(val, "__float__"):
        return f"{float(val):<8.3g}"
    return str(val)


def _truncate(text: str, max_len: int = 30) -> str:
    return text[: max_len - 3] + "..." if len(text) > max_len else text


def _tensorboard_output(log_dir: str) -> TensorBoardOutputFormat | None:
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        # TensorBoard is optional: training goes on with the CSV and stdout outputs.
        if not _warned_no_tensorboard:
            warnings.warn("tensorboard is not installed; skipping TensorBoard logging (pip install tensorboard)")
            _warned_no_tensorboard = True
        return None
    return TensorBoardOutputFormat(log_dir, SummaryWriter)


class Logger:
    """Collects key/values between dumps and sends them and text to its outputs."""

    CURRENT: Logger | None = None

    def __init__(self, dir: str | None, outputs: Iterable[OutputFormat], dist_average: bool) -> None:
        self.dir = dir
        self.outputs = list(outputs)
        self.dist_average = dist_average
        self.name2val: dict[str, Any] = {}
        self.name2cnt: dict[str, int] = {}
        self._dumps = 0

    def logkv(self, key: str, val: Any) -> None:
        self.name2val[key] = val
        self.name2cnt.pop(key, None)  # a plain value replaces any running mean

    def logkv_mean(self, key: str, val: Any) -> None:
        count = self.name2cnt.get(key, 0)
        old = self.name2val.get(key, 0.0) if count else 0.0
        self.name2val[key] = (old * count + float(val)) / (count + 1)
        self.name2cnt[key] = count + 1

    def dumpkvs(self, step: int | None = None) -> dict[str, Any]:
        values = dict(self.name2val)
        if self.dist_average and dist_util.world_size() > 1:
            values.update(_average_over_ranks({key: (values[key], n) for key, n in self.name2cnt.items()}))
        if values:
            for fmt in self.outputs:
                fmt.writekvs(values, self._dumps if step is None else step)
        self.name2val.clear()
        self.name2cnt.clear()
        self._dumps += 1
        return values

    def log(self, *args: Any) -> None:
        text = " ".join(str(arg) for arg in args)
        for fmt in self.outputs:
            if isinstance(fmt, HumanOutputFormat):
                fmt.writetext(text)

    def close(self) -> None:
        for fmt in self.outputs:
            fmt.close()
        self.outputs = []


def _average_over_ranks(means: dict[str, tuple[float, int]]) -> dict[str, float]:
    """Count-weighted mean of each key over the ranks that logged it.

    Objects are gathered rather than tensors all-reduced because ranks may have logged
    different keys (e.g. loss quartiles that only some ranks sampled).
    """
    totals: dict[str, list[float]] = {}
    for rank_means in dist_util.all_gather_object(means):
        for key, (mean, count) in rank_means.items():
            total = totals.setdefault(key, [0.0, 0])
            total[0] += mean * count
            total[1] += count
    return {key: weighted / count for key, (weighted, count) in totals.items()}


def configure(
    dir: str | os.PathLike[str] | None = None,
    format_strs: Iterable[str] = DEFAULT_FORMATS,
    comm_rank: int | None = None,
    dist_average: bool = True,
) -> Logger:
    """Start logging into `dir` (default: $OPENAI_LOGDIR, else a new temp folder).

    `format_strs` picks among "stdout", "csv" and "tensorboard"; log.txt is always written.
    `comm_rank` overrides the rank from dist_util; ranks other than 0 write nothing.
    """
    format_strs = tuple(format_strs)
    unknown = set(format_strs) - _KNOWN_FORMATS
    if unknown:
        raise ValueError(f"unknown logger formats {sorted(unknown)}; use some of {sorted(_KNOWN_FORMATS)}")
    if dir is None:
        dir = os.getenv("OPENAI_LOGDIR") or os.path.join(
            tempfile.gettempdir(), datetime.datetime.now().strftime("diff2lip-%Y-%m-%d-%H-%M-%S-%f")
        )
    dir = os.path.expanduser(os.fspath(dir))
    is_main = (dist_util.rank() if comm_rank is None else comm_rank) == 0
    outputs: list[OutputFormat] = []
    if is_main:
        os.makedirs(dir, exist_ok=True)
        outputs.append(HumanOutputFormat(os.path.join(dir, "log.txt")))
        if "stdout" in format_strs:
            outputs.append(HumanOutputFormat(None))
        if "csv" in format_strs:
            outputs.append(CSVOutputFormat(os.path.join(dir, "progress.csv")))
        if "tensorboard" in format_strs:
            tensorboard = _tensorboard_output(os.path.join(dir, "tb"))
            if tensorboard is not None:
                outputs.append(tensorboard)
    close()
    Logger.CURRENT = Logger(dir, outputs, dist_average)
    log(f"Logging to {dir}")
    return Logger.CURRENT


def get_current() -> Logger:
    """The configured logger, or a stdout-only one (main rank) if `configure` was not called."""
    if Logger.CURRENT is None:
        outputs = [HumanOutputFormat(None)] if dist_util.is_main_process() else []
        Logger.CURRENT = Logger(None, outputs, dist_average=False)
    return Logger.CURRENT


def get_dir() -> str | None:
    """The log folder (None before `configure`): where checkpoints and samples go."""
    return get_current().dir


def logkv(key: str, val: Any) -> None:
    """Record `val` for `key` in this dump; a later call for the same key wins."""
    get_current().logkv(key, val)


def logkv_mean(key: str, val: Any) -> None:
    """Add `val` to the mean reported for `key` in this dump."""
    get_current().logkv_mean(key, val)


def logkvs(kvs: Mapping[str, Any]) -> None:
    """`logkv` for each item of `kvs`."""
    for key, val in kvs.items():
        logkv(key, val)


def dumpkvs(step: int | None = None) -> dict[str, Any]:
    """Write the recorded values (TensorBoard at `step`, default: the dump count), then clear them."""
    return get_current().dumpkvs(step)


def log(*args: Any) -> None:
    """Write the arguments, joined by spaces, to stdout and log.txt."""
    get_current().log(*args)


info = log


def warn(*args: Any) -> None:
    """`log` with a WARNING prefix."""
    log("WARNING:", *args)


def close() -> None:
    """Close the current logger's files; the next call starts a default stdout logger."""
    if Logger.CURRENT is not None:
        Logger.CURRENT.close()
        Logger.CURRENT = None
