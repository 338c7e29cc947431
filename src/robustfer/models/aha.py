"""AHA: attentive hybrid features with a two-step fusion.

Weng, Yang, Tan, Lei, "Attentive Hybrid Feature Based a Two-Step Fusion for Facial Expression
Recognition", ICPR 2020. No official code. The paper's text names its parts; it gives no
equation numbers we could check, so the lines below cite the parts by name ``[paper: ...]``
and the equations in the form the paper writes them.

Architecture ``[paper: attentive hybrid architecture]``:

* **Region align** ``[paper: region-align step]``: four face regions -- image-left eye,
  image-right eye, nose, mouth (:data:`REGION_NAMES`, this order everywhere) -- cut out of the
  one input image inside the model (:func:`~robustfer.layers.regions.crop_regions`, as RAN
  does), squares of ``region_side`` of the face centred on landmarks when they are passed as
  ``forward(x, landmarks=...)``, else on a fixed template for aligned, FER-style face crops
  (:data:`TEMPLATE_CENTRES`).
* **Attentive region module** ``[paper: three branches of parallel sub-networks, each with
  spatial attention]``: a *global* sub-network reads the whole face -> ``h^g``; a *local*
  sub-network reads every region -> ``z^l_k``; a *mixture* sub-network reads the regions
  together as one image (a 2 x 2 mosaic: eyes on top, nose and mouth below) -> ``x^m``. Each
  sub-network is a CNN trunk whose last feature map F (D, h, w) is pooled by spatial
  attention, ``a = sigmoid(conv1x1(ReLU(conv1x1(F))))`` (1, h, w),
  ``z = sum_ij a_ij F_ij / sum_ij a_ij`` (:class:`SpatialAttentionPool`).
* **Two-step fusion** ``[paper: two-step fusion strategy based on LSTM]``:
  step one, recurrent fusion of the local features in region order,
  ``h^l_k = LSTM(z^l_k, h^l_{k-1})``, summed with attention weights,
  ``h^l = sum_k alpha_k h^l_k``, ``alpha_k = sigmoid(q^T h^l_k + b)``; step two,
  ``x = concat(h^g, h^l, x^m)`` -> classifier.
* **Losses** ``[paper: loss function]`` (in :class:`robustfer.losses.AHALoss`,
  ``loss.name: aha``, not here): cross-entropy on the fused output (or the large-margin cosine
  loss, CosFace, with ``head="cosface"``) plus a cross-entropy per branch feature: the global
  feature, every region and the mixture each have their own classifier, which pushes every
  sub-network's attention onto what is discriminative in its own view.

Ablations of the paper, by configuration: ``branches`` any of ``"g"``, ``"gl"``, ``"glm"``
(G, G+L, G+L+M; ``"gm"``, ``"l"``, ... also work), ``attention=False`` removes every spatial
attention (plain global average pooling) and the LSTM's attention (plain sum), so G vs G+A,
G+L vs G+L+A, G+L+M vs G+L+M+A; ``fusion="concat"`` concatenates the branch features
directly, ``concat(h^g, z^l_1, ..., z^l_K, x^m)``, against ``"two_step"``; ``head="softmax"``
or ``"cosface"``.

Outputs (:class:`ModelOutput`):

* ``logits`` (B, C): the fused classifier. With ``head="cosface"``, ``s * cos(theta_j)``
  WITHOUT the margin (the margin belongs to training, where :class:`~robustfer.losses.AHALoss`
  subtracts ``s * m`` at the target class).
* ``region_logits`` (B, N, C): one row per branch classifier, in the order of
  ``model.branch_names``: ``"global"``, then the regions (``"eye_left"``, ``"eye_right"``,
  ``"nose"``, ``"mouth"``), then ``"mixture"``; absent branches are left out.
* ``features`` (B, F): the fused representation ``x`` the classifier reads (before dropout).
* ``attention_maps`` (B, 1, h, w): the global sub-network's spatial attention on the face grid
  (what the recogniser and ONNX export overlay); None without the global branch or attention.
* ``boxes`` (B, K, 4): the regions in input pixels ``(x0, y0, x1, y1)``, K = 4, in
  :data:`REGION_NAMES` order; None for the global-only model.
* ``extras``: ``"local_attention_maps"`` (B, K, h', w') on each region crop's grid;
  ``"mixture_attention_map"`` (B, 1, h'', w'') on the mosaic's grid; ``"region_weights"``
  (B, K) the LSTM attention ``alpha_k``; with ``head="cosface"``, ``"cos_logits"`` (B, C) the
  cosines ``cos(theta_j)`` and ``"cos_scale"`` (0-dim) the scale ``s``.

Choices where the paper is silent (each one a documented default or option):

1. **Template regions** on FER-style 48 px crops: eye centres (0.316, 0.397) and (0.684, 0.397)
   of the face, the medians of dlib landmarks on FER2013Train that
   ``robustfer.inference.align.FER_EYES`` records; nose (0.5, 0.60) and mouth (0.5, 0.80)
   read off the mean of 3,000 FERPlus training faces. Squares of side ``region_side = 0.45``
   of the face, shifted inside the image where they would leave it.
2. **Landmark formats** (``forward(x, landmarks=(B, L, 2) pixels)``): L = 4 region centres in
   :data:`REGION_NAMES` order; L = 5 in robustfer's detector order (subject's right eye =
   image-left first, then left eye, nose, mouth corners; mouth = mean of the corners); L = 68
   (iBUG 300-W: eyes = means of points 36-41 and 42-47, nose = point 30, mouth = mean of
   48-59). A region whose points are missing (NaN, e.g. dlib gives no mouth) falls back to the
   template.
3. **Crop size**: ``crop_size=None`` resizes every region to half the input side (24 px at 48,
   112 at 224), so the mosaic has the input's size and the three branches cost about the same.
4. **Mixture input**: the regions tiled as a mosaic (for K regions a ceil(sqrt K)-column grid,
   zeros where it is not full; K = 4 gives eyes on top, nose and mouth below).
5. **Weight sharing**: the three branches are separate sub-networks (the paper's "parallel
   sub-networks"); within the local branch the K regions share one sub-network by default
   (batched in one call, like RAN's shared trunk; the LSTM's position in the sequence tells
   the regions apart; in training the regions share batch-norm statistics).
   ``share_local=False`` gives every region its own sub-network.
6. **Trunks**: ResNet-18 (paper-like; ``aha_resnet18``) or the compact CNN
   (``aha_compact_cnn``) without its last max-pool, so its map has stride 8 (6 x 6 on a 48 px
   face, 3 x 3 on a 24 px region) and spatial attention has something to choose from.
7. **Spatial attention**: a two-layer 1x1-convolution MLP (D -> max(8, D / 8) -> 1, ReLU)
   and a sigmoid, then the attention-weighted mean of the map (uniform attention = global
   average pooling, the ``attention=False`` ablation).
8. **LSTM**: one layer, unidirectional, hidden size ``lstm_hidden`` (default D), zero initial
   state, regions in :data:`REGION_NAMES` order (top to bottom, left to right). Its attention
   is a sigmoid gate per step (so ``attention=False`` -- all gates 1 -- is the plain sum the
   paper writes); it runs in float32 even under autocast.
9. **Branch classifiers**: one linear layer per branch feature (global, each region, mixture),
   softmax heads even when the fused head is CosFace. The loss weights them with one
   ``branch_weight`` (:class:`~robustfer.losses.AHALoss`, default 0.25 on their sum).
10. **CosFace** (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
    CVPR 2018): on the fused feature only, no bias, scale ``cos_scale = 30`` (8 classes; the
    CosFace paper's 64 is for thousands of identities), margin 0.35 (CosFace's) in the loss.
11. **Dropout** ``drop_rate`` before every classifier (0 by default; the CPU recipe uses the
    baseline's 0.3). No face-recognition pretraining: robustfer downloads no weights.

Sizes at 8 classes, full model: ``aha_compact_cnn`` width 0.5 -- D = 128, fused x 384-d,
1.02 M parameters (48 px: 6 x 6 face and mosaic maps, 3 x 3 region maps; about three compact
CNN passes per image); ``aha_resnet18`` -- D = 512, x 1536-d, 35.7 M parameters (224 px: 7 x 7
and 4 x 4 maps). ``fusion="concat"`` replaces the LSTM (D -> D) by the 4D-wide region concat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustfer.errors import ModelError
from robustfer.layers.regions import check_boxes, crop_regions, landmark_boxes
from robustfer.models._registry import register_model
from robustfer.models.backbones import TrunkConfig, create_trunk
from robustfer.models.output import ModelOutput

#: The regions, in the order of the crops, the LSTM sequence, ``boxes`` and ``region_logits``.
#: Left and right are the image's (the subject's right eye is the image-left eye).
REGION_NAMES: tuple[str, ...] = ("eye_left", "eye_right", "nose", "mouth")
#: Region centres on an aligned FER-style face crop, fractions ``(x, y)`` (choice 1).
TEMPLATE_CENTRES: tuple[tuple[float, float], ...] = ((0.316, 0.397), (0.684, 0.397), (0.5, 0.60), (0.5, 0.80))
BRANCHES = "glm"
FUSIONS = ("two_step", "concat")
HEADS = ("softmax", "cosface")

TrunkFactory = Callable[[], tuple[nn.Module, int]]


# ------------------------------------------------------------------------------ building blocks
class SpatialAttentionPool(nn.Module):
    """Spatial attention pooling (choice 7): ``z = sum a F / sum a``, ``a = sigmoid(MLP(F))``.

    Args:
        channels: D, channels of the feature map.
        enabled: False pools with a plain mean (the paper's "without attention" ablation) and
            holds no parameters.
    """

    def __init__(self, channels: int, enabled: bool = True) -> None:
        super().__init__()
        hidden = max(8, channels // 8)
        self.att = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 1, 1)) if enabled else None

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, D, h, w) -> pooled (N, D) and the attention map (N, 1, h, w) or None."""
        if self.att is None:
            return fmap.mean(dim=(2, 3)), None
        a = torch.sigmoid(self.att(fmap))  # (N, 1, h, w) [paper: spatial attention]
        z = (fmap * a).sum(dim=(2, 3)) / a.sum(dim=(2, 3))  # (N, D) attention-weighted mean
        return z, a


class SubNetwork(nn.Module):
    """One of the parallel sub-networks: a trunk and its spatial attention pooling."""

    def __init__(self, factory: TrunkFactory, attention: bool) -> None:
        super().__init__()
        self.trunk, self.num_features = factory()
        self.pool = SpatialAttentionPool(self.num_features, attention)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C, H, W) -> feature (N, D), attention (N, 1, h, w) or None."""
        return self.pool(self.trunk(x))


class CosineHead(nn.Module):
    """CosFace classifier (choice 10): ``cos(theta_j) = <x / |x|, W_j / |W_j|>``, no bias."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) -> cosines (B, C) in [-1, 1], in float32 (bf16 cosines would be too coarse)."""
        with torch.autocast(x.device.type, enabled=False):
            return F.normalize(x.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).T


def region_centres(landmarks: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The four region centres from landmarks (choice 2), (B, L, 2) pixels -> (B, 4, 2) pixels.

    Missing points (NaN or inf) fall back to the template centre of their region.
    """
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ModelError(f"AHA landmarks must be (B, L, 2) pixel points, got shape {tuple(landmarks.shape)}.")
    pts = landmarks.float()
    n = pts.shape[1]
    if n == 4:
        c = pts
    elif n == 5:  # robustfer detectors: right eye (image-left), left eye, nose, mouth corners
        c = torch.stack([pts[:, 0], pts[:, 1], pts[:, 2], pts[:, 3:5].mean(1)], 1)
    elif n == 68:  # iBUG 300-W
        c = torch.stack([pts[:, 36:42].mean(1), pts[:, 42:48].mean(1), pts[:, 30], pts[:, 48:60].mean(1)], 1)
    else:
        raise ModelError(f"AHA takes 4 (eyes, nose, mouth), 5 (robustfer detector order) or 68 (iBUG) "
                         f"landmarks per face, got {n}; pass one of those, or no landmarks for the "
                         "template regions.")
    h, w = image_size
    template = torch.tensor(TEMPLATE_CENTRES, dtype=c.dtype, device=c.device) * torch.tensor(
        [w, h], dtype=c.dtype, device=c.device)
    known = torch.isfinite(c).all(-1, keepdim=True)  # (B, 4, 1)
    return torch.where(known, c, template.expand_as(c))


def mosaic(crops: torch.Tensor) -> torch.Tensor:
    """Tile K crops into one image (choice 4), (B, K, C, s, s') -> (B, C, rows s, cols s')."""
    b, k, c, sh, sw = crops.shape
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    if rows * cols > k:
        crops = torch.cat([crops, crops.new_zeros(b, rows * cols - k, c, sh, sw)], 1)
    grid = crops.view(b, rows, cols, c, sh, sw).permute(0, 3, 1, 4, 2, 5)  # (B, C, rows, s, cols, s')
    return grid.reshape(b, c, rows * sh, cols * sw)


# ------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class AhaConfig(TrunkConfig):
    """Options of AHA: the sub-networks' trunk (:class:`~robustfer.models.backbones.TrunkConfig`)
    and the branches and fusion.

    Attributes:
        backbone: the trunk of every sub-network, ``resnet18`` (paper-like) or ``compact_cnn``
            (its stages without the last max-pool, choice 6); fixed by the registered name.
        width, stem_stride, stem_kernel, max_pool: the trunk (the stem knobs: ResNet only).
        convs_per_stage: 3x3 convolutions per stage of the compact CNN trunk (compact only).
        branches: which branches, any combination of ``g`` (global), ``l`` (local) and ``m``
            (mixture); ``"glm"`` is the paper's full model.
        attention: spatial attention in every sub-network and attention over the LSTM steps.
        fusion: ``"two_step"`` (LSTM over the regions, then concatenation) or ``"concat"``.
        head: ``"softmax"`` (linear) or ``"cosface"`` (cosine classifier, margin in the loss).
        crop_size: side the regions are resized to; None = half the input side.
        region_side: side of a region square, as a fraction of the face.
        boxes: fixed regions as ``(x0, y0, x1, y1)`` fractions instead of the template (any
            number K >= 1; landmarks then need K = 4).
        share_local: one sub-network for all regions (True) or one per region.
        lstm_hidden: LSTM hidden size; None = the trunk's D.
        cos_scale: CosFace scale ``s``.
        drop_rate: dropout before every classifier.
    """

    convs_per_stage: int | tuple[int, ...] = (1, 2, 2, 2)
    branches: str = "glm"
    attention: bool = True
    fusion: str = "two_step"
    head: str = "softmax"
    crop_size: int | None = None
    region_side: float = 0.45
    boxes: tuple[tuple[float, ...], ...] | None = None
    share_local: bool = True
    lstm_hidden: int | None = None
    cos_scale: float = 30.0
    drop_rate: float = 0.0


class AHA(nn.Module):
    """Attentive hybrid architecture with the two-step fusion (see the module docstring).

    Args:
        cfg: the configuration (:class:`AhaConfig`).
        num_classes: C expression classes.
        in_chans: input channels.
    """

    def __init__(self, cfg: AhaConfig, num_classes: int = 8, in_chans: int = 1) -> None:
        super().__init__()
        branches, boxes = cfg.branches, cfg.boxes
        if (not isinstance(branches, str) or not branches or any(ch not in BRANCHES for ch in branches)
                or len(set(branches)) != len(branches)):
            raise ModelError(f"AHA branches={branches!r} is not valid; use one or more of 'g' (global), "
                             "'l' (local regions), 'm' (mixture), e.g. 'glm' (the paper's model), 'gl' "
                             "or 'g'.")
        if cfg.fusion not in FUSIONS:
            raise ModelError(f"AHA fusion={cfg.fusion!r} is unknown; use 'two_step' (LSTM, the paper) or "
                             "'concat'.")
        if cfg.head not in HEADS:
            raise ModelError(f"AHA head={cfg.head!r} is unknown; use 'softmax' or 'cosface'.")
        if not 0 < cfg.region_side <= 1:
            raise ModelError(f"AHA region_side={cfg.region_side} must be in (0, 1] (a fraction of the face; "
                             "default 0.45).")
        if cfg.crop_size is not None and cfg.crop_size < 8:
            raise ModelError(f"AHA crop_size={cfg.crop_size} is too small; use at least 8 px, or None for "
                             "half the input side.")
        if cfg.cos_scale <= 0:
            raise ModelError(f"AHA cos_scale={cfg.cos_scale} must be > 0 (30 is the default).")
        if cfg.lstm_hidden is not None and cfg.lstm_hidden < 1:
            raise ModelError(f"AHA lstm_hidden={cfg.lstm_hidden} must be a positive integer, or None for the "
                             "trunk's feature size.")
        self.branches = "".join(ch for ch in BRANCHES if ch in branches)  # canonical order g, l, m
        self.attention, self.fusion, self.head_kind = cfg.attention, cfg.fusion, cfg.head
        self.crop_size, self.region_side, self.cos_scale = cfg.crop_size, cfg.region_side, cfg.cos_scale
        self.share_local = cfg.share_local
        self.config = cfg

        def make_trunk() -> tuple[nn.Module, int]:
            trunk, dim = create_trunk(cfg.backbone, in_chans, **cfg.trunk_kwargs())
            if cfg.backbone == "compact_cnn":
                trunk = nn.Sequential(*list(trunk)[:-1])  # no last max-pool: stride 8 (choice 6)
            return trunk, dim

        if boxes is None:
            centres = torch.tensor(TEMPLATE_CENTRES)[None]  # (1, 4, 2) fractions = pixels of a 1x1 image
            fixed = landmark_boxes(centres, (1, 1), self.region_side)[0]
            self.region_names: list[str] = list(REGION_NAMES)
        else:
            fixed = torch.tensor([list(bx) for bx in boxes], dtype=torch.float32)
            if fixed.ndim != 2 or fixed.shape[1] != 4 or len(fixed) < 1:
                raise ModelError(f"AHA boxes must be a non-empty list of (x0, y0, x1, y1) fractions, got "
                                 f"{boxes!r}.")
            self.region_names = [f"region{i}" for i in range(len(fixed))]
        check_boxes(fixed)
        self.register_buffer("template_boxes", fixed)  # (K, 4) fractions
        k = len(fixed)
        self.num_regions = k

        use = {ch: ch in self.branches for ch in BRANCHES}
        self.global_net = SubNetwork(make_trunk, cfg.attention) if use["g"] else None
        n_local = (1 if cfg.share_local else k) if use["l"] else 0
        self.local_nets = nn.ModuleList(SubNetwork(make_trunk, cfg.attention) for _ in range(n_local))
        self.mixture_net = SubNetwork(make_trunk, cfg.attention) if use["m"] else None
        nets = (self.global_net, self.mixture_net, *self.local_nets)
        d = next(net.num_features for net in nets if net is not None)  # D, the same for every trunk
        self.drop = nn.Dropout(cfg.drop_rate)

        # branch classifiers (choice 9), in the order of branch_names
        self.global_head = nn.Linear(d, num_classes) if use["g"] else None
        self.local_heads = nn.ModuleList(nn.Linear(d, num_classes) for _ in range(k if use["l"] else 0))
        self.mixture_head = nn.Linear(d, num_classes) if use["m"] else None
        self.branch_names = (["global"] if use["g"] else []) + (self.region_names if use["l"] else []) + (
            ["mixture"] if use["m"] else [])

        # step one of the fusion: LSTM over the regions (choice 8)
        self.two_step = use["l"] and cfg.fusion == "two_step"
        hidden = cfg.lstm_hidden or d
        self.lstm = nn.LSTM(d, hidden, num_layers=1, batch_first=True) if self.two_step else None
        self.step_attention = nn.Linear(hidden, 1) if self.two_step and cfg.attention else None
        local_dim = (hidden if self.two_step else k * d) if use["l"] else 0
        self.num_features = (d if use["g"] else 0) + local_dim + (d if use["m"] else 0)
        # step two: the classifier on x = concat(h^g, h^l, x^m)
        self.head = CosineHead(self.num_features, num_classes) if cfg.head == "cosface" else nn.Linear(
            self.num_features, num_classes)

    # ------------------------------------------------------------------ regions
    def region_boxes(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """This batch's regions, (B, K, 4) fractions: around landmarks if given, else the template."""
        b, _, h, w = x.shape
        if landmarks is None:
            return self.template_boxes.unsqueeze(0).expand(b, -1, -1)
        if self.num_regions != len(REGION_NAMES):
            raise ModelError(f"this AHA model was built with {self.num_regions} custom boxes; landmarks give "
                             f"the {len(REGION_NAMES)} regions {REGION_NAMES}: build it without boxes= to "
                             "use landmarks.")
        if landmarks.shape[0] != b:
            raise ModelError(f"landmarks for {landmarks.shape[0]} faces but a batch of {b} images.")
        centres = region_centres(landmarks.to(x.device), (h, w))  # (B, 4, 2) pixels
        return landmark_boxes(centres, (h, w), self.region_side)  # (B, 4, 4) fractions

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> ModelOutput:
        """(B, C, H, W) images [and (B, L, 2) landmarks in their pixels] -> :class:`ModelOutput`."""
        if x.ndim != 4:
            raise ModelError(f"AHA expects images (B, C, H, W), got a tensor of shape {tuple(x.shape)}.")
        b, _, h, w = x.shape
        k = self.num_regions
        feats: list[torch.Tensor] = []  # the parts of x = concat(h^g, h^l, x^m)
        logits_parts: list[torch.Tensor] = []  # branch logits, (B, n, C) each
        extras: dict[str, torch.Tensor] = {}
        att_map: torch.Tensor | None = None
        boxes: torch.Tensor | None = None

        crops = None
        if self.local_nets or self.mixture_net is not None:
            boxes = self.region_boxes(x, landmarks)  # (B, K, 4) fractions [paper: region align]
            side = self.crop_size or max(1, h // 2)
            # the template is checked at construction, landmark boxes come valid from landmark_boxes
            crops = crop_regions(x, boxes, (side, max(1, side * w // h)), check=False)  # (B, K, C, s, s')
        # crops and mosaic keep the input's memory format (channels-last: the engine's default)
        cl = x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if cl else torch.contiguous_format

        if self.global_net is not None and self.global_head is not None:
            h_g, att_map = self.global_net(x)  # (B, D), (B, 1, h, w) [paper: global branch]
            feats.append(h_g)
            logits_parts.append(self.global_head(self.drop(h_g)).unsqueeze(1))

        if self.local_nets:
            assert crops is not None
            if self.share_local:
                flat = crops.flatten(0, 1).contiguous(memory_format=fmt)  # (B K, C, s, s')
                z, a = self.local_nets[0](flat)  # (B K, D), (B K, 1, h', w'): one call
                z_l = z.view(b, k, -1)  # (B, K, D) [paper: local branch, z^l_k]
                a_l = None if a is None else a.view(b, k, *a.shape[-2:])
            else:
                outs = [net(crops[:, i].contiguous(memory_format=fmt))
                        for i, net in enumerate(self.local_nets)]
                z_l = torch.stack([o[0] for o in outs], 1)  # (B, K, D)
                maps = [o[1] for o in outs]
                a_l = None if maps[0] is None else torch.cat(maps, 1)  # type: ignore[arg-type]
            if a_l is not None:
                extras["local_attention_maps"] = a_l  # (B, K, h', w')
            logits_parts.append(torch.stack([hd(self.drop(z_l[:, i]))
                                             for i, hd in enumerate(self.local_heads)], 1))  # (B, K, C)
            if self.lstm is not None:
                # [paper: two-step fusion, step one] h^l_k = LSTM(z^l_k, h^l_{k-1}), regions in order
                with torch.autocast(x.device.type, enabled=False):
                    h_seq, _ = self.lstm(z_l.float())  # (B, K, H)
                    if self.step_attention is not None:
                        alpha = torch.sigmoid(self.step_attention(h_seq)).squeeze(-1)  # (B, K) attention
                        extras["region_weights"] = alpha
                        h_l = (alpha.unsqueeze(-1) * h_seq).sum(1)  # (B, H)  h^l = sum_k alpha_k h^l_k
                    else:
                        h_l = h_seq.sum(1)  # (B, H)  h^l = sum_k h^l_k
                feats.append(h_l.to(z_l.dtype))
            else:
                feats.append(z_l.flatten(1))  # (B, K D) concat ablation: the region features as they are

        if self.mixture_net is not None and self.mixture_head is not None:
            assert crops is not None
            tiles = mosaic(crops).contiguous(memory_format=fmt)  # (B, C, 2s, 2s')
            x_m, a_m = self.mixture_net(tiles)  # (B, D) [paper: mixture branch, x^m]
            if a_m is not None:
                extras["mixture_attention_map"] = a_m
            feats.append(x_m)
            logits_parts.append(self.mixture_head(self.drop(x_m)).unsqueeze(1))

        # [paper: two-step fusion, step two] x = concat(h^g, h^l, x^m)
        fused = torch.cat([f.to(feats[0].dtype) for f in feats], 1)  # (B, F)
        if isinstance(self.head, CosineHead):
            cos = self.head(self.drop(fused))  # (B, C) cos(theta_j)
            extras["cos_logits"] = cos
            extras["cos_scale"] = torch.tensor(self.cos_scale, device=x.device)
            logits = self.cos_scale * cos  # s cos(theta_j); the margin m is the loss's, training only
        else:
            logits = self.head(self.drop(fused))
        if boxes is not None:
            boxes = boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        return ModelOutput(logits=logits, features=fused,
                           region_logits=torch.cat([p.to(logits_parts[0].dtype) for p in logits_parts], 1),
                           attention_maps=att_map, boxes=boxes, extras=extras)


# ------------------------------------------------------------------------------ registered variants
register_model(
    "aha_resnet18",
    "AHA (Weng et al., ICPR 2020) with ResNet-18 sub-networks, paper-like.",
    config=AhaConfig(backbone="resnet18"))(AHA)
register_model(
    "aha_compact_cnn",
    "AHA (Weng et al., ICPR 2020) with compact-CNN sub-networks, for CPU-scale 48 px training.",
    config=AhaConfig(backbone="compact_cnn"))(AHA)
