"""Self-supervised pretraining (robustfer.engine.pretrain): the SimCLR pieces, a pretraining run
on the synthetic faces that resumes, and ``model.init`` that starts a supervised run from it."""

from __future__ import annotations

import math

import pytest
import torch

from robustfer.engine.pretrain import ProjectionHead, load_init_weights, nt_xent, strong_views
from robustfer.errors import ConfigError
from robustfer.models import create_model
from robustfer.runtime.checkpoint import load_training_state, read_meta

SSL = ("pretrain.method=simclr", "pretrain.hidden_dim=32", "train.batch_size=8")


# ------------------------------------------------------------------ pieces
def test_nt_xent_matches_equation_1():
    tau = 0.5
    z = torch.eye(2)  # two faces, each view identical to its pair, orthogonal to the other face
    # l(i, j) = -log(e^{1/tau} / (e^{1/tau} + e^0 + e^0)) for every one of the 4 anchors
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2))
    assert float(nt_xent(z, z, tau)) == pytest.approx(expected, rel=1e-6)
    # views that agree beat views that do not
    a = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    assert float(nt_xent(a, a + 0.01 * torch.randn(16, 8), 0.2)) < float(nt_xent(a, torch.randn(16, 8), 0.2))


def test_strong_views_keep_shape_are_seeded_and_identity_at_full_scale():
    x = torch.randn(4, 1, 48, 48)
    a = strong_views(x, torch.Generator().manual_seed(1), 0.35, 0.5)
    b = strong_views(x, torch.Generator().manual_seed(1), 0.35, 0.5)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)
    # full-area crop, aspect 1, no erasing: the image itself (up to the aspect jitter, clamped)
    same = strong_views(x, torch.Generator().manual_seed(2), 1.0, 0.0)
    assert same.shape == x.shape and torch.isfinite(same).all()


def test_every_parameter_gets_a_gradient_from_the_contrastive_loss():
    model = create_model("compact_cnn", num_classes=7, in_chans=1, width=0.25)
    head = ProjectionHead(model(torch.zeros(2, 1, 48, 48)).features.shape[1], 32, 16)
    x = torch.randn(8, 1, 48, 48)
    g = torch.Generator().manual_seed(0)
    z = head(model(torch.cat([strong_views(x, g, 0.35, 0.25), strong_views(x, g, 0.35, 0.25)])).features)
    nt_xent(z[:8], z[8:], 0.2).backward()
    missing = [n for n, p in list(model.named_parameters()) + list(head.named_parameters())
               if p.grad is None or not torch.any(p.grad != 0)]
    # the classifier head is not used by pretraining, and only it may lack a gradient
    assert all(n.startswith("head.") for n in missing), missing


# ------------------------------------------------------------------ the engine
def test_pretrain_run_resumes_and_initialises_a_supervised_run(tmp_path, capsys, quick_train):
    code, out = quick_train(tmp_path, "ssl", *SSL, "train.epochs=1")
    assert code == 0
    assert "pretrain epoch 1: NT-Xent" in out
    run = tmp_path / "ssl"
    meta = read_meta(run / "best.safetensors")
    assert meta.epoch == 1 and math.isfinite(meta.metrics["pretrain_loss"])
    # a longer run of the same recipe continues after epoch 1
    code, out = quick_train(tmp_path, "ssl", *SSL, "train.epochs=2")
    assert code == 0 and "resumed" in out and "pretrain epoch 2" in out and "pretrain epoch 1:" not in out
    assert load_training_state(run / "last.pt")["epoch"] == 2
    # a changed recipe does not continue the run
    code, _ = quick_train(tmp_path, "ssl", *SSL, "train.epochs=3", "pretrain.temperature=0.5")
    assert code == 2 and "different config" in capsys.readouterr().err
    # model.init: the supervised run starts from the pretrained trunk
    code, out = quick_train(tmp_path, "sup", "train.epochs=1", "train.batch_size=8", f"model.init={run}")
    assert code == 0 and "initial weights:" in out and "from " + str(run) in out


def test_model_init_refuses_a_checkpoint_of_another_model(tmp_path, quick_train):
    assert quick_train(tmp_path, "ssl", *SSL, "train.epochs=1")[0] == 0
    other = create_model("resnet18", num_classes=7, in_chans=1, width=0.25)
    with pytest.raises(ConfigError, match="shares no tensor"):
        load_init_weights(other, str(tmp_path / "ssl"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_init_weights(other, str(tmp_path / "nothing.safetensors"))


def test_bad_pretrain_settings_are_refused(tmp_path, capsys, quick_train):
    for bad, text in (("pretrain.method=byol", "use one of simclr"), ("pretrain.crop_scale=0", "crop_scale=0.0")):
        method = [] if bad.startswith("pretrain.method") else ["pretrain.method=simclr"]
        code, _ = quick_train(tmp_path, "x", "train.batch_size=8", *method, bad)
        assert code == 2 and text in capsys.readouterr().err
