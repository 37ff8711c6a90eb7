#!/usr/bin/env bash
# Train SyncNet128, our lip-sync expert for 128 px crops, on a root written by scripts/preprocess.sh.
# Set the variables below (or export them), then: scripts/train_syncnet.sh [extra `python -m scripts.train_syncnet` flags]
# Paths are relative to the current folder. Extra flags come last and win, e.g. `--resume True` to
# continue from the newest checkpoint in output_dir. NUM_GPUS > 1 runs one process per GPU (torchrun).
set -euo pipefail
source "$(dirname "$0")/launch.sh"

data_root=${data_root:-data/voxceleb2_preprocessed}   # train.txt, val.txt and clips/
output_dir=${output_dir:-outputs/syncnet128}          # checkpoints, log.txt, progress.csv, tb/
NUM_GPUS=${NUM_GPUS:-1}

# Wav2Lip's expert settings: batch 64, Adam at 1e-4, off-sync frames at least 5 frames away.
flags=(
  --data_root "$data_root" --output_dir "$output_dir"
  --batch_size 64 --lr 1e-4 --weight_decay 0 --min_offset 5
  --max_steps 200000 --val_every 1000 --val_pairs 1024 --save_every 5000 --keep 3 --log_every 100
  --num_workers 8
)

launch_module scripts.train_syncnet "${flags[@]}" "$@"
