"""syncnet_python's SyncNet (evaluation/syncnet_eval.py) in the real `syncnet_v2.model` format with
random values: the state dict's names, shapes and order, the towers' shapes, the loading rules
(missing, foreign and old-PyTorch files) and that each sample's embedding is its own."""

import os

import pytest
import torch

from common.errors import CheckpointError
from evaluation.syncnet_eval import DEFAULT_SYNCNET_EVAL_PATH, EMBEDDING_DIM, SyncNetEval, load_syncnet_eval
from helpers import old_pytorch_state, read_manifest, syncnet_v2_state

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(syncnet_v2_state(), path)
    return str(path)


@pytest.fixture(scope="module")
def net(weights):
    return load_syncnet_eval(weights, "cpu")


def test_manifest_state_dict_loads_in_order_with_forward_shapes(net):
    own = net.state_dict()
    assert [(k, tuple(v.shape)) for k, v in own.items()] == read_manifest("syncnet_python_eval.tsv")
    for name, value in syncnet_v2_state().items():
        assert torch.equal(own[name], value), name
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        assert net.forward_aud(torch.randn(3, 1, 13, 20)).shape == (3, 1024)
        assert net.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_missing_or_foreign_weights_are_one_line_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_syncnet_eval(tmp_path / "syncnet_v2.model")
    assert "syncnet_v2.model" in str(err.value) and os.path.join("checkpoints", "syncnet_v2.model") in str(err.value)
    state = syncnet_v2_state()
    del state["netcnnlip.19.running_var"]
    state["netfcaud.3.weight"] = torch.zeros(512, 512)
    torch.save(state, tmp_path / "bad.model")
    with pytest.raises(CheckpointError) as err:
        load_syncnet_eval(tmp_path / "bad.model")
    assert "netcnnlip.19.running_var" in str(err.value) and "netfcaud.3.weight" in str(err.value)
    assert "\n" not in str(err.value)


def test_syncnet_v2_from_old_pytorch_without_batchnorm_counters_loads(tmp_path):
    reference = SyncNetEval()
    state = old_pytorch_state(reference, seed=3)
    assert len(reference.state_dict()) - len(state) == 14  # the counters the real file may lack
    torch.save(state, tmp_path / "syncnet_v2.model")

    net = load_syncnet_eval(tmp_path / "syncnet_v2.model")

    loaded = net.state_dict()
    for name, value in state.items():
        assert torch.equal(loaded[name], value), name
    x = torch.randn(2, 1, 13, 20)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_aud(x), reference.eval().forward_aud(x), rtol=0, atol=0)

    del state["netcnnaud.1.running_var"]
    torch.save(state, tmp_path / "bad.model")
    with pytest.raises(CheckpointError, match=r"1 missing \(netcnnaud\.1\.running_var\)$"):
        load_syncnet_eval(tmp_path / "bad.model")


def test_the_towers_reduce_each_stream_to_512_features_before_the_embedding(net):
    with torch.no_grad():
        assert net.netcnnaud(torch.randn(2, 1, 13, 20)).shape == (2, 512, 1, 1)
        assert net.netcnnlip(torch.rand(1, 3, 5, 224, 224) * 255).shape == (1, 512, 1, 1, 1)
    assert EMBEDDING_DIM == 1024
    small = SyncNetEval(embedding_dim=64).eval()
    with torch.no_grad():
        assert small.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 64)


def test_each_samples_embedding_does_not_depend_on_the_rest_of_its_batch(net):
    # Eval mode: BatchNorm uses the file's running statistics, so a batch is a stack of singles.
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(4, 1, 13, 20, generator=g)
    lips = torch.rand(2, 3, 5, 224, 224, generator=g) * 255
    with torch.no_grad():
        batched_audio, batched_lips = net.forward_aud(audio), net.forward_lip(lips)
        for i in range(4):
            torch.testing.assert_close(batched_audio[i : i + 1], net.forward_aud(audio[i : i + 1]), rtol=1e-4, atol=1e-4)
        for i in range(2):
            torch.testing.assert_close(batched_lips[i : i + 1], net.forward_lip(lips[i : i + 1]), rtol=1e-3, atol=1e-3)
    # Random He-scaled weights still give embeddings that tell inputs apart.
    assert (batched_audio[0] - batched_audio[1]).abs().max() > 1e-3


def test_a_file_that_is_not_a_plain_state_dict_is_refused_naming_the_file(tmp_path):
    torch.save({"state_dict": syncnet_v2_state(), "epoch": 3}, tmp_path / "wrapped.model")
    torch.save([torch.zeros(3)], tmp_path / "list.model")
    for name in ("wrapped.model", "list.model"):
        with pytest.raises(CheckpointError, match=rf"'.*{name}' is not a plain state dict of tensors as syncnet_v2.model is"):
            load_syncnet_eval(tmp_path / name)
    assert DEFAULT_SYNCNET_EVAL_PATH == os.path.join("checkpoints", "syncnet_v2.model")
