"""The bundled MTCNN weights: present, verified, and refused clearly when damaged."""

import shutil

import pytest
import torch

from raydetect import WeightsError
from raydetect.mtcnn import weights
from raydetect.mtcnn.nets import ONet, PNet, RNet


def test_bundled_weights_match_their_checksums_and_fit_the_networks():
    folder = weights.default_weights_dir()
    for name, expected in weights.WEIGHT_SHA256.items():
        assert weights._sha256(folder / name) == expected
    pnet, rnet, onet = weights.load_networks()
    assert isinstance(pnet, PNet) and isinstance(rnet, RNet) and isinstance(onet, ONet)
    assert sum(p.numel() for p in pnet.parameters()) == 6_632
    assert sum(p.numel() for p in rnet.parameters()) == 100_178
    assert sum(p.numel() for p in onet.parameters()) == 389_040
    assert not any(p.requires_grad for p in onet.parameters())


def copy_weights(tmp_path):
    for name in weights.WEIGHT_SHA256:
        shutil.copy(weights.default_weights_dir() / name, tmp_path / name)
    return tmp_path


def test_missing_file_is_named(tmp_path):
    folder = copy_weights(tmp_path)
    (folder / "rnet.pt").unlink()
    with pytest.raises(WeightsError, match="not found: .*rnet.pt"):
        weights.load_networks(folder)


def test_corrupt_file_is_named(tmp_path):
    folder = copy_weights(tmp_path)
    data = bytearray((folder / "onet.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "onet.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="onet.pt is corrupt or altered"):
        weights.load_networks(folder)


def test_unverified_garbage_is_refused_with_the_file_name(tmp_path):
    folder = copy_weights(tmp_path)
    (folder / "pnet.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="pnet.pt could not be read"):
        weights.load_networks(folder, verify=False)


def test_wrong_architecture_is_refused(tmp_path):
    folder = copy_weights(tmp_path)
    torch.save(RNet().state_dict(), folder / "pnet.pt")
    with pytest.raises(WeightsError, match="does not fit PNet"):
        weights.load_networks(folder, verify=False)
