"""The prepared GPU benchmark (benchmarks/bench_gpu.py) runs with a tiny network on the CPU and
reports every row: each sampler in each precision, and the pipeline end to end with detection."""

import os
import re
import subprocess
import sys

import pytest

from face_detection import s3fd_weights_path
from helpers import REPO_ROOT, full_windows


@pytest.mark.slow
def test_bench_gpu_reports_every_row_in_tiny_mode(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_gpu.py"), "--tiny", "--device", "cpu",
         "--batches", "2", "--rounds", "1", "--skip_compile", "--e2e_seconds", "0.4", "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "DIFF2LIP_CACHE": str(tmp_path / "cache")},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and " " not in line)
    assert figures.pop("device").endswith("(CPU)")
    rows = {f"{name}_{precision}_batch2_frames_per_s" for name in ("ddim25", "dpm2m_8_cache2", "passes_2", "passes_1")
            for precision in ("fp32", "bf16")}
    detector = "s3fd" if os.path.isfile(s3fd_weights_path()) else "centerface"
    rows |= {f"e2e_{name}_320x180_{detector}_frames_per_s" for name in ("dpm2m_8_cache2", "passes_2", "passes_1")}
    assert set(figures) == rows
    assert all(float(value) > 0 for value in figures.values())
    # The end-to-end rows lip-synced every frame that the 0.4 s of audio covers, the face found in each.
    counts = [int(m) for m in re.findall(r", (?:centerface|s3fd): (\d+) frames", proc.stdout)]
    # At least the frames the 0.4 s of speech covers (AAC pads a little), at most the clip's 10.
    assert len(counts) == 3 and all(full_windows(0.4) <= c <= 10 for c in counts)
    assert proc.stdout.count("no face in 0 of") == 3
    assert not os.path.exists(tmp_path / "w")  # --tiny cleans up after itself
