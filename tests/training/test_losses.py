"""training.losses: each loss on the predicted sequences, their weighted sum, and LPIPS's network."""

import pytest
import torch

from common.errors import CheckpointError
from training.losses import L2Loss, PredictedSequences, SequenceGANLoss, SequencePatchGAN, load_lpips, weighted_sum


def sequences(pred, real, mask_rows=16):
    B, F, C, H, W = real.shape
    mask = torch.zeros(B, F, 1, H, W)
    mask[..., mask_rows:, :] = 1
    return PredictedSequences(pred=pred, real=real, mask=mask, sync_mel=torch.zeros(B, 80, 16), diffusion_terms={"loss": torch.zeros(B * F)})


def test_l2_counts_only_the_masked_region():
    real = torch.rand(2, 5, 3, 32, 32)
    pred = real + 0.1
    base = L2Loss()(sequences(pred, real))
    assert base.item() == pytest.approx(0.01, rel=1e-5)
    moved = pred.clone()
    moved[..., :16, :] += 3.0  # change only above the mask
    assert L2Loss()(sequences(moved, real)).item() == pytest.approx(base.item(), rel=1e-6)


def test_gan_losses_have_the_right_signs():
    torch.manual_seed(0)
    disc = SequencePatchGAN(nframes=5, ndf=8, n_layers=2)
    gan = SequenceGANLoss(disc)
    real, fake = torch.rand(2, 5, 3, 32, 32), torch.rand(2, 5, 3, 32, 32)
    with torch.no_grad():
        disc.net[-1].bias.fill_(5.0)  # D says "real" to everything
        says_real = gan(sequences(fake, real)).item()
        d_when_fooled = gan.discriminator_loss(real, fake).item()
        disc.net[-1].bias.fill_(-5.0)  # D says "fake" to everything
        says_fake = gan(sequences(fake, real)).item()
    assert says_real < 0.1 < says_fake  # the generator's loss falls as D believes its output
    assert d_when_fooled > 4.0  # D's loss is high when it calls the fakes real
    logits = disc(torch.rand(2, 5, 3, 32, 32))
    assert logits.dim() == 4 and logits.shape[0] == 2 and logits.shape[1] == 1


def test_weighted_sum_skips_zero_weights_and_reports_every_term():
    called = []

    def make(value):
        def loss(batch):
            called.append(value)
            return torch.tensor(value, requires_grad=True)

        return loss

    total, terms = weighted_sum({"a": make(2.0), "b": make(3.0), "c": make(5.0)}, {"a": 1.0, "b": 0.0, "c": 0.5}, None)
    assert called == [2.0, 5.0]
    assert total.item() == pytest.approx(4.5) and terms == {"a": 2.0, "c": 5.0, "total": 4.5}


def test_missing_lpips_weights_name_the_file(monkeypatch, tmp_path):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.vgg, "vgg16", offline)
    with pytest.raises(CheckpointError, match="vgg16-397923af.pth") as err:
        load_lpips(torch.device("cpu"))
    assert str(tmp_path) in str(err.value)


def test_random_lpips_backbone_is_a_fixed_draw_that_leaves_the_random_stream_alone():
    torch.manual_seed(5)
    first = load_lpips(torch.device("cpu"), "random")
    after_first = torch.rand(3)
    torch.manual_seed(5)
    second = load_lpips(torch.device("cpu"), "random")
    assert torch.equal(torch.rand(3), after_first)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after_first)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(first(x, x).abs().max()) < 1e-6 and float(first(x, y).min()) > 0
    assert not any(p.requires_grad for p in first.parameters())
