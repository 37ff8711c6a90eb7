"""Filelists of the released evaluation protocol and the output names they map to.

A line is `AUDIO_REL VIDEO_REL` (the audio source first), both relative to `--test_video_dir`
and without the `.mp4`. The output is `--sample_path/` + AUDIO_REL with `/` replaced by `.`,
`_`, VIDEO_REL likewise, `.mp4` (docs/compatibility.md).
"""

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from common.errors import Diff2LipError, DiskFullError
from common.progress import Progress

MEDIA_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".wav", ".mp3", ".m4a", ".flac", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class FilelistItem:
    audio_rel: str
    video_rel: str
    line_no: int

    @property
    def name(self) -> str:
        """The released output name, without folder."""
        return output_name(self.audio_rel, self.video_rel)


def read_filelist(path: str) -> Tuple[List[FilelistItem], List[str]]:
    """Parse a filelist: the items, and one message per malformed line (those lines are skipped).

    A missing file, a folder, a file that is not UTF-8 text, or one without a single item is an
    error: a run over nothing must not report success.
    """
    usage = "pass --filelist with a text file of 'AUDIO_REL VIDEO_REL' lines"
    if not os.path.isfile(path):
        problem = "is a folder" if os.path.isdir(path) else "not found"
        raise Diff2LipError(f"filelist '{path}' {problem}; {usage}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise Diff2LipError(f"filelist '{path}' is not UTF-8 text (byte {exc.start}); {usage}") from None
    except OSError as exc:
        raise Diff2LipError(f"filelist '{path}' cannot be read ({exc.strerror or exc}); {usage}") from None
    items, problems = [], []
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            problems.append(
                f"{path}:{line_no}: expected 'AUDIO_REL VIDEO_REL', got {len(fields)} field(s): {line.strip()[:80]!r}"
            )
            continue
        items.append(FilelistItem(fields[0], fields[1], line_no))
    if not items and not problems:
        raise Diff2LipError(f"filelist '{path}' is empty; {usage}")
    return items, problems


def unique_items(items: Sequence[FilelistItem], filelist: str) -> Tuple[List[FilelistItem], List[str]]:
    """The items with distinct outputs, in order, and one note per line repeating an earlier one
    (same output name: it would be made twice, and counted twice in an evaluation)."""
    first: Dict[str, FilelistItem] = {}
    notes = []
    for item in items:
        if item.name in first:
            notes.append(f"{filelist}:{item.line_no}: same output as line {first[item.name].line_no} ({item.name}); done once")
        else:
            first[item.name] = item
    return list(first.values()), notes


def output_name(audio_rel: str, video_rel: str, suffix: str = "") -> str:
    """`a/b/c` + `d/e/f` -> `a.b.c_d.e.f{suffix}.mp4` (the released naming)."""

    def flat(rel: str) -> str:
        return _strip_media_extension(rel).replace("\\", "/").replace("/", ".")

    return f"{flat(audio_rel)}_{flat(video_rel)}{suffix}.mp4"


def _strip_media_extension(rel: str) -> str:
    root, ext = os.path.splitext(rel)
    return root if ext.lower() in MEDIA_EXTENSIONS else rel


def resolve_media(root: str, rel: str, root_flag: str = "--test_video_dir") -> str:
    """The file for a filelist entry: `root/rel.mp4`, or `root/rel` when it already has an extension.

    A path that leaves `root` (absolute, or climbing out with `..`) is refused: a filelist names
    files of its dataset, nothing else on the machine. Symbolic links inside `root` are followed.
    """
    if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == os.pardir:
        raise Diff2LipError(f"path '{rel}' leaves {root_flag} '{root}'; filelist paths must lie inside it")
    if os.path.splitext(rel)[1].lower() in MEDIA_EXTENSIONS:
        return os.path.join(root, rel)
    return os.path.join(root, rel + ".mp4")


def safe_output_path(sample_path: str, name: str) -> str:
    """`sample_path/name`, refusing any name that would land outside `sample_path`."""
    base = os.path.realpath(sample_path)
    target = os.path.realpath(os.path.join(base, name))
    if os.path.dirname(target) != base:
        raise Diff2LipError(f"output name '{name}' escapes --sample_path '{sample_path}'; fix the filelist line")
    return target


def for_each_item(
    items: Sequence[FilelistItem],
    process: Callable[[FilelistItem], None],
    filelist: str,
    progress: bool,
    failures: Optional[List[str]] = None,
) -> List[str]:
    """Run `process` on every item; one that fails is reported as `filelist:line: message` and
    the others go on (a full disk stops the list: every item after it would fail). Returns the failure lines, appended to `failures` as they happen when given
    (so a caller stopped by a signal midway still has them)."""
    failures = [] if failures is None else failures
    bar = Progress(len(items), filelist, "clip", progress)
    for item in items:
        try:
            process(item)
        except DiskFullError:
            raise  # every item after it would fail the same way: the list stops, finished outputs stay
        except Diff2LipError as exc:
            failures.append(f"{filelist}:{item.line_no}: {exc}")
        except Exception as exc:  # one broken clip must not end the list
            failures.append(f"{filelist}:{item.line_no}: unexpected {type(exc).__name__}: {exc}")
        finally:
            bar.update(1)
    bar.close()
    return failures
