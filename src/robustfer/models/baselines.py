"""Baselines: ResNet-18/50 classifiers and a compact VGG-style CNN for CPU training.

* ``resnet18`` / ``resnet50``: :class:`~robustfer.models.backbones.ResNet` + global average
  pooling + dropout + linear head. The knobs (``width``, ``stem_stride``, ``stem_kernel``,
  ``max_pool``) make them usable on 48-112 px faces.
* ``compact_cnn``: four stages of 3x3 conv-BN-ReLU layers (1, 2, 2, 2 of them) each followed
  by a 2x2 max-pool (widths 32-64-128-256 at ``width=1``; 1.17 M parameters), global average
  pooling, dropout and a linear head. It follows the VGG-13 design the FER+ paper used (Barsoum et al., ICMI 2016),
  shrunk so that a full FERPlus run fits in well under an hour on two CPU cores. Deviations
  from that VGG-13: batch normalisation after every convolution and global average pooling
  instead of two 1024-unit fully connected layers (which hold most of VGG-13's 8.7 M
  parameters), so it trains from scratch quickly; and a single convolution in the first,
  full-resolution stage, which on two CPU cores costs as much time as the three other stages
  together and adds only 9 k parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from robustfer.models._registry import register_model
from robustfer.models.backbones import ResNet
from robustfer.models.output import ModelOutput


class ResNetClassifier(nn.Module):
    """ResNet backbone with a pooled linear expression head."""

    def __init__(self, backbone: ResNet, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f = self.pool(self.backbone(x)).flatten(1)  # (B, C)
        return ModelOutput(logits=self.head(self.drop(f)), features=f)


def _resnet(depth: int, num_classes: int, in_chans: int, width: float, stem_stride: int,
            stem_kernel: int, max_pool: bool, drop_rate: float) -> ResNetClassifier:
    backbone = ResNet(depth, in_chans, width, stem_stride, stem_kernel, max_pool)
    return ResNetClassifier(backbone, num_classes, drop_rate)


@register_model("resnet18")
def resnet18(num_classes: int = 8, in_chans: int = 1, width: float = 1.0, stem_stride: int = 2,
             stem_kernel: int = 7, max_pool: bool = True, drop_rate: float = 0.0) -> nn.Module:
    """ResNet-18 classifier (He et al., CVPR 2016) with small-input knobs."""
    return _resnet(18, num_classes, in_chans, width, stem_stride, stem_kernel, max_pool, drop_rate)


@register_model("resnet50")
def resnet50(num_classes: int = 8, in_chans: int = 1, width: float = 1.0, stem_stride: int = 2,
             stem_kernel: int = 7, max_pool: bool = True, drop_rate: float = 0.0) -> nn.Module:
    """ResNet-50 classifier (He et al., CVPR 2016) with small-input knobs."""
    return _resnet(50, num_classes, in_chans, width, stem_stride, stem_kernel, max_pool, drop_rate)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CompactCNN(nn.Module):
    """VGG-style CNN: ``len(widths)`` stages of conv-BN-ReLU layers, each ending in a max-pool.

    Args:
        num_classes: expression classes.
        in_chans: input channels.
        widths: channels per stage.
        convs_per_stage: 3x3 convolutions per stage (one number, or one per stage).
        drop_rate: dropout before the linear head.
    """

    def __init__(self, num_classes: int, in_chans: int, widths: tuple[int, ...],
                 convs_per_stage: int | tuple[int, ...] = 2, drop_rate: float = 0.3) -> None:
        super().__init__()
        convs = (convs_per_stage,) * len(widths) if isinstance(convs_per_stage, int) else tuple(convs_per_stage)
        if len(convs) != len(widths):
            raise ValueError(f"convs_per_stage {convs_per_stage} needs one entry per stage ({len(widths)}).")
        layers: list[nn.Module] = []
        cin = in_chans
        for w, n in zip(widths, convs):
            for _ in range(n):
                layers += _conv_bn_relu(cin, w)
                cin = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(cin, num_classes)
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> ModelOutput:
        fmap = self.features(x)  # (B, C, H/16, W/16)
        f = self.pool(fmap).flatten(1)  # (B, C)
        return ModelOutput(logits=self.head(self.drop(f)), features=f)


@register_model("compact_cnn")
def compact_cnn(num_classes: int = 8, in_chans: int = 1, width: float = 1.0,
                convs_per_stage: int | tuple[int, ...] | list[int] = (1, 2, 2, 2),
                drop_rate: float = 0.3) -> nn.Module:
    """Compact VGG-style CNN (~1.2 M parameters at width 1) that trains on 2 CPU cores."""
    widths = tuple(max(8, int(round(c * width))) for c in (32, 64, 128, 256))
    convs = convs_per_stage if isinstance(convs_per_stage, int) else tuple(convs_per_stage)
    return CompactCNN(num_classes, in_chans, widths, convs, drop_rate)
