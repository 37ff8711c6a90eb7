"""Errors caused by what the user gave us (a file, a flag, a filelist line).

Entry points catch `Diff2LipError` and print its message as one line, never a traceback:
the message itself names the thing that is wrong and how to fix it.
"""


class Diff2LipError(Exception):
    """Bad input: the message names the offending file or flag and the fix."""


class CheckpointError(Diff2LipError):
    """A checkpoint is missing, truncated, or does not match the model flags."""


class MediaError(Diff2LipError):
    """A video, image or audio file is missing, unreadable, or lacks the needed stream."""


class DiskFullError(Diff2LipError):
    """A write failed for lack of space (a full disk, a quota, a file-size limit)."""


class ReportedError(Diff2LipError):
    """A `Diff2LipError` whose `error:` line has been printed already: every rank of a distributed
    run prints its own before they wait for each other and exit together (the first rank to exit
    makes torchrun stop the rest, which may not have printed yet). Entry points exit 1 without
    printing it again."""
