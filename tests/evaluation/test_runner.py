"""The evaluation runner (evaluation/runner.py): which files a filelist line compares, each clip's
cache against every metric computed on its own from real encoded clips (random weights in the
real formats), the cache file, the pooled summary, Table 2's layout and the output files."""

import csv
import io
import json
import math
import os

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from common.errors import Diff2LipError
from dataset.video_io import iter_frames
from evaluation.fid import INCEPTION_FILENAME, FIDFeatures, fid_from_features, mouth_region
from evaluation.lmd import FAN_FILENAME, MouthLandmarks, lmd_of_frames
from evaluation.lse import LSEScorer
from evaluation.runner import (
    COLUMNS,
    PAPER_ROWS,
    ClipPaths,
    Metrics,
    cache_path,
    clip_paths,
    per_clip_rows,
    save_cache,
    summarise,
    table,
    write_outputs,
)
from face_detection import voxceleb2_box
from helpers import random_inception_state_dict, render_clip, syncnet_v2_state
from inference.filelist import FilelistItem

pytestmark = pytest.mark.usefixtures("one_thread")

VIDEO, AUDIO = "id001/v/00001", "id002/w/00003"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Real clips of two identities, a "generated" clip for the line (AUDIO, VIDEO) that differs
    from the real one (another drawn face, two frames shorter), and the weight files."""
    root = tmp_path_factory.mktemp("runner")
    real, generated = root / "real", root / "generated"
    for rel, seed in ((VIDEO, 1), (AUDIO, 2)):
        (real / os.path.dirname(rel)).mkdir(parents=True)
        render_clip(real / f"{rel}.mp4", n_frames=10, seed=seed)
    generated.mkdir()
    render_clip(generated / "id002.w.00003_id001.v.00001.mp4", n_frames=8, seed=5)
    render_clip(generated / "small.mp4", n_frames=8, height=64, width=64, seed=5)
    syncnet = root / "syncnet_v2.model"
    torch.save(syncnet_v2_state(), syncnet)
    return dict(real=str(real), generated=str(generated), syncnet=str(syncnet), root=root)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A torch home whose hub cache holds a random Inception and a random FAN under their names."""
    from face_alignment.models import FAN

    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(random_inception_state_dict(), checkpoints / INCEPTION_FILENAME)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), checkpoints / FAN_FILENAME)
    return str(home)


@pytest.fixture
def offline(monkeypatch, torch_home):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", torch_home)

    def unreachable(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)


def paths_of(roots, mode="reconstruction"):
    return clip_paths(FilelistItem(AUDIO, VIDEO, 1), mode, roots["real"], roots["generated"])


def metrics(roots, names, mode="reconstruction", batch_size=3, is_voxceleb2=True):
    return Metrics(names, mode, "cpu", batch_size, roots["syncnet"], "voxceleb2", is_voxceleb2)


# ---------------------------------------------------------------- which files


def test_clip_paths_compare_with_the_video_source_and_lmd_with_the_audio_source_in_cross(roots):
    recon = paths_of(roots, "reconstruction")
    assert recon.name == "id002.w.00003_id001.v.00001"
    assert recon.generated == os.path.join(os.path.realpath(roots["generated"]), recon.name + ".mp4")
    assert recon.real == recon.lmd_reference == os.path.join(roots["real"], f"{VIDEO}.mp4")
    cross = paths_of(roots, "cross")
    assert cross.real == os.path.join(roots["real"], f"{VIDEO}.mp4")
    assert cross.lmd_reference == os.path.join(roots["real"], f"{AUDIO}.mp4")
    with pytest.raises(Diff2LipError, match="leaves --real_root"):
        clip_paths(FilelistItem("../x", VIDEO, 2), "cross", roots["real"], roots["generated"])


def test_cross_mode_drops_the_metrics_that_need_ground_truth(roots):
    assert metrics(roots, ["ssim", "psnr"], "cross").metrics == []
    assert metrics(roots, ["psnr", "ssim"], "reconstruction").metrics == ["psnr", "ssim"]


# ---------------------------------------------------------------- one clip's cache


def psnr_by_hand(a, b):
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize("batch_size", [3, 16])
def test_ssim_and_psnr_are_means_over_the_shared_frames_of_independent_values(roots, batch_size):
    paths = paths_of(roots)
    out = metrics(roots, ["ssim", "psnr"], batch_size=batch_size).clip(paths)
    assert set(out) == {"n_frames", "ssim", "psnr"}
    gen, real = list(iter_frames(paths.generated)), list(iter_frames(paths.real))
    assert (len(gen), len(real)) == (8, 10) and int(out["n_frames"]) == 8
    expected_psnr = np.mean([psnr_by_hand(a, b) for a, b in zip(gen, real)])
    expected_ssim = np.mean([
        structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=255)
        for a, b in zip(gen, real)
    ])
    assert float(out["psnr"]) == pytest.approx(expected_psnr, rel=1e-6)
    assert float(out["ssim"]) == pytest.approx(expected_ssim, abs=1e-5)
    assert 0 < float(out["ssim"]) < 0.95  # another face: far from a copy


def test_lse_of_a_clip_is_the_scorers_on_the_generated_file(roots):
    paths = paths_of(roots, "cross")
    out = metrics(roots, ["lse"], "cross").clip(paths)
    expected = LSEScorer(roots["syncnet"], face_track="voxceleb2").score(paths.generated)
    assert set(out) == {"n_frames", "lse_c", "lse_d", "offset"}
    assert (float(out["lse_c"]), float(out["lse_d"]), int(out["offset"])) == (
        pytest.approx(expected["lse_c"], rel=1e-6), pytest.approx(expected["lse_d"], rel=1e-6), expected["offset"])


@pytest.mark.slow
def test_fid_features_and_lmd_in_the_cache_equal_each_computed_alone(roots, offline):
    paths = paths_of(roots, "cross")
    out = metrics(roots, ["fid", "lmd"], "cross", batch_size=4).clip(paths)
    gen, real = list(iter_frames(paths.generated)), list(iter_frames(paths.real))
    fid = FIDFeatures(batch_size=4)
    box = voxceleb2_box(224, 224)
    # Every frame of each clip (not only the shared ones), stored as float16.
    for key, frames in (("fid_gen", gen), ("fid_real", real)):
        assert out[key].dtype == np.float16 and out[key].shape == (len(frames), 2048)
        np.testing.assert_array_equal(out[key], fid.features(frames).astype(np.float16))
    for key, frames in (("fid_mouth_gen", gen), ("fid_mouth_real", real)):
        np.testing.assert_array_equal(out[key], fid.features([mouth_region(f, box) for f in frames]).astype(np.float16))
    # Cross: the mouth is compared with the audio source's, in the VoxCeleb2 box.
    reference = list(iter_frames(paths.lmd_reference))
    expected = lmd_of_frames(gen[:8], reference[:8], MouthLandmarks(), [box] * 8)
    assert float(out["lmd"]) == pytest.approx(expected, rel=1e-6) and np.isfinite(expected)


def test_voxceleb2_boxes_are_used_for_mouths_unless_detection_is_asked(roots):
    paths = paths_of(roots)
    assert metrics(roots, [], is_voxceleb2=True)._boxes(paths.real, 3) == [(0, 158, 50, 174)] * 3
    assert metrics(roots, [], is_voxceleb2=False)._boxes(paths.real, 3) is None


def test_pixel_metrics_refuse_frames_of_another_size_but_lse_does_not_need_them(roots):
    small = ClipPaths("small", os.path.join(roots["generated"], "small.mp4"), paths_of(roots).real, paths_of(roots).real)
    with pytest.raises(Diff2LipError, match=r"'.*small\.mp4' is 64x64 but the real clip '.*00001\.mp4' is 224x224; ssim compare"):
        metrics(roots, ["ssim"]).clip(small)
    out = metrics(roots, ["lse"]).clip(small)
    assert int(out["n_frames"]) == 8 and np.isfinite(float(out["lse_d"]))


def test_a_missing_generated_clip_says_to_run_generate_first(roots):
    missing = ClipPaths("x", os.path.join(roots["generated"], "x.mp4"), paths_of(roots).real, paths_of(roots).real)
    with pytest.raises(Diff2LipError, match=r"generated clip '.*x\.mp4' not found; run generate\.py"):
        metrics(roots, ["psnr"]).clip(missing)


# ---------------------------------------------------------------- cache, summary, table, files


def fake_caches(seed=0):
    rng = np.random.default_rng(seed)
    caches = {}
    for k, name in enumerate(["b_clip", "a_clip", "c_clip"]):
        n = 6 + k
        caches[name] = {
            "n_frames": np.array(n),
            "fid_gen": rng.normal(k, 1, (n, 8)).astype(np.float16), "fid_real": rng.normal(0, 1, (n + 1, 8)).astype(np.float16),
            "fid_mouth_gen": rng.normal(0, 2, (n, 8)).astype(np.float16), "fid_mouth_real": rng.normal(0, 1, (n, 8)).astype(np.float16),
            "ssim": np.array(0.5 + 0.1 * k), "psnr": np.array(20.0 + k), "lse_c": np.array(3.0 * k), "lse_d": np.array(8.0 - k),
            "offset": np.array(k - 1),
        }
    del caches["c_clip"]["ssim"]  # a clip without a metric counts only for the others
    return caches


def test_cache_file_round_trips_every_array_under_the_clips_name(tmp_path):
    values = fake_caches()["a_clip"]
    path = cache_path(str(tmp_path), "a.v.1_b.w.2")
    assert path == os.path.join(str(tmp_path), "cache", "a.v.1_b.w.2.npz")
    save_cache(path, values)
    assert os.listdir(tmp_path / "cache") == ["a.v.1_b.w.2.npz"]  # no .npz.npz, no temporary file
    with np.load(path) as loaded:
        assert set(loaded.files) == set(values)
        for key, value in values.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype


def test_summary_pools_fid_over_all_frames_and_averages_the_rest_over_clips():
    caches = fake_caches()
    summary = summarise(caches, "reconstruction", ["fid", "ssim", "psnr", "lse"])
    values = list(caches.values())

    def pooled(key):
        return np.concatenate([v[key].astype(np.float64) for v in values])

    assert summary["clips"] == 3.0
    assert summary["fid"] == pytest.approx(fid_from_features(pooled("fid_gen"), pooled("fid_real")), rel=1e-12)
    assert summary["fid_mouth"] == pytest.approx(fid_from_features(pooled("fid_mouth_gen"), pooled("fid_mouth_real")), rel=1e-12)
    per_clip = np.mean([fid_from_features(v["fid_gen"], v["fid_real"]) for v in values])
    assert abs(summary["fid"] - per_clip) > 0.1  # pooled, not a mean of per-clip FIDs
    assert summary["ssim"] == pytest.approx((0.5 + 0.6) / 2)  # c_clip has none
    assert summary["psnr"] == pytest.approx(21.0) and summary["lse_c"] == pytest.approx(3.0) and summary["lse_d"] == pytest.approx(7.0)
    assert "lmd" not in summary and "offset" not in summary
    assert "fid" not in summarise(caches, "reconstruction", ["ssim"])
    assert summarise({}, "cross", ["fid"]) == {"clips": 0.0}


def test_summary_of_caches_read_back_from_disk_is_the_same(tmp_path):
    caches = fake_caches()
    for name, values in caches.items():
        save_cache(cache_path(str(tmp_path), name), values)
    loaded = {name: dict(np.load(cache_path(str(tmp_path), name))) for name in caches}
    assert summarise(loaded, "reconstruction", ["fid", "ssim", "lse"]) == summarise(caches, "reconstruction", ["fid", "ssim", "lse"])


def test_table_has_the_papers_rows_and_this_runs_in_table_2s_layout():
    text = table({"clips": 2.0, "fid": 3.14159, "ssim": 0.5, "lse_c": 7.0, "lse_d": 6.789}, "reconstruction", "tiny")
    assert text.splitlines() == [
        "| reconstruction | FID | SSIM | PSNR | LMD | Sync_c | Sync_d |",
        "|---|---|---|---|---|---|---|",
        "| Wav2Lip (paper) | 3.26 | 0.53 | 18.18 | 3.16 | 9.08 | 5.93 |",
        "| PC-AVS (paper) | 4.25 | 0.53 | 18.26 | 3.16 | 6.71 | 7.80 |",
        "| Diff2Lip (paper) | 2.46 | 0.53 | 18.09 | 3.04 | 8.78 | 5.93 |",
        "| tiny | 3.14 | 0.50 | - | - | 7.00 | 6.79 |",
    ]
    cross = table({"fid": 1.0, "ssim": 0.9}, "cross").splitlines()
    assert cross[0] == "| cross | FID | LMD | Sync_c | Sync_d |" and cross[-1] == "| this run | 1.00 | - | - | - |"
    assert len(cross) == 2 + len(PAPER_ROWS["cross"]) + 1 and [k for k, _ in COLUMNS["cross"]] == ["fid", "lmd", "lse_c", "lse_d"]


def test_per_clip_rows_are_sorted_by_clip_with_plain_numbers():
    rows = per_clip_rows(fake_caches())
    assert [r["clip"] for r in rows] == ["a_clip", "b_clip", "c_clip"]
    assert rows[0] == {"clip": "a_clip", "frames": 7, "ssim": pytest.approx(0.6), "psnr": 21.0, "lse_c": 3.0, "lse_d": 7.0, "offset": 0.0}
    assert "ssim" not in rows[2] and type(rows[0]["frames"]) is int and type(rows[0]["psnr"]) is float
    json.dumps(rows)  # plain Python numbers only


def test_outputs_are_four_files_that_read_back_to_the_rows_summary_and_table(tmp_path):
    rows = per_clip_rows(fake_caches())
    summary = {"clips": 3.0, "ssim": 0.55}
    out = tmp_path / "eval"
    write_outputs(str(out), rows, summary, "| t |")
    assert sorted(os.listdir(out)) == ["per_clip.csv", "per_clip.json", "summary.json", "table.md"]
    read = list(csv.DictReader(io.StringIO((out / "per_clip.csv").read_text())))
    header = (out / "per_clip.csv").read_text().splitlines()[0]
    assert header == "clip,frames,lse_c,lse_d,offset,psnr,ssim"  # clip first, then sorted
    assert [r["clip"] for r in read] == ["a_clip", "b_clip", "c_clip"]
    assert float(read[1]["psnr"]) == rows[1]["psnr"] and read[2]["ssim"] == ""
    assert json.loads((out / "per_clip.json").read_text()) == [dict(r) for r in rows]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "table.md").read_text() == "| t |\n"
