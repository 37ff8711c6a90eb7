#!/usr/bin/env bash
# Diff2Lip on a filelist (VoxCeleb2 / LRW test lists), with the released variables and flags.
# Set the variables below (or export them), then: scripts/inference.sh [extra generate.py flags]
#   NUM_GPUS > 1 runs generate_dist.py under mpiexec (as released) or, with LAUNCHER=torchrun, torchrun.
# For LRW: is_voxceleb2=False and filelist_recon / filelist_cross = dataset/filelists/lrw_*_relative_path.txt
set -euo pipefail
LAUNCHER=${LAUNCHER:-mpiexec}   # as released; or torchrun
source "$(dirname "$0")/launch.sh"

real_video_root=${real_video_root:-/path/to/voxceleb2/test/mp4}   # base folder of the dataset
model_path=${model_path:-$repo/checkpoints/checkpoint.pt}                # the released checkpoint
sample_path=${sample_path:-outputs/samples}                       # where the outputs go
sample_mode=${sample_mode:-cross}                                 # cross | reconstruction
NUM_GPUS=${NUM_GPUS:-1}
is_voxceleb2=${is_voxceleb2:-True}
filelist_recon=${filelist_recon:-$repo/dataset/filelists/voxceleb2_test_n_5000_reconstruction_5k.txt}
filelist_cross=${filelist_cross:-$repo/dataset/filelists/voxceleb2_test_n_5000_seed_797_cross_5K.txt}

case "$sample_mode" in
  cross) filelist=$filelist_cross; input_type=gt; ref_type=gt ;;
  reconstruction) filelist=$filelist_recon; input_type=first_frame; ref_type=first_frame ;;
  *) echo "error: sample_mode must be cross or reconstruction, got '$sample_mode'" >&2; exit 2 ;;
esac

flags=(
  --attention_resolutions 32,16,8 --class_cond False --learn_sigma True --num_channels 128
  --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True
  --use_scale_shift_norm False
  --predict_xstart False --diffusion_steps 1000 --noise_schedule linear --rescale_timesteps False
  --sampling_seed=7 "--sampling_input_type=$input_type" "--sampling_ref_type=$ref_type"
  --timestep_respacing ddim25 --use_ddim True "--model_path=$model_path" "--sample_path=$sample_path"
  --nframes 5 --nrefer 1 --image_size 128 --sampling_batch_size=32
  --face_hide_percentage 0.5 --use_ref=True --use_audio=True --audio_as_style=True
  --generate_from_filelist 1 "--test_video_dir=$real_video_root" "--filelist=$filelist" --save_orig=False
  --face_det_batch_size 64 --pads 0,0,0,0 "--is_voxceleb2=$is_voxceleb2"
)

launch generate.py generate_dist.py "${flags[@]}" "$@"
