"""Train Diff2Lip (the authors released no training code; this follows the paper, Sec. 3.2.1).

    python train.py --data_root data/vox_pre --output_dir outputs/train --sync_expert outputs/syncnet128/syncnet_best.pt
    torchrun --nproc_per_node 8 train.py ...        mpiexec -n 8 python train.py ...

Per batch of B sequences of `nframes` frames: one diffusion step t per sequence, shared by its
frames; x_t from Eq. 2 on the masked lower face; the predicted clean frames x0 from the predicted
noise; then L_simple (+ the variational term), L2 on x0 (Eq. 5), the frozen lip-sync expert
(Eq. 6), LPIPS (Eq. 7) and a sequence PatchGAN (Eq. 8) with its own optimizer, summed with
their lambdas (Eq. 9). A lambda of 0 switches its term off. Checkpoints are atomic and hold
everything needed to resume exactly; SIGTERM / SIGINT save and exit.
"""

import sys
from typing import List, Optional

from training.diff2lip import main as train_main


def main(argv: Optional[List[str]] = None) -> int:
    return train_main(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
