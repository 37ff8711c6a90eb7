"""Fetch the pretrained weight files the project can use, each into the place the code loads it from.

    python -m scripts.fetch_weights --list            # every file: what for, where, size, check, present?
    python -m scripts.fetch_weights                   # fetch whatever is missing or wrong
    python -m scripts.fetch_weights s3fd vgg16        # only these (names from --list)

A download goes to `<file>.part` and resumes from there with an HTTP Range request; it is renamed
to its final path only after its size and SHA-256 match, so a wrong or half file never sits where
the code looks. A file that cannot be fetched (offline, HTTP error, wrong checksum from every
URL) is one `error:` line naming the file, the URLs tried and the path to put it at by hand; the
other files are still fetched, and the command ends with a summary and exit status 1. Ctrl-C /
SIGTERM stop it (exit 130 / 143) and keep the `.part` file for the next run.

The released Diff2Lip checkpoint is shared only as a Google Drive folder: `gdown` (the library
research repositories use for Drive) lists the folder, downloads `checkpoint.pt` from it into
`<file>.gdown` (resuming its own partial file) and the same size and checksum rule applies
before the rename. Offline, it is the same one `error:` line as for any URL. A file with no
download at all (an entry of a --catalogue without URLs) gets a `by hand:` line instead, a step
for the user rather than a failure.

The HTTP downloads stay our own rather than pooch's: pooch starts a cut download over, and
these files are up to 550 MB.
"""

import argparse
import hashlib
import http.client
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    # Run as `python scripts/fetch_weights.py`: Python put scripts/ on the path; the packages live one up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.command import Interrupted, run_command
from common.errors import Diff2LipError
from common.progress import Progress

REPO_ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1 << 20
USER_AGENT = "diff2lip-fetch-weights/1"
# The authors' README links this folder for `checkpoint.pt`; gdown lists it and downloads the file.
DIFF2LIP_DRIVE_FOLDER = "https://drive.google.com/drive/folders/1UMiHAhVf5M_CKzjVQFC5jkz-IXAAnFo5?usp=drive_link"


@dataclass(frozen=True)
class Weight:
    """One file of the catalogue.

    :param path: where the code loads it from: absolute, or relative to the repository root.
    :param urls: the primary download first, then mirrors of the same bytes; empty when the file
        has no direct download (then `drive` or `manual` says where it is).
    :param purpose: which command and flag use it.
    :param sha256: its SHA-256 in hex: all 64 digits, or only a prefix where only that is
        published (torch hub file names carry one); None when unknown.
    :param size: its size in bytes, None when unknown.
    :param drive: a Google Drive folder (holding a file of this `filename`) or file URL, fetched
        with gdown when `urls` gave nothing.
    :param manual: where to get it by hand, for a file with no download.
    """

    name: str
    path: str
    urls: Tuple[str, ...]
    purpose: str
    sha256: Optional[str] = None
    size: Optional[int] = None
    manual: Optional[str] = None
    drive: Optional[str] = None

    @property
    def dest(self) -> Path:
        return REPO_ROOT / self.path  # an absolute `path` stays as it is

    @property
    def filename(self) -> str:
        return self.dest.name

    @property
    def check(self) -> str:
        """What a present file is checked against: "sha256", "sha256 prefix", "size only" or "none"."""
        if self.sha256:
            return "sha256" if len(self.sha256) == 64 else "sha256 prefix"
        return "size only" if self.size is not None else "none"


def builtin_catalogue() -> List[Weight]:
    """Every pretrained file the code can use, at the path it loads it from. URLs of the hub files
    are the libraries' own constants; the hub folder is torch's (`$TORCH_HOME/hub/checkpoints`).

    Checksums and sizes are the ones public download scripts record for these URLs; where the file
    name carries a hash prefix (torch hub convention) it agrees with them:
    - s3fd, fan2d: sha256 in many download scripts (`sha256sum --check`); size of s3fd from a
      logged download (`Content-Range: bytes .../89843225`).
    - inception: sha256 in qiuyu96/Carver `models/inception_model.py` (checked on download), size
      95,628,359 in two independent notes; torch-fidelity's copy has the same sha256.
    - vgg16: sha256 and size in several model registries (e.g. an offline LPIPS loader).
    - syncnet_v2: sha256 in about ten projects, size in JackPro2121/podcasts-clips-to-social.
    - lipsync_expert: sha256 in two download scripts (one of them also pins wav2lip_gan.pth and
      s3fd with the values others publish); size unknown.
    - diff2lip: nothing published (no size, no hash); only its presence is checked.
    """
    import torch
    from face_alignment.api import models_urls as fan_urls
    from face_alignment.detection.sfd.sfd_detector import models_urls as sfd_urls
    from pytorch_fid.inception import FID_WEIGHTS_URL
    from torchvision.models import VGG16_Weights

    from evaluation.fid import inception_weights_path
    from evaluation.lmd import fan_weights_path
    from evaluation.syncnet_eval import DEFAULT_SYNCNET_EVAL_PATH
    from face_detection import s3fd_weights_path

    vgg_url = VGG16_Weights.IMAGENET1K_V1.url
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    return [
        Weight(
            "diff2lip", "checkpoints/checkpoint.pt", (),
            "inference: generate.py --model_path (default); train.py --init_from",
            drive=DIFF2LIP_DRIVE_FOLDER,
        ),
        Weight(
            "lipsync_expert", "checkpoints/lipsync_expert.pth",
            ("https://iiitaphyd-my.sharepoint.com/personal/radrabha_m_research_iiit_ac_in/_layouts/15/download.aspx"
             "?share=EQRvmiZg-HRAjvI6zqN9eTEBP74KefynCwPWVmF57l-AYA",  # Wav2Lip's README link, as a download
             "https://huggingface.co/camenduru/Wav2Lip/resolve/main/checkpoints/lipsync_expert.pth"),
            "training: train.py --sync_expert (Wav2Lip's expert)",
            sha256="9b9936c721696446eeed353032cab242a8cf0eed8c46cde540366f6ae5493be5",
        ),
        Weight(
            "syncnet_v2", DEFAULT_SYNCNET_EVAL_PATH,
            ("https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",),  # syncnet_python's download_model.sh
            "evaluation: evaluate.py --syncnet_model (LSE-C / LSE-D)",
            sha256="961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442", size=54_573_114,
        ),
        Weight(
            "s3fd", s3fd_weights_path(),
            (sfd_urls["s3fd"], "https://huggingface.co/camenduru/Wav2Lip/resolve/main/checkpoints/s3fd-619a316812.pth"),
            "face detection: --is_voxceleb2 False, --face_detector s3fd/auto; preprocessing",
            sha256="619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543", size=89_843_225,
        ),
        Weight(
            "fan2d", fan_weights_path(), (fan_urls["2DFAN-4"],),
            "evaluation: evaluate.py LMD (face-alignment's 2D FAN)",
            sha256="11f355bf0693120222f5955ce3f9dc8fb5763ebb30a47d7906e509490d32e4aa",
        ),
        Weight(
            "inception", inception_weights_path(),
            (FID_WEIGHTS_URL,
             "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"),
            "evaluation: evaluate.py FID (pytorch-fid's Inception)",
            sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", size=95_628_359,
        ),
        Weight(
            "vgg16", os.path.join(hub, os.path.basename(vgg_url)), (vgg_url,),
            "training: train.py LPIPS loss (--lpips_backbone pretrained, torchvision's VGG-16)",
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", size=553_433_881,
        ),
    ]


def load_catalogue(path: str) -> List[Weight]:
    """A catalogue from a JSON list of objects with `Weight`'s fields (`urls` a list; relative
    paths are relative to the repository root): a mirror, a private copy, or a test server."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as exc:
        raise Diff2LipError(f"--catalogue: cannot read '{path}' ({exc})") from None
    known = {f.name for f in fields(Weight)}
    required = {"name", "path", "urls", "purpose"}
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise Diff2LipError(f"--catalogue: '{path}' must hold a JSON list of objects")
    weights = []
    for i, entry in enumerate(entries, 1):
        if not required <= entry.keys() or not entry.keys() <= known:
            raise Diff2LipError(
                f"--catalogue: entry {i} of '{path}' needs the keys {sorted(required)} and may add "
                f"{sorted(known - required)}; it has {sorted(entry)}"
            )
        if not isinstance(entry["urls"], list) or not all(isinstance(u, str) for u in entry["urls"]):
            raise Diff2LipError(f"--catalogue: entry {i} of '{path}': urls must be a list of URLs")
        sha = entry.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not sha or any(c not in "0123456789abcdef" for c in sha.lower())):
            raise Diff2LipError(f"--catalogue: entry {i} of '{path}': sha256 must be hex digits, got {sha!r}")
        weights.append(Weight(**{**entry, "urls": tuple(entry["urls"]), "sha256": sha.lower() if sha else None}))
    return weights


def select(catalogue: Sequence[Weight], names: Sequence[str]) -> List[Weight]:
    """The entries called `names` (a catalogue name or its file name), in catalogue order; all when none."""
    if not names:
        return list(catalogue)
    by_name = {w.name: w for w in catalogue}
    by_name.update({w.filename: w for w in catalogue})
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise Diff2LipError(
            f"unknown weight file {', '.join(map(repr, unknown))}; choose from: {', '.join(w.name for w in catalogue)}"
        )
    wanted = {by_name[n].name for n in names}
    return [w for w in catalogue if w.name in wanted]


# --------------------------------------------------------------------------------------- checks


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(weight: Weight, path: Path) -> Tuple[Optional[bool], str]:
    """Whether the file at `path` is `weight`: (True, what matched), (False, what is wrong), or
    (None, why not) when it is missing or there is nothing to check it against."""
    if not path.is_file():
        return None, "missing"
    size = path.stat().st_size
    if weight.size is not None and size != weight.size:
        return False, f"wrong size: {size:,} bytes, expected {weight.size:,}"
    if weight.sha256:
        digest = sha256_of(path)
        if not digest.startswith(weight.sha256):
            return False, f"wrong checksum: sha256 {digest[:len(weight.sha256)]}, expected {weight.sha256}"
        return True, f"{weight.check} matches"
    if weight.size is not None:
        return True, "size matches"
    return None, "present, nothing published to check it against"


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def mib(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 2**20:,.1f} MiB"


# ------------------------------------------------------------------------------------- download


class FetchError(Exception):
    """One URL did not give the file (unreachable, HTTP error, cut connection, a web page)."""


def progress(total: Optional[int], initial: int, label: str) -> Progress:
    """Bytes fetched, shown in MiB: a tqdm bar on a terminal, plain lines otherwise."""
    return Progress(total, label, "MiB", scale=2**20, initial=initial)


def _reason(exc: BaseException) -> str:
    """A few words for why a URL failed: "HTTP 404 Not Found", "connection refused", "timed out"."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def download(url: str, part: Path, size: Optional[int], timeout: float, label: str) -> None:
    """Fetch `url` into `part`, continuing after the bytes already there (HTTP Range). Returns when
    the server has sent everything it announced; raises `FetchError` otherwise (what arrived stays)."""
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size and have:
        return  # complete from an earlier run: the checksum decides
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return  # nothing after `have`: the part is whole, the checksum decides
        raise FetchError(_reason(exc)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise FetchError(_reason(exc)) from None
    with response:
        if response.headers.get("Content-Type", "").startswith("text/html"):
            raise FetchError("got a web page instead of the file (a sign-in, quota or virus-scan page?)")
        resumed = response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise FetchError(f"asked for the bytes from {have:,} on, got {response.headers.get('Content-Range')!r}")
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = start + expected if expected is not None else size
        received = 0
        where = f"resuming at {mib(start)}" if start else "from the start"
        print(f"{label}: downloading {url} ({mib(total)}, {where})", flush=True)
        bar = progress(total, start, label)
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while True:
                    try:
                        block = response.read1(CHUNK)  # what has arrived: the part grows as it comes
                    except (OSError, http.client.HTTPException) as exc:
                        raise FetchError(f"connection lost after {mib(start + received)} ({_reason(exc)})") from None
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
        finally:
            bar.close()
        if expected is not None and received < expected:
            raise FetchError(f"connection closed after {start + received:,} of {start + expected:,} bytes")


def _requests_reason(exc: BaseException) -> str:
    """A few words for why gdown's requests call failed, as `_reason` says them for urllib:
    requests words a refused or unresolved connection as a page of its pool's internals."""
    import requests

    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if "Failed to resolve" in text or "Name or service not known" in text:
        return "host not found"
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def drive_download(url: str, filename: str, out: Path, timeout: float) -> None:
    """Fetch `filename` from the Google Drive folder `url` (or the Drive file `url`) into `out`
    with gdown, which resumes its own partial file beside `out`; raises `FetchError`."""
    import gdown
    import requests

    try:
        if "/folders/" in url:
            listed = gdown.download_folder(url=url, skip_download=True, quiet=True, timeout=timeout)
            ids = [f.id for f in listed if os.path.basename(f.path) == filename]
            if not ids:
                names = ", ".join(sorted(os.path.basename(f.path) for f in listed)) or "nothing"
                raise FetchError(f"the Drive folder holds no {filename} (it holds {names})")
            gdown.download(id=ids[0], output=str(out), quiet=False, resume=True, timeout=timeout)
        else:
            gdown.download(url=url, output=str(out), quiet=False, resume=True, timeout=timeout)
    except requests.exceptions.RequestException as exc:
        raise FetchError(_requests_reason(exc)) from None
    except gdown.exceptions.DownloadError as exc:
        raise FetchError(f"Drive refused it: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not out.is_file():
        raise FetchError("gdown returned without the file")


def drive_part(dest: Path) -> Path:
    """Where gdown puts a Drive download before it is checked (its own partial files,
    `<file>.gdownXXXXXXXX.part`, lie beside it while it runs)."""
    return dest.with_name(dest.name + ".gdown")


def partial_downloads(dest: Path) -> List[Path]:
    """What interrupted downloads of `dest` left: ours, gdown's finished one, gdown's partials."""
    partials = sorted(dest.parent.glob(f"{dest.name}.gdown????????.part")) if dest.parent.is_dir() else []
    return [p for p in (part_path(dest), drive_part(dest)) if p.exists()] + partials


def fetch(weight: Weight, force: bool, timeout: float) -> Tuple[bool, str]:
    """Put `weight` at its path: (True, what happened) or (False, the one-line reason)."""
    dest = weight.dest
    ok, detail = verify(weight, dest)
    if not force and (ok or (ok is None and dest.is_file())):
        return True, f"{weight.name}: in place at {dest} ({detail})"
    if not weight.urls and not weight.drive:
        source = f"; get it from {weight.manual}" if weight.manual else ""
        return False, f"{weight.filename}: no direct download{source}; put it by hand at {dest}"
    if force:
        for old in partial_downloads(dest):
            old.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # (where it came from, where the download lands, how): the URLs in order, then the Drive copy.
    sources = [(url, part_path(dest), lambda url=url: download(url, part_path(dest), weight.size, timeout, weight.name))
               for url in weight.urls]
    if weight.drive:
        sources.append((weight.drive, drive_part(dest),
                        lambda: drive_download(weight.drive, weight.filename, drive_part(dest), timeout)))
    problems = []
    for url, staged, get in sources:
        try:
            get()
        except FetchError as exc:
            problems.append(f"{url} ({exc})")
            continue
        good, detail = verify(weight, staged)
        if good is False:
            staged.unlink()
            problems.append(f"{url} (the download has the {detail}; it was removed)")
            continue
        replaced = " (replacing a wrong file)" if ok is False else ""
        os.replace(staged, dest)
        return True, f"{weight.name}: fetched to {dest}{replaced} ({detail})"
    left = partial_downloads(dest)
    kept = f"; the partial download {left[0]} is kept for the next run" if left else ""
    return False, f"{weight.filename}: could not download it from {' or '.join(problems)}{kept}; put the file by hand at {dest}"


# ----------------------------------------------------------------------------------- commands


def list_table(catalogue: Sequence[Weight]) -> str:
    """One row per file: name, status, size, what it is checked against, who uses it, where it goes."""
    rows = [("name", "status", "size", "check", "used by", "path")]
    notes = []
    for w in catalogue:
        ok, detail = verify(w, w.dest)
        if ok is None:
            status = "present (not checked)" if w.dest.is_file() else "missing"
        else:
            status = "present" if ok else detail
        part = part_path(w.dest)
        if ok is not True and part.is_file():
            status += f" (.part: {mib(part.stat().st_size)})"
        rows.append((w.name, status, mib(w.size), w.check, w.purpose, str(w.dest)))
        if not w.urls and w.drive:
            notes.append(f"{w.name}: fetched from the Google Drive {w.drive} with gdown")
        elif not w.urls and w.manual:
            notes.append(f"{w.name}: no direct download; get {w.filename} from {w.manual}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)) + "  " + r[-1] for r in rows]
    lines += [
        "",
        "check: sha256 = the whole SHA-256 is verified; sha256 prefix = only the digits the file name carries; "
        "size only / none = nothing more is published",
        *notes,
    ]
    return "\n".join(lines)


def fetch_all(weights: Sequence[Weight], force: bool, timeout: float) -> int:
    done, failed, by_hand = [], [], []
    for weight in weights:
        try:
            ok, line = fetch(weight, force, timeout)
        except Interrupted as exc:
            left = partial_downloads(weight.dest)
            kept = f"; the partial download {left[0]} is kept, run again to resume" if left else ""
            print(f"stopped by {exc.name} while fetching {weight.name}: {len(done)} of {len(weights)} files in place{kept}",
                  file=sys.stderr)
            raise
        except OSError as exc:  # the destination cannot be written
            ok, line = False, f"{weight.filename}: cannot write {weight.dest} ({_reason(exc)})"
        if ok:
            done.append(weight.name)
            print(line, flush=True)
        elif not weight.urls and not weight.drive:  # nothing to download: a step for the user, not a failure
            by_hand.append(weight.name)
            print(f"by hand: {line}", file=sys.stderr, flush=True)
        else:
            failed.append(weight.name)
            print(f"error: {line}", file=sys.stderr, flush=True)
    hand = f"; to put in place by hand: {', '.join(by_hand)}" if by_hand else ""
    if failed:
        print(f"{len(done)} of {len(weights)} files in place; not fetched: {', '.join(failed)}{hand}", file=sys.stderr)
        return 1
    print(f"{len(done)} of {len(weights)} files in place{hand}" if by_hand else f"all {len(weights)} files in place")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also NaN
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def create_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.fetch_weights", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="fetch only these files (names or file names from --list)")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="the same as the positional names")
    parser.add_argument("--all", action="store_true", help="every file of the catalogue (the default)")
    parser.add_argument("--list", action="store_true", help="show every file, what uses it, where it goes and whether it is there; fetch nothing")
    parser.add_argument("--force", action="store_true", help="download again even files that are in place (and drop old .part files)")
    parser.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to wait for a server before giving up on a URL")
    parser.add_argument("--catalogue", metavar="FILE", help="a JSON list of entries to use instead of the built-in catalogue")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body() -> int:
        args = create_parser().parse_args(argv)
        names = [*args.names, *args.only]
        if args.all and names:
            raise Diff2LipError("--all fetches every file; give either --all or names")
        catalogue = load_catalogue(args.catalogue) if args.catalogue else builtin_catalogue()
        weights = select(catalogue, names)
        if args.list:
            print(list_table(weights))
            return 0
        return fetch_all(weights, args.force, args.timeout)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
