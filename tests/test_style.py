"""The code's imports read the same everywhere: sorted in the three usual blocks (standard library,
other packages, ours) and none unused (ruff's isort and pyflakes rules, configured in pyproject.toml)."""

import subprocess
import sys

from launchers import REPO_ROOT


def test_imports_are_sorted_and_none_is_unused():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "I,F401", "--no-cache", "."],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
