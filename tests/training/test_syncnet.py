"""The lip-sync experts: Wav2Lip's exact format, SyncNet128, the input conversion, the loss, loading."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.errors import CheckpointError
from helpers import DATA_DIR, old_pytorch_state
from training.syncnet import (
    SyncExpert,
    SyncNet64,
    SyncNet128,
    Wav2LipSyncNet,
    load_sync_expert,
    save_syncnet_checkpoint,
    sync_bce,
    sync_probability,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def manifest():
    """[(name, shape)] of Wav2Lip's lipsync_expert.pth state_dict, in order."""
    with open(os.path.join(DATA_DIR, "wav2lip_syncnet_color.tsv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return [(name, tuple(int(d) for d in shape.strip("()").split(",") if d.strip())) for name, shape in rows]


def wav2lip_state(seed=0, prefix=""):
    """Random values in exactly the manifest's names and shapes (BatchNorm variances positive)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in manifest():
        if name.endswith("num_batches_tracked"):
            value = torch.tensor(1000)
        elif name.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        else:
            value = torch.randn(shape, generator=g) * 0.1
        state[prefix + name] = value
    return state


def frames_and_mel(b=2, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 5, 3, size, size, generator=g) * 2 - 1, torch.randn(b, 80, 16, generator=g)


class _Stop(Exception):
    pass


def face_input(expert, frames, mel):
    """The tensor the wrapped network's first face conv receives; the forward stops there (cheap)."""
    seen = {}

    def hook(module, args):
        seen["x"] = args[0]
        raise _Stop

    handle = expert.net.face_encoder[0].register_forward_pre_hook(hook)
    try:
        expert(frames, mel)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["x"]


def test_wav2lip_network_is_the_manifest_in_order():
    state = Wav2LipSyncNet().state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == manifest()
    assert len(state) == 217


@pytest.mark.parametrize("net_cls, face_shape", [(Wav2LipSyncNet, (48, 96)), (SyncNet128, (64, 128))])
def test_networks_embed_to_unit_512_vectors(net_cls, face_shape):
    torch.manual_seed(0)
    net = net_cls().eval()
    assert net.face_size == face_shape
    with torch.no_grad():
        audio_emb, face_emb = net(torch.randn(2, 1, 80, 16), torch.rand(2, 15, *face_shape))
    # 512 values each: both encoders end at 1x1.
    assert audio_emb.shape == face_emb.shape == (2, 512)
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(face_emb.norm(dim=1), torch.ones(2))
    # ReLU outputs: every coordinate >= 0, so the cosine (the sync probability) is too.
    assert (audio_emb >= 0).all() and (face_emb >= 0).all()


def test_syncnet64_is_light_and_embeds_to_unit_256_vectors():
    torch.manual_seed(0)
    net = SyncNet64().eval()
    assert net.face_size == (32, 64)
    assert sum(p.numel() for p in net.parameters()) == 2_575_712  # vs 18,270,080 for SyncNet128
    with torch.no_grad():
        audio_emb, face_emb = net(torch.randn(3, 1, 80, 16), torch.rand(3, 15, 32, 64))
    assert audio_emb.shape == face_emb.shape == (3, 256)
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(face_emb.norm(dim=1), torch.ones(3))
    # Its audio encoder is Wav2Lip's at half the width: the same layers, every channel count halved.
    ours = {k: v.shape for k, v in net.state_dict().items() if k.startswith("audio_encoder")}
    theirs = {k: v.shape for k, v in Wav2LipSyncNet().state_dict().items() if k.startswith("audio_encoder")}
    assert list(ours) == list(theirs)
    for k, shape in theirs.items():
        if len(shape) == 4:  # conv: out and in channels halved (the mel's 1 channel stays), same kernel
            expected = (shape[0] // 2, max(shape[1] // 2, 1), *shape[2:])
        else:  # bias and BatchNorm vectors halved; the scalar counter unchanged
            expected = tuple(n // 2 for n in shape)
        assert tuple(ours[k]) == expected, k


def test_syncnet64_round_trip_and_input(tmp_path):
    torch.manual_seed(2)
    net = SyncNet64()
    path = tmp_path / "syncnet64.pt"
    save_syncnet_checkpoint(path, net, kind="syncnet64", step=1)
    expert = load_sync_expert(path)
    assert expert.kind == "syncnet64" and isinstance(expert.net, SyncNet64)
    for name, value in net.state_dict().items():
        torch.testing.assert_close(expert.net.state_dict()[name], value, rtol=0, atol=0)
    # 64 px crops: the lower half goes in as it is, RGB in [0, 1].
    frames, mel = frames_and_mel(size=64)
    expected = torch.cat([(frames[:, t, :, 32:, :] + 1) / 2 for t in range(5)], dim=1)
    torch.testing.assert_close(face_input(expert, frames, mel), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown SyncNet kind"):
        save_syncnet_checkpoint(tmp_path / "w.pt", net, kind="wav2lip")


def test_syncnet128_shares_wav2lips_audio_encoder_design():
    ours = {k: v.shape for k, v in SyncNet128().state_dict().items() if k.startswith("audio_encoder")}
    theirs = {k: v.shape for k, v in Wav2LipSyncNet().state_dict().items() if k.startswith("audio_encoder")}
    assert ours == theirs


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_wav2lip_checkpoint(tmp_path, prefix):
    state = wav2lip_state(prefix=prefix)
    path = tmp_path / "lipsync_expert.pth"
    # As released: the state_dict beside the optimizer and counters.
    torch.save({"state_dict": state, "global_step": 3, "global_epoch": 1}, path)
    expert = load_sync_expert(path)
    assert expert.kind == "wav2lip" and isinstance(expert.net, Wav2LipSyncNet)
    for name, value in expert.net.state_dict().items():
        torch.testing.assert_close(value, state[prefix + name], rtol=0, atol=0)
    assert not expert.training and not any(p.requires_grad for p in expert.parameters())
    # A parent's .train() must not switch the expert's BatchNorm to batch statistics.
    torch.nn.Sequential(expert).train()
    assert not expert.training and not expert.net.face_encoder[0].conv_block[1].training
    # Eval-mode BatchNorm: the first block is conv -> running-stat normalisation -> ReLU.
    x = face_input(expert, *frames_and_mel(b=1))
    conv, bn = expert.net.face_encoder[0].conv_block
    y = F.conv2d(x, conv.weight, conv.bias, padding=3)
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    expected = torch.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])
    torch.testing.assert_close(expert.net.face_encoder[0](x), expected, rtol=1e-4, atol=1e-5)


def test_load_own_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    net = SyncNet128()
    path = tmp_path / "syncnet_0000010.pt"
    save_syncnet_checkpoint(path, net, step=10, rng={"seed": 0})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temporary file is gone
    expert = load_sync_expert(path)
    assert expert.kind == "syncnet128"
    saved, loaded = net.state_dict(), expert.net.state_dict()
    assert list(saved) == list(loaded)
    for name in saved:
        torch.testing.assert_close(loaded[name], saved[name], rtol=0, atol=0)


def test_wav2lip_input_conversion_is_exact():
    """96x96 RGB in [-1, 1] -> lower half, BGR, [0, 1], frames stacked on channels in time order."""
    expert = SyncExpert("wav2lip").eval()
    frames, mel = frames_and_mel(size=96)
    x = face_input(expert, frames, mel)
    expected = torch.cat([(frames[:, t, [2, 1, 0], 48:, :] + 1) / 2 for t in range(5)], dim=1)
    assert x.shape == (2, 15, 48, 96)
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    # Channel 3 is frame 1's blue channel: the last RGB channel of the second frame.
    torch.testing.assert_close(x[:, 3], (frames[:, 1, 2, 48:] + 1) / 2, rtol=0, atol=0)


def test_wav2lip_input_equals_what_wav2lip_read_from_cv2():
    """A uint8 RGB face in the diffusion range becomes Wav2Lip's cv2 BGR image / 255."""
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, size=(5, 96, 96, 3), dtype=np.uint8)  # RGB
    frames = torch.from_numpy(faces).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
    expert = SyncExpert("wav2lip").eval()
    x = face_input(expert, frames, torch.zeros(1, 80, 16))
    bgr = faces[..., ::-1]
    # Wav2Lip: window of cv2 images [48:] rows, concatenated on channels, / 255.
    wav2lip = np.concatenate([img[48:] for img in bgr], axis=2).transpose(2, 0, 1)[None] / 255.0
    torch.testing.assert_close(x, torch.from_numpy(wav2lip).float(), rtol=0, atol=1e-6)


def test_wav2lip_input_resizes_other_crop_sizes_first():
    expert = SyncExpert("wav2lip").eval()
    frames, mel = frames_and_mel(size=128)
    x = face_input(expert, frames, mel)
    full = F.interpolate(frames.reshape(10, 3, 128, 128), size=(96, 96), mode="bilinear", align_corners=False,
                         antialias=True)
    expected = ((full[:, [2, 1, 0], 48:, :] + 1) / 2).reshape(2, 15, 48, 96)
    torch.testing.assert_close(x, expected, rtol=0, atol=0)


def test_syncnet128_input_conversion():
    expert = SyncExpert("syncnet128").eval()
    frames, mel = frames_and_mel(size=128)
    x = face_input(expert, frames, mel.unsqueeze(1))  # [B, 1, 80, 16] works too
    expected = torch.cat([(frames[:, t, :, 64:, :] + 1) / 2 for t in range(5)], dim=1)  # RGB kept
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    # 256 px crops: the lower half is resized to 64x128.
    frames, mel = frames_and_mel(size=256)
    x = face_input(expert, frames, mel)
    lower = F.interpolate(frames.reshape(10, 3, 256, 256)[:, :, 128:, :], size=(64, 128), mode="bilinear",
                          align_corners=False, antialias=True)
    torch.testing.assert_close(x, ((lower + 1) / 2).reshape(2, 15, 64, 128), rtol=0, atol=0)


def test_bad_input_shapes_are_rejected():
    expert = SyncExpert("syncnet128").eval()
    frames, mel = frames_and_mel()
    with pytest.raises(ValueError, match=r"frames must be \[B, 5, 3, H, W\]"):
        expert(frames[:, :4], mel)
    with pytest.raises(ValueError, match="mel must be"):
        expert(frames, mel[:, :, :8])
    with pytest.raises(ValueError, match="unknown SyncNet kind"):
        SyncExpert("syncnet96")


@pytest.mark.parametrize("kind", ["wav2lip", "syncnet128"])
def test_gradients_reach_the_frames_of_a_frozen_expert(kind):
    torch.manual_seed(0)
    expert = SyncExpert(kind, frozen=True)
    frames, mel = frames_and_mel(b=1)
    frames.requires_grad_(True)
    sync_bce(*expert(frames, mel), 1.0).backward()
    assert frames.grad is not None
    # Only the lower half is seen: the upper half gets no gradient (Wav2Lip's resize filter reaches
    # a pixel or two above row 64 of the 128 px crop), every frame of the lower half does.
    assert frames.grad[..., :60, :].abs().sum() == 0
    assert (frames.grad[..., 70:, :].abs().sum(dim=(2, 3, 4)) > 0).all()
    assert all(p.grad is None for p in expert.parameters())


def test_sync_bce_matches_a_hand_computation():
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 1.0], [4.0, 3.0], [1.0, 1.0]])
    probs = [1 / math.sqrt(2), 24 / 25, 1.0 - 1e-7]
    torch.testing.assert_close(sync_probability(a, v), torch.tensor(probs).clamp(max=1.0), atol=1e-6, rtol=0)
    y = torch.tensor([1.0, 0.0, 1.0])
    # The third pair is identical: p = 1, y = 1 contributes -log(1) = 0.
    expected = -(math.log(probs[0]) + math.log(1 - probs[1]) + 0.0) / 3
    assert sync_bce(a, v, y).item() == pytest.approx(expected, rel=1e-5)
    assert sync_bce(a, v, y[:, None]).item() == pytest.approx(expected, rel=1e-5)


def test_sync_bce_low_for_matching_high_for_orthogonal():
    e = F.normalize(torch.rand(4, 512), dim=1)
    assert sync_bce(e, e, 1.0).item() == pytest.approx(0.0, abs=1e-5)
    a = torch.zeros(4, 512)
    a[:, 0] = 1
    v = torch.zeros(4, 512)
    v[:, 1] = 1
    # p = 0 for an in-sync label: BCE clamps log(0) to -100.
    assert sync_bce(a, v, 1.0).item() == pytest.approx(100.0)
    assert sync_bce(a, v, 0.0).item() == pytest.approx(0.0, abs=1e-6)
    # Rounding can push the cosine a hair past 1; the clamp keeps BCE defined.
    assert torch.isfinite(sync_bce(e * (1 + 1e-6), e, 0.0))


def test_missing_and_garbage_files_name_the_path(tmp_path):
    missing = tmp_path / "lipsync_expert.pth"
    with pytest.raises(CheckpointError, match=r"lipsync_expert\.pth.*not found.*download Wav2Lip's lipsync_expert"):
        load_sync_expert(missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        load_sync_expert(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt.* is not a SyncNet checkpoint"):
        load_sync_expert(other)


def test_wrong_shapes_name_the_tensors(tmp_path):
    state = wav2lip_state()
    state["face_encoder.0.conv_block.0.weight"] = torch.zeros(32, 15, 5, 5)
    del state["audio_encoder.13.conv_block.1.running_var"]
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*1 missing \(audio_encoder\.13.*1 mis-shaped "
                                              r"\(face_encoder\.0\.conv_block\.0\.weight"):
        load_sync_expert(path)
    # Our format with Wav2Lip's weights: the face encoder does not fit SyncNet128.
    path = tmp_path / "swapped.pt"
    torch.save({"kind": "syncnet128", "model": wav2lip_state()}, path)
    with pytest.raises(CheckpointError, match=r"swapped\.pt.* does not fit the syncnet128 SyncNet"):
        load_sync_expert(path)


def test_load_wav2lip_checkpoint_from_old_pytorch_without_batchnorm_counters(tmp_path):
    torch.manual_seed(2)
    net = Wav2LipSyncNet()
    state = old_pytorch_state(net)
    counters = [k for k in net.state_dict() if k.endswith("num_batches_tracked")]
    assert len(counters) > 0 and len(state) == len(net.state_dict()) - len(counters)
    torch.save({"state_dict": state}, tmp_path / "lipsync_expert.pth")

    expert = load_sync_expert(tmp_path / "lipsync_expert.pth")

    loaded = expert.net.state_dict()
    for name, value in state.items():
        assert torch.equal(loaded[name], value), name
    assert all(loaded[k].item() == 0 for k in counters)  # what PyTorch sets for files of that age

    # Any other gap is still refused, and the message names it alone.
    del state["face_encoder.0.conv_block.1.running_mean"]
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"1 missing \(face_encoder\.0\.conv_block\.1\.running_mean\)$"):
        load_sync_expert(tmp_path / "broken.pth")
