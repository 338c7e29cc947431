"""EMA, mixup/CutMix, the clean/occluded consistency loss and distillation: the pieces
(robustfer.engine.regularize) and the engine running with them on the synthetic dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustfer.data.preprocess import Preprocess
from robustfer.data.transforms import AugmentConfig, TrainTransform
from robustfer.engine import train as train_mod
from robustfer.engine.regularize import ModelEma, consistency_kl, distill_kl, mix_batch
from robustfer.runtime.checkpoint import load_model, read_meta

def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ pieces
def test_ema_follows_the_weights_with_warmed_up_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, 0.9)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked += 5
    ema.update(model)
    d = min(0.9, 2 / 11)  # warm-up: (1 + n) / (10 + n) after the first update
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * model[0].weight)
    assert int(ema.module[1].num_batches_tracked) == int(model[1].num_batches_tracked)
    assert not any(p.requires_grad for p in ema.module.parameters())
    other = ModelEma(model, 0.9)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.module[0].weight, ema.module[0].weight) and other.updates == 1
    with pytest.raises(Exception, match="decay must lie in"):
        ModelEma(model, 1.0)


def test_mixup_mixes_pairs_and_cutmix_pastes_a_box_of_the_reported_area():
    x = torch.arange(4 * 1 * 8 * 8, dtype=torch.float32).reshape(4, 1, 8, 8)
    same, perm, lam = mix_batch(x, 0.0, 0.0, 1.0, np.random.default_rng(0))
    assert same is x and perm is None and lam == 1.0
    same, perm, _ = mix_batch(x, 0.4, 0.0, 0.0, np.random.default_rng(0))  # mix_prob 0
    assert perm is None
    mixed, perm, lam = mix_batch(x, 0.4, 0.0, 1.0, np.random.default_rng(0))
    assert 0 < lam < 1 and sorted(perm.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    for seed in range(5):
        cut, perm, lam = mix_batch(x, 0.0, 1.0, 1.0, np.random.default_rng(seed))
        pasted = (cut != x).any(dim=0).any(dim=0)  # pixels that came from another face
        changed = perm.tolist() != [0, 1, 2, 3]
        if changed:
            assert 1 - lam == pytest.approx(pasted.float().mean().item(), abs=1e-6) or pasted.sum() == 0
        assert torch.equal(cut[:, :, ~pasted], x[:, :, ~pasted])


def test_consistency_pulls_only_the_occluded_view():
    clean = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    occ = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    assert float(consistency_kl(clean, clean.detach().clone())) == pytest.approx(0.0, abs=1e-7)
    loss = consistency_kl(clean, occ)
    assert float(loss.detach()) > 0
    loss.backward()
    assert clean.grad is None and occ.grad is not None and occ.grad.abs().sum() > 0


def test_distillation_term_is_zero_when_the_student_matches_the_teacher():
    z = torch.randn(5, 8)
    t = 3.0
    p = torch.softmax(z / t, dim=-1)
    assert float(distill_kl(z, p, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_kl(torch.zeros(5, 8), p, t)) > 0


def test_pair_views_share_the_augmentation_and_differ_by_the_occluder():
    rng = np.random.default_rng(0)
    face = rng.integers(60, 200, (48, 48, 1), dtype=np.uint8)
    pre = Preprocess(48, 1, (0.5,), (0.5,), "loose", 1.05, 0.0)
    aug = AugmentConfig(hflip=1.0, scale=(1.0, 1.0), translate=0.0, rotate=0.0, brightness=0.0, contrast=0.0)
    tr = TrainTransform(pre, aug)
    np.random.seed(1)
    clean, occ = tr.pair(face, ["mask"])
    expected = torch.from_numpy((face[:, ::-1, 0].astype(np.float32) / 255.0 - 0.5) / 0.5)
    assert torch.allclose(clean[0], expected, atol=1e-6)  # flipped, not occluded
    diff = (clean != occ)[0]
    assert diff.any(), "the occluded view has no occluder"
    assert diff[:20].float().mean() < diff[28:].float().mean()  # a mask covers the lower face


# ------------------------------------------------------------------ the engine
def test_ema_run_logs_both_weights_and_keeps_the_better(tmp_path, quick_train):
    assert quick_train(tmp_path, "ema", "train.epochs=3", "train.ema=0.9")[0] == 0
    rs = rows(tmp_path / "ema")
    assert all(r["weights"] in ("ema", "raw") for r in rs)
    best = [r for r in rs if r["best"] == "True"][-1]
    chosen = float(best["val_ema_accuracy"] if best["weights"] == "ema" else best["val_accuracy"])
    meta = read_meta(tmp_path / "ema" / "best.safetensors")
    assert meta.metrics["val_accuracy"] == pytest.approx(chosen)
    assert chosen == max(float(best["val_ema_accuracy"]), float(best["val_accuracy"]))
    # best.safetensors holds the selected weights: they score the chosen accuracy on validation
    from robustfer.engine.config import load_config
    from robustfer.engine.data import build_train_val
    from robustfer.engine.evaluate import dataset_metrics, predict_dataset

    cfg = load_config(tmp_path / "ema" / "config.yaml")
    _, val = build_train_val(cfg.data)
    model, meta = load_model(tmp_path / "ema" / "best.safetensors")
    out = predict_dataset(model, val, meta.preprocess, torch.device("cpu"), 64, progress=False)
    assert dataset_metrics(val, out)["accuracy"] == pytest.approx(chosen)


def test_mixing_and_distillation_train_and_resume_exactly(tmp_path, capsys, monkeypatch, quick_train):
    """mixup/CutMix draws and the EMA travel in last.pt: a run killed after epoch 1 and run
    again ends with the weights of an uninterrupted run; a teacher checkpoint distils."""
    assert quick_train(tmp_path, "teacher", "train.epochs=1")[0] == 0
    extra = ["train.epochs=2", "train.ema=0.9", "train.mixup=0.4", "train.cutmix=1.0",
             f"distill.teachers=[{tmp_path / 'teacher'}]", "distill.weight=0.5"]
    assert quick_train(tmp_path / "b", "s", *extra)[0] == 0
    real_save = train_mod.save_training_state

    def save_then_die(path, state):
        real_save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_training_state", save_then_die)
    assert quick_train(tmp_path / "a", "s", *extra)[0] == 130
    monkeypatch.setattr(train_mod, "save_training_state", real_save)
    assert quick_train(tmp_path / "a", "s", *extra)[0] == 0
    a, b = rows(tmp_path / "a" / "s"), rows(tmp_path / "b" / "s")
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert float(a[0]["train_distill"]) > 0
    sa = torch.load(tmp_path / "a" / "s" / "last.pt", weights_only=False)
    sb = torch.load(tmp_path / "b" / "s" / "last.pt", weights_only=False)
    for k, v in sa["ema"]["weights"].items():
        assert torch.equal(v, sb["ema"]["weights"][k]), k


def test_consistency_run_logs_both_views(tmp_path, quick_train):
    assert quick_train(tmp_path, "c", "train.epochs=1", "train.consistency=1.0")[0] == 0
    r = json.loads((tmp_path / "c" / "metrics.jsonl").read_text().splitlines()[0])
    assert r["train_consistency"] >= 0 and r["train_occluded_ce"] > 0


@pytest.mark.parametrize("override, expected", [
    (["train.consistency=1", "train.mixup=0.2"], "use one or the other"),
    (["train.cutmix=-1"], "out-of-range"),
    (["distill.teachers=[nowhere/at/all.safetensors]"], "does not exist"),
    (["distill.teachers=[default]"], "student's label space"),  # the shipped model has 8 classes, synthetic 7
    (["distill.teachers=[default]", "data.input_size=40"], "expects input"),
])
def test_bad_regularisation_settings_say_what_to_fix(tmp_path, capsys, override, expected, quick_train):
    rc, _ = quick_train(tmp_path, "bad", "train.epochs=1", *override)
    assert rc == 2
    assert expected in capsys.readouterr().err
