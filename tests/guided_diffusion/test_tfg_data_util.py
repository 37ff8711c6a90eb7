"""The batch helper: mask, masked frame, reference and mel inputs from [B, F, C, H, W]."""

import torch

from guided_diffusion.tfg_data_util import lower_face_mask, shared_noise, tfg_process_batch


def test_lower_face_mask_rows():
    mask = lower_face_mask(128, 0.5)
    assert mask.shape == (1, 1, 128, 128)
    assert mask[0, 0, :64].sum() == 0 and mask[0, 0, 64:].min() == 1
    m = lower_face_mask(10, 0.25)  # int(10 * 0.75) = 7
    assert m[0, 0, :, 0].tolist() == [0] * 7 + [1] * 3


def test_process_batch_flattens_in_sequence_order_and_masks_with_noise():
    B, F, H = 2, 5, 16
    frames = torch.rand(B, F, 3, H, H) * 2 - 1
    refs = torch.rand(B, F, 3, H, H)
    mels = torch.randn(B, F, 80, 16)
    batch = tfg_process_batch(frames, 0.5, ref_frames=refs, mels=mels)
    kw = batch.model_kwargs
    assert batch.x_start.shape == (B * F, 3, H, H)
    assert torch.equal(batch.x_start[1 * F + 3], frames[1, 3])  # row b*F + f
    assert torch.equal(kw["ref_img"][1 * F + 3], refs[1, 3])
    assert torch.equal(kw["indiv_mels"][F + 2], mels[1, 2])
    cond = kw["cond_img"]
    assert torch.equal(cond[:, :, : H // 2], batch.x_start[:, :, : H // 2])  # real outside the mask
    assert torch.equal(cond[:, :, H // 2 :], batch.noise[:, :, H // 2 :])  # noise inside
    assert kw["mask"].shape == (B * F, 1, H, H)


def test_fixed_noise_is_shared_by_all_frames():
    frames = torch.rand(3, 5, 3, 16, 16)
    noise = shared_noise(16, seed=7)
    again = shared_noise(16, seed=7)
    assert torch.equal(noise, again) and noise.shape == (1, 3, 16, 16)
    batch = tfg_process_batch(frames, 0.5, ref_frames=frames, mels=torch.zeros(3, 5, 1, 80, 16), noise=noise)
    lower = batch.model_kwargs["cond_img"][:, :, 8:]
    assert all(torch.equal(lower[i], noise[0, :, 8:]) for i in range(15))
    assert batch.model_kwargs["indiv_mels"].shape == (15, 80, 16)


def test_multiple_references_are_stacked_on_channels():
    frames = torch.rand(1, 2, 3, 8, 8)
    refs = torch.rand(1, 2, 2, 3, 8, 8)  # nrefer = 2
    batch = tfg_process_batch(frames, 0.5, ref_frames=refs, use_audio=False)
    assert batch.model_kwargs["ref_img"].shape == (2, 6, 8, 8)
    assert torch.equal(batch.model_kwargs["ref_img"][1, 3:], refs[0, 1, 1])
    assert "indiv_mels" not in batch.model_kwargs
