"""Lip-sync a video (or the pairs of a filelist) to speech with Diff2Lip, in one process.

    python generate.py --generate_from_filelist 0 --video_path face.mp4 --audio_path speech.wav \
        --out_path result.mp4 --model_path checkpoints/checkpoint.pt --is_voxceleb2 False

Every released flag is accepted; `python generate.py --help` lists them all.
"""

import sys

from inference.cli import main

if __name__ == "__main__":
    sys.exit(main(distributed=False))
