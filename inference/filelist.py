"""Filelists of the released evaluation protocol and the output names they map to.

A line is `AUDIO_REL VIDEO_REL` (the audio source first), both relative to `--test_video_dir`
and without the `.mp4`. The output is `--sample_path/` + AUDIO_REL with `/` replaced by `.`,
`_`, VIDEO_REL likewise, `.mp4` (COMPAT.md).
"""

import os
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

from guided_diffusion.errors import Diff2LipError

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
    """Parse a filelist: the items, and one message per malformed line (those lines are skipped)."""
    if not os.path.isfile(path):
        raise Diff2LipError(f"filelist '{path}' not found; pass --filelist with a file of 'AUDIO_REL VIDEO_REL' lines")
    items, problems = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                problems.append(
                    f"{path}:{line_no}: expected 'AUDIO_REL VIDEO_REL', got {len(fields)} field(s): {line.strip()[:80]!r}"
                )
                continue
            items.append(FilelistItem(fields[0], fields[1], line_no))
    return items, problems


def output_name(audio_rel: str, video_rel: str, suffix: str = "") -> str:
    """`a/b/c` + `d/e/f` -> `a.b.c_d.e.f{suffix}.mp4` (the released naming)."""

    def flat(rel: str) -> str:
        return _strip_media_extension(rel).replace("\\", "/").replace("/", ".")

    return f"{flat(audio_rel)}_{flat(video_rel)}{suffix}.mp4"


def _strip_media_extension(rel: str) -> str:
    root, ext = os.path.splitext(rel)
    return root if ext.lower() in MEDIA_EXTENSIONS else rel


def resolve_media(root: str, rel: str) -> str:
    """The file for a filelist entry: `root/rel.mp4`, or `root/rel` when it already has an extension."""
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


def for_each_item(items: Sequence[FilelistItem], process: Callable[[FilelistItem], None], filelist: str, progress: bool) -> List[str]:
    """Run `process` on every item; one that fails is reported as `filelist:line: message` and
    the others go on. Returns the failure lines."""
    failures: List[str] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), unit="clip")
    for item in items:
        try:
            process(item)
        except Diff2LipError as exc:
            failures.append(f"{filelist}:{item.line_no}: {exc}")
        except Exception as exc:  # one broken clip must not end the list
            failures.append(f"{filelist}:{item.line_no}: unexpected {type(exc).__name__}: {exc}")
        finally:
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return failures
