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


class PillarBEV(nn.Module):
    """A PointPillars-style BEV detector with a deformable-attention neck and a DCN head:
    the bundled model that uses tvm-cruise's custom operators (``tvm_cruise.relay_ops``).

    - pillar encoder: linear 4 -> 32 + BN + ReLU per point, max over a pillar's 16 points;
    - ``pillar_scatter`` to a 1x32x64x64 BEV pseudo-image (a 64 x 64 grid);
    - BEV backbone: conv3x3+BN+ReLU 32 -> 64 (stride 2, 32 x 32), 64 -> 128 (stride 2,
      16 x 16); 1x1 projections of both levels to 64 channels;
    - neck: 256 learned BEV queries (16 x 16) attend to both levels with
      ``multi_scale_deformable_attention`` (4 heads of 16 channels, 4 points per level),
      then an output projection and a residual;
    - head: a modulated deformable conv3x3 (``deform_conv2d`` with offsets and mask from a
      conv) + ReLU, then 1x1 convs to 3 class heatmaps (sigmoid) and 8 box parameters.

    Inputs: ``points`` (512, 16, 4) float32 (x, y, z, intensity per point, zero-padded) and
    ``coords`` (512, 4) int32 (batch, z, y, x; rows of -1 pad the unused pillars). Output
    1x11x16x16.
    """

    pillars, points, grid, heads, levels, samples = 512, 16, 64, 4, 2, 4

    def __init__(self):
        super().__init__()
        d = 64
        self.pfn = nn.Linear(4, 32)
        self.pfn_bn = nn.BatchNorm1d(32)
        self.block1 = ConvBNReLU(32, 64, 2)
        self.block2 = ConvBNReLU(64, 128, 2)
        self.proj1 = nn.Conv2d(64, d, 1)
        self.proj2 = nn.Conv2d(128, d, 1)
        self.query = nn.Parameter(0.5 * torch.randn(16 * 16, d))
        self.sampling_offsets = nn.Linear(d, self.heads * self.levels * self.samples * 2)
        self.attention_weights = nn.Linear(d, self.heads * self.levels * self.samples)
        self.output_proj = nn.Linear(d, d)
        self.dcn_offset = nn.Conv2d(d, 27, 3, padding=1)  # 18 offsets + 9 mask logits
        self.dcn = nn.Conv2d(d, d, 3, padding=1)  # its weight and bias, used deformably
        self.heatmap = nn.Conv2d(d, 3, 1)
        self.box = nn.Conv2d(d, 8, 1)
        sizes = [(self.grid // 2, self.grid // 2), (self.grid // 4, self.grid // 4)]
        self.register_buffer("spatial_shapes", torch.tensor(sizes, dtype=torch.int64))
        self.register_buffer("level_start_index", torch.tensor([0, sizes[0][0] * sizes[0][1]]))
        self.register_buffer("normalizer", torch.tensor([[w, h] for h, w in sizes],
                                                        dtype=torch.float32))
        ys, xs = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
        self.register_buffer("reference_points", torch.stack(
            [(xs.flatten() + 0.5) / 16, (ys.flatten() + 0.5) / 16], -1))

    @classmethod
    def sample_inputs(cls, gen: torch.Generator):
        """Seeded pillars: 400 of the 512 slots used, 1 to 16 points each, at distinct
        cells; the rest padding."""
        used = 400
        cells = torch.randperm(cls.grid * cls.grid, generator=gen)[:used]
        coords = torch.full((cls.pillars, 4), -1, dtype=torch.int32)
        coords[:used] = torch.stack([torch.zeros_like(cells), torch.zeros_like(cells),
                                     cells // cls.grid, cells % cls.grid], 1).int()
        counts = torch.randint(1, cls.points + 1, (cls.pillars,), generator=gen)
        counts[used:] = 0
        filled = torch.arange(cls.points)[None, :] < counts[:, None]
        points = torch.randn(cls.pillars, cls.points, 4, generator=gen) * filled[..., None]
        return points, coords

    def forward(self, points, coords):
        from ..relay_ops.deform_conv import deform_conv2d
        from ..relay_ops.msda import multi_scale_deformable_attention
        from ..relay_ops.pillar_scatter import pillar_scatter

        x = self.pfn_bn(self.pfn(points).transpose(1, 2))  # (P, 32, points)
        pillar = torch.relu(x).max(dim=2).values
        bev = pillar_scatter(pillar, coords, 1, self.grid, self.grid)
        f1 = self.block1(bev)
        f2 = self.block2(f1)
        value = torch.cat([self.proj1(f1).flatten(2), self.proj2(f2).flatten(2)], 2)
        value = value.transpose(1, 2).reshape(1, -1, self.heads, 64 // self.heads)
        query = self.query[None]
        q = query.shape[1]
        offsets = self.sampling_offsets(query).view(
            1, q, self.heads, self.levels, self.samples, 2)
        locations = (self.reference_points[None, :, None, None, None, :]
                     + offsets / self.normalizer[None, None, None, :, None, :])
        weights = torch.softmax(self.attention_weights(query).view(
            1, q, self.heads, self.levels * self.samples), -1).view(
            1, q, self.heads, self.levels, self.samples)
        attended = multi_scale_deformable_attention(
            value, self.spatial_shapes, self.level_start_index, locations, weights)
        fmap = (query + self.output_proj(attended)).transpose(1, 2).reshape(1, 64, 16, 16)
        om = self.dcn_offset(fmap)
        head = torch.relu(deform_conv2d(fmap, om[:, :18], self.dcn.weight, self.dcn.bias,
                                        padding=1, mask=torch.sigmoid(om[:, 18:])))
        return torch.cat([torch.sigmoid(self.heatmap(head)), self.box(head)], 1)


def _randomize_affine(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN/LayerNorm affine parameters (gamma in [0.5, 1.5], beta ~ N(0, 0.1))."""
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            with torch.no_grad():
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen))


def _calibrate_batchnorm(model: nn.Module, input_shape, gen: torch.Generator) -> None:
    """Measure BN running statistics on a seeded batch, so they are real and non-trivial."""
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        if hasattr(model, "sample_inputs"):  # several inputs: one sample per forward
            for _ in range(_CALIBRATION_BATCH):
                model(*model.sample_inputs(gen))
        else:
            model(torch.randn((_CALIBRATION_BATCH, *input_shape[1:]), generator=gen))
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
