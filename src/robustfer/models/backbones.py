"""Backbones in plain PyTorch (torchvision does not load with the CPU torch used here).

ResNet follows He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, with
torchvision's layout (stride on the 3x3 conv of a bottleneck, "ResNet v1.5") so that weights
are interchangeable by name. Knobs for small faces: ``stem_stride`` (2 in the paper; 1 keeps
resolution on 48-112 px inputs), ``stem_kernel``, ``max_pool`` on/off, and a ``width``
multiplier on every stage's channels.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


def init_conv_bn(module: nn.Module) -> None:
    """He (fan-out) initialisation of every convolution, unit/zero batch-norm affine."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    """ResNet feature extractor: stem, four stages; no classifier.

    Args:
        depth: 18, 34 or 50.
        in_chans: input channels.
        width: multiplier on stage widths (64, 128, 256, 512 at 1.0).
        stem_stride: stride of the stem convolution (2 = paper).
        stem_kernel: stem kernel size (7 = paper; 3 suits 48 px faces).
        max_pool: keep the stem's 3x3/2 max-pool (paper: yes).
        num_stages: stop after this many stages (SCAN-CCI uses ResNet-50 up to layer3).
    """

    def __init__(
        self,
        depth: int = 18,
        in_chans: int = 3,
        width: float = 1.0,
        stem_stride: int = 2,
        stem_kernel: int = 7,
        max_pool: bool = True,
        num_stages: int = 4,
    ) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth {depth} is not supported; use one of {list(_DEPTHS)}.")
        block, layers = _DEPTHS[depth]
        widths = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_chans, widths[0], stem_kernel, stem_stride, stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if max_pool else nn.Identity()
        self.stages = nn.ModuleList()
        cin = widths[0]
        self.stage_channels: list[int] = []
        for i, (planes, n) in enumerate(zip(widths[:num_stages], layers[:num_stages])):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, stride=2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
            self.stages.append(nn.Sequential(*blocks))
            self.stage_channels.append(cin)
        self.num_features = cin
        self._init_weights()

    def _init_weights(self) -> None:
        init_conv_bn(self)
        # Zero-init the last BN of each residual branch (Goyal et al. 2017): each block
        # starts as the identity, which stabilises training from scratch.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every stage, (B, C_i, H_i, W_i)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage's feature map, (B, num_features, h, w)."""
        return self.forward_stages(x)[-1]
