"""Helpers shared by the tests (importable as `helpers`: pyproject puts tests/ on the path)."""

import os

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO_ROOT, "tests", "data")

# Small enough for a 2-core CPU, but every code path of the official network is on:
# attention, resblock up/down, learned sigma, reference frames and the audio encoder.
TINY_FLAGS = dict(
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,2",
    attention_resolutions="16",
    num_head_channels=16,
)


def randomize_zero_init(model, seed: int = 0, std: float = 0.02) -> None:
    """Give the zero-initialised output convs small random weights, so outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * std)
