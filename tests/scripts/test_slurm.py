"""scripts/slurm/*.sbatch and scripts/launch.sh's torchrun flags: the command lines they build,
checked by the real parsers of dataset/preprocess.py, train.py and torchrun. Slurm itself does not
run here: a stand-in PYTHON prints its arguments, and stand-ins for `srun` (runs its command once,
as on one node) and `scontrol` (names two nodes) take Slurm's place."""

import subprocess

import pytest
from torch.distributed.run import get_args_parser

from dataset.preprocess import create_parser as preprocess_parser
from launchers import REPO_ROOT, child_env
from training.diff2lip import create_parser as train_parser


@pytest.fixture
def stand_ins(tmp_path):
    """A folder of stand-in commands; PYTHON prints TORCH_DISABLE_SHARE_RDZV_TCP_STORE, then its
    arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "python": '#!/usr/bin/env bash\necho "store=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-}"\nprintf "%s\\n" "$@"\n',
        "srun": '#!/usr/bin/env bash\nexec "$@"\n',
        "scontrol": '#!/usr/bin/env bash\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a17\\ngpu-b03\\n"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = child_env()
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(bin_dir / "python"), SLURM_SUBMIT_DIR=str(REPO_ROOT))
    return env


def run_script(path, env, *args):
    return subprocess.run(["bash", str(REPO_ROOT / path), *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=30)


def test_preprocess_array_task_takes_its_part_of_the_clip_list(stand_ins, tmp_path):
    stand_ins.update(SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_COUNT="4", SLURM_CPUS_PER_TASK="12",
                     input_root="/data/my videos", output_root=str(tmp_path / "out"))
    proc = run_script("scripts/slurm/preprocess.sbatch", stand_ins, "--min_frames", "9")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == str(REPO_ROOT / "dataset" / "preprocess.py")
    args = preprocess_parser().parse_args(lines[2:])  # the real flags: an unknown one would exit here
    assert (args.shard_index, args.num_shards, args.num_workers) == (2, 4, 12)
    assert (args.input_root, args.output_root, args.format) == ("/data/my videos", str(tmp_path / "out"), "shards")
    assert args.min_frames == 9  # extra flags come last and win


def test_preprocess_outside_a_job_array_is_one_error(stand_ins, tmp_path):
    stand_ins.update(input_root="/data", output_root=str(tmp_path))
    proc = run_script("scripts/slurm/preprocess.sbatch", stand_ins)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "submit as a job array: sbatch --array=0-N" in proc.stderr


def test_train_job_runs_one_torchrun_per_node_meeting_at_the_first(stand_ins, tmp_path):
    stand_ins.update(SLURM_JOB_NUM_NODES="2", SLURM_JOB_NODELIST="gpu-[a17,b03]", SLURM_JOB_ID="4711",
                     SLURM_GPUS_ON_NODE="4", SLURM_CPUS_PER_TASK="32", data_root="/shared/shards",
                     output_dir=str(tmp_path / "run"))
    proc = run_script("scripts/slurm/train.sbatch", stand_ins, "--lr", "5e-5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "store=1"  # a fresh rendezvous store for every attempt of the group
    assert lines[1:3] == ["-m", "torch.distributed.run"]
    script = lines.index(str(REPO_ROOT / "train.py"))
    launcher = get_args_parser().parse_args([*lines[3:script], "train.py"])
    assert (launcher.nnodes, launcher.nproc_per_node, launcher.rdzv_backend) == ("2", "4", "c10d")
    assert (launcher.rdzv_endpoint, launcher.rdzv_id, launcher.max_restarts) == ("gpu-a17:29500", "diff2lip-4711", 3)
    args = train_parser().parse_args(lines[script + 1:])
    assert args.resume is True and args.num_workers == 7  # 32 cores / 4 workers, one left to each worker
    assert (args.data_root, args.output_dir, args.lr) == ("/shared/shards", str(tmp_path / "run"), 5e-5)


@pytest.mark.parametrize("nodes, expected", [
    ({"NUM_GPUS": "2"}, ["--standalone", "--nproc_per_node", "2", "--max-restarts", "3"]),
    ({"NUM_GPUS": "2", "MAX_RESTARTS": "0"}, ["--standalone", "--nproc_per_node", "2"]),
    ({"NNODES": "2", "RDZV_ENDPOINT": "node1:29500"},
     ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", "node1:29500",
      "--rdzv_id", "diff2lip", "--max-restarts", "3"]),
])
def test_train_sh_passes_the_torchrun_flags(stand_ins, nodes, expected):
    stand_ins.update(nodes)
    proc = run_script("scripts/train.sh", stand_ins)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1:3 + len(expected) + 1] == ["-m", "torch.distributed.run", *expected, str(REPO_ROOT / "train.py")]


def test_train_sh_on_several_nodes_without_an_endpoint_is_one_error(stand_ins):
    stand_ins.update(NNODES="2")
    proc = run_script("scripts/train.sh", stand_ins)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: NNODES=2 needs RDZV_ENDPOINT=host:port of the first machine (the same on every machine)"
