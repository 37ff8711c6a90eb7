"""The training preview: a fixed batch sampled with the EMA weights as inference samples it,
written as `preview_STEP.png` (real frames over generated ones)."""

import os

import torch

from common.errors import Diff2LipError
from common.files import atomic_write_bytes
from dataset.shards import open_root
from dataset.tfg_dataset import TFGDataset, collate
from guided_diffusion.samplers import SAMPLERS
from guided_diffusion.tfg_data_util import tfg_process_batch


class Preview:
    """Samples a fixed batch (the val split's, else the train split's) with the EMA weights,
    as inference does (DDIM or a DPM-Solver++, one shared noise), and writes `preview_STEP.png`: real | generated."""

    def __init__(self, args, device):
        from guided_diffusion.script_util import create_gaussian_diffusion

        source = open_root(args.data_root, args.shard_cache)
        try:
            dataset = TFGDataset(source, "val", args.nframes)
        except Diff2LipError:
            dataset = TFGDataset(source, "train", args.nframes)
        self.batch = collate([dataset[(i % len(dataset), i)] for i in range(min(2, len(dataset)))])
        self.diffusion = create_gaussian_diffusion(
            steps=args.diffusion_steps, learn_sigma=args.learn_sigma, noise_schedule=args.noise_schedule,
            timestep_respacing=args.preview_respacing, rescale_timesteps=args.rescale_timesteps,
        )
        self.args, self.device = args, device

    @torch.no_grad()
    def write(self, ema, step: int) -> str:
        import cv2
        import numpy as np

        from guided_diffusion.tfg_data_util import shared_noise

        frames = self.batch["frames"].to(self.device)
        size = frames.shape[-1]
        inputs = tfg_process_batch(
            frames, self.args.face_hide_percentage, ref_frames=self.batch["refs"].to(self.device),
            mels=self.batch["mels"].to(self.device), noise=shared_noise(size, seed=self.args.seed).to(self.device),
        )
        was_training = ema.training
        ema.eval()
        sample = SAMPLERS[self.args.preview_sampler](self.diffusion, ema, inputs.noise, inputs.model_kwargs,
                                                    steps=self.args.preview_sampling_steps)
        ema.train(was_training)
        generated = sample * inputs.mask + inputs.x_start * (1 - inputs.mask)
        grid = torch.cat([torch.cat(list(inputs.x_start), 2), torch.cat(list(generated), 2)], 1)  # [3, 2H, N*W]
        image = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        path = os.path.join(self.args.output_dir, f"preview_{step:07d}.png")
        # Encoded here and written atomically: cv2.imwrite answers a full disk with a bare False.
        _, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        atomic_write_bytes(path, png.tobytes())
        return path
