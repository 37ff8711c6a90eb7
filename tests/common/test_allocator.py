"""common.allocator: freed tensor memory stays in the process, counted in page faults."""

import json
import subprocess
import sys

import pytest

from launchers import REPO_ROOT, child_env

# A child process: 30 tensors of 64 MiB, each made, written and freed in turn; prints the minor
# page faults the last 20 cost (glibc settles its heap over the first few) and what
# keep_freed_memory returned (or run_command's doing).
CHILD = """
import json, resource, sys, torch
mode = sys.argv[1]
tuned = None
if mode == "call":
    from common.allocator import keep_freed_memory
    tuned = keep_freed_memory()
elif mode == "command":
    from common.command import run_command
    run_command(lambda: 0)
torch.ones(1)
for step in range(30):
    if step == 10:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(16 << 20)  # 64 MiB of float32
    x.fill_(1.0)
    del x
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps(dict(tuned=tuned, faults=faults)))
"""
PAGES_PER_TENSOR = (64 << 20) // 4096


def faults(mode, **env):
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=REPO_ROOT, env={**child_env(), **env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_command_reuses_freed_tensor_memory_instead_of_faulting_it_in_again():
    plain, called, command = faults("none"), faults("call"), faults("command")
    # The system default maps and unmaps each 64 MiB block: every one faults all its pages in.
    assert plain["faults"] >= 19 * PAGES_PER_TENSOR
    # Kept: the same memory again, without faults.
    assert called["tuned"] is True and called["faults"] <= PAGES_PER_TENSOR
    assert command["faults"] <= PAGES_PER_TENSOR


@pytest.mark.parametrize("setting", [{"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_malloc_settings_in_the_environment_are_left_as_the_user_made_them(setting):
    result = faults("call", **setting)
    assert result["tuned"] is False
    assert result["faults"] >= 19 * PAGES_PER_TENSOR
