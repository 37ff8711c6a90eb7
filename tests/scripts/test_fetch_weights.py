"""scripts/fetch_weights.py against a real HTTP server on 127.0.0.1 (Range requests, cut
connections, a stalled transfer, web pages instead of files), with catalogues pointing at it.
The one-line error cases run the command as a process, as a user would."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

from launchers import REPO_ROOT, child_env
from scripts import fetch_weights


def blob(n: int, seed: int) -> bytes:
    return hashlib.shake_256(f"weights-{seed}".encode()).digest(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileServer:
    """Serves `files` (URL path -> bytes) with Range support. `cut[path] = n` sends only n bytes of
    the next response to `path` (the announced length stays whole) and closes; `stall[path]` sends
    half and waits for the event; `pages` answer with an HTML page. Every GET is logged as
    (path, Range header or None, bytes sent)."""

    def __init__(self):
        self.files, self.cut, self.stall, self.pages, self.log = {}, {}, {}, set(), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path, wanted = self.path, self.headers.get("Range")
                if path in server.pages:
                    return self._send(200, b"<html>sign in</html>", {"Content-Type": "text/html; charset=utf-8"}, wanted)
                if path not in server.files:
                    return self._send(404, b"", {}, wanted)
                data, start, status, headers = server.files[path], 0, 200, {"Content-Type": "application/octet-stream"}
                if wanted:
                    start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
                    if start >= len(data):
                        return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, wanted)
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self._send(status, data[start:], headers, wanted, server.cut.pop(path, None), server.stall.get(path))

            def _send(self, status, body, headers, wanted, cut=None, stall=None):
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                sent = body[:cut] if cut is not None else body
                if stall is not None:
                    self.wfile.write(sent[: len(sent) // 2])
                    self.wfile.flush()
                    stall.wait(30)
                    sent = sent[: len(sent) // 2]
                else:
                    self.wfile.write(sent)
                server.log.append((self.path, wanted, len(sent)))

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url + path

    def requests(self, path: str):
        return [entry for entry in self.log if entry[0] == path]

    def close(self):
        for event in self.stall.values():
            event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


def entry(name, dest, urls, data=None, sha256="full", size=True, purpose="tests"):
    """A catalogue entry for `data`: its whole sha256 ("full"), a prefix (an int: that many digits) or none."""
    e = {"name": name, "path": str(dest), "urls": list(urls), "purpose": purpose}
    if data is not None and sha256 is not None:
        e["sha256"] = sha(data) if sha256 == "full" else sha(data)[:sha256]
    if data is not None and size:
        e["size"] = len(data)
    return e


def catalogue(tmp_path, *entries) -> str:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(list(entries)))
    return str(path)


def run_cli(*args, timeout=60):
    """`python -m scripts.fetch_weights ARGS` as a process: (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "scripts.fetch_weights", *args], cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def error_lines(stderr: str):
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_download_with_matching_checksum_lands_at_destination(server, tmp_path, capsys):
    data = blob(300_000, 1)
    dest = tmp_path / "hub" / "checkpoints" / "net-1234abcd.pth"
    cat = catalogue(tmp_path, entry("net", dest, [server.add("/net.pth", data)], data))
    assert fetch_weights.main(["--catalogue", cat]) == 0
    assert dest.read_bytes() == data
    assert not fetch_weights.part_path(dest).exists()
    out = capsys.readouterr()
    assert "net: fetched to" in out.out and "sha256 matches" in out.out and "all 1 files in place" in out.out
    # No terminal here: progress comes as plain lines, not a redrawn bar.
    assert "net: 0.3/0.3 MiB (100%)" in out.err and "\r" not in out.err


def test_checksum_mismatch_is_one_line_and_leaves_nothing_behind(server, tmp_path):
    served, expected = blob(200_000, 2), blob(200_000, 3)
    dest = tmp_path / "ckpt" / "expert.pth"
    url = server.add("/expert.pth", served)
    rc, out, err = run_cli("--catalogue", catalogue(tmp_path, entry("expert", dest, [url], expected)))
    assert rc == 1
    (line,) = error_lines(err)
    assert "expert.pth" in line and url in line and "wrong checksum" in line and "removed" in line and str(dest) in line
    assert not dest.exists() and not fetch_weights.part_path(dest).exists()
    assert "0 of 1 files in place; not fetched: expert" in err


def test_a_cut_download_resumes_with_a_range_request(server, tmp_path):
    data = blob(300_000, 4)
    dest = tmp_path / "syncnet.model"
    url = server.add("/syncnet.model", data)
    server.cut["/syncnet.model"] = 100_000
    cat = catalogue(tmp_path, entry("syncnet", dest, [url], data))

    rc, out, err = run_cli("--catalogue", cat)
    assert rc == 1
    (line,) = error_lines(err)
    assert "connection closed after 100,000 of 300,000 bytes" in line and "kept for the next run" in line
    assert not dest.exists() and fetch_weights.part_path(dest).stat().st_size == 100_000

    rc, out, err = run_cli("--catalogue", cat)
    assert rc == 0, err
    assert dest.read_bytes() == data and not fetch_weights.part_path(dest).exists()
    assert "resuming at" in out
    assert server.requests("/syncnet.model") == [("/syncnet.model", None, 100_000), ("/syncnet.model", "bytes=100000-", 200_000)]


def test_unreachable_host_names_file_url_and_where_to_put_it(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = blob(1000, 5)
    url = f"http://127.0.0.1:{port}/s3fd-619a316812.pth"
    dest = tmp_path / "hub" / "s3fd-619a316812.pth"
    other = tmp_path / "other.pth"
    rc, out, err = run_cli("--catalogue", catalogue(tmp_path, entry("s3fd", dest, [url], data),
                                                    entry("other", other, [url.replace("s3fd", "other")], data)))
    assert rc == 1
    first, second = error_lines(err)  # one line per file, and the second is still tried
    assert first == f"error: s3fd-619a316812.pth: could not download it from {url} (connection refused); put the file by hand at {dest}"
    assert "other.pth" in second and str(other) in second
    assert not dest.exists()


def test_list_shows_present_missing_wrong_and_partial(server, tmp_path, capsys):
    good, bad = blob(5000, 6), blob(5000, 7)
    paths = {name: tmp_path / f"{name}.pth" for name in ("good", "prefixed", "missing", "wrong", "partial", "unchecked")}
    paths["good"].write_bytes(good)
    paths["prefixed"].write_bytes(good)
    paths["wrong"].write_bytes(bad)
    fetch_weights.part_path(paths["partial"]).write_bytes(good[:2048])
    paths["unchecked"].write_bytes(bad)
    cat = catalogue(
        tmp_path,
        entry("good", paths["good"], ["http://x/good"], good),
        entry("prefixed", paths["prefixed"], ["http://x/p"], good, sha256=8, size=False),
        entry("missing", paths["missing"], ["http://x/m"], good),
        entry("wrong", paths["wrong"], ["http://x/w"], good, size=False),
        entry("partial", paths["partial"], ["http://x/part"], good),
        entry("unchecked", paths["unchecked"], []),
    )
    assert fetch_weights.main(["--catalogue", cat, "--list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert re.search(r"present\s+0\.0 MiB\s+sha256\s", rows["good"])
    assert re.search(r"present\s+\?\s+sha256 prefix\s", rows["prefixed"])
    assert re.search(r"missing\s+0\.0 MiB\s+sha256\s", rows["missing"])
    assert "wrong checksum: sha256" in rows["wrong"]
    assert "missing (.part: 0.0 MiB)" in rows["partial"]
    assert re.search(r"present \(not checked\)\s+\?\s+none\s", rows["unchecked"])
    assert all(str(p) in rows[name] for name, p in paths.items())
    assert not server.log  # listing fetches nothing


def test_a_subset_by_name_or_file_name_fetches_only_those(server, tmp_path, capsys):
    a, b, c = blob(3000, 8), blob(3000, 9), blob(3000, 10)
    dests = [tmp_path / "a.pth", tmp_path / "b.model", tmp_path / "c.pt"]
    cat = catalogue(tmp_path, *(entry(n, d, [server.add(f"/{n}", x)], x) for n, d, x in zip("abc", dests, (a, b, c))))
    assert fetch_weights.main(["--catalogue", cat, "a", "--only", "c.pt"]) == 0
    assert dests[0].exists() and not dests[1].exists() and dests[2].exists()
    assert sorted(path for path, _, _ in server.log) == ["/a", "/c"]


def test_unknown_name_is_one_line_listing_the_valid_names(tmp_path):
    cat = catalogue(tmp_path, entry("s3fd", tmp_path / "s.pth", ["http://x/s"]), entry("vgg16", tmp_path / "v.pth", ["http://x/v"]))
    rc, out, err = run_cli("--catalogue", cat, "s3fd", "nope")
    assert rc == 1
    assert error_lines(err) == ["error: unknown weight file 'nope'; choose from: s3fd, vgg16"]
    assert err.strip().count("\n") == 0


def test_a_file_in_place_is_not_fetched_again_unless_forced(server, tmp_path, capsys):
    data = blob(4000, 11)
    dest = tmp_path / "fid.pth"
    dest.write_bytes(data)
    cat = catalogue(tmp_path, entry("fid", dest, [server.add("/fid.pth", data)], data))
    assert fetch_weights.main(["--catalogue", cat]) == 0
    assert not server.log and "fid: in place at" in capsys.readouterr().out
    assert fetch_weights.main(["--catalogue", cat, "--force"]) == 0
    assert len(server.log) == 1 and dest.read_bytes() == data


def test_a_wrong_file_in_place_is_replaced_only_by_a_verified_download(server, tmp_path, capsys):
    data = blob(4000, 12)
    dest = tmp_path / "fan.pth.tar"
    dest.write_bytes(b"truncated")
    cat = catalogue(tmp_path, entry("fan", dest, [server.add("/fan", data)], data, sha256=10, size=False))
    assert fetch_weights.main(["--catalogue", cat]) == 0
    assert dest.read_bytes() == data
    assert "replacing a wrong file" in capsys.readouterr().out


def test_a_web_page_or_404_moves_on_to_the_mirror(server, tmp_path, capsys):
    data = blob(6000, 13)
    dest = tmp_path / "expert.pth"
    server.pages.add("/sharepoint")
    urls = [server.url + "/sharepoint", server.url + "/missing", server.add("/mirror/expert.pth", data)]
    assert fetch_weights.main(["--catalogue", catalogue(tmp_path, entry("expert", dest, urls, data))]) == 0
    assert dest.read_bytes() == data
    # Both failures and no mirror: one line with both reasons.
    assert fetch_weights.main(["--catalogue", catalogue(tmp_path, entry("expert", tmp_path / "x.pth", urls[:2], data))]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "got a web page instead of the file" in line and "HTTP 404" in line and not (tmp_path / "x.pth").exists()


def test_sigint_mid_download_exits_130_and_keeps_the_part(server, tmp_path):
    data = blob(400_000, 14)
    dest = tmp_path / "vgg16.pth"
    url = server.add("/vgg16.pth", data)
    server.stall["/vgg16.pth"] = threading.Event()
    proc = subprocess.Popen([sys.executable, "-m", "scripts.fetch_weights", "--catalogue",
                             catalogue(tmp_path, entry("vgg16", dest, [url], data))],
                            cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = fetch_weights.part_path(dest)
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert part.exists() and part.stat().st_size, "the download never started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopped by SIGINT while fetching vgg16" in err and "kept" in err
    assert part.stat().st_size > 0 and not dest.exists()


def test_bad_catalogue_is_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"name": "x", "path": "x.pth", "url": "http://x"}]))
    rc, out, err = run_cli("--catalogue", str(path))
    assert rc == 1
    (line,) = error_lines(err)
    assert "entry 1" in line and "urls" in line


def test_builtin_catalogue_points_where_the_code_loads_from():
    """Each file lands where its loader looks, under the name the library's own URL gives it, and a
    hash in the file name (torch hub convention) agrees with the catalogue's sha256."""
    import torch
    from torch.hub import HASH_REGEX

    import evaluate
    from inference.options import tfg_sampling_defaults

    weights = {w.name: w for w in fetch_weights.builtin_catalogue()}
    assert weights["diff2lip"].dest == REPO_ROOT / tfg_sampling_defaults()["model_path"]
    assert weights["diff2lip"].drive and not weights["diff2lip"].urls
    assert weights["syncnet_v2"].dest == REPO_ROOT / evaluate.create_parser().parse_args([]).syncnet_model
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    for name in ("s3fd", "fan2d", "inception", "vgg16"):
        w = weights[name]
        assert str(w.dest.parent) == hub
        assert os.path.basename(urlparse(w.urls[0]).path) == w.filename
        assert w.sha256.startswith(HASH_REGEX.search(w.filename).group(1))
    for w in weights.values():
        assert w.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", w.sha256)
        assert all(u.startswith("https://") for u in w.urls)


def test_a_file_with_no_direct_download_is_a_step_by_hand_not_a_failure(server, tmp_path, capsys):
    data = blob(2000, 9)
    manual = {**entry("released", tmp_path / "checkpoint.pt", []), "manual": "https://drive.example/folder"}
    served = entry("net", tmp_path / "net.pth", [server.add("/net2.pth", data)], data)
    assert fetch_weights.main(["--catalogue", catalogue(tmp_path, manual, served)]) == 0
    err = capsys.readouterr().err
    assert (f"by hand: checkpoint.pt: no direct download; get it from https://drive.example/folder; put it by hand at "
            f"{tmp_path / 'checkpoint.pt'}") in err
    assert "error:" not in err and (tmp_path / "net.pth").read_bytes() == data


# Google Drive cannot be reached from the test machine: these tests replace gdown's two network
# calls (the folder listing and the file download) with ones that answer as Drive would, and test
# our wiring around them: which file of the folder is taken, resume asked for, the size and
# SHA-256 check before the rename, the one-line errors. Offline, the real gdown runs.

def fake_drive(monkeypatch, files):
    """gdown.download_folder lists `files` (path in the folder -> bytes); gdown.download writes
    the bytes of the id it is given to `output`, as gdown does once its partial file is whole."""
    import gdown
    from gdown.download import GoogleDriveFileToDownload

    ids = {f"id{i}": (path, data) for i, (path, data) in enumerate(files.items())}
    calls = []

    def download_folder(url=None, skip_download=False, **kwargs):
        calls.append(("folder", url, skip_download))
        return [GoogleDriveFileToDownload(id=i, path=p, local_path=f"/nowhere/{p}") for i, (p, _) in ids.items()]

    def download(url=None, output=None, id=None, resume=False, **kwargs):
        calls.append(("file", id, resume))
        with open(output, "wb") as f:
            f.write(ids[id][1])
        return output

    monkeypatch.setattr(gdown, "download_folder", download_folder)
    monkeypatch.setattr(gdown, "download", download)
    return calls


def test_a_drive_folder_file_is_fetched_through_gdown_and_checked_before_the_rename(tmp_path, capsys, monkeypatch):
    data = blob(3000, 11)
    calls = fake_drive(monkeypatch, {"Diff2Lip/readme.txt": b"hi", "Diff2Lip/checkpoint.pt": data})
    e = {**entry("released", tmp_path / "ckpt" / "checkpoint.pt", [], data), "drive": "https://drive.google.com/drive/folders/F"}
    assert fetch_weights.main(["--catalogue", catalogue(tmp_path, e)]) == 0
    assert (tmp_path / "ckpt" / "checkpoint.pt").read_bytes() == data
    assert calls == [("folder", "https://drive.google.com/drive/folders/F", True), ("file", "id1", True)]
    assert "released: fetched to" in capsys.readouterr().out
    assert os.listdir(tmp_path / "ckpt") == ["checkpoint.pt"]


@pytest.mark.parametrize("case", ["wrong checksum", "not in the folder"])
def test_a_bad_drive_download_is_one_line_and_leaves_nothing_under_the_name(case, tmp_path, capsys, monkeypatch):
    data = blob(3000, 12)
    served = {"D/checkpoint.pt": blob(3000, 13)} if case == "wrong checksum" else {"D/other.pt": data}
    fake_drive(monkeypatch, served)
    e = {**entry("released", tmp_path / "checkpoint.pt", [], data), "drive": "https://drive.google.com/drive/folders/F"}
    assert fetch_weights.main(["--catalogue", catalogue(tmp_path, e)]) == 1
    lines = error_lines(capsys.readouterr().err)
    needle = "the download has the wrong checksum" if case == "wrong checksum" else "the Drive folder holds no checkpoint.pt (it holds other.pt)"
    assert len(lines) == 1 and needle in lines[0] and f"put the file by hand at {tmp_path / 'checkpoint.pt'}" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["catalogue.json"]


def test_offline_the_real_gdown_gives_the_same_one_line_error(tmp_path):
    """Real gdown, with every HTTPS request sent to a closed port on 127.0.0.1 (a proxy that
    refuses), as on a machine without a network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    e = {**entry("released", tmp_path / "checkpoint.pt", [], blob(10, 1)), "drive": "https://drive.google.com/drive/folders/F"}
    path = catalogue(tmp_path, e)
    env = {**child_env(), "HTTPS_PROXY": f"http://127.0.0.1:{port}", "https_proxy": f"http://127.0.0.1:{port}"}
    proc = subprocess.run([sys.executable, "-m", "scripts.fetch_weights", "--catalogue", path], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [
        f"error: checkpoint.pt: could not download it from https://drive.google.com/drive/folders/F (connection refused); "
        f"put the file by hand at {tmp_path / 'checkpoint.pt'}"
    ]


def test_the_released_checkpoint_comes_from_the_authors_drive_folder():
    released = {w.name: w for w in fetch_weights.builtin_catalogue()}["diff2lip"]
    assert released.drive == fetch_weights.DIFF2LIP_DRIVE_FOLDER and "/folders/1UMiHAhVf5M_CKzjVQFC5jkz-IXAAnFo5" in released.drive
    assert released.filename == "checkpoint.pt" and released.urls == ()


@pytest.mark.parametrize("value", ["-1", "0", "nan", "abc"])
def test_a_timeout_that_is_not_a_positive_number_is_refused_by_the_parser(value, capsys):
    """A negative timeout reached urllib, whose ValueError was a traceback."""
    with pytest.raises(SystemExit) as stopped:
        fetch_weights.main(["--timeout", value, "s3fd"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--timeout" in err.splitlines()[-1]
