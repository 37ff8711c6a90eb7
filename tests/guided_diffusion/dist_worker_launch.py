"""Run dist_worker.py under torchrun or mpiexec for the tests."""

import json
from pathlib import Path

from launchers import run

WORKER = Path(__file__).with_name("dist_worker.py")


def launch(launcher: list, mode: str, out_dir: Path, *args: object, timeout: float = 120) -> tuple:
    """Run the worker; return its exit status, combined output and the per-rank JSON results."""
    code, output = run([*launcher, str(WORKER), mode, str(out_dir), *map(str, args)], timeout=timeout)
    results = {}
    for path in out_dir.glob("rank*.json"):
        result = json.loads(path.read_text())
        results[result["rank"]] = result
    return code, output, results
