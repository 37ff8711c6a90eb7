#!/usr/bin/env bash
# Preprocess a video tree into face crops + audio + mel for training (dataset/preprocess.py).
# Set the variables below (or export them), then: scripts/preprocess.sh [extra preprocess.py flags]
# Paths are relative to the current folder. Rerunning the same command resumes an interrupted run.
#   layout: auto | voxceleb2 (ID/VIDEO/00001.mp4) | lrw (WORD/{train,val,test}/WORD_00001.mp4) | folder
#   is_voxceleb2: True = the fixed VoxCeleb2 crop, False = S3FD face detection, auto = True for voxceleb2
# The paper's VoxCeleb2 training set: layout=voxceleb2 scripts/preprocess.sh --first_utterance_only True
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

input_root=${input_root:-/path/to/voxceleb2/dev/mp4}   # the videos
output_root=${output_root:-data/voxceleb2_preprocessed} # crops, audio, mels, train.txt / val.txt, report.json
layout=${layout:-auto}
NUM_WORKERS=${NUM_WORKERS:-4}
is_voxceleb2=${is_voxceleb2:-auto}
PYTHON=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3 )}

flags=(
  "--input_root=$input_root" "--output_root=$output_root" "--layout=$layout"
  "--num_workers=$NUM_WORKERS" "--is_voxceleb2=$is_voxceleb2"
  --image_size 128 --face_det_batch_size 64 --pads 0,0,0,0 --min_frames 6 --val_fraction 0.05 --seed 0
)

exec "$PYTHON" "$repo/dataset/preprocess.py" "${flags[@]}" "$@"
