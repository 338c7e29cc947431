"""SCAN-CCI: spatio-channel attention (SCAN) with complementary context information (CCI).

Paper: D. Gera and S. Balasubramanian, "Landmark guidance independent spatio-channel attention
and complementary context information based facial expression recognition", Pattern
Recognition Letters 145 (2021) 58-66, arXiv 2007.10298. Official code:
https://github.com/1980x/SCAN-CCI-FER (``models/attentionnet.py``, ``models/resnet.py``,
``main_*.py``); "official" below means that repository.

Architecture (224 px, ResNet-50 trunk up to layer3):

* trunk: layer2 -> X2 (B, 512, 28, 28) feeds the attention branch, layer3 -> X3
  (B, 1024, 14, 14) feeds the CCI branch.
* SCAN block (:class:`~robustfer.layers.attention.SpatioChannelAttention`):
  ``A = sigmoid(BN(PReLU(conv3x3(X))))``, output ``X * A`` -- one weight per channel per location.
* local attention: X2 cut into a 5x5 grid of non-overlapping patches, SCAN on every patch,
  global average pooling (GAP) per patch, max over the 25 patch vectors -> (B, 512).
* global attention: SCAN on the whole X2, GAP -> (B, 512).
* attention head: concat (B, 1024), L2-normalise, linear -> attention logits.
* CCI: ECA on X3, cut into a 2x2 grid of regions, GAP each, one MLP per region
  (1024 -> 256 -> ReLU -> classes, as official: no BN, no dropout) -> 4 region logits.
* training loss (in :class:`robustfer.losses.ScanCciLoss`, not here):
  ``0.2 * CE(attention) + 0.8 * sum_r CE(region r)``; prediction: the mean of the five logit
  vectors (official ``avg_predictions``: a mean of logits, not of probabilities).

Outputs (:class:`ModelOutput`): ``logits`` (B, K) the mean of the five heads;
``region_logits`` (B, 5, K), index 0 the attention branch and 1..4 the CCI regions in
row-major order (top-left, top-right, bottom-left, bottom-right), what ``ScanCciLoss`` reads;
``features`` (B, 2 * C2) the L2-normalised attention vector; ``attention_maps`` (B, 1, h2, w2)
the channel mean of the local (per-patch) SCAN weights A put back in place on the layer2 grid
(a visualisation of where the local attention looks; the paper shows Grad-CAM instead);
``extras["global_attention_map"]`` (B, 1, h2, w2) the same for the global SCAN;
``extras["patch_share"]`` (B, 25) the fraction of channels whose max-pooled local feature
came from each patch (row-major), i.e. which patches the local branch actually used.

Deviations from the paper / official code, and why:

1. **Independent CCI heads.** Official ``RegionBranch`` builds
   ``nn.ModuleList([self.region_net for i in range(num_regions)])``: one MLP shared by all four
   regions, contrary to the paper's four region classifiers. Ours are four modules with their
   own weights (+3 x 264,456 = 793,368 parameters at ResNet-50 / 8 classes).
2. **Patch geometry scales with the map.** Official ``extract_patches_attentivefeatures``
   hard-codes 28x28 maps: 6-cell patches from 0 to 24 and a 4-cell remainder (patch sides
   6, 6, 6, 6, 4); the same rule leaves empty patches on e.g. a 16x16 map. Ours cuts
   ``grid`` near-equal bands at ``floor(i * H / grid)`` (28 -> sides 5, 6, 5, 6, 6), defined
   for every map of at least ``grid`` cells, so inputs of any size work.
3. **True 2-D patches in the bottom band.** In the official code the four "4x6" patches of
   the bottom band come from ``unfold`` + ``permute`` on the wrong axes: patch j is row
   24 + j over columns 0..23, folded into a 4x6 block, so its 3x3 convolution mixes cells
   6 columns apart. Ours are the 2-D blocks the paper describes.
4. **Shared SCAN normalises over all patches at once.** Official ``SharedAttentionBranch``
   calls the one block 25 times per forward pass: in training each patch is normalised with
   its own batch statistics, and the BN running statistics are updated 25 times per step
   (with momentum 0.1 the last nine patches processed -- the right and bottom bands and the
   corner -- carry about 61 % of the average), so inference normalises differently from
   training. Ours runs the 25 patches as one batch: statistics pooled over
   all patches' cells, one update per step. With ``shared_scan=False`` every patch has its
   own BN and its own statistics, as official.
5. **Vectorised patches, faithful padding.** The patches are zero-padded to the largest patch
   size and run as one batch (shared SCAN) or one grouped convolution (one SCAN per patch).
   The convolution output at every real cell equals that of the patch convolved alone with
   zero padding, as in the official per-patch loop (running the convolution on the whole map
   instead would let patches see their neighbours' cells and is not equivalent). Padded cells
   are excluded from BN statistics (:class:`MaskedBatchNorm2d`), GAP and attention maps.
6. **CCI regions scale with the map.** Official uses ``int(h / 2)``-sized ``unfold`` windows,
   which drop the last row and column of odd maps (a 7x7 layer3 map at 112 px); ours uses
   near-equal bands as in 2.
7. **ECA kernel size from ECA's formula** (``eca_kernel_size``); official hard-codes k = 5,
   which is what the formula gives for 1024 channels (and for 256 and 512), so the paper
   setting is unchanged; narrow variants get the formula's value (e.g. 3 for 64 channels).
8. **No face-recognition pretraining here.** Official initialises the trunk from a
   face-recognition ResNet-50 (``vgg_msceleb_resnet50_ft_weight.pkl``: MS-Celeb-1M,
   fine-tuned on VGGFace2) and trains it with lr 1e-4 against 1e-2 for the heads (1e-3 on
   AffectNet); robustfer downloads nothing, and learning rates belong to the recipe and
   optimiser, not the model. Options the official code lacks: ``drop_rate``
   (dropout before every classifier's last linear layer, 0 = official), ``in_chans``, the
   trunk depth and ``width``; ``hidden`` defaults to the official layer3 channels / 4.
9. **Training protocol** (engine, not model; listed for comparison with published numbers):
   official ``train()`` never calls ``.train()``, so after the first ``validate()`` (which
   calls ``.eval()``) every later epoch trains in eval mode -- BN frozen at its running
   statistics; robustfer's engine sets the mode every epoch. Official ``main_*.py`` keep the
   checkpoint with the best accuracy on the split they report (``validate(test_loader)``;
   AffectNet: its validation set, which serves as its test set); robustfer selects on a
   validation split held out from training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustfer.errors import ModelError
from robustfer.layers.attention import ECA, SpatioChannelAttention
from robustfer.models._registry import register_model
from robustfer.models.backbones import ResNet, TrunkConfig, create_trunk
from robustfer.models.output import ModelOutput


# ---------------------------------------------------------------------- grid geometry
def grid_bounds(size: int, n: int) -> list[int]:
    """Boundaries of ``n`` near-equal, non-overlapping bands covering ``size`` cells.

    ``floor(i * size / n)`` for i = 0..n: band sides differ by at most one cell
    (28 cells, 5 bands -> 0, 5, 11, 16, 22, 28). Needs ``size >= n`` for non-empty bands.
    """
    return [i * size // n for i in range(n + 1)]


@dataclass
class PatchGrid:
    """Index tensors that cut an (H, W) map into a ``g x g`` grid of zero-padded patches.

    Attributes:
        rows: (g, p) map row of each patch row; H (a zero row appended to the map) on padding.
        cols: (g, q) map column of each patch column; W on padding.
        valid: (g * g, 1, p, q) 1.0 at real cells, 0.0 at padding; row-major patch order.
        counts: (g * g,) real cells per patch.
        iy, uy: (H,) patch row index and row within the patch of every map row.
        jx, vx: (W,) the same for columns.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    valid: torch.Tensor
    counts: torch.Tensor
    iy: torch.Tensor
    uy: torch.Tensor
    jx: torch.Tensor
    vx: torch.Tensor

    @classmethod
    def build(cls, h: int, w: int, g: int, device: torch.device) -> PatchGrid:
        rb, cb = grid_bounds(h, g), grid_bounds(w, g)
        hs = [rb[i + 1] - rb[i] for i in range(g)]
        ws = [cb[j + 1] - cb[j] for j in range(g)]
        p, q = max(hs), max(ws)

        def idx(bounds: list[int], sides: list[int], pad: int, limit: int) -> list[list[int]]:
            return [[bounds[i] + u if u < sides[i] else limit for u in range(pad)] for i in range(g)]

        def inverse(bounds: list[int], size: int) -> tuple[list[int], list[int]]:
            band = [next(i for i in range(g) if bounds[i] <= t < bounds[i + 1]) for t in range(size)]
            return band, [t - bounds[band[t]] for t in range(size)]

        rows = torch.tensor(idx(rb, hs, p, h), device=device)
        cols = torch.tensor(idx(cb, ws, q, w), device=device)
        valid = (rows != h)[:, None, :, None] & (cols != w)[None, :, None, :]  # (g, g, p, q)
        counts = torch.tensor([a * b for a in hs for b in ws], device=device, dtype=torch.float32)
        iy, uy = inverse(rb, h)
        jx, vx = inverse(cb, w)
        return cls(rows, cols, valid.reshape(g * g, 1, p, q).float(), counts,
                   *(torch.tensor(v, device=device) for v in (iy, uy, jx, vx)))

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, g*g, C, p, q) patches, zeros on padding, row-major order."""
        b, c = x.shape[:2]
        g, p, q = self.rows.shape[0], self.rows.shape[1], self.cols.shape[1]
        xp = F.pad(x, (0, 1, 0, 1))  # (B, C, H+1, W+1): row H and column W are zeros
        patches = xp[:, :, self.rows[:, None, :, None], self.cols[None, :, None, :]]  # (B, C, g, g, p, q)
        return patches.permute(0, 2, 3, 1, 4, 5).reshape(b, g * g, c, p, q)

    def assemble(self, v: torch.Tensor) -> torch.Tensor:
        """(B, g*g, p, q) per-patch values -> (B, H, W) map (padding dropped)."""
        g = self.rows.shape[0]
        v = v.reshape(v.shape[0], g, g, v.shape[-2], v.shape[-1])  # (B, g, g, p, q)
        return v[:, self.iy[:, None], self.jx[None, :], self.uy[:, None], self.vx[None, :]]  # (B, H, W)


def region_means(x: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of each cell of an ``n x n`` grid of near-equal regions, (B, C, H, W) -> (B, n*n, C).

    Row-major region order. Computed as ``Rh @ X @ Rw^T`` with averaging matrices, one
    einsum instead of a loop over regions.
    """
    b, c, h, w = x.shape

    def averaging(size: int) -> torch.Tensor:
        bounds = grid_bounds(size, n)
        m = torch.zeros(n, size, dtype=x.dtype, device=x.device)
        for i in range(n):
            m[i, bounds[i]:bounds[i + 1]] = 1.0 / (bounds[i + 1] - bounds[i])
        return m

    pooled = torch.einsum("bchw,ih,jw->bijc", x, averaging(h), averaging(w))  # (B, n, n, C)
    return pooled.reshape(b, n * n, c)


# ---------------------------------------------------------------------- the model
@dataclass(frozen=True)
class ScanCciConfig(TrunkConfig):
    """Options of SCAN-CCI: the ResNet trunk's (:class:`~robustfer.models.backbones.TrunkConfig`)
    and the attention and context branches'.

    Attributes:
        backbone: the trunk, ``resnet50`` (paper), ``resnet34`` or ``resnet18``, cut after
            layer3; fixed by the registered name.
        width: multiplier on the trunk's channels (1.0 = paper).
        stem_stride, stem_kernel, max_pool: trunk stem (2, 7, True = paper).
        shared_scan: one SCAN shared by the local patches (official RAF-DB script) or one per
            patch (official FERPlus, AffectNet, SFEW, ... scripts).
        grid: local patches per side (paper: 5, i.e. 25 patches).
        cci_grid: CCI regions per side (paper: 2, i.e. 4 regions).
        hidden: hidden units of each CCI head; None = layer3 channels // 4 (official
            reduction factor 4: 256 at ResNet-50).
        drop_rate: dropout before the last linear layer of every head (official: none).
    """

    backbone: str = "resnet50"
    shared_scan: bool = True
    grid: int = 5
    cci_grid: int = 2
    hidden: int | None = None
    drop_rate: float = 0.0


class ScanCci(nn.Module):
    """SCAN-CCI on a ResNet trunk cut after layer3 (see the module docstring).

    Args:
        cfg: the configuration (:class:`ScanCciConfig`).
        num_classes: K expression classes.
        in_chans: input channels.
    """

    def __init__(self, cfg: ScanCciConfig, num_classes: int = 8, in_chans: int = 1) -> None:
        super().__init__()
        for name, v in (("grid", cfg.grid), ("cci_grid", cfg.cci_grid)):
            if v < 1:
                raise ModelError(f"scan_cci option {name}={v!r} must be a positive integer "
                                 f"(paper: grid=5, cci_grid=2).")
        if cfg.hidden is not None and cfg.hidden < 1:
            raise ModelError(f"scan_cci option hidden={cfg.hidden!r} must be a positive integer or None.")
        if not cfg.backbone.startswith("resnet"):
            raise ModelError(f"scan_cci needs a ResNet trunk (layer2 and layer3 maps), got backbone "
                             f"{cfg.backbone!r}; use resnet18, resnet34 or resnet50.")
        self.config = cfg
        backbone, _ = create_trunk(cfg.backbone, in_chans, **cfg.trunk_kwargs(), num_stages=3)
        assert isinstance(backbone, ResNet)
        self.backbone = backbone
        c2, c3 = self.backbone.stage_channels[1], self.backbone.stage_channels[2]
        self.grid, self.cci_grid, self.shared_scan = cfg.grid, cfg.cci_grid, cfg.shared_scan
        self.stem_stride, self.stem_kernel, self.max_pool = cfg.stem_stride, cfg.stem_kernel, cfg.max_pool
        n_patches, n_regions = cfg.grid * cfg.grid, cfg.cci_grid * cfg.cci_grid
        hidden = cfg.hidden or max(1, c3 // 4)

        # attention branch
        self.local_scan = SpatioChannelAttention(c2, groups=1 if cfg.shared_scan else n_patches)
        self.global_scan = SpatioChannelAttention(c2)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.fc = nn.Linear(2 * c2, num_classes)
        # CCI branch
        self.eca = ECA(c3)
        self.region_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(c3, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.drop_rate),
                          nn.Linear(hidden, num_classes))
            for _ in range(n_regions)
        )
        self.num_features = 2 * c2

    # ------------------------------------------------------------------ input sizes
    def feature_sides(self, side: int) -> tuple[int, int]:
        """Side of the layer2 and layer3 maps for an input side (conv arithmetic of the trunk)."""
        k = self.stem_kernel
        n = (side + 2 * (k // 2) - k) // self.stem_stride + 1  # stem conv
        if self.max_pool:
            n = (n - 1) // 2 + 1  # 3x3/2 max-pool, padding 1
        n2 = (n - 1) // 2 + 1  # layer2: stride 2
        n3 = (n2 - 1) // 2 + 1  # layer3: stride 2
        return n2, n3

    def min_input_side(self) -> int:
        """Smallest input side whose layer2 map fits the patch grid and layer3 map the CCI grid."""
        side = 1
        while True:
            n2, n3 = self.feature_sides(side)
            if n2 >= self.grid and n3 >= self.cci_grid:
                return side
            side += 1

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ModelError(f"scan_cci expects images (B, C, H, W), got a tensor of shape {tuple(x.shape)}.")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        (h2, h3), (w2, w3) = self.feature_sides(h), self.feature_sides(w)
        if min(h2, w2) < self.grid or min(h3, w3) < self.cci_grid:
            m = self.min_input_side()
            raise ModelError(
                f"scan_cci: a {h}x{w} input gives a {h2}x{w2} layer2 map and a {h3}x{w3} layer3 map, "
                f"but the {self.grid}x{self.grid} patch grid needs a layer2 map of at least "
                f"{self.grid}x{self.grid} and the {self.cci_grid}x{self.cci_grid} context grid a layer3 "
                f"map of at least {self.cci_grid}x{self.cci_grid}. Use inputs of at least {m}x{m} px "
                f"(stem_stride={self.stem_stride}, max_pool={self.max_pool}), or a lower stem_stride, "
                "max_pool=False, or a smaller grid."
            )

    # ------------------------------------------------------------------ branches
    def local_attention(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Local SCAN over the patch grid.

        Returns:
            the max-pooled local vector (B, C2), the attention map (B, 1, h2, w2) and the
            share of channels each patch supplies to the max (B, g*g).
        """
        b, c, h, w = x2.shape
        pg = PatchGrid.build(h, w, self.grid, x2.device)
        # [paper: local attention on 25 non-overlapping patches of the layer2 map]
        patches = pg.extract(x2)  # (B, G, C, p, q), zeros on padding
        g, p, q = patches.shape[1], patches.shape[-2], patches.shape[-1]
        if self.shared_scan:
            # one SCAN: the patches as a batch of B*G inputs
            y, a = self.local_scan(patches.reshape(b * g, c, p, q), pg.valid.repeat(b, 1, 1, 1))
        else:
            # one SCAN per patch: patches side by side on the channel axis, grouped conv
            mask = pg.valid.expand(g, c, p, q).reshape(1, g * c, p, q)
            y, a = self.local_scan(patches.reshape(b, g * c, p, q), mask)
        y, a = y.reshape(b, g, c, p, q), a.reshape(b, g, c, p, q)  # [paper: SCAN] X * A and A per patch
        pooled = y.sum(dim=(-2, -1)) / pg.counts.to(y.dtype)[None, :, None]  # (B, G, C) GAP over real cells
        local, winner = pooled.max(dim=1)  # (B, C) [paper: local attention, max-pool over patches]
        share = F.one_hot(winner, g).to(x2.dtype).mean(dim=1)  # (B, G)
        amap = pg.assemble(a.mean(dim=2))[:, None]  # (B, 1, H, W) channel mean of A
        return local, amap, share

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """(B, in_chans, H, W) -> :class:`ModelOutput` (see the module docstring)."""
        self._check_input(x)
        _, x2, x3 = self.backbone.forward_stages(x)  # (B, C2, H/8, W/8), (B, C3, H/16, W/16)

        # attention branch
        local, amap, share = self.local_attention(x2)  # (B, C2), (B, 1, h2, w2), (B, G)
        g_feat, g_att = self.global_scan(x2)  # (B, C2, h2, w2) X * A, A  [paper: global attention]
        glob = g_feat.mean(dim=(2, 3))  # (B, C2) GAP
        feat = F.normalize(torch.cat([local, glob], dim=1), p=2, dim=1)  # (B, 2*C2) [paper: concat, L2 norm]
        att_logits = self.fc(self.drop(feat))  # (B, K)

        # CCI branch
        regions = region_means(self.eca(x3), self.cci_grid)  # (B, R, C3) [paper: ECA, then 4 regions, GAP]
        # [paper: one classifier per region]
        cci_logits = torch.stack([head(regions[:, r]) for r, head in enumerate(self.region_heads)], dim=1)

        all_logits = torch.cat([att_logits[:, None], cci_logits], dim=1)  # (B, 1 + R, K)
        return ModelOutput(
            logits=all_logits.mean(dim=1),  # (B, K) [paper: inference averages the five predictions]
            features=feat,
            region_logits=all_logits,
            attention_maps=amap,
            extras={"global_attention_map": g_att.mean(dim=1, keepdim=True), "patch_share": share},
        )


# ---------------------------------------------------------------------- registered variants
register_model(
    "scan_cci_resnet50",
    "SCAN-CCI (Gera & Balasubramanian, PRL 2021) on ResNet-50 up to layer3, as in the paper.",
    config=ScanCciConfig(backbone="resnet50"))(ScanCci)
register_model(
    "scan_cci_resnet18",
    "SCAN-CCI heads on ResNet-18 up to layer3 (layer2 128, layer3 256 channels), for CPU runs.",
    config=ScanCciConfig(backbone="resnet18"))(ScanCci)
