"""The three MTCNN networks as plain ``nn.Module`` s.

Layer names match the original parameter files (``weights/*.pt``), so a state dict
loads with ``strict=True``. All three expect input normalised by
:func:`normalize` (RGB, ``(x - 127.5) / 128``).
"""

from __future__ import annotations

import torch
from torch import nn

from raydetect.mtcnn import layers

PIXEL_MEAN = 127.5
PIXEL_SCALE = 1.0 / 128.0

# Input side of the crops that R-Net and O-Net take, in pixels.
RNET_INPUT_SIZE = 24
ONET_INPUT_SIZE = 48


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """Map RGB values in [0, 255] to the networks' input range, about [-1, 1]."""
    return (pixels - PIXEL_MEAN) * PIXEL_SCALE


def _conv_prelu(conv: nn.Conv2d, prelu: nn.PReLU, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """One convolution and its PReLU, in ``dtype`` (None: x's); see layers.conv2d."""
    return layers.prelu(layers.conv2d(conv, x, dtype), prelu.weight)


def _conv_prelu_pool(conv: nn.Conv2d, prelu: nn.PReLU, pool: nn.MaxPool2d, x: torch.Tensor,
                     dtype: torch.dtype | None) -> torch.Tensor:
    """One convolution, its PReLU and the pooling after it, in ``dtype``; see layers.conv_prelu_max_pool."""
    return layers.conv_prelu_max_pool(conv, prelu.weight, pool.kernel_size, x, dtype)


def _flatten_whc(features: torch.Tensor) -> torch.Tensor:
    """Flatten (N, C, H, W) in (W, H, C) order, the layout the dense weights were trained with."""
    return features.permute(0, 3, 2, 1).reshape(features.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, one output cell per 12x12 window (stride 2).

    forward(x: (N, 3, H, W)) -> (face_prob (N, H', W'), offsets (N, 4, H', W')),
    with H' = ceil((H - 2) / 2) - 4 (likewise W').

    It splits into :meth:`stem` (the layers up to the only pooling) and :meth:`trunk`
    (unpadded convolutions only, so an output cell depends on a 5x5 window of stem
    features and nothing else): stems of several pyramid levels can be packed side by
    side into one canvas and go through the trunk in a single pass.
    """

    # dtype of the layers after the first convolution, output heads included (None: the input's); see
    # layers.conv2d. The first convolution reads the whole frame at full resolution and stays float32: in
    # bfloat16 it lost confident faces for almost no speed (docs/benchmarks.md, "Layer kernels").
    conv_dtype: torch.dtype | None = None

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    # The trunk's output shrinks its input by this many cells on each axis (two 3x3 convolutions).
    TRUNK_SHRINK = 4

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 10, ceil((H - 2) / 2), ceil((W - 2) / 2))."""
        return _conv_prelu_pool(self.conv1, self.prelu1, self.pool1, x, None)

    def trunk(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 10, h, w) stem features -> face_prob (N, h - 4, w - 4), offsets (N, 4, h - 4, w - 4)."""
        x = _conv_prelu(self.conv2, self.prelu2, features, self.conv_dtype)
        x = _conv_prelu(self.conv3, self.prelu3, x, self.conv_dtype)
        # Both 1x1 heads in one convolution; softmax over two logits is the sigmoid of their difference.
        weight = torch.cat([self.conv4_1.weight, self.conv4_2.weight])
        heads = layers.pointwise_conv(x, weight, torch.cat([self.conv4_1.bias, self.conv4_2.bias])).float()
        return torch.sigmoid(heads[:, 1] - heads[:, 0]), heads[:, 2:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.trunk(self.stem(x))


class RNet(nn.Module):
    """Refinement network over 24x24 crops.

    forward(x: (K, 3, 24, 24)) -> (face_prob (K,), offsets (K, 4)).
    """

    # dtype of every layer before the dense layers (None: the input's); see layers.conv2d.
    conv_dtype: torch.dtype | None = None

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _conv_prelu_pool(self.conv1, self.prelu1, self.pool1, x, self.conv_dtype)
        x = _conv_prelu_pool(self.conv2, self.prelu2, self.pool2, x, self.conv_dtype)
        x = _conv_prelu(self.conv3, self.prelu3, x, self.conv_dtype)
        x = self.prelu4(self.dense4(_flatten_whc(x).float()))
        face_prob = torch.softmax(self.dense5_1(x), dim=1)[:, 1]
        return face_prob, self.dense5_2(x)


class ONet(nn.Module):
    """Output network over 48x48 crops, with facial landmarks.

    forward(x: (K, 3, 48, 48)) -> (face_prob (K,), offsets (K, 4), landmarks (K, 10)), the
    landmarks as five x fractions followed by five y fractions of the crop's box.
    """

    # dtype of every layer before the dense layers (None: the input's); see layers.conv2d.
    conv_dtype: torch.dtype | None = None

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = _conv_prelu_pool(self.conv1, self.prelu1, self.pool1, x, self.conv_dtype)
        x = _conv_prelu_pool(self.conv2, self.prelu2, self.pool2, x, self.conv_dtype)
        x = _conv_prelu_pool(self.conv3, self.prelu3, self.pool3, x, self.conv_dtype)
        x = _conv_prelu(self.conv4, self.prelu4, x, self.conv_dtype)
        x = self.prelu5(self.dense5(_flatten_whc(x).float()))
        face_prob = torch.softmax(self.dense6_1(x), dim=1)[:, 1]
        return face_prob, self.dense6_2(x), self.dense6_3(x)
