#!/usr/bin/env bash
# Train Diff2Lip on a root written by scripts/preprocess.sh, with the paper's settings.
# Set the variables below (or export them), then: scripts/train.sh [extra train.py flags]
#   Extra flags come last and win, e.g. --resume True, --init_from checkpoints/checkpoint.pt,
#   --lambda_sync 0 (an ablation row). NUM_GPUS > 1 runs one process per GPU (torchrun, or
#   LAUNCHER=mpiexec); under torchrun a worker that dies brings the group back up to MAX_RESTARTS
#   times, continuing from the newest checkpoint. Several machines: NNODES=2 RDZV_ENDPOINT=node1:29500
#   on each (docs/training.md; scripts/slurm/train.sbatch does it under Slurm).
set -euo pipefail
source "$(dirname "$0")/launch.sh"

data_root=${data_root:-data/voxceleb2_preprocessed}          # train.txt and clips/
output_dir=${output_dir:-outputs/diff2lip}                   # checkpoints, log.txt, progress.csv, tb/
sync_expert=${sync_expert:-outputs/syncnet128/syncnet_best.pt}  # or Wav2Lip's checkpoints/lipsync_expert.pth
NUM_GPUS=${NUM_GPUS:-1}
MAX_RESTARTS=${MAX_RESTARTS:-3}                              # torchrun: bring a failed worker group back this often

# The released network (128 px, 5-frame sequences, learned variance, 1000 linear steps).
flags=(
  --attention_resolutions 32,16,8 --class_cond False --learn_sigma True --num_channels 128
  --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_scale_shift_norm False
  --predict_xstart False --diffusion_steps 1000 --noise_schedule linear --rescale_timesteps False
  --nframes 5 --nrefer 1 --image_size 128 --face_hide_percentage 0.5
  --use_ref True --use_audio True --audio_as_style True
  "--data_root=$data_root" "--output_dir=$output_dir" "--sync_expert=$sync_expert"
  --batch_size 4 --lr 1e-4 --warmup_steps 500 --grad_clip 1.0 --ema_rate 0.9999
  --lambda_simple 1 --lambda_l2 1 --lambda_sync 0.03 --lambda_lpips 0.1 --lambda_gan 0.01
  --save_every 5000 --preview_every 5000 --preview_respacing ddim25 --keep 3 --log_every 100 --num_workers 4
)

launch train.py train.py "${flags[@]}" "$@"
