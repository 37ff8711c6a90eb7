"""Preprocessed clips in WebDataset tar shards, and the data roots training reads (either format).

    python -m dataset.shards convert --input data/vox_pre --output data/vox_shards --shard_size_mb 500
    python -m dataset.shards convert --input data/vox_shards --output data/vox_pre_again

A shard root holds the same clips as a folder root (`dataset/preprocessed.py`), in few big files:

    ROOT/
      train.txt, val.txt, report.json   as in a folder root
      manifest.json                     every shard: path, SHA-256, bytes, frames, its clips
      shards/NAME.tar                   WebDataset shards; whole clips, never split over two

One clip is one WebDataset sample (key = the clip name, '.' written as %2E) of five members:
`meta.json`, `audio.wav`, `mel.npy` (the folder's files, byte for byte), `frames.jpgs` (the
folder's JPEG crops concatenated, byte for byte) and `frames.idx` (n_frames + 1 little-endian
uint64 offsets of the crops in `frames.jpgs`). Converting a folder root to shards and back gives
the same files. The tar code is the `webdataset` library's (`TarWriter`, `gopen`); the layout is ours.

Training reads shards by clip, not as a stream: the sample order stays a pure function of the
step (`StepSampler`, `SyncPairSampler`), so `--resume` stays exact and a run from shards gives the
batches of the same run from folders. A local shard is read in place (one `pread` per crop); a
remote one (`http(s)://`, `gs://`, `s3://`, `pipe:`; through `webdataset.gopen`) is fetched whole
once per machine into the shard cache, checked against the manifest's SHA-256, and read there.
"""

import functools
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import urllib.parse
import uuid
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import webdataset  # noqa: E402

from common.command import run_command  # noqa: E402
from common.errors import Diff2LipError  # noqa: E402
from common.files import atomic_write_bytes, atomic_write_json  # noqa: E402
from common.flags import Option, Options, at_least, create_argparser  # noqa: E402
from dataset.preprocessed import FRAME_NAME, Clip, clip_dir, open_clips, read_split, write_split  # noqa: E402

MANIFEST = "manifest.json"
SHARDS = "shards"
MEMBERS = ("audio.wav", "frames.idx", "frames.jpgs", "mel.npy", "meta.json")
# Tar headers take 512 bytes a member; the mtime is fixed so that the same clips give the same bytes.
TAR_FORMAT = "PAX_FORMAT"  # long clip names (ustar stops at 100 characters) get a pax header
REMOTE_SCHEMES = ("http", "https", "gs", "s3", "pipe", "ais", "hf", "sftp", "scp", "ftps")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "diff2lip", "shards")

log = logging.getLogger(__name__)

SHARD_CACHE = Option(
    "shard_cache", "",
    "folder where shards from a URL --data_root are kept once fetched (checked by SHA-256; shared by the "
    f"ranks of one machine); '' = $DIFF2LIP_SHARD_CACHE or {DEFAULT_CACHE}",
)
SHARD_SIZE_MB = Option("shard_size_mb", 500.0, "shards: start a new shard before one would pass this many MB "
                       "(a shard holds whole clips, at least one)", at_least(0.001))


# ----------------------------------------------------------------------------------------------
# The sample layout


def clip_key(name: str) -> str:
    """The WebDataset key of clip `name`: WebDataset splits a member name at the first '.' of its
    last part, so dots (and '%') are percent-encoded."""
    return name.replace("%", "%25").replace(".", "%2E")


def key_clip(key: str) -> str:
    return key.replace("%2E", ".").replace("%25", "%")


def folder_sample(folder: str, n_frames: int) -> Dict[str, bytes]:
    """The members of a clip folder's sample: its files' bytes and the crops concatenated."""
    sample = {}
    for member in ("audio.wav", "mel.npy", "meta.json"):
        with open(os.path.join(folder, member), "rb") as f:
            sample[member] = f.read()
    crops, offsets = [], [0]
    for i in range(n_frames):
        with open(os.path.join(folder, FRAME_NAME.format(i)), "rb") as f:
            crops.append(f.read())
        offsets.append(offsets[-1] + len(crops[-1]))
    sample["frames.jpgs"] = b"".join(crops)
    sample["frames.idx"] = np.asarray(offsets, dtype="<u8").tobytes()
    return sample


def write_sample_folder(root: str, name: str, sample: Dict[str, bytes]) -> None:
    """Write a sample back as the clip folder it came from, atomically (the folder appears whole)."""
    final = clip_dir(root, name)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex}.tmp")
    os.makedirs(tmp)
    try:
        offsets = np.frombuffer(sample["frames.idx"], dtype="<u8")
        for i in range(len(offsets) - 1):
            with open(os.path.join(tmp, FRAME_NAME.format(i)), "wb") as f:
                f.write(sample["frames.jpgs"][offsets[i]:offsets[i + 1]])
        for member in ("audio.wav", "mel.npy", "meta.json"):
            with open(os.path.join(tmp, member), "wb") as f:
                f.write(sample[member])
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clip_entry(name: str, sample: Dict[str, bytes]) -> dict:
    """The manifest's line for a clip: what a dataset needs to index it without reading it."""
    meta = json.loads(sample["meta.json"])
    mel = np.load(io.BytesIO(sample["mel.npy"]), mmap_mode=None)
    return {"name": name, "frames": int(meta["n_frames"]), "image_size": int(meta["image_size"]),
            "mel_steps": int(mel.shape[1]), "bytes": sum(len(v) for v in sample.values())}


# ----------------------------------------------------------------------------------------------
# Writing shards


class ShardWriter:
    """Writes clips into tar shards of at most `max_bytes` (whole clips: a bigger clip gets a shard
    of its own) under `root/shards/`, named `prefix-000000.tar`, `prefix-000001.tar`, ...

    A shard is written under a temporary name; its record (`NAME.tar.json`: clips, bytes, SHA-256)
    is written next, and the rename of the tar commits both, so a shard that exists is whole.
    """

    def __init__(self, root: str, prefix: str, max_bytes: float, first_index: int = 0):
        self.folder = os.path.join(root, SHARDS)
        os.makedirs(self.folder, exist_ok=True)
        self.prefix, self.max_bytes, self.index = prefix, max_bytes, first_index
        self.records: List[dict] = []
        self._tmp: Optional[str] = None
        self._clips: List[dict] = []
        self._size = 0

    def add(self, name: str, sample: Dict[str, bytes]) -> None:
        size = sum(len(v) + 1024 for v in sample.values())  # data + header + padding, near enough
        if self._clips and self._size + size > self.max_bytes:
            self.flush()
        if self._tmp is None:
            self._tmp = os.path.join(self.folder, f".{self.prefix}-{self.index:06d}.{uuid.uuid4().hex}.tmp")
            self._file = open(self._tmp, "xb")
            self._tar = webdataset.TarWriter(self._file, mtime=0, format=TAR_FORMAT, encoder=False)
        self._tar.write({"__key__": clip_key(name), **sample})
        self._clips.append(clip_entry(name, sample))
        self._size += size

    def flush(self) -> Optional[dict]:
        """Close the shard in progress (if any) and commit it; returns its record."""
        if self._tmp is None:
            return None
        self._tar.close()
        self._file.close()
        path = os.path.join(self.folder, f"{self.prefix}-{self.index:06d}.tar")
        record = {"path": f"{SHARDS}/{os.path.basename(path)}", "sha256": file_sha256(self._tmp),
                  "bytes": os.path.getsize(self._tmp), "frames": sum(c["frames"] for c in self._clips),
                  "clips": self._clips}
        atomic_write_json(path + ".json", record)
        os.replace(self._tmp, path)
        self.records.append(record)
        self._tmp, self._clips, self._size = None, [], 0
        self.index += 1
        return record

    def abort(self) -> None:
        """Drop the shard in progress (a stopped run redoes its clips)."""
        if self._tmp is not None:
            try:
                self._tar.close()  # closed before its file, or tarfile writes its buffer to a closed file later
            finally:
                self._file.close()
                os.remove(self._tmp)
            self._tmp, self._clips, self._size = None, [], 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.abort()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_records(root: str) -> List[dict]:
    """The records of the committed shards under `root/shards/` (a tar with its record), by path."""
    folder = os.path.join(root, SHARDS)
    if not os.path.isdir(folder):
        return []
    records = []
    for f in sorted(os.listdir(folder)):
        if f.endswith(".tar") and not f.startswith("."):
            try:
                with open(os.path.join(folder, f + ".json"), encoding="utf-8") as r:
                    records.append(json.load(r))
            except (OSError, ValueError) as exc:
                raise Diff2LipError(f"shard '{os.path.join(folder, f)}' has no readable record ({exc}); "
                                    "delete the shard and run preprocessing again to redo its clips") from None
    return records


def manifest(records: Sequence[dict]) -> dict:
    """The manifest of a shard root from its shards' records."""
    return {"format": "webdataset-clips", "version": 1, "members": list(MEMBERS),
            "shards": sorted(records, key=lambda r: r["path"]),
            "clips": sum(len(r["clips"]) for r in records), "frames": sum(r["frames"] for r in records),
            "bytes": sum(r["bytes"] for r in records)}


def folder_manifest(root: str, names: Iterable[str]) -> dict:
    """The manifest of a folder root: every clip's frames and bytes."""
    clips = []
    for name in sorted(names):
        folder = clip_dir(root, name)
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
            frames = int(json.load(f)["n_frames"])
        clips.append({"name": name, "frames": frames,
                      "bytes": sum(e.stat().st_size for e in os.scandir(folder) if e.is_file())})
    return {"format": "folders", "version": 1, "clips": clips, "frames": sum(c["frames"] for c in clips),
            "bytes": sum(c["bytes"] for c in clips)}


# ----------------------------------------------------------------------------------------------
# Reading: data roots of either format


def is_url(root: str) -> bool:
    return urllib.parse.urlparse(root).scheme in REMOTE_SCHEMES or root.startswith("file://")


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel


def _gopen_url(url: str) -> str:
    """s3:// has no gopen handler of its own: webdataset's convention is a pipe through the AWS CLI."""
    if url.startswith("s3://"):
        return f"pipe:aws s3 cp {url} -"
    return url


def read_url(url: str, what: str) -> bytes:
    """The bytes at `url` (a path or any URL gopen opens), or a one-line error naming it."""
    try:
        with webdataset.gopen(_gopen_url(url), "rb") as f:
            return f.read()
    except Exception as exc:  # curl, gsutil, a pipe: each fails its own way
        raise Diff2LipError(f"cannot read {what} '{url}' ({_one_line(exc)}); check the --data_root URL "
                            "and that the server is up") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class FolderRoot:
    """A folder root of `dataset/preprocessed.py`."""

    def __init__(self, root: str):
        self.root = root

    def split(self, split: str) -> List[str]:
        return read_split(self.root, split)

    def open_clips(self, names: Iterable[str]) -> List[Clip]:
        return open_clips(self.root, names)

    def clip(self, name: str) -> Clip:
        return Clip(self.root, name)

    def __str__(self) -> str:
        return self.root


class ShardRoot:
    """A shard root, local or at a URL. Picklable (DataLoader workers): open files stay per process."""

    def __init__(self, root: str, cache_dir: str = ""):
        self.root = root[len("file://"):] if root.startswith("file://") else root
        self.remote = is_url(self.root)
        self.cache_dir = cache_dir or os.environ.get("DIFF2LIP_SHARD_CACHE") or DEFAULT_CACHE
        self.manifest = json.loads(self._read(MANIFEST, "manifest"))
        if self.manifest.get("format") != "webdataset-clips":
            raise Diff2LipError(f"'{_join(self.root, MANIFEST)}' is not a shard manifest; convert the data with "
                                "python -m dataset.shards convert")
        self.entries: Dict[str, Tuple[dict, dict]] = {}
        for shard in self.manifest["shards"]:
            for clip in shard["clips"]:
                self.entries[clip["name"]] = (shard, clip)
        self._offsets: Dict[str, Dict[str, Tuple[int, int]]] = {}
        self._files: Dict[str, int] = {}

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _files={}, _offsets={})

    def _read(self, rel: str, what: str) -> bytes:
        path = _join(self.root, rel)
        if self.remote:
            return read_url(path, what)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise Diff2LipError(f"{what} '{path}' cannot be read ({exc.strerror or exc}); "
                                "give --data_root a folder from dataset/preprocess.py or a shard root") from None

    def split(self, split: str) -> List[str]:
        text = self._read(f"{split}.txt", "split list").decode("utf-8")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def open_clips(self, names: Iterable[str]) -> List["ShardClip"]:
        clips = []
        for name in names:
            try:
                clips.append(self.clip(name))
            except Diff2LipError as exc:
                log.warning("skipping clip '%s': %s", name, exc)
        return clips

    def clip(self, name: str) -> "ShardClip":
        if name not in self.entries:
            raise Diff2LipError(f"clip '{name}' is listed but in no shard of '{_join(self.root, MANIFEST)}'; "
                                "preprocess or convert the data again")
        return ShardClip(self, name)

    def __str__(self) -> str:
        return self.root

    # The bytes of one member of a clip, by its offset in the shard's tar.

    def member(self, name: str, member: str, start: int = 0, stop: Optional[int] = None) -> bytes:
        shard, _ = self.entries[name]
        fd = self._fd(shard)
        offset, size = self._member_offsets(shard, fd)[f"{clip_key(name)}.{member}"]
        stop = size if stop is None else stop
        data = os.pread(fd, stop - start, offset + start)
        if len(data) != stop - start:
            raise Diff2LipError(f"shard '{shard['path']}' is truncated; fetch or convert it again")
        return data

    def _fd(self, shard: dict) -> int:
        path = shard["path"]
        if path not in self._files:
            local = self._fetch(shard) if self.remote else _join(self.root, path)
            try:
                self._files[path] = os.open(local, os.O_RDONLY)
            except OSError as exc:
                raise Diff2LipError(f"shard '{local}' cannot be opened ({exc.strerror}); convert the data again") from None
        return self._files[path]

    def _member_offsets(self, shard: dict, fd: int) -> Dict[str, Tuple[int, int]]:
        # The tar's own headers say where each member is: one pass over them, no index file to keep in step.
        path = shard["path"]
        if path not in self._offsets:
            with os.fdopen(os.dup(fd), "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                self._offsets[path] = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
        return self._offsets[path]

    def _fetch(self, shard: dict) -> str:
        """The shard in the local cache, fetched whole the first time (content-addressed: the name is
        its SHA-256, so a changed shard is fetched again and ranks of one machine share the file)."""
        local = os.path.join(self.cache_dir, f"{shard['sha256']}.tar")
        if os.path.exists(local):
            return local
        url = _join(self.root, shard["path"])
        data = read_url(url, "shard")
        digest = hashlib.sha256(data).hexdigest()
        if digest != shard["sha256"]:
            raise Diff2LipError(f"shard '{url}' has SHA-256 {digest[:12]}..., the manifest says "
                                f"{shard['sha256'][:12]}...; upload the shard and its manifest together")
        os.makedirs(self.cache_dir, exist_ok=True)
        atomic_write_bytes(local, data)
        return local


class ShardClip:
    """A clip in a shard, with `Clip`'s interface: name, n_frames, image_size, mel_steps, meta, mel, faces."""

    def __init__(self, source: ShardRoot, name: str):
        self.source, self.name = source, name
        self.folder = f"{_join(source.root, source.entries[name][0]['path'])}:{name}"
        entry = source.entries[name][1]
        self.n_frames: int = entry["frames"]
        self.image_size: int = entry["image_size"]
        self.mel_steps: int = entry["mel_steps"]
        self._mel: Optional[np.ndarray] = None
        self._frame_offsets: Optional[np.ndarray] = None

    @property
    def meta(self) -> dict:
        return json.loads(self.source.member(self.name, "meta.json"))

    @property
    def mel(self) -> np.ndarray:
        """Wav2Lip mel `[80, T]` float32."""
        if self._mel is None:
            self._mel = np.load(io.BytesIO(self.source.member(self.name, "mel.npy")))
        return self._mel

    def faces(self, indices: Iterable[int]) -> np.ndarray:
        """Face crops `[len, S, S, 3]` uint8 RGB, decoded as `Clip.faces` decodes the same JPEG bytes."""
        if self._frame_offsets is None:
            self._frame_offsets = np.frombuffer(self.source.member(self.name, "frames.idx"), dtype="<u8")
        out = []
        for i in indices:
            start, stop = int(self._frame_offsets[int(i)]), int(self._frame_offsets[int(i) + 1])
            data = np.frombuffer(self.source.member(self.name, "frames.jpgs", start, stop), dtype=np.uint8)
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            if image is None or image.shape != (self.image_size, self.image_size, 3):
                raise Diff2LipError(f"face crop {int(i)} of '{self.folder}' is unreadable or not "
                                    f"{self.image_size}x{self.image_size}; convert the clip again")
            out.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return np.stack(out)


DataRoot = Union[FolderRoot, ShardRoot]


def open_root(root: Union[str, FolderRoot, ShardRoot], cache_dir: str = "") -> DataRoot:
    """The data root `root` names: a folder root, a shard root (a folder with manifest.json), or the
    URL of a shard root. An already opened root is returned as it is."""
    if isinstance(root, (FolderRoot, ShardRoot)):
        return root
    root = os.fspath(root)
    if is_url(root) or os.path.isfile(os.path.join(root, MANIFEST)) and _is_shard_manifest(root):
        return ShardRoot(root, cache_dir)
    return FolderRoot(root)


def _is_shard_manifest(root: str) -> bool:
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
            return json.load(f).get("format") == "webdataset-clips"
    except (OSError, ValueError):
        return False


def check_data_root(root: str) -> None:
    """Refuse a --data_root that is neither a URL nor a folder, in one line."""
    if not root:
        raise Diff2LipError("--data_root is required: the folder dataset/preprocess.py wrote (frame folders "
                            "or shards), or the URL of a shard root")
    if not is_url(root) and not os.path.isdir(root):
        raise Diff2LipError(f"--data_root '{root}' is not a folder; run dataset/preprocess.py first")


# ----------------------------------------------------------------------------------------------
# Converting


def iter_samples(root: str) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """(clip name, sample) of every clip in a shard root, read as a stream by webdataset."""
    source = ShardRoot(root)
    for shard in source.manifest["shards"]:
        url = _join(source.root, shard["path"])
        stream = webdataset.tariterators.url_opener([{"url": _gopen_url(url)}])
        for sample in webdataset.tariterators.group_by_keys(webdataset.tariterators.tar_file_expander(stream)):
            yield key_clip(sample["__key__"]), {m: sample[m] for m in MEMBERS}


def folders_to_shards(input_root: str, output_root: str, shard_size_mb: float, prefix: str = "shard") -> dict:
    """Pack every clip of train.txt and val.txt into shards; returns the manifest."""
    splits = {s: _split_or_empty(input_root, s) for s in ("train", "val")}
    names = sorted(set(splits["train"]) | set(splits["val"]))
    if not names:
        raise Diff2LipError(f"'{input_root}' lists no clips in train.txt or val.txt; preprocess some videos first")
    os.makedirs(output_root, exist_ok=True)
    with ShardWriter(output_root, prefix, shard_size_mb * 1e6) as writer:
        for clip in open_clips(input_root, names):
            writer.add(clip.name, folder_sample(clip.folder, clip.n_frames))
    result = manifest(writer.records)
    _finish_root(input_root, output_root, splits, result)
    return result


def shards_to_folders(input_root: str, output_root: str) -> dict:
    """Unpack a shard root into clip folders; returns the folder manifest."""
    source = ShardRoot(input_root)
    names = []
    for name, sample in iter_samples(input_root):
        write_sample_folder(output_root, name, sample)
        names.append(name)
    splits = {s: _split_or_empty(source, s) for s in ("train", "val")}
    result = folder_manifest(output_root, names)
    _finish_root(input_root, output_root, splits, result)
    return result


def _split_or_empty(root: Union[str, ShardRoot], split: str) -> List[str]:
    try:
        return root.split(split) if isinstance(root, ShardRoot) else read_split(root, split)
    except Diff2LipError:
        return []


def _finish_root(input_root: str, output_root: str, splits: Dict[str, List[str]], result: dict) -> None:
    for split, names in splits.items():
        write_split(output_root, split, names)
    report = os.path.join(input_root, "report.json")
    if not is_url(input_root) and os.path.isfile(report):
        shutil.copyfile(report, os.path.join(output_root, "report.json"))
    atomic_write_json(os.path.join(output_root, MANIFEST), result)


CONVERT_OPTIONS = Options(
    Option("input", "", "a folder root (clips/, train.txt) or a shard root (manifest.json, shards/); a shard "
           "root may be a URL"),
    Option("output", "", "the new root, in the other format"),
    SHARD_SIZE_MB,
)


def convert(args) -> dict:
    """Convert a root to the other format (folders -> shards, shards -> folders)."""
    if not args.input or not args.output:
        raise Diff2LipError("convert needs --input (a folder or shard root) and --output (the new root)")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise Diff2LipError("--output must differ from --input: the new root is written beside the old one")
    source = open_root(args.input)
    if isinstance(source, ShardRoot):
        result = shards_to_folders(args.input, args.output)
        kind = "folders"
    else:
        if not os.path.isdir(args.input):
            raise Diff2LipError(f"--input '{args.input}' is not a folder")
        result = folders_to_shards(args.input, args.output, args.shard_size_mb)
        kind = f"{len(result['shards'])} shards"
    print(f"converted {args.input} -> {args.output}: {len(result['clips']) if kind == 'folders' else result['clips']} "
          f"clips, {result['frames']} frames, {result['bytes'] / 1e6:.1f} MB in {kind}")
    return result


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> int:
        if not argv or argv[0] != "convert":
            raise Diff2LipError("usage: python -m dataset.shards convert --input ROOT --output NEW_ROOT "
                                "[--shard_size_mb MB]")
        parser = create_argparser(CONVERT_OPTIONS, description=__doc__)
        parser.prog = "python -m dataset.shards convert"
        convert(parser.parse_args(argv[1:]))
        return 0

    return run_command(body)

if __name__ == "__main__":
    sys.exit(main())

