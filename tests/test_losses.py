"""Losses against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustfer.errors import ConfigError
from robustfer.losses import ClassificationLoss, build_loss, soft_cross_entropy
from robustfer.models import ModelOutput

# A 2x3 example. Row 0: logits (1, 2, 3); row 1: logits (0, 1, 0).
LOGITS = [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]
LABELS = [2, 0]


def lse(row: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in row))


# log_softmax by hand: x_c - log(sum_k exp(x_k))
#   row 0: log(e + e^2 + e^3) = 3.40760596...; log p = (-2.4076, -1.4076, -0.4076)
#   row 1: log(1 + e + 1)     = 1.55144471...; log p = (-1.5514, -0.5514, -1.5514)
LOGP = [[v - lse(row) for v in row] for row in LOGITS]


def logits() -> torch.Tensor:
    return torch.tensor(LOGITS, dtype=torch.float64)


def out() -> ModelOutput:
    return ModelOutput(logits=torch.tensor(LOGITS))


def test_hand_log_softmax_is_right() -> None:
    assert lse(LOGITS[0]) == pytest.approx(3.4076059644443806)
    assert lse(LOGITS[1]) == pytest.approx(math.log(2 + math.e))
    torch.testing.assert_close(F.log_softmax(logits(), -1), torch.tensor(LOGP, dtype=torch.float64))


def test_soft_cross_entropy_by_hand() -> None:
    target = [[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]
    # row 0: -(0.5 * log p_0 + 0.5 * log p_1) = -(0.5 * (1 - L0) + 0.5 * (2 - L0)) = L0 - 1.5
    row0 = lse(LOGITS[0]) - 1.5
    # row 1: -(0.25 * (1 - L1) + 0.75 * (0 - L1)) = L1 - 0.25
    row1 = lse(LOGITS[1]) - 0.25
    expected = (row0 + row1) / 2
    got = soft_cross_entropy(logits(), torch.tensor(target, dtype=torch.float64))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx((1.9076059644443806 + 1.3014447136551207) / 2)


def test_hard_target_by_hand_and_matches_torch() -> None:
    loss, parts = ClassificationLoss("hard")(out(), {"label": torch.tensor(LABELS)})
    # -(log p[0][2] + log p[1][0]) / 2 = ((L0 - 3) + (L1 - 0)) / 2
    expected = ((lse(LOGITS[0]) - 3) + lse(LOGITS[1])) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    ref = F.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS))
    torch.testing.assert_close(loss, ref)
    assert parts == {"ce": pytest.approx(expected, rel=1e-6)}


def test_one_hot_soft_target_equals_hard() -> None:
    one_hot = F.one_hot(torch.tensor(LABELS), 3).float()
    soft, _ = ClassificationLoss("soft")(out(), {"soft": one_hot})
    hard, _ = ClassificationLoss("hard")(out(), {"label": torch.tensor(LABELS)})
    torch.testing.assert_close(soft, hard)


def test_soft_target_by_hand() -> None:
    target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])
    loss, _ = ClassificationLoss("soft")(out(), {"soft": target})
    expected = ((lse(LOGITS[0]) - 1.5) + (lse(LOGITS[1]) - 0.25)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_hard_by_hand() -> None:
    eps = 0.1
    loss, _ = ClassificationLoss("hard", label_smoothing=eps)(out(), {"label": torch.tensor(LABELS)})
    # target = (1 - eps) * one_hot + eps / 3 on every class
    rows = []
    for logp, y in zip(LOGP, LABELS):
        t = [(1 - eps) * (c == y) + eps / 3 for c in range(3)]
        rows.append(-sum(tc * lc for tc, lc in zip(t, logp)))
    assert float(loss) == pytest.approx(sum(rows) / 2, rel=1e-6)
    # row 0 worked out: -(0.0333 * -2.4076 + 0.0333 * -1.4076 + 0.9333 * -0.4076) = 0.50760596
    assert rows[0] == pytest.approx(lse(LOGITS[0]) - (eps / 3 * 1 + eps / 3 * 2 + (1 - eps + eps / 3) * 3))


def test_label_smoothing_soft_by_hand() -> None:
    eps = 0.3
    target = [[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]
    loss, _ = ClassificationLoss("soft", label_smoothing=eps)(out(), {"soft": torch.tensor(target)})
    rows = []
    for logp, t in zip(LOGP, target):
        ts = [(1 - eps) * tc + eps / 3 for tc in t]  # 0.45, 0.45, 0.1 for row 0
        rows.append(-sum(a * b for a, b in zip(ts, logp)))
    assert float(loss) == pytest.approx(sum(rows) / 2, rel=1e-6)


def test_smoothed_hard_equals_smoothed_one_hot_soft() -> None:
    one_hot = F.one_hot(torch.tensor(LABELS), 3).float()
    soft, _ = ClassificationLoss("soft", label_smoothing=0.2)(out(), {"soft": one_hot})
    hard, _ = ClassificationLoss("hard", label_smoothing=0.2)(out(), {"label": torch.tensor(LABELS)})
    torch.testing.assert_close(soft, hard)


def test_class_weights_by_hand() -> None:
    w = [0.5, 1.0, 3.0]
    loss, _ = ClassificationLoss("hard", class_weights=torch.tensor(w))(out(), {"label": torch.tensor(LABELS)})
    # weighted mean: sum_i w[y_i] * nll_i / sum_i w[y_i]
    nll = [-LOGP[0][2], -LOGP[1][0]]
    expected = (w[2] * nll[0] + w[0] * nll[1]) / (w[2] + w[0])
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    ref = F.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS), weight=torch.tensor(w))
    torch.testing.assert_close(loss, ref)


def test_sample_target_with_all_mass_on_one_class() -> None:
    torch.manual_seed(0)
    loss_fn = ClassificationLoss("sample")
    target = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    expected = ((lse(LOGITS[0]) - 3) + lse(LOGITS[1])) / 2  # CE of labels (2, 0)
    for _ in range(20):
        loss, _ = loss_fn(out(), {"soft": target})
        assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_sample_target_draws_from_the_distribution() -> None:
    # 4000 copies of row 0 with target (0.25, 0.75, 0): each row's loss is -log p_0 or -log p_1,
    # so the mean is ~ 0.25 * 2.4076 + 0.75 * 1.4076 = 1.6576 (soft CE), never involving p_2.
    n = 4000
    o = ModelOutput(logits=torch.tensor([LOGITS[0]]).repeat(n, 1))
    soft = torch.tensor([[0.25, 0.75, 0.0]]).repeat(n, 1)
    torch.manual_seed(0)
    a, _ = ClassificationLoss("sample")(o, {"soft": soft})
    torch.manual_seed(0)
    b, _ = ClassificationLoss("sample")(o, {"soft": soft})
    torch.manual_seed(1)
    c, _ = ClassificationLoss("sample")(o, {"soft": soft})
    assert float(a) == float(b)  # seeded: reproducible
    assert float(a) != float(c)  # but really sampled
    # share q of class 0 draws: mean = q * 2.4076 + (1 - q) * 1.4076
    q = (float(a) - (-LOGP[0][1])) / (-LOGP[0][0] + LOGP[0][1])
    assert 0.0 <= q <= 1.0
    assert q == pytest.approx(0.25, abs=0.03)  # ~4.4 binomial standard errors
    assert float(a) == pytest.approx(0.25 * -LOGP[0][0] + 0.75 * -LOGP[0][1], abs=0.03)


def test_loss_is_differentiable() -> None:
    x = torch.tensor(LOGITS, requires_grad=True)
    loss, _ = ClassificationLoss("soft")(ModelOutput(logits=x), {"soft": torch.full((2, 3), 1 / 3)})
    loss.backward()
    # d/dx of mean soft CE = (softmax(x) - target) / B
    torch.testing.assert_close(x.grad, (torch.softmax(x.detach(), -1) - 1 / 3) / 2)


def test_unknown_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'probabilty'"):
        ClassificationLoss("probabilty")


def test_build_loss() -> None:
    assert isinstance(build_loss("ce", target="soft"), ClassificationLoss)
    with pytest.raises(ConfigError) as e:
        build_loss("cee")
    assert "'cee'" in str(e.value) and "Did you mean ce" in str(e.value)
    with pytest.raises(ConfigError, match="bad option"):
        build_loss("ce", gamma=2.0)


def test_weighted_soft_cross_entropy_matches_weighted_hard_ce_on_one_hot_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1, 1])
    w = torch.tensor([0.5, 2.0, 1.0, 3.0])
    got = soft_cross_entropy(logits, F.one_hot(y, 4).float(), w)
    assert torch.allclose(got, F.cross_entropy(logits, y, weight=w))
