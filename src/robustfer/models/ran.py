"""Region Attention Networks (RAN).

Wang, Peng, Yang, Meng, Qiao, "Region Attention Networks for Pose and Occlusion Robust Facial
Expression Recognition", IEEE Transactions on Image Processing 29, 2020 (arXiv 1905.04075).
Official code: github.com/kaiwang960112/Challenge-condition-FER-dataset (``FERplus_dir``,
``AffectNet_dir``).

The face and K region crops of it go through one shared backbone; a self-attention module
weights the region features, a relation-attention module re-weights them against their
weighted mean, and the classifier reads the result (paper Sec. III-B; equation numbers below
are the paper's). The region-biased loss (Eq. 5) is :class:`robustfer.losses.RANLoss`
(``loss.name: ran``); the model returns everything it needs.

Regions (``regions=``), computed on the fly from the one input image, inside the model:

* ``"fixed"``: fractions of the face, by default the seven boxes of the official AffectNet
  code (:data:`~robustfer.layers.regions.RAN_FIXED_BOXES`), or any ``boxes=`` given.
* ``"random"``: ``num_regions`` random square crops per image (side ``random_scale`` of the
  face), fresh every training step; in evaluation a fixed set drawn once from
  ``random_seed`` at construction (stored in the checkpoint), so predictions are
  deterministic.
* ``"landmarks"``: squares of ``landmark_side`` centred on the landmarks passed as
  ``forward(x, landmarks=...)`` (B, L, 2 pixels); the engine passes a batch's ``landmarks``.

Outputs: ``logits``; ``features`` = the classifier's input P (or F_m without relation
attention); ``attention_weights`` = the self-attention weights mu (B, 1 + K), **whole face
first**; ``extras["relation_weights"]`` = nu (B, 1 + K); ``boxes`` (B, 1 + K, 4) in input
pixels, the whole face first.

Deviations from the official code, on purpose:

* The official crop augmentation (``CaffeCrop``) computes a jittered crop and then returns the
  uncropped, resized image; here crops are real (and ``random`` regions really are random).
* The official FERPlus/AffectNet code applies a softmax across regions to the sigmoid
  weights mu and nu, which the paper does not have. ``softmax_weights=True`` reproduces it;
  the default (False) follows the paper.
* The official code runs the backbone once per region, so in training each region is
  batch-normalised with its own statistics. Here the face and the crops go through the
  backbone as one batch when they have the same size (one call instead of K + 1); evaluation
  (running statistics) is unaffected.
* The official region-biased loss loops over the batch in Python; ours is vectorised.
* Backbones: ResNet-18 as in the paper's main results, ResNet-50, and the compact CNN for
  CPU-scale runs. The paper initialises from a face-recognition model (MS-Celeb-1M); robustfer
  ships no such weights, so training starts from scratch unless ``robustfer train`` is given
  weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustfer.errors import ModelError
from robustfer.layers.regions import RAN_FIXED_BOXES, check_boxes, crop_regions, landmark_boxes, random_boxes
from robustfer.models._registry import register_model
from robustfer.models.backbones import TrunkConfig, create_trunk
from robustfer.models.output import ModelOutput

REGION_MODES = ("fixed", "random", "landmarks")


@dataclass(frozen=True)
class RanConfig(TrunkConfig):
    """Options of RAN: the shared trunk's (:class:`~robustfer.models.backbones.TrunkConfig`) and
    the region attention's.

    Attributes:
        backbone: the shared trunk, ``resnet18`` (the paper), ``resnet34``, ``resnet50`` or
            ``compact_cnn`` (its stages with the last max-pool); fixed by the registered name.
        width, stem_stride, stem_kernel, max_pool: the trunk (the stem knobs: ResNet only).
        regions: ``"fixed"``, ``"random"`` or ``"landmarks"`` (module docstring).
        boxes: fixed boxes as fractions ``(x0, y0, x1, y1)``; default the official seven.
        num_regions: number of random crops (``regions="random"``).
        random_scale: side range of random crops, as a fraction of the face.
        random_seed: seed of the evaluation-time random boxes.
        landmark_side: side of landmark-centred crops, as a fraction of the face.
        crop_size: side the crops are resized to; ``None`` = the input's side (the official
            code resizes every crop to the face's 224 px).
        relation: use relation attention (Eq. 3-4); ``False`` classifies F_m (Eq. 2), the
            paper's self-attention-only ablation.
        softmax_weights: the official code's softmax over mu and nu (not in the paper).
        drop_rate: dropout before the classifier (not in the paper; 0 by default).
    """

    regions: str = "fixed"
    boxes: tuple[tuple[float, ...], ...] | None = None
    num_regions: int = 5
    random_scale: tuple[float, float] = (0.7, 0.95)
    random_seed: int = 0
    landmark_side: float = 0.4
    crop_size: int | None = None
    relation: bool = True
    softmax_weights: bool = False
    drop_rate: float = 0.0


class RAN(nn.Module):
    """Region Attention Network over a shared feature extractor.

    Args:
        cfg: the configuration (:class:`RanConfig`).
        num_classes: expression classes.
        in_chans: input channels.
    """

    def __init__(self, cfg: RanConfig, num_classes: int = 8, in_chans: int = 1) -> None:
        super().__init__()
        self.config = cfg
        self.trunk, feat_dim = create_trunk(cfg.backbone, in_chans, **cfg.trunk_kwargs())
        if cfg.regions not in REGION_MODES:
            raise ModelError(f"RAN regions={cfg.regions!r} is unknown; use one of {REGION_MODES}.")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.regions = cfg.regions
        #: whether forward() reads the ``landmarks`` it accepts (fixed and random regions do not)
        self.reads_landmarks = cfg.regions == "landmarks"
        self.random_scale = cfg.random_scale
        self.landmark_side = cfg.landmark_side
        self.crop_size = cfg.crop_size
        self.relation = cfg.relation
        self.softmax_weights = cfg.softmax_weights
        boxes = cfg.boxes
        fixed = torch.tensor(RAN_FIXED_BOXES if boxes is None else [list(b) for b in boxes], dtype=torch.float32)
        if cfg.regions == "random":
            if cfg.num_regions < 1:
                raise ModelError(f"RAN num_regions={cfg.num_regions}: need at least one random crop.")
            g = torch.Generator().manual_seed(cfg.random_seed)
            fixed = random_boxes(1, cfg.num_regions, self.random_scale, generator=g)[0]
        if fixed.ndim != 2 or fixed.shape[1] != 4 or len(fixed) < 1:
            raise ModelError(f"RAN boxes must be a non-empty list of (x0, y0, x1, y1) fractions, got {boxes!r}.")
        check_boxes(fixed)
        # evaluation boxes for "fixed" and "random"; saved with the weights
        self.register_buffer("fixed_boxes", fixed)
        self.num_regions = len(fixed)
        self.alpha = nn.Linear(feat_dim, 1)  # q^0 of Eq. 1
        self.beta = nn.Linear(2 * feat_dim, 1) if cfg.relation else None  # q^1 of Eq. 3
        self.drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(2 * feat_dim if cfg.relation else feat_dim, num_classes)
        self.num_features = 2 * feat_dim if cfg.relation else feat_dim

    def region_boxes(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """The crops' boxes for this batch, (B, K, 4) fractions."""
        b = x.shape[0]
        if self.regions == "landmarks":
            if landmarks is None:
                raise ModelError("this RAN model crops around landmarks (regions='landmarks') but got none; "
                                 "pass forward(x, landmarks=...) or use a dataset with landmarks, or build "
                                 "it with regions='fixed'.")
            return landmark_boxes(landmarks.to(x.device), (x.shape[2], x.shape[3]), self.landmark_side)
        if self.regions == "random" and self.training:
            return random_boxes(b, self.num_regions, self.random_scale, device=x.device)
        return self.fixed_boxes.unsqueeze(0).expand(b, -1, -1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features, (N, C, H, W) -> (N, D)."""
        return self.pool(self.trunk(x)).flatten(1)

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> ModelOutput:
        b, _, h, w = x.shape
        boxes = self.region_boxes(x, landmarks)  # (B, K, 4) fractions
        k = boxes.shape[1]
        side = self.crop_size or h
        # boxes were checked when the model was built or come valid from the generators
        crops = crop_regions(x, boxes, (side, side * w // h), check=False)  # (B, K, C, s, s')
        crops = crops.flatten(0, 1)  # (B K, C, s, s')
        if x.is_contiguous(memory_format=torch.channels_last):
            crops = crops.contiguous(memory_format=torch.channels_last)
        if crops.shape[-2:] == x.shape[-2:]:
            feats = self.embed(torch.cat([x, crops]))  # ((1 + K) B, D): one trunk call
            face, parts = feats[:b], feats[b:]
        else:
            face, parts = self.embed(x), self.embed(crops)
        feats = torch.cat([face.unsqueeze(1), parts.view(b, k, -1)], 1)  # (B, R = 1 + K, D)

        mu = torch.sigmoid(self.alpha(feats)).squeeze(-1)  # (B, R)  Eq. 1: mu_i = f(F_i^T q^0)
        if self.softmax_weights:
            mu = mu.softmax(-1)  # official code only
        # Eq. 2: F_m = sum_i mu_i F_i / sum_i mu_i                         (B, D)
        f_m = (mu.unsqueeze(-1) * feats).sum(1) / mu.sum(1, keepdim=True)
        nu = None
        if self.beta is not None:
            pair = torch.cat([feats, f_m.unsqueeze(1).expand_as(feats)], -1)  # (B, R, 2D): [F_i : F_m]
            nu = torch.sigmoid(self.beta(pair)).squeeze(-1)  # (B, R)  Eq. 3: nu_i = f([F_i:F_m]^T q^1)
            if self.softmax_weights:
                nu = nu.softmax(-1)
            wgt = mu * nu
            # Eq. 4: P = sum_i mu_i nu_i [F_i : F_m] / sum_i mu_i nu_i       (B, 2D)
            rep = (wgt.unsqueeze(-1) * pair).sum(1) / wgt.sum(1, keepdim=True)
        else:
            rep = f_m
        logits = self.head(self.drop(rep))

        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        whole = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device).expand(b, 1, 4)
        extras = {} if nu is None else {"relation_weights": nu}
        return ModelOutput(logits=logits, features=rep, attention_weights=mu,
                           boxes=torch.cat([whole, boxes], 1) * scale, extras=extras)


# ------------------------------------------------------------------------------ registered variants
register_model(
    "ran_resnet18",
    "RAN on ResNet-18 (Wang et al., TIP 2020), the paper's main configuration.",
    config=RanConfig(backbone="resnet18"))(RAN)
register_model(
    "ran_resnet50",
    "RAN on ResNet-50 (Wang et al., TIP 2020).",
    config=RanConfig(backbone="resnet50"))(RAN)
register_model(
    "ran_compact_cnn",
    "RAN on the compact CNN trunk, for CPU-scale training on 48 px faces.",
    config=RanConfig(backbone="compact_cnn"))(RAN)
