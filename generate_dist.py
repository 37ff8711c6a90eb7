"""Diff2Lip generation over several processes: one GPU per rank, or CPU processes without GPUs.

    torchrun --nproc_per_node 4 generate_dist.py ...same flags as generate.py...
    mpiexec -n 4 python generate_dist.py ...

A filelist is split over the ranks; a single video is split into frame ranges that rank 0
joins in order. The result equals the one-process result.
"""

import sys

from inference.cli import main

if __name__ == "__main__":
    sys.exit(main(distributed=True))
