"""The IR / IR-SE face-recognition backbones (ArcFace, CurricularFace, TFace), with their key names.

One builder covers the three checkpoints the engine loads; the module names match theirs, so their
plain state dicts load with strict=True:
- CurricularFace IR-101 (the paper's φ) and facexlib's ArcFace IR-SE50 use units
  BN → conv → PReLU → conv(stride) → BN [→ SE];
- TFace's newer IR_101 has one more BatchNorm after the first conv, and an output BatchNorm1d
  without affine parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class ResidualUnit(nn.Module):
    def __init__(self, in_channels: int, depth: int, stride: int, se: bool, extra_bn: bool):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False)]
        if extra_bn:
            layers.append(nn.BatchNorm2d(depth))
        layers += [nn.PReLU(depth), nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth)]
        if se:
            layers.append(SqueezeExcitation(depth))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_layer(x) + self.res_layer(x)


class IResNet(nn.Module):
    """input_layer → body (stages of residual units, the first of each with stride 2) → output_layer."""

    def __init__(
        self,
        stage_units: Sequence[int] = (3, 13, 30, 3),
        stage_channels: Sequence[int] = (64, 128, 256, 512),
        embedding_dim: int = 512,
        se: bool = False,
        extra_bn: bool = False,
        output_bn_affine: bool = True,
        input_size: int = 112,
    ):
        super().__init__()
        stem = stage_channels[0]
        self.input_layer = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem))
        units = []
        in_channels = stem
        for count, depth in zip(stage_units, stage_channels):
            for index in range(count):
                units.append(ResidualUnit(in_channels, depth, 2 if index == 0 else 1, se, extra_bn))
                in_channels = depth
        self.body = nn.Sequential(*units)
        self.stage_ends = tuple(int(sum(stage_units[: i + 1])) for i in range(len(stage_units)))
        side = input_size
        for _ in stage_units:  # each stage's stride-2 conv (kernel 3, padding 1) rounds up
            side = (side + 1) // 2
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(in_channels * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim, affine=output_bn_affine),
        )
        self.stage_channels = tuple(stage_channels)

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feature map at the end of every stage, and the (unnormalised) embedding."""
        x = self.input_layer(x)
        stages = []
        for index, unit in enumerate(self.body, start=1):
            x = unit(x)
            if index in self.stage_ends:
                stages.append(x)
        return stages, self.output_layer(x)
