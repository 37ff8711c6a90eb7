#!/usr/bin/env bash
# Diff2Lip on one video (or a still image) and one speech file, with the released flags.
# Set the variables below (or export them), then: scripts/inference_single_video.sh [extra flags]
#   e.g. --loop_video True (cover long audio), --paste lower, --box top,bottom,left,right, --precision bf16
#   NUM_GPUS > 1 splits the frames over processes (mpiexec, or LAUNCHER=torchrun).
set -euo pipefail
LAUNCHER=${LAUNCHER:-mpiexec}   # as released; or torchrun
source "$(dirname "$0")/launch.sh"

video_path=${video_path:-face.mp4}                  # the face video, or an image
audio_path=${audio_path:-speech.wav}                # wav, mp3, m4a, or a video's audio track
out_path=${out_path:-outputs/result.mp4}
model_path=${model_path:-$repo/checkpoints/checkpoint.pt}
NUM_GPUS=${NUM_GPUS:-1}

flags=(
  --attention_resolutions 32,16,8 --class_cond False --learn_sigma True --num_channels 128
  --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True
  --use_scale_shift_norm False
  --predict_xstart False --diffusion_steps 1000 --noise_schedule linear --rescale_timesteps False
  --sampling_seed=7 --sampling_input_type=gt --sampling_ref_type=gt
  --timestep_respacing ddim25 --use_ddim True "--model_path=$model_path"
  --nframes 5 --nrefer 1 --image_size 128 --sampling_batch_size=32
  --face_hide_percentage 0.5 --use_ref=True --use_audio=True --audio_as_style=True
  --generate_from_filelist 0 "--video_path=$video_path" "--audio_path=$audio_path" "--out_path=$out_path"
  --face_det_batch_size 64 --pads 0,0,0,0 --is_voxceleb2=False
)

launch generate.py generate_dist.py "${flags[@]}" "$@"
