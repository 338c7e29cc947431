"""PhaNet (models/phanet.py), its boxcar crop (layers/boxcar.py) and its loss (losses.PhaNetLoss).

Tiny DenseNets (depth 7: one layer per block, growth rate 4) on 32 px inputs keep every test
well under a second; the real-face overfit check at the end needs ../shared/data.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustfer.models.phanet  # noqa: F401  (registers the phanet_* builders)
from robustfer.errors import ConfigError, ModelError
from robustfer.layers.boxcar import boxcar_crop, boxcar_mask
from robustfer.losses import PhaNetLoss, attention_ranking_loss, build_loss, dcml_constraint
from robustfer.models import ModelOutput, create_model
from robustfer.models.phanet import DenseNet, PhaNet
from robustfer.models.schedule import Phase, TrainingSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 32
TINY = {"depth": 7, "growth_rate": 4, "apn_grid": 2, "apn_hidden": 8}


def tiny(**options: object) -> PhaNet:
    torch.manual_seed(0)
    return create_model("phanet_compact", num_classes=8, in_chans=1, **{**TINY, **options})  # type: ignore[return-value]


def batch(n: int = 4, pose: list[int] | None = None) -> dict[str, torch.Tensor]:
    y = torch.arange(n) % 8
    return {"label": y, "soft": F.one_hot(y, 8).float(), "index": torch.arange(n),
            "pose_bin": torch.tensor(pose if pose is not None else [i % 5 for i in range(n)])}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def groups(model: PhaNet) -> tuple[list[str], list[str]]:
    """Parameter names of the APNs and of everything else."""
    names = [n for n, _ in model.named_parameters()]
    return [n for n in names if n.startswith("apns.")], [n for n in names if not n.startswith("apns.")]


# ---------------------------------------------------------------------- boxcar crop (Eq. 5)
def test_boxcar_mask_by_hand() -> None:
    centre, half = torch.tensor([[4.0, 3.0]]), torch.tensor([2.0])
    m = boxcar_mask(centre, half, (6, 8), k=1.0)
    assert m.shape == (1, 1, 6, 8)
    # pixel (row 1, col 5): centre (5.5, 1.5); x_tl = 2, x_br = 6, y_tl = 1, y_br = 5
    sig = torch.sigmoid
    expected = (sig(torch.tensor(3.5)) - sig(torch.tensor(-0.5))) * (sig(torch.tensor(0.5)) - sig(torch.tensor(-3.5)))
    torch.testing.assert_close(m[0, 0, 1, 5], expected)
    sharp = boxcar_mask(centre, half, (6, 8), k=100.0)[0, 0]
    inside = torch.zeros(6, 8)
    inside[1:5, 2:6] = 1.0  # the pixels whose centres are inside the square
    torch.testing.assert_close(sharp, inside, atol=1e-6, rtol=0)


def test_boxcar_crop_of_the_whole_image_and_a_quadrant() -> None:
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    whole = boxcar_crop(x, torch.tensor([[4.0, 4.0]]), torch.tensor([4.0]), k=100.0)
    torch.testing.assert_close(whole, x)
    quad = boxcar_crop(x, torch.tensor([[2.0, 2.0]]), torch.tensor([2.0]), (4, 4), k=100.0)
    torch.testing.assert_close(quad[0, 0], x[0, 0, :4, :4])
    # zoomed 2x: each output pixel centre falls a quarter pixel from an input centre
    zoom = boxcar_crop(x, torch.tensor([[2.0, 2.0]]), torch.tensor([2.0]), (8, 8), k=100.0)
    assert zoom.shape == (1, 1, 8, 8)
    torch.testing.assert_close(zoom[0, 0, 1:-1:2, 1:-1:2], x[0, 0, :3, :3] + 0.25 * (8 + 1))


def test_boxcar_crop_is_differentiable_in_x_y_l() -> None:
    torch.manual_seed(0)
    img = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    centre = torch.tensor([[2.9, 3.3], [3.1, 2.6]], dtype=torch.float64, requires_grad=True)
    half = torch.tensor([1.7, 2.2], dtype=torch.float64, requires_grad=True)

    def fn(i: torch.Tensor, c: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return boxcar_crop(i, c, h, (4, 4), k=2.0)

    assert torch.autograd.gradcheck(fn, (img, centre, half), eps=1e-6, atol=1e-5)
    fn(img, centre, half).sum().backward()
    assert bool((centre.grad.abs() > 0).all()) and bool((half.grad.abs() > 0).all())


def test_boxcar_crop_refuses_bad_shapes() -> None:
    with pytest.raises(ModelError, match="centre"):
        boxcar_crop(torch.zeros(2, 1, 8, 8), torch.zeros(1, 2), torch.ones(2))
    with pytest.raises(ModelError, match=r"\(B, C, H, W\)"):
        boxcar_crop(torch.zeros(1, 8, 8), torch.zeros(1, 2), torch.ones(1))


# ---------------------------------------------------------------------- backbone
def test_densenet40_as_the_paper() -> None:
    net = DenseNet(40, 12, in_chans=1)
    assert net.layers_per_block == 12 and net.num_features == 16 + 3 * 12 * 12
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].kernel_size == (7, 7)  # the paper's first layer
    assert {m.kernel_size for m in convs[1:]} == {(3, 3), (1, 1)}  # dense layers and transitions
    bc = DenseNet(40, 12, bottleneck=True, compression=0.5)
    assert bc.layers_per_block == 6
    assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 448, 4, 4)
    with pytest.raises(ModelError, match="depth"):
        DenseNet(41, 12)


def test_parameter_counts_of_the_builders() -> None:
    paper = create_model("phanet_densenet40")
    assert len(paper.backbones) == 3 and n_params(paper.backbones[0]) == 1_015_616
    assert n_params(paper) == 5_025_727
    shared = create_model("phanet_densenet40", share_backbone=True)
    assert len(shared.backbones) == 1 and n_params(paper) - n_params(shared) == 2 * 1_015_616
    assert n_params(create_model("phanet_compact")) == 385_599


# ---------------------------------------------------------------------- model outputs
def test_output_shapes_and_ranges() -> None:
    model = tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, SIDE, SIDE))
    d = model.backbones[0].num_features
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (3, 8) and out.pose_logits.shape == (3, 5)
    assert out.region_logits.shape == (3, 3, 8) and out.boxes.shape == (3, 3, 4)
    assert out.attention_weights.shape == (3, 3) and out.features.shape == (3, 3 * d)
    assert out.extras["lambda"].shape == (3, 2) and out.phase is Phase.EVAL
    assert bool(((out.attention_weights > 0) & (out.attention_weights < 1)).all())  # sigmoid, Eq. 7
    torch.testing.assert_close(model.head(out.features), out.logits)
    torch.testing.assert_close(out.boxes[:, 0], torch.tensor([[0.0, 0.0, SIDE, SIDE]]).expand(3, 4))
    assert len(model.backbones) == 3  # one DenseNet per scale by default, as the paper


def test_batch_of_one() -> None:
    model = tiny().eval()
    x = torch.randn(3, 1, SIDE, SIDE)
    with torch.no_grad():
        one, three = model(x[:1]), model(x)
    assert one.logits.shape == (1, 8)
    torch.testing.assert_close(one.logits, three.logits[:1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(one.boxes, three.boxes[:1], rtol=1e-4, atol=1e-4)
    model = tiny(schedule="joint").train()
    loss, _ = PhaNetLoss("hard")(model(x[:1]), batch(1))
    loss.backward()
    assert torch.isfinite(loss)


def test_joint_representation_is_eq_6_to_8() -> None:
    model = tiny().eval()
    x = torch.randn(2, 1, SIDE, SIDE)
    with torch.no_grad():
        out = model(x)
        d = model.backbones[0].num_features
        g1 = model.backbones[0](x).mean(dim=(2, 3))
        cat = out.features / out.attention_weights.repeat_interleave(d, dim=1)  # undo c_i (Eq. 8)
        torch.testing.assert_close(cat[:, :d], g1, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.sigmoid(model.sal(cat)), out.attention_weights, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.region_logits[:, 0], model.scale_heads[0](g1), rtol=1e-4, atol=1e-5)


def _set_apn(model: PhaNet, tx: float, ty: float, side: float) -> None:
    """Make both APNs output the same square, whatever the input."""
    for apn in model.apns:
        with torch.no_grad():
            apn.fc2.weight.zero_()
            s = (side - apn.lo) / (apn.hi - apn.lo)
            apn.fc2.bias.copy_(torch.tensor([tx, ty, math.log(s / (1 - s))]))


def test_boxes_map_back_to_the_original_image_by_hand() -> None:
    model = tiny(side_range=(1 / 3, 1.0)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 48, 48))  # initial squares: centred, side 0.75
        # scale 2: side 36 centred -> (6, 6, 42, 42); scale 3: the same square of that crop,
        # which shows 36 original pixels over 48: 6 + 6 * 0.75 = 10.5, 6 + 42 * 0.75 = 37.5
        torch.testing.assert_close(out.boxes[0], torch.tensor([[0.0, 0, 48, 48], [6, 6, 42, 42],
                                                               [10.5, 10.5, 37.5, 37.5]]), atol=0.05, rtol=0)
        _set_apn(model, 50.0, 0.0, 0.5)  # half the side, pushed to the right edge, centred vertically
        out = model(torch.randn(1, 1, 48, 48))
        # scale 2: (24, 12, 48, 36); scale 3: (24, 12, 48, 36) of a crop at scale 24/48 -> +24, +12
        torch.testing.assert_close(out.boxes[0, 1:], torch.tensor([[24.0, 12, 48, 36], [36, 18, 48, 30]]),
                                   atol=1e-3, rtol=0)


def test_boxes_are_nested_and_within_bounds() -> None:
    model = tiny(side_range=(0.4, 0.9), init_side=0.6).eval()
    with torch.no_grad():
        for apn in model.apns:  # random, far-reaching squares
            apn.fc2.weight.normal_(0, 5.0)
            apn.fc2.bias.normal_(0, 3.0)
        b = model(torch.randn(16, 1, SIDE, SIDE)).boxes  # (16, 3, 4)
    for s in (1, 2):
        outer, inner = b[:, s - 1], b[:, s]
        assert bool((inner[:, :2] >= outer[:, :2] - 1e-4).all() and (inner[:, 2:] <= outer[:, 2:] + 1e-4).all())
        ratio = (inner[:, 2] - inner[:, 0]) / (outer[:, 2] - outer[:, 0])
        assert bool(((ratio >= 0.4 - 1e-4) & (ratio <= 0.9 + 1e-4)).all())
        torch.testing.assert_close(inner[:, 2] - inner[:, 0], inner[:, 3] - inner[:, 1])  # squares
    assert not torch.allclose(b[0], b[1])  # the squares depend on the image


def test_lambda_constraints_hold_for_any_input() -> None:
    model = tiny().eval()
    x = torch.randn(6, 1, SIDE, SIDE) * 100
    for scale, bias in [(0.0, 1e4), (0.0, -1e4), (1e3, 0.0), (1.0, 0.0), (0.0, 0.0)]:
        with torch.no_grad():
            model.lambda_layer.weight.normal_(0, 1).mul_(scale)
            model.lambda_layer.bias.fill_(bias)
            lam = model(x).extras["lambda"]
        lam_e, lam_p = lam[:, 0], lam[:, 1]
        torch.testing.assert_close(lam_e + lam_p, torch.ones(6))
        assert bool(((lam_e >= lam_p) & (lam_p >= 0)).all()), lam
    assert float(lam_p[0]) == pytest.approx(0.25)  # sigmoid(0) / 2 at zero weights and bias


# ---------------------------------------------------------------------- loss
def test_attention_ranking_loss_by_hand() -> None:
    # pairs: 0.5 -> 0.7 (0), 0.6 -> 0.58 (0.07), 0.3 -> 0.1 (0.25); mean 0.32 / 3
    p_prev = torch.tensor([0.5, 0.6, 0.3])
    p_next = torch.tensor([0.7, 0.58, 0.1], requires_grad=True)
    loss = attention_ranking_loss(p_prev, p_next)
    assert float(loss.detach()) == pytest.approx(0.32 / 3, abs=1e-7)
    loss.backward()
    torch.testing.assert_close(p_next.grad, torch.tensor([0.0, -1 / 3, -1 / 3]))
    # two pairs per sample (s = 2, 3): each pair's batch mean, summed
    two = attention_ranking_loss(torch.tensor([[0.5, 0.4], [0.2, 0.9]]), torch.tensor([[0.4, 0.6], [0.3, 0.2]]),
                                 margin=0.1)
    assert float(two) == pytest.approx((0.2 + 0.0) / 2 + (0.0 + 0.8) / 2)


def test_dcml_constraint_by_hand() -> None:
    v = dcml_constraint(torch.tensor([0.0, 0.25, 0.5, 1.0]))
    torch.testing.assert_close(v, torch.tensor([1.0, math.exp(-2.25), math.exp(-3.0), 1.0]))


def _hand_output(phase: Phase) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    out = ModelOutput(logits=torch.randn(4, 3), region_logits=torch.randn(4, 3, 3), pose_logits=torch.randn(4, 5),
                      attention_weights=torch.rand(4, 3),
                      extras={"lambda": torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.5, 0.5]])},
                      phase=phase)
    return out, {"label": torch.tensor([0, 1, 2, 1]), "pose_bin": torch.tensor([2, -1, 4, 0])}


@pytest.mark.parametrize("phase", list(Phase))
def test_phanet_loss_by_hand(phase: Phase) -> None:
    out, b = _hand_output(phase)
    y, known = b["label"], torch.tensor([0, 2, 3])
    ce = F.cross_entropy(out.logits, y)
    ce_s = sum(F.cross_entropy(out.region_logits[:, s], y) for s in range(3))
    p = out.region_logits.softmax(-1)[torch.arange(4), :, y]  # (4, 3) true-class probabilities
    rank = sum(float(torch.clamp(p[:, s - 1] - p[:, s] + 0.05, min=0).mean()) for s in (1, 2))
    pose = F.cross_entropy(out.pose_logits[known], b["pose_bin"][known])
    lam_e, lam_p = (0.9 + 0.8 + 0.5) / 3, (0.1 + 0.2 + 0.5) / 3
    constraint = sum(math.exp(-12 * v * (1 - v)) for v in (0.1, 0.2, 0.5)) / 3
    multi = lam_e * float(ce) + lam_p * float(pose) + constraint
    expected = {Phase.JOINT: multi + float(ce_s) + rank, Phase.EVAL: multi + float(ce_s) + rank,
                Phase.CLASSIFY: multi + float(ce_s), Phase.RANK: rank}[phase]
    loss, parts = PhaNetLoss("hard")(out, b)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert parts["ce"] == pytest.approx(float(ce), rel=1e-6) and parts["rank"] == pytest.approx(rank, rel=1e-5)
    assert parts["pose"] == pytest.approx(float(pose), rel=1e-6) and parts["constraint"] == pytest.approx(constraint)
    assert parts["lambda_e"] == pytest.approx(lam_e) and parts["lambda_p"] == pytest.approx(lam_p)
    assert parts["c2"] == pytest.approx(float(out.attention_weights[:, 1].mean()))
    assert set(parts) == {"ce", "ce_scales", "rank", "pose", "lambda_e", "lambda_p", "constraint", "c1", "c2", "c3"}


def test_loss_registry_and_errors() -> None:
    loss = build_loss("phanet", target="soft", label_smoothing=0.1, margin=0.1, rank_weight=2.0)
    assert isinstance(loss, PhaNetLoss) and loss.margin == 0.1 and loss.target == "soft"
    with pytest.raises(ConfigError, match="phanet"):
        build_loss("phanet", margn=0.1)
    with pytest.raises(ConfigError, match=">= 0"):
        PhaNetLoss(margin=-0.1)
    with pytest.raises(ConfigError, match="phanet_"):
        PhaNetLoss()(ModelOutput(logits=torch.zeros(2, 3)), {"label": torch.tensor([0, 1])})
    out, b = _hand_output(Phase.JOINT)
    with pytest.raises(ConfigError, match="num_pose_bins"):
        PhaNetLoss()(out, {**b, "pose_bin": torch.tensor([7, -1, 0, 0])})
    for magic in (torch.tensor(2), 2, "rank"):  # the phase is a Phase, not a code
        out.phase = magic  # type: ignore[assignment]
        with pytest.raises(ConfigError, match="Phase"):
            PhaNetLoss()(out, b)


# ---------------------------------------------------------------------- gradients and schedule
def test_every_parameter_gets_a_gradient_in_joint_mode() -> None:
    model = tiny(schedule="joint").train()
    assert model.training_schedule().phase_at(7) is Phase.JOINT
    out = model(torch.randn(6, 1, SIDE, SIDE), phase=Phase.JOINT)
    assert out.phase is Phase.JOINT
    loss, parts = PhaNetLoss("soft")(out, batch(6, pose=[0, 1, -1, 3, 4, 2]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, bad
    assert parts["pose"] > 0 and 0 < parts["lambda_p"] <= 0.5


def test_training_schedule_from_the_options() -> None:
    c, r = Phase.CLASSIFY, Phase.RANK
    alt = tiny(phase_steps=(2, 1)).training_schedule()
    assert alt == TrainingSchedule(((c, 2), (r, 1))) and alt.period == 3
    assert [alt.phase_at(k) for k in range(7)] == [c, c, r, c, c, r, c]
    assert tiny().training_schedule().blocks == ((c, 4), (r, 1))  # the default, [4, 1]
    assert tiny(schedule="joint").training_schedule().blocks == ((Phase.JOINT, 1),)
    with pytest.raises(ModelError, match="steps >= 1"):
        TrainingSchedule(((c, 0),))


def test_phase_defaults_and_no_hidden_state() -> None:
    model = tiny()
    x = torch.randn(2, 1, SIDE, SIDE)
    assert model.train()(x).phase is Phase.JOINT  # training mode without a phase
    with torch.no_grad():
        assert model.eval()(x).phase is Phase.EVAL  # evaluation, explain, export
    assert not any("schedule" in k for k in model.state_dict())  # the schedule lives in the engine
    with pytest.raises(ModelError, match="Phase"):
        model.train()(x, phase=2)  # type: ignore[arg-type]


def test_alternating_schedule_isolates_the_gradients() -> None:
    model = tiny(phase_steps=(2, 1)).train()
    schedule = model.training_schedule()
    apn, rest = groups(model)
    loss_fn = PhaNetLoss("hard", margin=1.0)  # margin 1: the ranking hinge is active for every sample
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    x = torch.randn(4, 1, SIDE, SIDE)
    seen = []
    for step in range(6):
        out = model(x, phase=schedule.phase_at(step))
        loss, _ = loss_fn(out, batch(4))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        phase = out.phase
        seen.append(phase)
        if phase is Phase.CLASSIFY:
            assert all(grads[n] is None for n in apn), "APN parameters learnt in a classification step"
            assert all(grads[n] is not None for n in rest)
        else:
            assert phase is Phase.RANK
            assert all(grads[n] is None for n in rest), "non-APN parameters learnt in a ranking step"
            assert all(grads[n] is not None and bool(grads[n].abs().sum() > 0) for n in apn)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        frozen = apn if phase is Phase.CLASSIFY else rest
        assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if n in frozen)  # no decay either
    c, r = Phase.CLASSIFY, Phase.RANK
    assert seen == [c, c, r, c, c, r]
    model.eval()
    with torch.no_grad():
        assert model(x).phase is Phase.EVAL


def test_rank_step_matches_a_normal_forward() -> None:
    """Detached parameters change what learns, not what is computed."""
    model = tiny(drop_rate=0.0).train()
    x = torch.randn(3, 1, SIDE, SIDE)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = model(x, phase=Phase.CLASSIFY)
    model.load_state_dict(state)
    b = model(x, phase=Phase.RANK)  # same batch-norm statistics
    assert a.phase is Phase.CLASSIFY and b.phase is Phase.RANK
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.boxes, b.boxes)


def test_checkpoints_with_the_old_schedule_buffer_still_load(tmp_path: Path) -> None:
    """Weights saved when the model counted its own steps (buffer ``schedule_step``) load."""
    from safetensors.torch import save_file

    from robustfer.data.transforms import Preprocess
    from robustfer.runtime.checkpoint import CheckpointMeta, load_model

    model = tiny(phase_steps=(2, 1)).eval()
    old = {**model.state_dict(), "schedule_step": torch.tensor(6)}
    fresh = tiny(phase_steps=(2, 1), side_range=(0.4, 1.0))  # other weights
    fresh.load_state_dict(old)  # strict: the old key is dropped, not unexpected
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    x = torch.randn(2, 1, SIDE, SIDE)
    meta = CheckpointMeta(model_name="phanet_compact", model_options={**TINY, "phase_steps": [2, 1]},
                          class_names=tuple(str(i) for i in range(8)), preprocess=Preprocess(SIDE, 1),
                          config={}, epoch=3, metrics={})
    path = tmp_path / "best.safetensors"
    save_file({k: v.contiguous() for k, v in old.items()}, str(path), metadata=meta.to_strings())
    loaded, _ = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
        assert loaded(x).phase is Phase.EVAL


# ---------------------------------------------------------------------- options and pose labels
def test_pose_branch_off() -> None:
    for model in (tiny(pose=False), tiny(num_pose_bins=0)):
        assert model.pose_head is None and model.lambda_layer is None
        out = model.train()(torch.randn(2, 1, SIDE, SIDE))
        assert out.pose_logits is None
        torch.testing.assert_close(out.extras["lambda"], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the pose branch is off on purpose: no warning
            _, parts = PhaNetLoss()(out, batch(2))
        assert parts["pose"] == 0 and parts["lambda_e"] == 1 and parts["lambda_p"] == 0 and parts["constraint"] == 0
    assert n_params(tiny(pose=False)) < n_params(tiny())


def test_scale_attention_off() -> None:
    model = tiny(scale_attention=False).eval()
    assert model.sal is None
    with torch.no_grad():
        out = model(torch.randn(2, 1, SIDE, SIDE))
    torch.testing.assert_close(out.attention_weights, torch.ones(2, 3))


def test_batches_without_pose_labels() -> None:
    model = tiny(schedule="joint").train()
    loss_fn = PhaNetLoss()
    x = torch.randn(3, 1, SIDE, SIDE)
    with pytest.warns(UserWarning, match="pose_file"):
        loss, parts = loss_fn(model(x), batch(3, pose=[-1, -1, -1]))
    assert parts["pose"] == 0 and parts["lambda_e"] == 1 and parts["lambda_p"] == 0 and parts["constraint"] == 0
    loss.backward()
    assert model.lambda_layer.weight.grad is None and model.pose_head.weight.grad is None
    assert model.apns[0].fc2.weight.grad is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per run, not per step
        loss_fn(model(x), batch(3, pose=[-1, -1, -1]))
        no_key = {k: v for k, v in batch(3).items() if k != "pose_bin"}
        _, parts = loss_fn(model(x), no_key)
    assert parts["lambda_p"] == 0
    labelled = PhaNetLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labelled(model(x), batch(3, pose=[1, -1, 2]))  # a first batch with labels: no warning later
        labelled(model(x), batch(3, pose=[-1, -1, -1]))


def test_share_backbone_and_crop_size() -> None:
    model = tiny(share_backbone=True, crop_size=16).eval()
    assert len(model.backbones) == 1
    with torch.no_grad():
        out = model(torch.randn(2, 1, SIDE, SIDE))
    assert out.logits.shape == (2, 8)
    torch.testing.assert_close(out.boxes[0, 1], torch.tensor([4.0, 4.0, 28.0, 28.0]), atol=0.05, rtol=0)


def test_bad_options() -> None:
    for options, match in [({"schedule": "rank"}, "schedule"), ({"phase_steps": (1, 0)}, "phase_steps"),
                           ({"side_range": (0.5, 0.4)}, "side_range"), ({"init_side": 0.2}, "init_side"),
                           ({"depth": 8}, "depth"), ({"num_pose_bins": -1}, "num_pose_bins")]:
        with pytest.raises(ModelError, match=match):
            tiny(**options)
    with pytest.raises(ModelError, match=r"\(B, C, H, W\)"):
        tiny()(torch.zeros(1, SIDE, SIDE))


def test_trains_in_the_common_engine_and_logs_its_terms(tmp_path: Path) -> None:
    """No per-method loop: the engine trains PhaNet through its registered model and loss."""
    import csv

    import yaml

    from robustfer.cli import main
    from robustfer.runtime.checkpoint import load_model

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_quickstart.yaml"
    cfg = yaml.safe_load(quickstart.read_text())
    cfg["model"] = {"name": "phanet_compact", "options": {"depth": 7, "growth_rate": 4, "phase_steps": [1, 1]}}
    recipe = tmp_path / "phanet.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(recipe), "--output-dir", str(tmp_path), "--name", "phanet",
                 "loss.name=phanet", "train.epochs=1", "train.max_steps_per_epoch=4", "data.eval=[]",
                 "train.progress=false", "eval.occluders=none", "eval.plots=false"]) == 0
    with open(tmp_path / "phanet" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    for k in ("train_ce", "train_ce_scales", "train_rank", "train_lambda_e", "train_c1", "train_constraint"):
        assert float(rows[0][k]) >= 0, k
    # the synthetic faces carry yaw bins (batch["pose_bin"]), so the pose branch trained
    assert float(rows[0]["train_pose"]) > 0 and 0 < float(rows[0]["train_lambda_p"]) <= 0.5
    model, meta = load_model(tmp_path / "phanet" / "best.safetensors")
    assert meta.model_name == "phanet_compact"
    # the engine's step count (it drives the schedule) is in the training state
    assert torch.load(tmp_path / "phanet" / "last.pt", weights_only=False)["task"] == {"step": 4}
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 48, 48)).boxes.shape == (1, 3, 4)


def test_engine_follows_the_schedule_and_a_resumed_run_continues_it(tmp_path: Path, monkeypatch) -> None:
    """The engine passes the schedule's phase to every training step (counted over the run, not
    per epoch), and a run killed after epoch 1 continues the schedule where it stopped: it ends
    with the weights of an uninterrupted run."""
    import yaml

    from robustfer.cli import main
    from robustfer.engine import train as train_mod
    from robustfer.runtime.checkpoint import load_model

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "synthetic_quickstart.yaml").read_text())
    cfg["model"] = {"name": "phanet_compact", "options": {**TINY, "phase_steps": [2, 1]}}
    recipe = str(tmp_path / "phanet.yaml")
    Path(recipe).write_text(yaml.safe_dump(cfg))
    phases: list[Phase] = []
    real_forward = PhaNet.forward

    def recording(self, x, phase=None):  # type: ignore[no-untyped-def]
        if self.training:
            phases.append(phase)
        return real_forward(self, x, phase=phase)

    monkeypatch.setattr(PhaNet, "forward", recording)

    def run(name: str) -> int:
        return main(["train", "--config", recipe, "--output-dir", str(tmp_path), "--name", name,
                     "loss.name=phanet", "train.epochs=3",
                     "train.batch_size=16", "train.max_steps_per_epoch=2", "data.train_options={size: 32}",
                     "data.eval_options={size: 16}", "data.eval=[]", "data.num_workers=0",
                     "train.progress=false", "eval.plots=false"])

    assert run("scratch") == 0
    c, r = Phase.CLASSIFY, Phase.RANK
    assert phases == [c, c, r, c, c, r]  # 3 epochs of 2 steps: the period (3) spans epochs
    phases.clear()
    real_save = train_mod.save_training_state

    def save_then_die(path, state):  # type: ignore[no-untyped-def]
        real_save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_training_state", save_then_die)
    assert run("killed") == 130
    assert run("legacy") == 130
    monkeypatch.setattr(train_mod, "save_training_state", real_save)
    assert phases == [c, c, c, c]
    # "legacy": a last.pt as written before the engine kept the schedule (no "task"; the model
    # counted its steps in a buffer): the step count comes from the LR scheduler's
    legacy = tmp_path / "legacy" / "last.pt"
    st = torch.load(legacy, weights_only=False)
    assert st.pop("task") == {"step": 2}
    st["model"]["schedule_step"] = torch.tensor(2)
    torch.save(st, legacy)
    wb, _ = load_model(tmp_path / "scratch" / "last.pt")
    for name in ("killed", "legacy"):
        phases.clear()
        assert run(name) == 0
        assert phases == [r, c, c, r], name  # epochs 2 and 3, where the schedule stood
        wa, _ = load_model(tmp_path / name / "last.pt")
        for (k, v), v2 in zip(wa.state_dict().items(), wb.state_dict().values()):
            assert torch.equal(v, v2), (name, k)
