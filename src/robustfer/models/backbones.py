"""Trunks (feature extractors) in plain PyTorch, and the one factory that builds them by name.

torchvision is not used (it does not load with the CPU torch used here).

* ``resnet18`` / ``resnet34`` / ``resnet50``: :class:`ResNet`, He et al., "Deep Residual
  Learning for Image Recognition", CVPR 2016, in torchvision's variant ("ResNet v1.5": the
  stride of a bottleneck on its 3x3 convolution) and with torchvision's parameter shapes (at
  ``width=1``, 3 input channels and a 1000-class head a classifier has exactly torchvision's
  11,689,512 / 25,557,032 parameters) and its names *inside* the stem and every block
  (``conv1``, ``bn1``, ..., ``downsample.0``). The state-dict keys are not torchvision's,
  though: the stages are ``stages.0`` - ``stages.3`` (torchvision: ``layer1`` - ``layer4``),
  there is no ``fc`` (the models add their own heads), and robustfer's models hold the trunk
  under their own prefix (``backbone.``, ``trunk.``). torchvision weights therefore load only
  after renaming keys. Initialisation differs too: the last BN of every residual branch
  starts at zero (torchvision's ``zero_init_residual=True``, off by default there). Knobs for
  small faces: ``stem_stride`` (2 in the paper; 1 keeps resolution on 48-112 px inputs),
  ``stem_kernel``, ``max_pool`` on/off, and a ``width`` multiplier on every stage's channels.
* ``compact_cnn``: the compact VGG-style CNN's stages (:func:`compact_stages`; the
  ``compact_cnn`` classifier in :mod:`robustfer.models.baselines`): 3x3 conv-BN-ReLU layers,
  each stage ending in a 2x2 max-pool, widths 32-64-128-256 at ``width=1``.

:func:`create_trunk` builds any of them by name; the model families built on a named trunk
(RAN, SCAN-CCI, AHA and the ResNet classifiers) configure it through :class:`TrunkConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from robustfer.errors import ModelError
from robustfer.models._registry import ModelConfig

#: Stage widths of the compact CNN at ``width=1`` (ResNet's are in :class:`ResNet`).
COMPACT_WIDTHS = (32, 64, 128, 256)
RESNET_WIDTHS = (64, 128, 256, 512)


def scale_widths(widths: Sequence[int], width: float) -> tuple[int, ...]:
    """Stage widths times the ``width`` multiplier, rounded, at least 8 channels each."""
    return tuple(max(8, int(round(c * width))) for c in widths)


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
        if num_stages not in (1, 2, 3, 4):
            raise ValueError(f"num_stages={num_stages}: a ResNet keeps 1 to 4 residual stages; "
                             "use 4 for the whole trunk, 3 to stop after layer3.")
        block, layers = _DEPTHS[depth]
        widths = scale_widths(RESNET_WIDTHS, width)
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


# ---------------------------------------------------------------------- compact CNN stages
def compact_stages(in_chans: int, width: float = 1.0,
                   convs_per_stage: int | Sequence[int] = (1, 2, 2, 2)) -> tuple[nn.Sequential, int]:
    """The compact CNN's feature stages, (B, C, H, W) -> (B, D, H/16, W/16), and D.

    Four stages of ``convs_per_stage`` 3x3 conv-BN-ReLU layers (one number, or one per stage),
    each stage ending in a 2x2 max-pool; widths :data:`COMPACT_WIDTHS` times ``width``.
    PyTorch's default initialisation: the caller applies :func:`init_conv_bn` once its head
    exists (the order of the random draws that a seed's weights depend on).

    Raises:
        ModelError: when ``convs_per_stage`` does not give one count per stage.
    """
    widths = scale_widths(COMPACT_WIDTHS, width)
    convs = (convs_per_stage,) * len(widths) if isinstance(convs_per_stage, int) else tuple(convs_per_stage)
    if len(convs) != len(widths):
        raise ModelError(f"convs_per_stage {convs_per_stage} needs one entry per stage ({len(widths)}), "
                         "e.g. [1, 2, 2, 2].")
    layers: list[nn.Module] = []
    cin = in_chans
    for w, n in zip(widths, convs):
        for _ in range(n):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers), cin


# ---------------------------------------------------------------------- the trunk factory
_RESNET_OPTIONS = ("width", "stem_stride", "stem_kernel", "max_pool", "num_stages")
#: The trunks :func:`create_trunk` builds, and the options each takes.
TRUNKS: dict[str, tuple[str, ...]] = {
    "resnet18": _RESNET_OPTIONS,
    "resnet34": _RESNET_OPTIONS,
    "resnet50": _RESNET_OPTIONS,
    "compact_cnn": ("width", "convs_per_stage"),
}
#: Every option of some trunk.
TRUNK_OPTIONS = frozenset(o for opts in TRUNKS.values() for o in opts)


def trunk_options(name: str) -> tuple[str, ...]:
    """The options :func:`create_trunk` takes for trunk ``name``.

    Raises:
        ModelError: on an unknown trunk name.
    """
    if name not in TRUNKS:
        raise ModelError(f"backbone {name!r} is unknown; use one of {', '.join(TRUNKS)}.")
    return TRUNKS[name]


def create_trunk(name: str, in_chans: int, *, width: float | None = None, stem_stride: int | None = None,
                 stem_kernel: int | None = None, max_pool: bool | None = None, num_stages: int | None = None,
                 convs_per_stage: int | Sequence[int] | None = None) -> tuple[nn.Module, int]:
    """A trunk by name: ``(module (N, in_chans, H, W) -> (N, D, h, w), D)``.

    Args:
        name: ``resnet18``, ``resnet34``, ``resnet50`` (a :class:`ResNet`) or ``compact_cnn``
            (:func:`compact_stages`).
        in_chans: input channels.
        width: multiplier on every stage's channels (1.0).
        stem_stride, stem_kernel, max_pool: ResNet stem (2, 7, True = the paper).
        num_stages: ResNet stages kept (4; SCAN-CCI stops after layer3 with 3).
        convs_per_stage: the compact CNN's 3x3 convolutions per stage ((1, 2, 2, 2)).
        Options left at None take the trunk's default; an option the trunk does not have
        (:data:`TRUNKS`) is an error rather than silently ignored.

    Raises:
        ModelError: on an unknown name or an option the trunk does not take.
    """
    allowed = trunk_options(name)
    given = {k: v for k, v in (("width", width), ("stem_stride", stem_stride), ("stem_kernel", stem_kernel),
                               ("max_pool", max_pool), ("num_stages", num_stages),
                               ("convs_per_stage", convs_per_stage)) if v is not None}
    foreign = [k for k in given if k not in allowed]
    if foreign:
        raise ModelError(f"trunk {name!r} has no option {', '.join(map(repr, foreign))}; its options are "
                         f"{list(allowed)}.")
    if name == "compact_cnn":
        stages, dim = compact_stages(in_chans, **given)
        # Trunks used to be cut out of a whole compact CNN with a one-class head: drawing that
        # head's initial values before the He re-initialisation keeps a seed's weights as they were.
        nn.Linear(dim, 1)
        init_conv_bn(stages)
        return stages, dim
    net = ResNet(int(name.removeprefix("resnet")), in_chans, **given)
    return net, net.num_features


@dataclass(frozen=True)
class TrunkConfig(ModelConfig):
    """Base configuration of a model family built on a named trunk (:func:`create_trunk`).

    The trunk's options a family takes are fields of its configuration; those the
    configuration's ``backbone`` does not have are not options of that model (``stem_stride``
    is one of ``ran_resnet18``, not of ``ran_compact_cnn``).

    Attributes:
        backbone: the trunk, a key of :data:`TRUNKS`; fixed by the registered name (pinned).
        width: multiplier on the trunk's stage widths (1.0).
        stem_stride, stem_kernel, max_pool: the ResNet stem (2, 7, True = the paper; 1 and
            False keep resolution on small faces); ResNet trunks only.
    """

    pinned: ClassVar[tuple[str, ...]] = ("backbone",)

    backbone: str = "resnet18"
    width: float = 1.0
    stem_stride: int = 2
    stem_kernel: int = 7
    max_pool: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        trunk_options(self.backbone)  # an unknown trunk fails here, naming the known ones

    def option_names(self) -> tuple[str, ...]:
        own = trunk_options(self.backbone)
        return tuple(n for n in super().option_names() if n not in TRUNK_OPTIONS or n in own)

    def trunk_kwargs(self) -> dict[str, Any]:
        """This configuration's options of its trunk, as :func:`create_trunk` takes them."""
        names = {f.name for f in fields(self)}
        return {k: getattr(self, k) for k in trunk_options(self.backbone) if k in names}
