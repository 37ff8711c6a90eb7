#!/usr/bin/env bash
# Score a generated folder with the paper's metrics (FID, SSIM, PSNR, LMD, LSE-C/D) and print Table 2.
# Set the variables below (or export them), then: scripts/evaluate.sh [extra evaluate.py flags]
#   NUM_GPUS > 1 splits the clips over processes (torchrun, or LAUNCHER=mpiexec).
set -euo pipefail
source "$(dirname "$0")/launch.sh"

real_video_root=${real_video_root:-/path/to/voxceleb2/test/mp4}   # generate.py's --test_video_dir
sample_path=${sample_path:-outputs/samples}                       # generate.py's --sample_path
sample_mode=${sample_mode:-reconstruction}                        # reconstruction | cross
output_dir=${output_dir:-outputs/eval_$sample_mode}
filelist_recon=${filelist_recon:-$repo/dataset/filelists/voxceleb2_test_n_5000_reconstruction_5k.txt}
filelist_cross=${filelist_cross:-$repo/dataset/filelists/voxceleb2_test_n_5000_seed_797_cross_5K.txt}
syncnet_model=${syncnet_model:-$repo/checkpoints/syncnet_v2.model}
NUM_GPUS=${NUM_GPUS:-1}

case "$sample_mode" in
  reconstruction) filelist=$filelist_recon ;;
  cross) filelist=$filelist_cross ;;
  *) echo "error: sample_mode must be reconstruction or cross, got '$sample_mode'" >&2; exit 2 ;;
esac

flags=(
  "--mode=$sample_mode" "--filelist=$filelist" "--real_root=$real_video_root" "--generated_root=$sample_path"
  "--output_dir=$output_dir" "--syncnet_model=$syncnet_model" --metrics fid,ssim,psnr,lmd,lse
)

launch evaluate.py evaluate.py "${flags[@]}" "$@"
