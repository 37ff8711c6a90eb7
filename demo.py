"""The quickstart: lip-sync drawn faces never seen in training to other speech, and measure it.

    python demo.py [--out_dir outputs/demo]          (make demo: installs first)

Nothing is downloaded. The demo
1. renders 6 talking heads with `dataset/synthetic.py` (data seed 1: faces and voices the demo
   checkpoint never saw; its training data used seed 0), 224x224 H.264 + AAC in the VoxCeleb2
   layout, with the reconstruction and cross filelists;
2. runs `generate.py` with the committed 2-step student of the demo network
   (`checkpoints/demo/diff2lip_synthetic64_student2.pt`, distilled by `make demo-train`; 2 network
   passes per frame instead of DDIM-25's 25) on the cross filelist (each clip's lips driven by
   another identity's speech) and on the reconstruction filelist (each clip with its own audio);
3. writes the videos and one PNG sheet per cross clip (video source | generated | the audio
   source's real frame) and prints:
   - the lip-sync score (`dataset/lipmeter.py`: correlation of the mouth opening measured in the
     generated pixels with the opening the driving audio implies), with two controls: the same
     videos against the wrong audio, and the unedited video sources against the driving audio;
   - PSNR / SSIM of the reconstructions;
   - the SyncNet expert's in-sync vs off-sync (offset >= 5 frames) accuracy on these clips.
The scores also go to `OUT_DIR/scores.json`.
"""

import sys
from typing import List, Optional

from common.command import run_command
from common.flags import create_argparser
from evaluation.synthetic_demo import DEMO_OPTIONS, run


def main(argv: Optional[List[str]] = None) -> int:
    def body() -> int:
        run(create_argparser(DEMO_OPTIONS, description=__doc__).parse_args(argv))
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
