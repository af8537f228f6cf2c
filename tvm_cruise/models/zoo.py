"""Reference models in plain PyTorch, seeded so every process builds the same weights.

No torchvision (it does not import beside the pinned torch) and no downloads: the weights
are drawn from a seeded generator and the BatchNorm running statistics are measured on a
seeded calibration batch, so they are non-trivial (mean != 0, var != 1) yet keep every
activation, and the outputs, of order 1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_CALIBRATION_BATCH = 4


class ConvBNReLU(nn.Sequential):
    """conv3x3 (with bias, so the conv -> add -> batch_norm chain is exercised) + BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, bias: bool = True):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=False),
        )


class PerceptionCNN(nn.Module):
    """Five conv3x3+BN+ReLU stages, strides 2-1-2-1-2, channels 32-64-64-128-128.

    Input 1x3x128x256 (a camera crop); output the 1x128x16x32 feature map a detection head
    would read.
    """

    stages = ((32, 2), (64, 1), (64, 2), (128, 1), (128, 2))

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for cout, stride in self.stages:
            layers.append(ConvBNReLU(cin, cout, stride))
            cin = cout
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) for 3x224x224 input and 1000 classes, torchvision layout."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (no fused torch fast path, which TVM cannot import)."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, s, d = x.shape
        qkv = self.qkv(x).reshape(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, s, d)
        return self.proj(out)


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (Vaswani et al. 2017), GELU feed-forward."""

    def __init__(self, d_model: int, heads: int, d_ff: int):
        super().__init__()
        self.attn = SelfAttention(d_model, heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x):
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


class TransformerEncoder(nn.Module):
    """4-layer encoder, d_model 256, 4 heads, feed-forward 1024, over a 128-token sequence."""

    def __init__(self, layers: int = 4, d_model: int = 256, heads: int = 4, d_ff: int = 1024):
        super().__init__()
        self.layers = nn.Sequential(*[EncoderLayer(d_model, heads, d_ff) for _ in range(layers)])

    def forward(self, x):
        return self.layers(x)


def _randomize_affine(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN/LayerNorm affine parameters (gamma in [0.5, 1.5], beta ~ N(0, 0.1))."""
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm)):
            with torch.no_grad():
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen))


def _calibrate_batchnorm(model: nn.Module, input_shape, gen: torch.Generator) -> None:
    """Measure BN running statistics on a seeded batch, so they are real and non-trivial."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    batch = torch.randn((_CALIBRATION_BATCH, *input_shape[1:]), generator=gen)
    with torch.no_grad():
        model(batch)
    for bn in bns:
        bn.momentum = 0.1


class DigitsCNN(nn.Module):
    """A small classifier of 8x8 grey digits (scikit-learn's), trained: the bundled model
    whose accuracy means something (``scripts/train_digits.py`` trains it; the weights and
    the held-out images ship in ``models/data/digits.npz``).

    conv3x3 1->16 + ReLU, conv3x3 16->32 + ReLU, max pool 2, conv3x3 32->32 + ReLU,
    flatten, linear 512 -> 10. Input 1x1x8x8 in [0, 1]; output 10 logits.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        x = torch.relu(self.conv3(nn.functional.max_pool2d(x, 2)))
        return self.fc(torch.flatten(x, 1))


def trained_digits() -> nn.Module:
    """:class:`DigitsCNN` with the shipped trained weights, in eval mode."""
    model = DigitsCNN()
    model.load_state_dict({k[2:]: torch.from_numpy(v) for k, v in digits_data().items()
                           if k.startswith("w.")})
    return model.eval()


def digits_data() -> dict:
    """The arrays of ``models/data/digits.npz``: ``heldout_images`` (N x 1 x 8 x 8 float32
    in [0, 1]) and ``heldout_labels`` (the 20% the model never saw), ``calibration_images``
    (64 training images, int8 calibration data) and the weights (``w.<parameter>``)."""
    from importlib import resources

    import numpy as np

    with resources.files("tvm_cruise.models").joinpath("data", "digits.npz").open("rb") as f:
        data = np.load(f)
        return {k: data[k] for k in data.files}


def seeded(model_cls, input_shape, seed: int, **kwargs) -> nn.Module:
    """Instantiate ``model_cls`` with weights and BN statistics drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(**kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    _randomize_affine(model, gen)
    _calibrate_batchnorm(model, input_shape, gen)
    return model.eval()
