"""The three networks on their own: output shapes and the dense layers' flatten order."""

import torch

from raydetect.mtcnn.nets import ONet, PNet, RNet, _flatten_whc, normalize


def test_output_shapes():
    with torch.inference_mode():
        prob, offsets = PNet()(torch.zeros(2, 3, 31, 47))
        # ceil((31 - 2) / 2) - 4 = 11 rows, ceil((47 - 2) / 2) - 4 = 19 columns
        assert prob.shape == (2, 11, 19) and offsets.shape == (2, 4, 11, 19)
        prob, offsets = RNet()(torch.zeros(5, 3, 24, 24))
        assert prob.shape == (5,) and offsets.shape == (5, 4)
        prob, offsets, landmarks = ONet()(torch.zeros(3, 3, 48, 48))
        assert prob.shape == (3,) and offsets.shape == (3, 4) and landmarks.shape == (3, 10)


def test_probabilities_are_probabilities():
    with torch.inference_mode():
        prob, _ = RNet()(torch.randn(16, 3, 24, 24))
    assert bool(((prob >= 0) & (prob <= 1)).all())


def test_flatten_is_width_height_channel_order():
    features = torch.arange(2 * 3 * 2 * 4).reshape(2, 3, 2, 4)  # N, C, H, W
    flat = _flatten_whc(features)
    # Element (n, c, h, w) lands at w * (H * C) + h * C + c.
    assert flat[1, 3 * 6 + 1 * 3 + 2].item() == features[1, 2, 1, 3].item()


def test_flatten_does_not_depend_on_memory_layout():
    features = torch.randn(2, 64, 3, 3)
    channels_last = features.contiguous(memory_format=torch.channels_last)
    assert torch.equal(_flatten_whc(features), _flatten_whc(channels_last))


def test_normalize_maps_pixels_to_unit_range():
    assert normalize(torch.tensor([0.0, 127.5, 255.0])).tolist() == [-127.5 / 128, 0.0, 127.5 / 128]
