"""RAN (Wang et al., TIP 2020): region crops, the attention equations, the region-biased loss.

The generic contract (shapes, batch of one, gradients to every parameter, train/eval) is in
test_models.py; these tests check what is particular to RAN against numbers worked out by hand.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustfer.errors import ConfigError, ModelError
from robustfer.layers.regions import RAN_FIXED_BOXES, crop_regions, landmark_boxes, random_boxes
from robustfer.losses import RANLoss, build_loss, region_biased_loss
from robustfer.models import ModelOutput, create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def small(**options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("ran_compact_cnn", num_classes=8, in_chans=1, width=0.25, **options)


# ------------------------------------------------------------------------------ crops
def test_whole_box_crop_is_the_image() -> None:
    x = torch.randn(2, 3, 8, 8)
    out = crop_regions(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 8)
    assert out.shape == (2, 1, 3, 8, 8)
    torch.testing.assert_close(out[:, 0], x)


def test_quadrant_crop_by_hand() -> None:
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5]])  # the top-left 4x4 pixels
    torch.testing.assert_close(crop_regions(x, box, 4)[0, 0], x[0, :, :4, :4])
    # resized to 2x2, each output pixel centre falls between four input pixels: their mean
    torch.testing.assert_close(crop_regions(x, box, 2)[0, 0], F.avg_pool2d(x[:, :, :4, :4], 2)[0])
    # the bottom-right quadrant, 4 columns/rows in
    br = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    torch.testing.assert_close(crop_regions(x, br, 4)[0, 0], x[0, :, 4:, 4:])


def test_per_image_boxes_and_outside_is_zero() -> None:
    x = torch.ones(2, 1, 8, 8)
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]], [[0.5, 0.0, 1.5, 1.0]]])  # (B=2, K=1, 4)
    out = crop_regions(x, boxes, 8)
    assert torch.all(out[0] == 1)
    # the second box hangs half outside the image on the right: those columns are zero
    assert torch.all(out[1, 0, 0, :, :4] == 1) and torch.all(out[1, 0, 0, :, 4:] == 0)


def test_crop_gradient_reaches_the_image() -> None:
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    crop_regions(x, torch.tensor([[0.25, 0.25, 0.75, 0.75]]), 4).sum().backward()
    assert x.grad is not None and x.grad[0, 0, 2:6, 2:6].abs().sum() > 0
    assert x.grad[0, 0, 0].abs().sum() == 0  # the top row is outside the box


def test_bad_boxes_are_refused() -> None:
    with pytest.raises(ModelError, match="x1 > x0"):
        crop_regions(torch.zeros(1, 1, 8, 8), torch.tensor([[0.5, 0.0, 0.2, 1.0]]), 4)
    with pytest.raises(ModelError, match=r"\(K, 4\)"):
        crop_regions(torch.zeros(1, 1, 8, 8), torch.tensor([0.0, 0.0, 1.0, 1.0]), 4)


def test_random_boxes_are_squares_inside_the_face() -> None:
    b = random_boxes(64, 5, (0.6, 0.8), generator=torch.Generator().manual_seed(0))
    assert b.shape == (64, 5, 4)
    side_x, side_y = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    torch.testing.assert_close(side_x, side_y)
    assert side_x.min() >= 0.6 and side_x.max() <= 0.8
    assert b.min() >= 0 and b.max() <= 1
    with pytest.raises(ModelError, match="scale"):
        random_boxes(1, 1, (0.0, 0.5))


def test_landmark_boxes_centre_and_clamp() -> None:
    pts = torch.tensor([[[24.0, 24.0], [0.0, 47.0], [float("nan"), 10.0]]])  # (1, 3, 2) on 48x48
    b = landmark_boxes(pts, (48, 48), side=0.5)
    torch.testing.assert_close(b[0, 0], torch.tensor([0.25, 0.25, 0.75, 0.75]))
    # a corner point: the box is shifted inside, size kept
    torch.testing.assert_close(b[0, 1], torch.tensor([0.0, 0.5, 0.5, 1.0]))
    # a missing point becomes the centre
    torch.testing.assert_close(b[0, 2], torch.tensor([0.25, 0.25, 0.75, 0.75]))


# ------------------------------------------------------------------------------ model
def test_outputs_and_boxes() -> None:
    model = small().eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 48, 48))
    k = len(RAN_FIXED_BOXES)
    assert out.logits.shape == (3, 8)
    assert out.attention_weights.shape == (3, 1 + k)  # whole face first
    assert out.extras["relation_weights"].shape == (3, 1 + k)
    assert out.boxes.shape == (3, 1 + k, 4)
    torch.testing.assert_close(out.boxes[0, 0], torch.tensor([0.0, 0.0, 48.0, 48.0]))
    torch.testing.assert_close(out.boxes[0, 1], torch.tensor(RAN_FIXED_BOXES[0]) * 48)
    assert ((out.attention_weights > 0) & (out.attention_weights < 1)).all()  # sigmoid, Eq. 1


def test_equations_1_to_4_by_recomputation() -> None:
    """mu = sigmoid(F q0); F_m = sum mu F / sum mu; nu = sigmoid([F:F_m] q1);
    P = sum mu nu [F:F_m] / sum mu nu -- recomputed from the model's own layers."""
    model = small().eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        out = model(x)
        crops = crop_regions(x, model.fixed_boxes, 48).flatten(0, 1)
        feats = torch.cat([model.embed(x).unsqueeze(1), model.embed(crops).view(2, -1, model.alpha.in_features)], 1)
        mu = torch.sigmoid(feats @ model.alpha.weight.T + model.alpha.bias).squeeze(-1)
        f_m = (mu[..., None] * feats).sum(1) / mu.sum(1, keepdim=True)
        pair = torch.cat([feats, f_m[:, None].expand_as(feats)], -1)
        nu = torch.sigmoid(pair @ model.beta.weight.T + model.beta.bias).squeeze(-1)
        p = ((mu * nu)[..., None] * pair).sum(1) / (mu * nu).sum(1, keepdim=True)
    torch.testing.assert_close(out.attention_weights, mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.extras["relation_weights"], nu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.features, p, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, model.head(p), rtol=1e-4, atol=1e-5)


def test_p_is_a_convex_combination_of_the_region_pairs() -> None:
    model = small().eval()
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        out = model(x)
        crops = crop_regions(x, model.fixed_boxes, 48).flatten(0, 1)
        d = model.alpha.in_features
        feats = torch.cat([model.embed(x).unsqueeze(1), model.embed(crops).view(4, -1, d)], 1)
    # the first half of P is a weighted mean of the region features: inside their range per dim
    p = out.features[:, :d]
    assert (p >= feats.min(1).values - 1e-5).all() and (p <= feats.max(1).values + 1e-5).all()
    # the second half is F_m itself, the same in every pair, so P keeps it exactly
    f_m = (out.attention_weights[..., None] * feats).sum(1) / out.attention_weights.sum(1, keepdim=True)
    torch.testing.assert_close(out.features[:, d:], f_m, rtol=1e-4, atol=1e-5)


def test_one_region_dominates_when_its_weight_does() -> None:
    """With weights concentrated on one region, P is that region's pair (limit of Eq. 4)."""
    model = small().eval()
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        model.beta.weight.zero_()
        model.beta.bias.fill_(0.0)  # nu = 0.5 everywhere
        d = model.alpha.in_features
        crops = crop_regions(x, model.fixed_boxes, 48).flatten(0, 1)
        feats = torch.cat([model.embed(x).unsqueeze(1), model.embed(crops).view(1, -1, d)], 1)
        # make alpha respond to the direction of region 3 only, with a huge gain
        target = feats[0, 3] - feats[0].mean(0)
        model.alpha.weight.copy_(1e4 * target[None] / target.norm())
        model.alpha.bias.fill_(-1e4 * float((feats[0, 3] * target).sum() / target.norm()) + 50.0)
        out = model(x)
    assert int(out.attention_weights[0].argmax()) == 3
    torch.testing.assert_close(out.features[0, :d], feats[0, 3], rtol=1e-3, atol=1e-3)


def test_without_relation_attention_classifies_f_m() -> None:
    model = small(relation=False).eval()
    assert model.beta is None
    with torch.no_grad():
        out = model(torch.randn(2, 1, 48, 48))
    assert "relation_weights" not in out.extras
    assert out.features.shape == (2, model.alpha.in_features)
    torch.testing.assert_close(model.head(out.features), out.logits)


def test_official_softmax_option_normalises_weights() -> None:
    model = small(softmax_weights=True).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 48, 48))
    torch.testing.assert_close(out.attention_weights.sum(1), torch.ones(2))
    torch.testing.assert_close(out.extras["relation_weights"].sum(1), torch.ones(2))


def test_random_regions_fresh_in_training_fixed_in_eval(tmp_path) -> None:
    model = small(regions="random", num_regions=4, random_scale=(0.6, 0.9))
    x = torch.randn(2, 1, 48, 48)
    model.train()
    with torch.no_grad():
        b1, b2 = model(x).boxes, model(x).boxes
    assert b1.shape == (2, 5, 4) and not torch.allclose(b1, b2)
    assert not torch.allclose(b1[0], b1[1])  # different crops per image
    model.eval()
    with torch.no_grad():
        e1, e2 = model(x), model(x)
    torch.testing.assert_close(e1.logits, e2.logits)
    torch.testing.assert_close(e1.boxes[0, 1:] / 48, model.fixed_boxes)
    # the evaluation boxes are part of the weights: a fresh model with another seed loads them
    other = small(regions="random", num_regions=4, random_scale=(0.6, 0.9), random_seed=5)
    assert not torch.allclose(other.fixed_boxes, model.fixed_boxes)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.fixed_boxes, model.fixed_boxes)


def test_landmark_regions() -> None:
    model = small(regions="landmarks", landmark_side=0.5).eval()
    x = torch.randn(2, 1, 48, 48)
    with pytest.raises(ModelError, match="landmarks"):
        model(x)
    pts = torch.tensor([[[12.0, 12.0], [36.0, 12.0], [24.0, 36.0]]]).expand(2, -1, -1)
    with torch.no_grad():
        out = model(x, landmarks=pts)
    assert out.boxes.shape == (2, 4, 4)
    torch.testing.assert_close(out.boxes[0, 1], torch.tensor([0.0, 0.0, 24.0, 24.0]))


def test_smaller_crops_and_other_input_sizes() -> None:
    model = create_model("ran_resnet18", width=0.125, crop_size=32).eval()
    with torch.no_grad():
        for side in (40, 64):
            out = model(torch.randn(1, 1, side, side))
            assert out.logits.shape == (1, 8)
            torch.testing.assert_close(out.boxes[0, 0], torch.tensor([0.0, 0.0, side, side], dtype=torch.float32))


def test_bad_options() -> None:
    with pytest.raises(ModelError, match="regions"):
        small(regions="grid")
    with pytest.raises(ModelError, match="x1 > x0"):
        small(boxes=[[0.5, 0.5, 0.1, 0.9]])


# ------------------------------------------------------------------------------ loss
def test_region_biased_loss_by_hand() -> None:
    # row 0: mu_0 = 0.5, mu_max = 0.6  -> max(0, 0.1 - 0.1)  = 0
    # row 1: mu_0 = 0.7, mu_max = 0.65 -> max(0, 0.1 + 0.05) = 0.15
    # row 2: mu_0 = 0.2, mu_max = 0.9  -> max(0, 0.1 - 0.7)  = 0
    mu = torch.tensor([[0.5, 0.6, 0.55], [0.7, 0.65, 0.6], [0.2, 0.9, 0.1]], requires_grad=True)
    loss = region_biased_loss(mu, alpha=0.1)
    assert float(loss.detach()) == pytest.approx(0.15 / 3, abs=1e-7)
    loss.backward()
    # only row 1 is active: d/d mu_0 = +1/3, d/d mu_max (= column 1) = -1/3
    expected = torch.zeros(3, 3)
    expected[1, 0], expected[1, 1] = 1 / 3, -1 / 3
    torch.testing.assert_close(mu.grad, expected)
    assert float(region_biased_loss(mu.detach(), alpha=0.5)) == pytest.approx((0.4 + 0.55 + 0.0) / 3)


def test_ran_loss_adds_weighted_rb_to_ce() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    mu = torch.tensor([[0.5, 0.55], [0.3, 0.2]])  # rb rows: 0.05, 0.2 -> mean 0.125
    out = ModelOutput(logits=logits, attention_weights=mu)
    batch = {"label": torch.tensor([2, 0])}
    ce = F.cross_entropy(logits, batch["label"])
    loss, parts = RANLoss("hard", alpha=0.1, rb_weight=2.0)(out, batch)
    assert float(loss) == pytest.approx(float(ce) + 2.0 * 0.125, rel=1e-6)
    assert parts["rb"] == pytest.approx(0.125) and parts["ce"] == pytest.approx(float(ce))
    loss0, _ = build_loss("ran", target="hard", rb_weight=0.0)(out, batch)  # ablation: no L_RB
    assert float(loss0) == pytest.approx(float(ce))
    with pytest.raises(ConfigError, match="attention_weights"):
        RANLoss("hard")(ModelOutput(logits=logits), batch)
    with pytest.raises(ConfigError, match=">= 0"):
        RANLoss("hard", alpha=-1)


def test_every_parameter_learns_through_the_ran_loss() -> None:
    model = small().train()
    out = model(torch.randn(4, 1, 48, 48))
    loss, parts = RANLoss("hard")(out, {"label": torch.tensor([0, 1, 2, 3])})
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing
    assert set(parts) == {"ce", "rb"}


def test_trains_in_the_common_engine_and_logs_the_region_biased_loss(tmp_path) -> None:
    """No per-method script: the engine trains RAN through its registered model and loss."""
    import csv
    from pathlib import Path

    from robustfer.cli import main
    from robustfer.runtime.checkpoint import load_model

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_quickstart.yaml"
    assert main(["train", "--config", str(recipe), "--output-dir", str(tmp_path), "--name", "ran",
                 "model.name=ran_compact_cnn", "model.options.width=0.25", "model.options.crop_size=32",
                 "loss.name=ran", "loss.options.alpha=0.1", "train.epochs=1", "train.max_steps_per_epoch=3",
                 "train.progress=false", "eval.occluders=none", "eval.plots=false"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ran" / "metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["train_rb"]) >= 0 and float(rows[0]["train_ce"]) > 0
    model, meta = load_model(tmp_path / "ran" / "best.safetensors")
    assert meta.model_name == "ran_compact_cnn" and meta.model_options["crop_size"] == 32
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 48, 48)).attention_weights.shape == (1, 8)
