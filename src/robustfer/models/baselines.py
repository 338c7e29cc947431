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

from dataclasses import dataclass

import torch
from torch import nn

from robustfer.errors import ModelError
from robustfer.models._registry import ModelConfig, register_model
from robustfer.models.backbones import TrunkConfig, compact_stages, create_trunk, init_conv_bn
from robustfer.models.output import ModelOutput


# ---------------------------------------------------------------------- ResNet classifiers
@dataclass(frozen=True)
class ResNetConfig(TrunkConfig):
    """Options of the ResNet classifiers: the trunk's (:class:`~robustfer.models.backbones.TrunkConfig`:
    ``width``, ``stem_stride``, ``stem_kernel``, ``max_pool``) and the head's.

    Attributes:
        backbone: ``resnet18``, ``resnet34`` or ``resnet50``; fixed by the registered name.
        num_stages: residual stages kept (4 = the whole trunk; 3 = cut after layer3, SCAN-CCI's
            trunk, the control that separates SCAN-CCI's attention from its trunk).
        drop_rate: dropout before the linear head.
    """

    num_stages: int = 4
    drop_rate: float = 0.0


class ResNetClassifier(nn.Module):
    """ResNet backbone with a pooled linear expression head.

    Args:
        cfg: the configuration (:class:`ResNetConfig`).
        num_classes: expression classes.
        in_chans: input channels.
    """

    def __init__(self, cfg: ResNetConfig, num_classes: int = 8, in_chans: int = 1) -> None:
        super().__init__()
        if not cfg.backbone.startswith("resnet"):
            raise ModelError(f"ResNetClassifier needs a ResNet backbone, got {cfg.backbone!r}; "
                             "use compact_cnn for the compact CNN.")
        self.config = cfg
        self.backbone, dim = create_trunk(cfg.backbone, in_chans, **cfg.trunk_kwargs())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f = self.pool(self.backbone(x)).flatten(1)  # (B, C)
        return ModelOutput(logits=self.head(self.drop(f)), features=f)


# ---------------------------------------------------------------------- compact CNN
@dataclass(frozen=True)
class CompactCnnConfig(ModelConfig):
    """Options of the compact CNN.

    Attributes:
        width: multiplier on the stage widths (32, 64, 128, 256 at 1.0).
        convs_per_stage: 3x3 convolutions per stage, one number or one per stage.
        drop_rate: dropout before the linear head.
    """

    width: float = 1.0
    convs_per_stage: int | tuple[int, ...] = (1, 2, 2, 2)
    drop_rate: float = 0.3


class CompactCNN(nn.Module):
    """VGG-style CNN: four stages of conv-BN-ReLU layers, each ending in a max-pool
    (:func:`~robustfer.models.backbones.compact_stages`), then pooling, dropout, a linear head.

    Args:
        cfg: the configuration (:class:`CompactCnnConfig`).
        num_classes: expression classes.
        in_chans: input channels.
    """

    def __init__(self, cfg: CompactCnnConfig, num_classes: int = 8, in_chans: int = 1) -> None:
        super().__init__()
        self.config = cfg
        self.features, cin = compact_stages(in_chans, cfg.width, cfg.convs_per_stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(cin, num_classes)
        self.num_features = cin
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        fmap = self.features(x)  # (B, C, H/16, W/16)
        f = self.pool(fmap).flatten(1)  # (B, C)
        return ModelOutput(logits=self.head(self.drop(f)), features=f)


# ---------------------------------------------------------------------- registered variants
register_model(
    "resnet18",
    "ResNet-18 classifier (He et al., CVPR 2016) with small-input knobs.",
    config=ResNetConfig(backbone="resnet18"))(ResNetClassifier)
register_model(
    "resnet50",
    "ResNet-50 classifier (He et al., CVPR 2016) with small-input knobs.",
    config=ResNetConfig(backbone="resnet50"))(ResNetClassifier)
register_model(
    "compact_cnn",
    "Compact VGG-style CNN (~1.2 M parameters at width 1) that trains on 2 CPU cores.",
    config=CompactCnnConfig())(CompactCNN)
