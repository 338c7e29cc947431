"""AHA (Weng et al., ICPR 2020): regions, the two-step fusion, CosFace and the AHA loss.

Every ablation configuration of the paper (G, G+A, G+L, G+L+A, G+L+M, G+L+M+A; two-step vs
concat fusion; softmax vs CosFace) is built and checked for shapes and gradients; the fusion
and the CosFace logits are recomputed by hand from the model's own layers.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import robustfer.models.aha  # noqa: F401  (registers aha_*; the package import list does not yet)
from robustfer.errors import ConfigError, ModelError
from robustfer.layers.regions import crop_regions
from robustfer.losses import AHALoss, build_loss, cosface_logits, soft_cross_entropy
from robustfer.models import ModelOutput, create_model
from robustfer.models.aha import FUSIONS, HEADS, REGION_NAMES, CosineHead, mosaic, region_centres

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 32  # input side of the small models: 16 px regions, 4x4 / 2x2 attention maps
D = 64  # compact CNN feature size at width 0.25

#: The paper's ablation rows: (branches, attention).
ABLATIONS = [("g", False), ("g", True), ("gl", False), ("gl", True), ("glm", False), ("glm", True)]
CONFIGS = [(b, a, f, h) for (b, a), f, h in itertools.product(ABLATIONS, FUSIONS, HEADS)]
IDS = [f"{b}{'+A' if a else ''}-{f}-{h}" for b, a, f, h in CONFIGS]


def small(**options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("aha_compact_cnn", num_classes=8, in_chans=1, width=0.25, **options)


def images(n: int = 2, side: int = SIDE) -> torch.Tensor:
    return torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(1))


def feature_dim(branches: str, fusion: str) -> int:
    local = (D if fusion == "two_step" else 4 * D) if "l" in branches else 0
    return D * ("g" in branches) + local + D * ("m" in branches)


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("branches, attention, fusion, head", CONFIGS, ids=IDS)
def test_outputs_of_every_ablation(branches: str, attention: bool, fusion: str, head: str) -> None:
    model = small(branches=branches, attention=attention, fusion=fusion, head=head).eval()
    with torch.no_grad():
        out = model(images(3))
    n_branches = ("g" in branches) + 4 * ("l" in branches) + ("m" in branches)
    assert out.logits.shape == (3, 8) and torch.isfinite(out.logits).all()
    assert out.region_logits.shape == (3, n_branches, 8)
    assert model.branch_names[:1] == ["global"] and len(model.branch_names) == n_branches
    assert out.features.shape == (3, feature_dim(branches, fusion)) == (3, model.num_features)
    if branches == "g":
        assert out.boxes is None
    else:
        assert out.boxes.shape == (3, 4, 4)
    if attention:
        assert out.attention_maps.shape == (3, 1, 4, 4)  # global map on the face's 4x4 grid
        assert ((out.attention_maps > 0) & (out.attention_maps < 1)).all()
    else:
        assert out.attention_maps is None and not any("attention" in k for k in out.extras)
    if "l" in branches and attention:
        assert out.extras["local_attention_maps"].shape == (3, 4, 2, 2)
    assert ("region_weights" in out.extras) == ("l" in branches and attention and fusion == "two_step")
    if "m" in branches and attention:
        assert out.extras["mixture_attention_map"].shape == (3, 1, 4, 4)
    if head == "cosface":
        cos = out.extras["cos_logits"]
        assert cos.abs().max() <= 1 + 1e-5
        torch.testing.assert_close(out.logits, float(out.extras["cos_scale"]) * cos)
    else:
        assert "cos_logits" not in out.extras


@pytest.mark.parametrize("branches, attention, fusion, head", CONFIGS, ids=IDS)
def test_every_parameter_learns_through_the_aha_loss(branches: str, attention: bool, fusion: str,
                                                     head: str) -> None:
    model = small(branches=branches, attention=attention, fusion=fusion, head=head).train()
    out = model(images(4))
    loss, parts = build_loss("aha", target="hard")(out, {"label": torch.tensor([0, 1, 2, 3])})
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing
    assert set(parts) == {"ce", "ce_branches"} and torch.isfinite(loss)


def test_batch_of_one_in_train_and_eval() -> None:
    model = small(head="cosface")
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            out = model(images(1))
        assert out.logits.shape == (1, 8) and torch.isfinite(out.logits).all()
        assert out.region_logits.shape == (1, 6, 8) and out.boxes.shape == (1, 4, 4)


def test_separate_local_subnetworks_and_other_sizes() -> None:
    model = small(share_local=False)
    assert len(model.local_nets) == 4 and model.local_nets[0] is not model.local_nets[1]
    out = model(images(2))
    build_loss("aha")(out, {"label": torch.tensor([1, 2])})[0].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        for h, w in ((40, 40), (48, 40)):  # other sides, a non-square input
            out = model(torch.randn(1, 1, h, w))
            assert out.logits.shape == (1, 8)
            torch.testing.assert_close(out.boxes[0] / torch.tensor([w, h, w, h]), model.template_boxes)


def test_resnet18_builder_and_crop_size() -> None:
    model = create_model("aha_resnet18", width=0.125, crop_size=24).eval()
    assert model.num_features == 3 * 64
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.logits.shape == (2, 8) and out.region_logits.shape == (2, 6, 8)
    assert out.attention_maps.shape == (2, 1, 2, 2)  # ResNet stride 32 on 64 px


def test_channels_last_input_gives_the_same_output() -> None:
    model = small().eval()
    x = images(2, 48)
    with torch.no_grad():
        a = model(x)
        b = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)


def test_trains_under_bf16_autocast() -> None:
    model = small(head="cosface").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(2, 48))
    assert out.extras["cos_logits"].dtype == torch.float32  # cosines stay float32
    loss, _ = build_loss("aha")(out, {"label": torch.tensor([3, 4])})
    loss.backward()
    assert torch.isfinite(loss) and model.lstm.weight_ih_l0.grad is not None


# ------------------------------------------------------------------------------ regions
def test_template_regions_on_a_48px_face() -> None:
    model = small().eval()
    with torch.no_grad():
        out = model(images(1, 48))
    # squares of 0.45 * 48 = 21.6 px centred on the template; the mouth is shifted up into the image
    expected = torch.tensor([[4.368, 8.256, 25.968, 29.856], [22.032, 8.256, 43.632, 29.856],
                             [13.2, 18.0, 34.8, 39.6], [13.2, 26.4, 34.8, 48.0]])
    torch.testing.assert_close(out.boxes[0], expected)
    assert model.region_names == list(REGION_NAMES) == model.branch_names[1:5]


def test_local_and_mixture_branches_read_only_their_regions() -> None:
    model = small().eval()
    x = images(1, 48)
    x2 = x.clone()
    # pixels at least one pixel away from every template box (boxes above): rows 0-6, the
    # four left and three right columns
    x2[..., :7, :] = 5.0
    x2[..., :, :4] = -5.0
    x2[..., :, 45:] = 5.0
    with torch.no_grad():
        a, b = model(x), model(x2)
    torch.testing.assert_close(a.region_logits[:, 1:], b.region_logits[:, 1:])  # regions and mixture
    assert not torch.allclose(a.region_logits[:, 0], b.region_logits[:, 0])  # the global branch sees it


def test_mosaic_layout() -> None:
    crops = torch.arange(4, dtype=torch.float32).view(1, 4, 1, 1, 1).expand(1, 4, 1, 2, 2)
    m = mosaic(crops)
    assert m.shape == (1, 1, 4, 4)
    expected = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])  # eyes on top
    torch.testing.assert_close(m[0, 0], expected)
    three = mosaic(crops[:, :3])  # a 2x2 grid with an empty (zero) corner
    assert three.shape == (1, 1, 4, 4) and torch.all(three[0, 0, 2:, 2:] == 0)


# five points in the detectors' order: subject's right eye (image left), left eye, nose, mouth corners
FIVE = torch.tensor([[[15.0, 19.0], [33.0, 19.0], [24.0, 29.0], [18.0, 38.0], [30.0, 38.0]]])
#: boxes of side 0.5 * 48 = 24 px around those points; the mouth's (24, 38) is moved up to 36
FIVE_BOXES = torch.tensor([[3.0, 7.0, 27.0, 31.0], [21.0, 7.0, 45.0, 31.0], [12.0, 17.0, 36.0, 41.0],
                           [12.0, 24.0, 36.0, 48.0]])


def test_landmark_regions() -> None:
    model = small(region_side=0.5).eval()
    x = images(2, 48)
    pts = FIVE.expand(2, -1, -1)
    with torch.no_grad():
        out = model(x, landmarks=pts)
        templ = model(x)
    torch.testing.assert_close(out.boxes[0], FIVE_BOXES)
    torch.testing.assert_close(out.boxes[1], FIVE_BOXES)
    assert not torch.allclose(out.region_logits[:, 1:], templ.region_logits[:, 1:])  # other crops
    # the crops are those boxes: the first local logits equal the local branch run on them
    with torch.no_grad():
        crops = crop_regions(x, FIVE_BOXES / 48, 24)  # (B, 4, 1, 24, 24)
        z, _ = model.local_nets[0](crops.flatten(0, 1))
        torch.testing.assert_close(out.region_logits[:, 1], model.local_heads[0](z.view(2, 4, -1)[:, 0]))


def test_landmark_formats_agree_and_missing_points_use_the_template() -> None:
    centres = region_centres(FIVE, (48, 48))
    expected = torch.tensor([[15.0, 19.0], [33.0, 19.0], [24.0, 29.0], [24.0, 38.0]])  # mouth: corners' mean
    torch.testing.assert_close(centres[0], expected)
    torch.testing.assert_close(region_centres(centres, (48, 48)), centres)  # 4 points: the centres
    ibug = torch.zeros(1, 68, 2)
    ibug[0, 36:42], ibug[0, 42:48] = centres[0, 0], centres[0, 1]
    ibug[0, 30], ibug[0, 48:60] = centres[0, 2], centres[0, 3]
    ibug[0, 36] += torch.tensor([1.0, 0.0])  # the eye centre is the mean of its six points
    ibug[0, 39] -= torch.tensor([1.0, 0.0])
    torch.testing.assert_close(region_centres(ibug, (48, 48)), centres)
    # dlib's five points have no mouth (NaN): the mouth goes back to the template, (0.5, 0.8) * 48
    no_mouth = FIVE.clone()
    no_mouth[0, 3:] = float("nan")
    torch.testing.assert_close(region_centres(no_mouth, (48, 48))[0, 3], torch.tensor([24.0, 38.4]))


def test_bad_landmarks_are_refused() -> None:
    model = small().eval()
    with pytest.raises(ModelError, match=r"4 .* 5 .* or 68"):
        model(images(1, 48), landmarks=torch.zeros(1, 3, 2))
    with pytest.raises(ModelError, match="batch of 2"):
        model(images(2, 48), landmarks=FIVE)
    custom = small(boxes=[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]).eval()
    assert custom.branch_names == ["global", "region0", "region1", "mixture"]
    with torch.no_grad():
        assert custom(images(1)).region_logits.shape == (1, 4, 8)
    with pytest.raises(ModelError, match="without boxes="):
        custom(images(1), landmarks=FIVE)


# ------------------------------------------------------------------------------ fusion
def lstm_by_hand(lstm: torch.nn.LSTM, seq: torch.Tensor) -> torch.Tensor:
    """h_k = LSTM(z_k, h_{k-1}) from the gate equations (PyTorch gate order i, f, g, o)."""
    b, hidden = seq.shape[0], lstm.hidden_size
    h, c = seq.new_zeros(b, hidden), seq.new_zeros(b, hidden)
    outs = []
    for k in range(seq.shape[1]):
        gates = seq[:, k] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1)  # (B, K, H)


def branch_features(model: torch.nn.Module,
                    x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h^g, z^l (B, K, D) and x^m recomputed from the sub-networks."""
    crops = crop_regions(x, model.template_boxes, x.shape[-1] // 2)
    h_g, _ = model.global_net(x)
    z, _ = model.local_nets[0](crops.flatten(0, 1))
    x_m, _ = model.mixture_net(mosaic(crops))
    return h_g, z.view(x.shape[0], 4, -1), x_m


@pytest.mark.parametrize("attention", [False, True])
def test_two_step_fusion_by_hand(attention: bool) -> None:
    """x = concat(h^g, sum_k alpha_k h^l_k, x^m), h^l_k = LSTM(z^l_k, h^l_{k-1}), regions in order."""
    model = small(attention=attention).eval()
    x = images(2)
    with torch.no_grad():
        out = model(x)
        h_g, z_l, x_m = branch_features(model, x)
        h_seq = lstm_by_hand(model.lstm, z_l)  # (B, 4, D)
        alpha = torch.sigmoid(model.step_attention(h_seq)).squeeze(-1) if attention else torch.ones(2, 4)
        h_l = (alpha[..., None] * h_seq).sum(1)
        # order matters: the same features in reverse give another h^l (a plain sum would not)
        h_rev = lstm_by_hand(model.lstm, z_l.flip(1)).sum(1)
    if attention:
        torch.testing.assert_close(out.extras["region_weights"], alpha, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.features, torch.cat([h_g, h_l, x_m], 1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, model.head(out.features), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(h_seq.sum(1), h_rev, atol=1e-3)


def test_concat_fusion_is_the_branch_features_side_by_side() -> None:
    two = small(fusion="two_step").eval()
    cat = small(fusion="concat").eval()  # same seed: the same sub-networks, no LSTM
    x = images(2)
    with torch.no_grad():
        o2, oc = two(x), cat(x)
        h_g, z_l, x_m = branch_features(cat, x)
    assert cat.lstm is None and cat.step_attention is None
    torch.testing.assert_close(oc.features, torch.cat([h_g, z_l.flatten(1), x_m], 1), rtol=1e-4, atol=1e-5)
    # identical sub-networks: the global and mixture parts agree, the local part is LSTM-fused in one
    torch.testing.assert_close(o2.features[:, :D], oc.features[:, :D])
    torch.testing.assert_close(o2.features[:, -D:], oc.features[:, -D:])
    torch.testing.assert_close(o2.region_logits, oc.region_logits)
    alpha = o2.extras["region_weights"][..., None]
    fused = (alpha * lstm_by_hand(two.lstm, z_l)).sum(1)
    torch.testing.assert_close(o2.features[:, D:2 * D], fused, rtol=1e-4, atol=1e-5)


def test_attention_pooling_is_a_weighted_mean() -> None:
    model = small(branches="g").eval()
    x = images(2)
    with torch.no_grad():
        fmap = model.global_net.trunk(x)
        a = torch.sigmoid(model.global_net.pool.att(fmap))
        z, amap = model.global_net(x)
    torch.testing.assert_close(amap, a)
    torch.testing.assert_close(z, (fmap * a).sum((2, 3)) / a.sum((2, 3)))
    plain = small(branches="g", attention=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain.global_net(x)[0], plain.global_net.trunk(x).mean((2, 3)))


# ------------------------------------------------------------------------------ CosFace
def test_cosface_logits_by_hand() -> None:
    cos = torch.tensor([[0.5, -0.2, 0.1], [0.0, 0.9, -0.3]])
    got = cosface_logits(cos, torch.tensor([0, 1]), 10.0, 0.2)
    # s (cos_j - m 1[j = y]): the margin only at the target class
    torch.testing.assert_close(got, torch.tensor([[3.0, -2.0, 1.0], [0.0, 7.0, -3.0]]))
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        cosface_logits(cos, torch.tensor([0]), 10.0, 0.2)


def test_cosine_head_by_hand() -> None:
    head = CosineHead(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]))
    torch.testing.assert_close(head(torch.tensor([[3.0, 4.0]])), torch.tensor([[0.6, 0.8, -0.6]]))


def test_cosface_model_and_loss() -> None:
    model = small(head="cosface", cos_scale=16.0).eval()
    x, y = images(2), torch.tensor([2, 5])
    with torch.no_grad():
        out = model(x)
        cos = F.normalize(out.features, dim=1) @ F.normalize(model.head.weight, dim=1).T
    torch.testing.assert_close(out.extras["cos_logits"], cos, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, 16.0 * cos, rtol=1e-4, atol=1e-4)  # no margin in the output
    assert float(out.extras["cos_scale"]) == 16.0

    margined = 16.0 * (cos - 0.35 * F.one_hot(y, 8))
    branches = sum(F.cross_entropy(out.region_logits[:, n], y) for n in range(6))
    loss, parts = AHALoss("hard", branch_weight=0.5)(out, {"label": y})
    assert float(loss) == pytest.approx(float(F.cross_entropy(margined, y) + 0.5 * branches), rel=1e-5)
    assert parts["ce"] == pytest.approx(float(F.cross_entropy(margined, y)), rel=1e-5)
    assert parts["ce_branches"] == pytest.approx(float(branches), rel=1e-5)
    # the loss's own scale overrides the model's
    loss8, _ = AHALoss("hard", branch_weight=0.0, scale=8.0, margin=0.1)(out, {"label": y})
    expected8 = F.cross_entropy(8.0 * (cos - 0.1 * F.one_hot(y, 8)), y)
    assert float(loss8) == pytest.approx(float(expected8), rel=1e-5)


def test_cosface_with_soft_targets_puts_the_margin_at_the_label() -> None:
    cos = torch.tensor([[0.2, 0.6, -0.1], [0.3, 0.1, 0.0]])
    soft = torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.2, 0.3]])
    y = torch.tensor([1, 0])  # the majority votes
    out = ModelOutput(logits=30.0 * cos, extras={"cos_logits": cos, "cos_scale": torch.tensor(30.0)})
    loss, _ = AHALoss("soft", branch_weight=0.0, margin=0.2)(out, {"label": y, "soft": soft})
    margined = 30.0 * (cos - 0.2 * torch.tensor([[0.0, 1, 0], [1, 0, 0]]))
    expected = -(soft * F.log_softmax(margined, 1)).sum(1).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(loss) == pytest.approx(float(soft_cross_entropy(margined, soft)), rel=1e-6)


# ------------------------------------------------------------------------------ loss
def test_softmax_loss_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 0.0]])
    rl = torch.tensor([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])  # (B, 2, C)
    y = torch.tensor([1, 0])
    out = ModelOutput(logits=logits, region_logits=rl)
    loss, parts = build_loss("aha", target="hard", branch_weight=0.3, fused_weight=2.0)(out, {"label": y})
    ce = F.cross_entropy(logits, y)
    br = F.cross_entropy(rl[:, 0], y) + F.cross_entropy(rl[:, 1], y)
    assert float(loss) == pytest.approx(float(2.0 * ce + 0.3 * br), rel=1e-6)
    assert parts == pytest.approx({"ce": float(ce), "ce_branches": float(br)}, rel=1e-6)
    # the margin is inert without cosines, and label smoothing reaches every term
    smooth, _ = build_loss("aha", target="hard", label_smoothing=0.1, margin=0.5)(out, {"label": y})
    f = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    expected = f(logits, y) + 0.25 * (f(rl[:, 0], y) + f(rl[:, 1], y))
    assert float(smooth) == pytest.approx(float(expected), rel=1e-6)


def test_loss_options_and_errors() -> None:
    loss = build_loss("aha", target="soft", branch_weight=0.5, margin=0.2, scale=20.0)
    assert isinstance(loss, AHALoss) and (loss.branch_weight, loss.margin, loss.scale) == (0.5, 0.2, 20.0)
    with pytest.raises(ConfigError, match="bad option for loss 'aha'"):
        build_loss("aha", alpha=0.1)
    with pytest.raises(ConfigError, match=">= 0"):
        build_loss("aha", branch_weight=-1.0)
    with pytest.raises(ConfigError, match="null"):
        build_loss("aha", scale=0.0)
    plain = ModelOutput(logits=torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="branch_weight: 0"):
        build_loss("aha")(plain, {"label": torch.tensor([0, 1])})
    value, parts = build_loss("aha", branch_weight=0.0)(plain, {"label": torch.tensor([0, 1])})
    assert float(value) == pytest.approx(float(torch.log(torch.tensor(3.0)))) and parts["ce_branches"] == 0.0
    cos_only = ModelOutput(logits=torch.zeros(2, 3), extras={"cos_logits": torch.zeros(2, 3)})
    with pytest.raises(ConfigError, match="scale"):
        build_loss("aha", branch_weight=0.0)(cos_only, {"label": torch.tensor([0, 1])})


def test_bad_options_say_what_to_do() -> None:
    for bad in ("gx", "", "gg", "global"):
        with pytest.raises(ModelError, match="'glm'"):
            small(branches=bad)
    with pytest.raises(ModelError, match="'two_step'"):
        small(fusion="sum")
    with pytest.raises(ModelError, match="'cosface'"):
        small(head="arcface")
    with pytest.raises(ModelError, match=r"\(0, 1\]"):
        small(region_side=0.0)
    with pytest.raises(ModelError, match="at least 8 px"):
        small(crop_size=4)
    with pytest.raises(ModelError, match="positive integer"):
        small(lstm_hidden=0)
    with pytest.raises(ModelError, match="cos_scale"):
        small(cos_scale=0.0)
    with pytest.raises(ModelError, match="x1 > x0"):
        small(boxes=[[0.5, 0.5, 0.1, 0.9]])
    with pytest.raises(ModelError, match="non-empty"):
        small(boxes=[])
    with pytest.raises(ModelError, match="its options are"):
        small(regions="fixed")
    assert small(branches="mlg").branches == "glm"  # any order, canonical g, l, m
