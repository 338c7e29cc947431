"""SCAN-CCI (models/scan_cci.py) and its layers (layers/attention.py).

Everything runs on tiny trunks (width 0.125-0.25) and 48-96 px inputs; the full-size
parameter counts are taken on the meta device, without allocating or running anything.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustfer.models.scan_cci  # noqa: F401  (registers the scan_cci_* builders)
from robustfer.errors import ModelError
from robustfer.layers.attention import ECA, MaskedBatchNorm2d, SpatioChannelAttention, eca_kernel_size
from robustfer.losses import ScanCciLoss
from robustfer.models import ModelOutput, create_model
from robustfer.models.scan_cci import PatchGrid, ScanCci, grid_bounds, region_means

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(shared_scan: bool = True, **kw) -> ScanCci:
    """ResNet-18 trunk at width 0.25: layer2 32 channels, layer3 64."""
    torch.manual_seed(0)
    return create_model("scan_cci_resnet18", num_classes=7, width=0.25, shared_scan=shared_scan, **kw)


# ---------------------------------------------------------------------- output contract
@pytest.mark.parametrize("name,width", [("scan_cci_resnet18", 0.25), ("scan_cci_resnet50", 0.125)])
def test_output_shapes_and_mean_of_heads(name: str, width: float) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=8, in_chans=3, width=width).eval()
    c2 = model.backbone.stage_channels[1]
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (3, 8)
    assert out.region_logits.shape == (3, 5, 8)
    assert out.features.shape == (3, 2 * c2)
    assert out.attention_maps.shape == (3, 1, 8, 8)  # 64 px -> 8x8 layer2 map
    assert out.extras["global_attention_map"].shape == (3, 1, 8, 8)
    assert out.extras["patch_share"].shape == (3, 25)
    torch.testing.assert_close(out.logits, out.region_logits.mean(dim=1))
    torch.testing.assert_close(out.features.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(out.region_logits[:, 0], model.fc(out.features))  # attention head first
    torch.testing.assert_close(out.extras["patch_share"].sum(dim=1), torch.ones(3))
    for amap in (out.attention_maps, out.extras["global_attention_map"]):
        assert bool(((amap > 0) & (amap < 1)).all())


def test_batch_of_one_matches_batch_in_eval_mode() -> None:
    model = tiny().eval()
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        one, three = model(x[:1]), model(x)
    assert one.logits.shape == (1, 7)
    torch.testing.assert_close(one.logits, three.logits[:1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(one.attention_maps, three.attention_maps[:1], rtol=1e-4, atol=1e-5)


def test_train_step_with_batch_of_one() -> None:
    model = tiny().train()
    out = model(torch.randn(1, 1, 48, 48))
    loss, _ = ScanCciLoss("hard")(out, {"label": torch.tensor([2])})
    loss.backward()
    assert torch.isfinite(loss)


# ---------------------------------------------------------------------- gradients and heads
@pytest.mark.parametrize("name", ["scan_cci_resnet18", "scan_cci_resnet50"])
def test_every_parameter_gets_a_gradient_through_the_loss(name: str) -> None:
    """Catches the official shared-heads bug and any branch left outside the graph."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, width=0.125).train()
    for m in model.modules():  # ResNet zero-inits the last BN scale of every residual branch
        if isinstance(m, nn.BatchNorm2d) and bool((m.weight == 0).all()):
            nn.init.ones_(m.weight)
    out = model(torch.randn(4, 1, 64, 64))
    loss, parts = ScanCciLoss("hard")(out, {"label": torch.tensor([0, 1, 2, 3])})
    assert set(parts) == {"ce_attention", "ce_regions"}
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    zero = [n for n, p in model.named_parameters() if not bool(p.grad.abs().sum() > 0)]
    assert not zero, zero
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_unshared_scan_is_in_the_graph() -> None:
    """One SCAN per patch: the max over patches routes each channel's gradient to the winning
    patch only, so single patches may get zero gradient on a tiny batch; the block as a whole
    (and the global SCAN) must receive one."""
    model = tiny(shared_scan=False).train()
    out = model(torch.randn(4, 1, 48, 48))
    ScanCciLoss("hard")(out, {"label": torch.tensor([0, 1, 2, 3])})[0].backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
    assert model.local_scan.conv.weight.grad.abs().sum() > 0
    assert model.global_scan.conv.weight.grad.abs().sum() > 0


def test_region_heads_are_independent() -> None:
    model = tiny()
    heads = list(model.region_heads)
    assert len(heads) == 4 and len({id(h) for h in heads}) == 4
    ptrs = [p.data_ptr() for h in heads for p in h.parameters()]
    assert len(ptrs) == len(set(ptrs)), "region heads share parameter tensors"
    assert not torch.equal(heads[0][0].weight, heads[1][0].weight)
    # the CE of region r trains head r and no other head
    out = model.train()(torch.randn(4, 1, 48, 48))
    F.cross_entropy(out.region_logits[:, 2], torch.tensor([0, 1, 2, 3])).backward()  # region head 1
    grads = [h[0].weight.grad for h in heads]
    assert grads[1] is not None and grads[1].abs().sum() > 0
    assert all(g is None or not bool(g.abs().sum() > 0) for i, g in enumerate(grads) if i != 1)


def test_shared_and_unshared_scan_parameter_counts() -> None:
    shared, unshared = tiny(shared_scan=True), tiny(shared_scan=False)
    c2 = shared.backbone.stage_channels[1]
    one_scan = c2 * c2 * 9 + c2 + 2 * c2  # conv (no bias), PReLU slopes, BN scale and shift
    assert n_params(shared.global_scan) == one_scan
    assert shared.local_scan.groups == 1 and n_params(shared.local_scan) == one_scan
    assert unshared.local_scan.groups == 25 and n_params(unshared.local_scan) == 25 * one_scan
    assert n_params(unshared) - n_params(shared) == 24 * one_scan


def test_full_size_parameter_counts() -> None:
    """ResNet-50 trunk to layer3, 224 px setting, 8 classes, RGB.

    Official (github.com/1980x/SCAN-CCI-FER, models/attentionnet.py + models/resnet.py):
    trunk 8,543,296; one SCAN 512*512*9 + 512 + 1024 = 2,360,832; attention fc 8,200; ECA 5;
    one region MLP 1024*256 + 256 + 256*8 + 8 = 264,456 (shared by the four regions).
    Shared SCAN (RAF-DB script): 8,543,296 + 2 * 2,360,832 + 8,200 + 5 + 264,456 = 13,537,621.
    One SCAN per patch: 8,543,296 + 26 * 2,360,832 + 8,200 + 5 + 264,456 = 70,197,589.
    Ours has three more region heads: + 3 * 264,456 = 793,368.
    """
    with torch.device("meta"):
        shared = create_model("scan_cci_resnet50", num_classes=8, in_chans=3, shared_scan=True)
        unshared = create_model("scan_cci_resnet50", num_classes=8, in_chans=3, shared_scan=False)
    assert n_params(shared.backbone) == 8_543_296
    assert n_params(shared.region_heads[0]) == 264_456
    extra_heads = 3 * 264_456
    assert n_params(shared) - extra_heads == 13_537_621
    assert n_params(unshared) - extra_heads == 70_197_589
    assert n_params(shared) == 14_330_989
    assert n_params(unshared) == 70_990_957
    assert shared.eca.kernel_size == 5  # the official hard-coded k for 1024 channels


# ---------------------------------------------------------------------- layers
def test_scan_block_is_x_times_a_per_channel_per_location() -> None:
    torch.manual_seed(0)
    scan = SpatioChannelAttention(6).train()
    x = torch.randn(3, 6, 5, 7)
    y, a = scan(x)
    assert a.shape == x.shape == y.shape
    torch.testing.assert_close(y, x * a)
    assert bool(((a > 0) & (a < 1)).all())
    # a weight per channel *and* per location: A varies along both axes
    assert a.std(dim=1).min() > 0 and a.flatten(2).std(dim=2).min() > 0
    # A = sigmoid(BN(PReLU(conv3x3(X))))
    ref = torch.sigmoid(scan.bn(scan.prelu(F.conv2d(x, scan.conv.weight, padding=1))))
    torch.testing.assert_close(a, ref)


def test_grouped_scan_equals_separate_blocks() -> None:
    torch.manual_seed(0)
    grouped = SpatioChannelAttention(4, groups=3).train()
    with torch.no_grad():
        grouped.prelu.weight.uniform_(0, 0.5)
        grouped.bn.weight.uniform_(0.5, 1.5)
        grouped.bn.bias.uniform_(-0.5, 0.5)
    xs = [torch.randn(2, 4, 5, 5) for _ in range(3)]
    _, a = grouped(torch.cat(xs, dim=1))
    for k, x in enumerate(xs):
        s = slice(4 * k, 4 * k + 4)
        z = F.conv2d(x, grouped.conv.weight[s], padding=1)
        z = F.prelu(z, grouped.prelu.weight[s])
        z = F.batch_norm(z, None, None, grouped.bn.weight[s], grouped.bn.bias[s], training=True)
        torch.testing.assert_close(a[:, s], torch.sigmoid(z))


def test_masked_batchnorm_matches_batchnorm_on_the_kept_cells() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    mask = torch.zeros(4, 1, 5, 5)
    mask[:, :, :3, :4] = 1
    masked = MaskedBatchNorm2d(3).train()
    plain = nn.BatchNorm2d(3).train()
    y = masked(x, mask)
    kept = x[:, :, :3, :4]
    torch.testing.assert_close(y[:, :, :3, :4], plain(kept))
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    assert int(masked.num_batches_tracked) == 1
    # without a mask, and in eval mode, it is nn.BatchNorm2d
    torch.testing.assert_close(masked(x), plain(x))
    masked.eval(), plain.eval()
    torch.testing.assert_close(masked(x, mask), plain(x))


@pytest.mark.parametrize("channels,k", [
    (2, 1),      # (log2 2 + 1) / 2 = 1.0 -> 1, odd
    (16, 3),     # (4 + 1) / 2 = 2.5 -> 2, even -> 3
    (64, 3),     # (6 + 1) / 2 = 3.5 -> 3
    (128, 5),    # (7 + 1) / 2 = 4 -> 5
    (256, 5),    # (8 + 1) / 2 = 4.5 -> 4 -> 5
    (512, 5),    # (9 + 1) / 2 = 5
    (1024, 5),   # (10 + 1) / 2 = 5.5 -> 5 (the official hard-coded value)
    (2048, 7),   # (11 + 1) / 2 = 6 -> 7
])
def test_eca_kernel_size(channels: int, k: int) -> None:
    assert eca_kernel_size(channels) == k
    assert ECA(channels).kernel_size == k


def test_eca_rescales_channels() -> None:
    torch.manual_seed(0)
    eca = ECA(16)
    x = torch.randn(2, 16, 4, 4)
    w = torch.sigmoid(F.conv1d(x.mean(dim=(2, 3))[:, None], eca.conv.weight, padding=1))[:, 0]
    torch.testing.assert_close(eca(x), x * w[:, :, None, None])


# ---------------------------------------------------------------------- geometry
def test_grid_bounds() -> None:
    assert grid_bounds(28, 5) == [0, 5, 11, 16, 22, 28]  # official: 0, 6, 12, 18, 24, 28
    assert grid_bounds(8, 5) == [0, 1, 3, 4, 6, 8]
    assert grid_bounds(14, 2) == [0, 7, 14]
    assert grid_bounds(7, 2) == [0, 3, 7]  # official drops row/column 6 here


@pytest.mark.parametrize("side,map_side", [(48, 6), (64, 8), (96, 12)])
def test_patch_geometry_scales_with_input(side: int, map_side: int) -> None:
    model = tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, side, side))
    assert out.attention_maps.shape == (2, 1, map_side, map_side)
    pg = PatchGrid.build(map_side, map_side, 5, torch.device("cpu"))
    bounds = grid_bounds(map_side, 5)
    sides = [b - a for a, b in zip(bounds, bounds[1:])]
    assert pg.counts.tolist() == [float(h * w) for h in sides for w in sides]
    assert int(pg.valid.sum()) == map_side * map_side  # the patches tile the map exactly once
    # cutting into patches and reassembling is the identity
    x = torch.randn(2, 3, map_side, map_side)
    patches = pg.extract(x)  # (B, 25, C, p, q)
    assert patches.shape == (2, 25, 3, max(sides), max(sides))
    assert bool((patches * (1 - pg.valid[None]) == 0).all())  # zeros on padding
    back = torch.stack([pg.assemble(patches[:, :, c]) for c in range(3)], dim=1)
    torch.testing.assert_close(back, x)
    # patch (1, 2) is the block rows bounds[1]:bounds[2], cols bounds[2]:bounds[3]
    block = x[:, :, bounds[1]:bounds[2], bounds[2]:bounds[3]]
    torch.testing.assert_close(patches[:, 7, :, :block.shape[2], :block.shape[3]], block)


def test_non_square_input() -> None:
    model = tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 96))
    assert out.attention_maps.shape == (2, 1, 8, 12)
    assert out.logits.shape == (2, 7)


def _local_reference(model: ScanCci, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official per-patch loop (true 2-D patches): every patch convolved alone with zero
    padding; per-patch batch statistics in training mode (unshared SCAN) or running ones."""
    scan, c = model.local_scan, x2.shape[1]
    bounds_r, bounds_c = grid_bounds(x2.shape[2], 5), grid_bounds(x2.shape[3], 5)
    feats, amap = [], torch.zeros(x2.shape[0], 1, *x2.shape[2:])
    k = 0
    for i in range(5):
        for j in range(5):
            rs, cs = slice(bounds_r[i], bounds_r[i + 1]), slice(bounds_c[j], bounds_c[j + 1])
            f = x2[:, :, rs, cs]
            s = slice(0, c) if scan.groups == 1 else slice(k * c, (k + 1) * c)
            z = F.prelu(F.conv2d(f, scan.conv.weight[s], padding=1), scan.prelu.weight[s])
            bn = scan.bn
            z = F.batch_norm(z, bn.running_mean[s].clone(), bn.running_var[s].clone(), bn.weight[s],
                             bn.bias[s], training=bn.training, eps=bn.eps)
            a = torch.sigmoid(z)
            feats.append((f * a).mean(dim=(2, 3)))
            amap[:, :, rs, cs] = a.mean(dim=1, keepdim=True)
            k += 1
    return torch.stack(feats, dim=1).max(dim=1).values, amap


@pytest.mark.parametrize("shared_scan,train", [(True, False), (False, False), (False, True)])
def test_vectorised_local_attention_matches_per_patch_loop(shared_scan: bool, train: bool) -> None:
    model = tiny(shared_scan=shared_scan)
    with torch.no_grad():  # non-trivial BN running statistics and affine parameters
        model.local_scan.bn.running_mean.uniform_(-0.2, 0.2)
        model.local_scan.bn.running_var.uniform_(0.5, 2.0)
        model.local_scan.bn.weight.uniform_(0.5, 1.5)
        model.local_scan.prelu.weight.uniform_(0.0, 0.5)
    model.train(train)
    x2 = torch.randn(3, model.backbone.stage_channels[1], 8, 7)  # patch sides 1 and 2
    with torch.no_grad():
        want_local, want_map = _local_reference(model, x2)
        local, amap, _ = model.local_attention(x2)
    torch.testing.assert_close(local, want_local)
    torch.testing.assert_close(amap, want_map)


def test_region_means() -> None:
    x = torch.randn(2, 3, 7, 6)
    got = region_means(x, 2)  # bands rows 0:3, 3:7 and columns 0:3, 3:6
    want = torch.stack([x[:, :, :3, :3].mean((2, 3)), x[:, :, :3, 3:].mean((2, 3)),
                        x[:, :, 3:, :3].mean((2, 3)), x[:, :, 3:, 3:].mean((2, 3))], dim=1)
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------- input checks
def test_too_small_input_is_a_clear_error() -> None:
    model = tiny()
    assert model.min_input_side() == 33  # stride-2 stem + max-pool: 33 px -> 5x5 layer2 map
    with pytest.raises(ModelError) as e:
        model(torch.randn(1, 1, 32, 32))
    msg = str(e.value)
    assert "32x32" in msg and "4x4 layer2" in msg and "33x33" in msg
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 1, 33, 33))  # the minimum works


@pytest.mark.parametrize("kw", [{}, {"stem_stride": 1, "max_pool": False}, {"stem_kernel": 3}])
def test_feature_sides_match_the_trunk(kw: dict) -> None:
    model = tiny(**kw).eval()
    for side in (33, 41, 50):
        with torch.no_grad():
            _, x2, x3 = model.backbone.forward_stages(torch.randn(1, 1, side, side))
        assert model.feature_sides(side) == (x2.shape[-1], x3.shape[-1])


@pytest.mark.parametrize("kw", [{"grid": 0}, {"cci_grid": -1}, {"hidden": 0}])
def test_bad_options_raise(kw: dict) -> None:
    with pytest.raises(ModelError):
        tiny(**kw)
