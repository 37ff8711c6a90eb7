"""Train SyncNet128, the lip-sync expert for Diff2Lip's 128 px crops, as Wav2Lip trained its own
(or, with `--kind syncnet64`, the light expert for small models such as the synthetic demo's).

    python -m scripts.train_syncnet --data_root data/preprocessed --output_dir outputs/syncnet128
    torchrun --nproc_per_node 4 -m scripts.train_syncnet --data_root ...
    mpiexec -n 4 python -m scripts.train_syncnet --data_root ...

Each sample is 5 consecutive face crops of a random clip and the SyncNet mel window of a random
start frame s: half the time the frames are s..s+4 (in sync, label 1), otherwise s'..s'+4 with
|s' - s| >= --min_offset (off sync, label 0). The loss is the binary cross-entropy of the cosine
similarity of the two embeddings. The loop is train.py's (training.loop): atomic checkpoints,
exact resume, SIGTERM / SIGINT save and exit, non-finite losses skipped. `python -m
scripts.train_syncnet --help` lists every flag; the checkpoints load with
`training.syncnet.load_sync_expert`.
"""

import os
import sys
from typing import Optional, Sequence

if __package__ in (None, ""):
    # Run as `python scripts/train_syncnet.py`: Python put scripts/ on the path; the packages live one up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from guided_diffusion import dist_util
from training.loop import run_training
from training.syncnet_training import create_parser, train


def main(argv: Optional[Sequence[str]] = None) -> int:
    def setup_and_train(args):
        dist_util.setup_dist()
        return train(args)

    return run_training(setup_and_train, create_parser(description=__doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
