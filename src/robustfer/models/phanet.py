"""PhaNet: pose-adaptive hierarchical attention network.

Liu, Peng, Zeng, Shan, "Pose-adaptive Hierarchical Attention Network for Facial Expression
Recognition", arXiv 1905.10059, 2019. No official code is public; equation numbers below are
the paper's. The attention-proposal and boxcar crop follow RA-CNN (Fu, Zheng, Mei, CVPR 2017),
which the paper builds on.

Architecture (three scales s = 1, 2, 3):

* **HPAL** (hierarchical pixel attention): at each scale a DenseNet computes feature maps
  M_s (Eq. 1). A classifier on M_s gives p(e|s), and an attention-proposal network (APN: two
  fully connected layers) gives a square (x, y, l), centre and half side (Eq. 2). The square
  is cut out of scale s's image with the sigmoid boxcar mask (Eq. 5,
  :func:`robustfer.layers.boxcar.boxcar_crop`) and zoomed back to the input size (or
  ``crop_size``): that is scale s + 1's image. Losses (in :class:`robustfer.losses.PhaNetLoss`): cross-entropy of
  every scale (Eq. 3) and the attention ranking loss
  ``max(0, p(y|s-1) - p(y|s) + 0.05)`` for s = 2, 3 (Eq. 4).
* **SAL** (scale attention): the globally average-pooled maps of the three scales are
  concatenated (Eq. 6), two FC layers with ReLU and a sigmoid give c_1..c_3 (Eq. 7), and the
  joint representation is the concatenation of c_i times scale i's pooled features (Eq. 8).
* **DCML** (dynamically constrained multi-loss): expression and pose softmax heads on the
  joint representation, and a sigmoid layer that gives the loss weights [lambda_e, lambda_p]
  (Eq. 10); total loss ``lambda_e L(e) + lambda_p L(p) + sum_s L_s^att +
  exp(-12 lambda_p (1 - lambda_p))`` (Eq. 9).

Outputs (:class:`ModelOutput`): ``logits`` (B, C) from the joint expression head;
``pose_logits`` (B, P) (None with the pose branch off); ``region_logits`` (B, 3, C) the
per-scale logits; ``boxes`` (B, 3, 4) the three squares in pixels of the input image, (x0, y0,
x1, y1), scale 1 the whole image and scales 2 and 3 the nested attended squares mapped back to
the original image; ``attention_weights`` (B, 3) c_1..c_3; ``features`` (B, 3 D) the joint
representation; ``extras["lambda"]`` (B, 2) [lambda_e, lambda_p]; ``phase`` (a
:class:`~robustfer.models.schedule.Phase`) the phase this forward pass ran in, which the loss
reads.

Choices where the paper is silent, and deviations (with the reason):

1. **Backbone.** Plain-PyTorch DenseNet (Huang et al., CVPR 2017): the paper's depth 40,
   growth rate 12, three dense blocks; "basic" layers (BN-ReLU-3x3 conv; 12 per block at
   depth 40) with 1x1-conv + 2x2 average-pool transitions and no compression, i.e. Huang et
   al.'s DenseNet-40. ``bottleneck=True`` gives DenseNet-BC layers (1x1 then 3x3). The stem is
   the paper's 7x7 convolution; its stride is not given: stride 2 then BN-ReLU and a 3x3/2
   max-pool as in the ImageNet DenseNet (``max_pool=False`` keeps twice the resolution).
2. **One backbone per scale** (the paper's separate networks); ``share_backbone=True`` uses
   one for all three (a third of the parameters, same compute).
3. **Scale classifier and APN are separate heads.** The paper's "pixel attention network"
   yields both p(e|s) and the square; here p(e|s) is one linear layer on the pooled M_s (as
   RA-CNN's per-scale softmax classifier) and the square comes from a two-layer APN
   (FC-ReLU-FC, ``apn_hidden`` units), so that the ranking phase can update the APN alone.
4. **APN input.** M_s average-pooled to an ``apn_grid`` x ``apn_grid`` map and flattened
   (RA-CNN flattens the whole conv5_4 map into its FC layers, ~100 M parameters at 448 px);
   the grid keeps where things are while the layer stays small.
5. **Box parameterisation and bounds.** The APN's three outputs go through sigmoids: the
   side ``2 l`` lies in ``side_range`` (fractions of scale s's image side; default 1/3 to 1,
   RA-CNN's lower bound of a third) and the centre is placed so that the whole square lies
   inside scale s's image. Every square is therefore nested in the previous one and the zoom
   factor stays bounded (at most 3x per scale); ``phanet_compact`` uses a lower bound of 1/2
   because 48 px faces hold little detail to zoom into.
6. **Initial box.** A centred square of side ``init_side`` (0.75) of the previous scale: the
   APN's last layer starts with weights scaled by 0.01 and biases that give that square.
   RA-CNN instead pre-trains its APN to the highest-response region of the last conv layer.
7. **Boxcar sharpness** ``boxcar_k`` = 10 per pixel (RA-CNN's value), so the mask is almost
   a hard box; the square also gets a gradient through the bilinear zoom's sampling grid.
   Samples outside the image repeat its border.
8. **Crops come from the previous scale's zoomed image**, as in the paper (scale 3 is
   resampled twice). ``crop_size`` sets the side of the zoomed images: the input size in
   ``phanet_densenet40`` (the paper's zoom back to the input size), 32 px in
   ``phanet_compact``. On 48 px faces a 32 px zoom of a square of 24-48 px keeps most of its
   pixels and makes scales 2 and 3 cost under half of scale 1 (about twice the training
   throughput on 2 CPU cores), as the 32 px crops of the RAN CPU recipe.
9. **SAL hidden layer**: ``sal_hidden`` units, default ``max(8, 3 D // 16)`` (the reduction
   16 of squeeze-and-excitation). ``scale_attention=False`` sets c_i = 1 (the paper's
   ablation without scale attention).
10. **DCML weights.** ``lambda_p = 0.5 * sigmoid(w^T j + b)`` per sample and
    ``lambda_e = 1 - lambda_p``, which guarantees the paper's constraints
    ``lambda_e + lambda_p = 1`` and ``lambda_e >= lambda_p >= 0`` for every input (Eq. 10);
    the loss uses their means over the pose-labelled samples of the batch. With the pose branch
    off (``pose=False`` or ``num_pose_bins=0``, the paper's ablation) there is no pose head and
    lambda is the constant [1, 0].
11. **Training schedule** (``schedule``). The paper alternates, as RA-CNN, between the
    classifiers and the ranking loss. ``"alternate"`` (default) repeats ``phase_steps =
    (classify, rank)`` optimiser steps: in a *classify* step the squares are detached, so the
    APNs get no gradient, and the loss is Eq. 9 without the ranking term (scale classifiers,
    SAL and DCML trained together); in a *rank* step every module except the APNs runs with
    detached parameters (``torch.func.functional_call``), so only the APNs get a gradient
    (the others keep ``grad = None``, which AdamW skips, weight decay included), and the loss is
    the ranking loss alone. RA-CNN alternates until each part converges; with a 10-epoch budget
    we alternate in blocks of steps (default 4 classify, 1 rank). ``"joint"`` trains every
    parameter on the whole loss at every step. The model holds no schedule state:
    :meth:`PhaNet.training_schedule` turns the options into a
    :class:`~robustfer.models.schedule.TrainingSchedule`, the training engine counts the
    optimiser steps (saved in ``last.pt``, so a resumed run continues the schedule) and passes
    each step's phase to the forward (``model(x, phase=Phase.RANK)``), which reports it to the
    loss in ``output.phase``. Called without a phase, the model runs in ``Phase.EVAL`` in
    eval mode and ``Phase.JOINT`` in training mode. Checkpoints written before this change hold
    a ``schedule_step`` buffer; loading drops it. Batch-norm running statistics still update in
    rank steps.
    Under DistributedDataParallel the alternate schedule leaves parameters unused in a step,
    which DDP refuses unless ``find_unused_parameters=True``; use ``schedule="joint"`` there.
12. **Pose labels.** The paper uses datasets' own pose labels; robustfer's FERPlus pose bins
    are five yaw bins (-90, -45, 0, 45, 90 degrees, :data:`robustfer.inference.pose.YAW_BINS`)
    estimated by ``robustfer annotate-pose``; unknown poses (-1) are ignored by the pose loss.
13. **Ranking target.** The ranking loss reads the probability of the hard label
    (``batch["label"]``, the majority vote under FERPlus soft targets); the cross-entropies
    use the configured target (hard, soft or sampled).
14. ``drop_rate``: dropout before every classifier (0 = paper). No pre-training: robustfer
    downloads no weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from robustfer.errors import ModelError
from robustfer.layers.boxcar import boxcar_crop
from robustfer.models._registry import ModelConfig, register_model
from robustfer.models.backbones import init_conv_bn
from robustfer.models.output import ModelOutput
from robustfer.models.schedule import Phase, TrainingSchedule

SCHEDULES = ("alternate", "joint")
NUM_SCALES = 3


# ---------------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3 (basic) or BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 (BC); output concatenated to input."""

    def __init__(self, cin: int, growth_rate: int, bottleneck: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
        if bottleneck:
            mid = 4 * growth_rate
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)]
            cin = mid
        layers.append(nn.Conv2d(cin, growth_rate, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)  # (B, C + k, H, W): dense connectivity


class Transition(nn.Module):
    """BN-ReLU-Conv1x1-AvgPool2x2 between dense blocks."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
                                  nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DenseNet(nn.Module):
    """Densely connected CNN with three dense blocks (Huang et al., CVPR 2017), feature maps out.

    Args:
        depth: total depth as Huang et al. count it; ``(depth - 4)`` must divide by 3 (basic)
            or 6 (BC): 40 gives 12 basic layers per block.
        growth_rate: k, channels each layer adds.
        in_chans: input channels.
        bottleneck: DenseNet-BC layers (1x1 before each 3x3).
        compression: channel factor of the transitions (1.0 = none, BC: 0.5).
        stem_kernel, stem_stride: first convolution (paper: 7x7).
        max_pool: 3x3/2 max-pool after the stem.
    """

    def __init__(self, depth: int = 40, growth_rate: int = 12, in_chans: int = 1, bottleneck: bool = False,
                 compression: float = 1.0, stem_kernel: int = 7, stem_stride: int = 2, max_pool: bool = True) -> None:
        super().__init__()
        per = 6 if bottleneck else 3
        if depth < 4 + per or (depth - 4) % per:
            raise ModelError(f"DenseNet depth {depth} does not fit three dense blocks of "
                             f"{'bottleneck' if bottleneck else 'basic'} layers: use depth = 4 + {per} n "
                             f"(e.g. 40, as the paper) with n >= 1.")
        if growth_rate < 1 or not 0 < compression <= 1:
            raise ModelError(f"DenseNet growth_rate {growth_rate} must be >= 1 and compression {compression} "
                             "in (0, 1].")
        n_layers = (depth - 4) // per  # layers per dense block
        c = 2 * growth_rate if bottleneck else 16
        stem: list[nn.Module] = [nn.Conv2d(in_chans, c, stem_kernel, stem_stride, stem_kernel // 2, bias=False)]
        if max_pool:
            stem += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        layers: list[nn.Module] = [nn.Sequential(*stem)]
        for b in range(3):
            block = []
            for _ in range(n_layers):
                block.append(DenseLayer(c, growth_rate, bottleneck))
                c += growth_rate
            layers.append(nn.Sequential(*block))
            if b < 2:
                cout = math.floor(c * compression)
                layers.append(Transition(c, cout))
                c = cout
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.layers_per_block = n_layers
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, D, h, w)


# ---------------------------------------------------------------------- attention proposal
class AttentionProposal(nn.Module):
    """APN: two FC layers on the pooled M_s -> a square (x, y, l) inside the scale's image (Eq. 2).

    Args:
        dim: channels D of M_s.
        grid: M_s is average-pooled to ``grid x grid`` before the FC layers.
        hidden: units of the first FC layer.
        side_range: bounds of the square's side ``2 l`` as fractions of the image side.
        init_side: side of the initial (centred) square, inside ``side_range``.
    """

    def __init__(self, dim: int, grid: int, hidden: int, side_range: tuple[float, float], init_side: float) -> None:
        super().__init__()
        lo, hi = side_range
        if not 0 < lo < hi <= 1 or not lo < init_side < hi:
            raise ModelError(f"phanet side_range {side_range} needs 0 < low < high <= 1 and init_side {init_side} "
                             "strictly inside it (e.g. side_range=(0.333, 1.0), init_side=0.75).")
        self.lo, self.hi = float(lo), float(hi)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc1 = nn.Linear(dim * grid * grid, hidden)
        self.fc2 = nn.Linear(hidden, 3)
        with torch.no_grad():
            self.fc2.weight.mul_(0.01)  # start near the initial square (item 6)
            self.fc2.bias.copy_(torch.tensor([0.0, 0.0, math.log((init_side - lo) / (hi - init_side))]))

    def forward(self, m: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """M_s (B, D, h, w) -> centre (B, 2) and half side (B,) in pixels of an image of ``size`` (H, W)."""
        h, w = size
        t = self.fc2(F.relu(self.fc1(self.pool(m).flatten(1)))).float()  # (B, 3)  Eq. 2: [t_x, t_y, t_l]
        s = torch.sigmoid(t)
        half = 0.5 * min(h, w) * (self.lo + (self.hi - self.lo) * s[:, 2])  # (B,) l
        cx = half + (w - 2 * half) * s[:, 0]  # square inside [0, W]: x in [l, W - l]
        cy = half + (h - 2 * half) * s[:, 1]
        return torch.stack([cx, cy], 1), half


# ---------------------------------------------------------------------- the model
class PhaNet(nn.Module):
    """PhaNet over three DenseNet scales (see the module docstring).

    Args:
        cfg: the configuration (:class:`PhaNetConfig`, which documents every option).
        num_classes: expression classes C.
        in_chans: input channels.
    """

    def __init__(self, cfg: PhaNetConfig, num_classes: int = 8, in_chans: int = 1) -> None:
        super().__init__()
        if cfg.schedule not in SCHEDULES:
            raise ModelError(f"phanet schedule {cfg.schedule!r} is unknown; use one of {SCHEDULES}.")
        steps = cfg.phase_steps
        if len(steps) != 2 or steps[0] < 1 or steps[1] < 1:
            raise ModelError(f"phanet phase_steps {steps!r} must be two positive step counts "
                             "(classify steps, rank steps), e.g. [4, 1].")
        if cfg.num_pose_bins < 0 or cfg.apn_grid < 1 or cfg.apn_hidden < 1 or cfg.boxcar_k <= 0:
            raise ModelError(f"phanet needs num_pose_bins >= 0 (got {cfg.num_pose_bins}), apn_grid >= 1 "
                             f"({cfg.apn_grid}), apn_hidden >= 1 ({cfg.apn_hidden}) and boxcar_k > 0 "
                             f"({cfg.boxcar_k}).")
        if cfg.crop_size is not None and cfg.crop_size < 8:
            raise ModelError(f"phanet crop_size {cfg.crop_size} is too small; use None (the input size) "
                             "or >= 8.")
        self.config = cfg

        def densenet() -> DenseNet:
            return DenseNet(cfg.depth, cfg.growth_rate, in_chans, cfg.bottleneck, cfg.compression,
                            cfg.stem_kernel, cfg.stem_stride, cfg.max_pool)

        n_backbones = 1 if cfg.share_backbone else NUM_SCALES
        self.backbones = nn.ModuleList(densenet() for _ in range(n_backbones))
        d = self.backbones[0].num_features
        self.apns = nn.ModuleList(
            AttentionProposal(d, cfg.apn_grid, cfg.apn_hidden, cfg.side_range, cfg.init_side)
            for _ in range(NUM_SCALES - 1))
        self.drop = nn.Dropout(cfg.drop_rate)
        self.scale_heads = nn.ModuleList(nn.Linear(d, num_classes) for _ in range(NUM_SCALES))  # p(e|s), Eq. 2
        hidden = cfg.sal_hidden or max(8, NUM_SCALES * d // 16)
        self.sal = (nn.Sequential(nn.Linear(NUM_SCALES * d, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, NUM_SCALES)) if cfg.scale_attention else None)
        self.head = nn.Linear(NUM_SCALES * d, num_classes)  # expression softmax head (DCML)
        self.num_pose_bins = cfg.num_pose_bins if cfg.pose else 0
        self.pose_head = nn.Linear(NUM_SCALES * d, self.num_pose_bins) if self.num_pose_bins else None
        self.lambda_layer = nn.Linear(NUM_SCALES * d, 1) if self.num_pose_bins else None  # Eq. 10
        self.schedule, self.phase_steps = cfg.schedule, steps
        self.boxcar_k, self.crop_size = cfg.boxcar_k, cfg.crop_size
        self.num_features = NUM_SCALES * d

    # ------------------------------------------------------------------ schedule
    def training_schedule(self) -> TrainingSchedule:
        """The phases of the training steps (item 11), from the ``schedule`` and ``phase_steps``
        options: the training engine follows it and passes each step's phase to :meth:`forward`."""
        if self.schedule == "joint":
            return TrainingSchedule(((Phase.JOINT, 1),))
        c, r = self.phase_steps
        return TrainingSchedule(((Phase.CLASSIFY, int(c)), (Phase.RANK, int(r))))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,  # type: ignore[no-untyped-def]
                              unexpected_keys, error_msgs) -> None:
        # checkpoints from before the schedule moved to the engine hold its step counter as a
        # buffer; the engine's training state now keeps it, so the weights load without it
        state_dict.pop(prefix + "schedule_step", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @staticmethod
    def _run(module: nn.Module, frozen: bool, *args: torch.Tensor) -> torch.Tensor:
        """``module(*args)``, with detached parameters when ``frozen``: activations keep their
        graph (gradients pass through to the APNs) but the module's parameters get none."""
        if not frozen:
            return module(*args)
        params = {n: p.detach() for n, p in module.named_parameters()}
        return functional_call(module, params, args)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, phase: Phase | None = None) -> ModelOutput:
        """(B, in_chans, H, W) -> :class:`ModelOutput` (see the module docstring).

        ``phase``: what this pass trains (item 11), as the training engine takes it from
        :meth:`training_schedule`; None runs ``Phase.EVAL`` in eval mode, ``Phase.JOINT`` in
        training mode.
        """
        if x.ndim != 4:
            raise ModelError(f"phanet expects images (B, C, H, W), got a tensor of shape {tuple(x.shape)}.")
        if phase is None:
            phase = Phase.JOINT if self.training else Phase.EVAL
        elif not isinstance(phase, Phase):
            raise ModelError(f"phanet phase must be a robustfer.models.schedule.Phase, got {phase!r}.")
        frozen = phase is Phase.RANK  # only the APNs learn (item 11)
        detach_boxes = phase is Phase.CLASSIFY  # the APNs do not learn
        b, _, h, w = x.shape
        out_hw = (self.crop_size, self.crop_size) if self.crop_size else (h, w)
        channels_last = x.is_contiguous(memory_format=torch.channels_last)

        img = x
        # region of the original image the current scale's image shows: x0, y0, x1, y1 (B, 4)
        region = torch.tensor([0.0, 0.0, float(w), float(h)], device=x.device).expand(b, 4)
        pooled, logits, boxes = [], [], [region]
        for s in range(NUM_SCALES):
            backbone = self.backbones[s if len(self.backbones) > 1 else 0]
            m = self._run(backbone, frozen, img)  # (B, D, h', w')  Eq. 1: M_s
            f = m.mean(dim=(2, 3))  # (B, D) global average pooling
            pooled.append(f)
            logits.append(self._run(self.scale_heads[s], frozen, self.drop(f)))  # (B, C)  Eq. 2: p(e|s)
            if s == NUM_SCALES - 1:
                break
            ih, iw = img.shape[-2:]
            centre, half = self.apns[s](m, (ih, iw))  # (B, 2), (B,) pixels of img  Eq. 2: (x, y, l)
            if detach_boxes:
                centre, half = centre.detach(), half.detach()
            img = boxcar_crop(img, centre, half, out_hw, self.boxcar_k)  # (B, C_in, h, w)  Eq. 5 + zoom
            if channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            # the square in pixels of the original image: img spans ``region`` over (ih, iw) pixels
            sx, sy = (region[:, 2] - region[:, 0]) / iw, (region[:, 3] - region[:, 1]) / ih
            region = torch.stack([region[:, 0] + (centre[:, 0] - half) * sx, region[:, 1] + (centre[:, 1] - half) * sy,
                                  region[:, 0] + (centre[:, 0] + half) * sx, region[:, 1] + (centre[:, 1] + half) * sy],
                                 1).detach()
            boxes.append(region)

        cat = torch.cat(pooled, 1)  # (B, 3 D)  Eq. 6: [GAP(M_1), GAP(M_2), GAP(M_3)]
        if self.sal is not None:
            c = torch.sigmoid(self._run(self.sal, frozen, cat))  # (B, 3)  Eq. 7: c = sigmoid(W_2 ReLU(W_1 cat))
        else:
            c = torch.ones(b, NUM_SCALES, dtype=cat.dtype, device=x.device)  # ablation: no scale attention
        joint = torch.cat([c[:, i:i + 1] * pooled[i] for i in range(NUM_SCALES)], 1)  # (B, 3 D)  Eq. 8
        expr = self._run(self.head, frozen, self.drop(joint))  # (B, C)
        pose_logits = None
        if self.pose_head is not None and self.lambda_layer is not None:
            pose_logits = self._run(self.pose_head, frozen, self.drop(joint))  # (B, P)
            # Eq. 10 with the constraints built in: lambda_p in [0, 0.5], lambda_e = 1 - lambda_p
            lam_p = 0.5 * torch.sigmoid(self._run(self.lambda_layer, frozen, joint).float())  # (B, 1)
        else:
            lam_p = torch.zeros(b, 1, device=x.device)
        lam = torch.cat([1 - lam_p, lam_p], 1)  # (B, 2) [lambda_e, lambda_p]
        return ModelOutput(
            logits=expr,
            features=joint,
            region_logits=torch.stack(logits, 1),  # (B, 3, C)
            attention_weights=c,
            pose_logits=pose_logits,
            boxes=torch.stack(boxes, 1),  # (B, 3, 4) input pixels
            extras={"lambda": lam},
            phase=phase,
        )


# ---------------------------------------------------------------------- configuration and variants
@dataclass(frozen=True)
class PhaNetConfig(ModelConfig):
    """Options of PhaNet (:class:`PhaNet`); the defaults are the paper's (``phanet_densenet40``).

    Attributes:
        depth, growth_rate, bottleneck, compression, stem_kernel, stem_stride, max_pool: the
            DenseNet of each scale (paper: 40, 12, basic, 1.0, 7, -, -; docstring item 1).
        share_backbone: one DenseNet for all scales (paper: one per scale; item 2).
        num_pose_bins: P, classes of the pose head (FERPlus pose files: 5 yaw bins).
        pose: the pose branch (DCML); False or ``num_pose_bins=0`` removes it.
        scale_attention: SAL's c_i (Eq. 7); False sets them to 1.
        schedule: ``"alternate"`` or ``"joint"`` (docstring item 11).
        phase_steps: (classify steps, rank steps) of one alternation period.
        side_range, init_side: APN square bounds and start (items 5, 6).
        boxcar_k: sharpness of the boxcar mask per pixel (item 7).
        apn_grid, apn_hidden: APN input grid and hidden units (items 3, 4).
        sal_hidden: SAL hidden units; None = ``max(8, 3 D // 16)``.
        crop_size: side of the zoomed scale-2 and -3 images; None = the input's size.
        drop_rate: dropout before every classifier (0 = paper).
    """

    depth: int = 40
    growth_rate: int = 12
    bottleneck: bool = False
    compression: float = 1.0
    stem_kernel: int = 7
    stem_stride: int = 2
    max_pool: bool = True
    share_backbone: bool = False
    num_pose_bins: int = 5
    pose: bool = True
    scale_attention: bool = True
    schedule: str = "alternate"
    phase_steps: tuple[int, int] = (4, 1)
    side_range: tuple[float, float] = (1 / 3, 1.0)
    init_side: float = 0.75
    boxcar_k: float = 10.0
    apn_grid: int = 4
    apn_hidden: int = 128
    sal_hidden: int | None = None
    crop_size: int | None = None
    drop_rate: float = 0.0


register_model(
    "phanet_densenet40",
    "PhaNet (Liu et al., arXiv 1905.10059) on three DenseNet-40 (k = 12) scales, as in the paper.",
    config=PhaNetConfig())(PhaNet)
register_model(
    "phanet_compact",
    "PhaNet on three small DenseNets (depth 13, k = 12) with 32 px zooms, for CPU runs on 48 px faces.",
    config=PhaNetConfig(depth=13, max_pool=False, side_range=(0.5, 1.0), apn_grid=3, apn_hidden=64,
                        crop_size=32))(PhaNet)
