"""The channels-last PReLU and pooling give exactly ATen's numbers."""

import pytest
import torch
import torch.nn.functional as F

from raydetect.mtcnn import layers


def _features(shape, seed, channels_last=True):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# Pixel counts with a divisor from 16 down to 4 (431 x 767 has 13), and without one (419 is prime; 1; 2 x 19).
SHAPES = [(1, 10, 433, 769), (1, 10, 431, 767), (2, 16, 7, 8), (3, 32, 5, 5), (1, 10, 1, 1), (4, 28, 22, 22),
          (1, 3, 2, 9), (1, 10, 1, 419), (2, 10, 1, 19)]


@pytest.mark.parametrize("shape", SHAPES)
def test_prelu_equals_aten(shape):
    x = _features(shape, 0)
    weight = torch.randn(shape[1])
    out = layers.prelu(x, weight)
    assert torch.equal(out, F.prelu(x, weight))
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", SHAPES)
def test_2x2_max_pool_equals_aten_with_ceil_mode(shape):
    x = _features(shape, 1)
    out = layers.max_pool(x, 2)
    assert torch.equal(out, F.max_pool2d(x, 2, 2, ceil_mode=True))
    assert out.shape[2:] == ((shape[2] + 1) // 2, (shape[3] + 1) // 2)
    assert out.is_contiguous(memory_format=torch.channels_last)


# R-Net's and O-Net's pools (22, 9; 46, 21, 8 pixels square) and edge cases: odd, even, as small as the window.
POOL_SHAPES = [(5, 28, 22, 22), (5, 48, 9, 9), (3, 32, 46, 46), (3, 64, 21, 21), (3, 64, 8, 8), (2, 16, 3, 3),
               (2, 16, 3, 7), (1, 10, 4, 5), (1, 10, 5, 4)]


@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("shape", POOL_SHAPES)
def test_max_pool_equals_aten_with_ceil_mode(shape, kernel):
    x = _features(shape, 4)
    out = layers.max_pool(x, kernel)
    assert torch.equal(out, F.max_pool2d(x, kernel, 2, ceil_mode=True))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_other_layouts_fall_back_to_aten():
    x = _features((2, 10, 9, 11), 2, channels_last=False)
    weight = torch.randn(10)
    assert torch.equal(layers.prelu(x, weight), F.prelu(x, weight))
    assert torch.equal(layers.max_pool(x, 2), F.max_pool2d(x, 2, 2, ceil_mode=True))
    assert torch.equal(layers.max_pool(x, 3), F.max_pool2d(x, 3, 2, ceil_mode=True))


def test_pixels_per_row_divide_the_pixel_count_or_leave_a_tail():
    assert layers._pixels_per_row(21) == 7
    assert layers._pixels_per_row(431 * 767) == 13
    assert layers._pixels_per_row(419) == layers._pixels_per_row(2 * 19) == 0  # the tail path
    assert layers._pixels_per_row(16 * 3) == 16


def test_conv2d_in_a_lower_precision_rounds_input_and_parameters_and_stays_in_it():
    conv = torch.nn.Conv2d(16, 32, 3)
    x = _features((2, 16, 9, 9), 5)
    assert torch.equal(layers.conv2d(conv, x), conv(x))
    low = layers.conv2d(conv, x, torch.bfloat16)
    assert low.dtype == torch.bfloat16
    assert torch.equal(low, F.conv2d(x.bfloat16(), conv.weight.bfloat16(), conv.bias.bfloat16()))
    already_low = x.bfloat16()  # goes in as it is
    assert torch.equal(layers.conv2d(conv, already_low, torch.bfloat16), low)
    torch.testing.assert_close(low.float(), conv(x), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("shape", SHAPES)
def test_prelu_in_bfloat16_equals_aten_with_bfloat16_slopes(shape):
    x = _features(shape, 6).bfloat16()
    weight = torch.randn(shape[1])
    out = layers.prelu(x, weight)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.prelu(x, weight.bfloat16()))
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kernel", [2, 3])
def test_max_pool_in_bfloat16_equals_aten(kernel):
    x = _features((3, 48, 9, 9), 7).bfloat16()
    out = layers.max_pool(x, kernel)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.max_pool2d(x, kernel, 2, ceil_mode=True))


@pytest.mark.parametrize("channels_last", [True, False])
def test_pointwise_conv_in_float32_equals_aten_to_rounding(channels_last):
    x = _features((1, 32, 13, 21), 8, channels_last=channels_last)
    weight, bias = torch.randn(6, 32, 1, 1), torch.randn(6)
    out = layers.pointwise_conv(x, weight, bias)
    assert out.dtype == torch.float32 and out.shape == (1, 6, 13, 21)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_pointwise_conv_in_bfloat16_rounds_the_weights_and_stays_in_it():
    x = _features((1, 32, 13, 21), 9).bfloat16()
    weight, bias = torch.randn(6, 32, 1, 1), torch.randn(6)
    out = layers.pointwise_conv(x, weight, bias)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.conv2d(x, weight.bfloat16(), bias.bfloat16()))


def test_the_private_onednn_convolution_is_present_in_the_tested_torch():
    # pointwise_conv's fast path; if a torch release renames it, this fails while the fallback keeps working.
    assert layers._onednn_convolution is not None


@pytest.mark.parametrize("onednn", [True, False], ids=["private-onednn-op", "public-fallback"])
def test_pointwise_conv_equals_aten_with_and_without_the_private_operator(monkeypatch, onednn):
    calls = []
    private = layers._onednn_convolution

    def recorded(*args):
        calls.append(args)
        return private(*args)

    monkeypatch.setattr(layers, "_onednn_convolution", recorded if onednn else None)
    x = _features((2, 32, 11, 17), 10)
    weight, bias = torch.randn(6, 32, 1, 1), torch.randn(6)
    out = layers.pointwise_conv(x, weight, bias)
    assert len(calls) == (1 if onednn else 0)
    assert out.shape == (2, 6, 11, 17) and out.dtype == torch.float32
    torch.testing.assert_close(out, F.conv2d(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_a_torch_without_the_private_operator_is_detected(monkeypatch):
    class OpsWithoutIt:
        def __getattr__(self, name):
            raise AttributeError(f"'_OpNamespace' 'aten' object has no attribute '{name}'")

    monkeypatch.setattr(torch.ops, "aten", OpsWithoutIt())
    assert layers._find_onednn_convolution() is None
