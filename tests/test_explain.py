"""``robustfer explain``: attention drawings for RAN, SCAN-CCI, AHA, PhaNet and plain models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustfer.cli import main
from robustfer.data.labels import class_names
from robustfer.data.transforms import Preprocess
from robustfer.runtime.checkpoint import CheckpointMeta, save_model
from robustfer.explain import explain_image
from robustfer.inference import Recognizer
from robustfer.models import create_model

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {
    "ran_compact_cnn": {"width": 0.25},
    "scan_cci_resnet18": {"width": 0.25},
    "compact_cnn": {"width": 0.25},
    "aha_compact_cnn": {"width": 0.25},
    "phanet_compact": {"depth": 7, "growth_rate": 4},
}


def checkpoint(tmp_path: Path, name: str, **extra: object) -> Path:
    torch.manual_seed(0)
    options = {**CASES[name], **extra}
    model = create_model(name, num_classes=8, in_chans=1, **options).eval()
    path = tmp_path / f"{name}.safetensors"
    save_model(path, model, CheckpointMeta(name, options, class_names(8), Preprocess(), {}, 0, {}))
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_explain_writes_a_png_per_face(tmp_path: Path, name: str) -> None:
    ckpt = checkpoint(tmp_path, name)
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLES / "grace_hopper.jpg"), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["grace_hopper_explain.png"]
    from PIL import Image

    with Image.open(pngs[0]) as im:
        assert im.width > 300 and im.height > 200
        # not a blank canvas: the face and the drawing vary
        assert np.asarray(im.convert("L")).std() > 10


def test_explanation_carries_the_models_attention(tmp_path: Path) -> None:
    rec = Recognizer.from_checkpoint(checkpoint(tmp_path, "ran_compact_cnn"))
    assert rec.model_name == "ran_compact_cnn"
    (e,) = explain_image(rec, SAMPLES / "grace_hopper.jpg", source="grace")
    assert e.face.shape == (48, 48) and 0 <= e.face.min() and e.face.max() <= 1
    assert e.output.attention_weights.shape == (1, 8) and e.output.boxes.shape == (1, 8, 4)
    assert e.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    # the drawing shows the same prediction the recognizer makes
    (face,) = rec.predict(SAMPLES / "grace_hopper.jpg")
    assert face.expression == e.class_names[int(np.argmax(e.probabilities))]


def test_face_crop_without_detection_and_failures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = checkpoint(tmp_path, "scan_cci_resnet18")
    crop = tmp_path / "crop.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)).save(crop)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "o"
    # a crop of noise has no face: reported, and --no-detect explains it as a whole face
    assert main(["explain", str(crop), "--checkpoint", str(ckpt), "--out", str(out)]) == 1
    assert "no face found" in capsys.readouterr().err
    assert main(["explain", str(crop), str(bad), "--checkpoint", str(ckpt), "--out", str(out), "--no-detect"]) == 1
    err = capsys.readouterr().err
    assert "bad.jpg" in err and (out / "crop_explain.png").is_file()


def test_onnx_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    assert main(["explain", str(SAMPLES / "grace_hopper.jpg"), "--checkpoint", str(onnx)]) == 2
    assert "best.safetensors" in capsys.readouterr().err


def test_aha_explanation_names_its_branches(tmp_path: Path) -> None:
    rec = Recognizer.from_checkpoint(checkpoint(tmp_path, "aha_compact_cnn"))
    (e,) = explain_image(rec, SAMPLES / "grace_hopper.jpg", model_name=rec.model_name)
    assert e.branch_names == ("global", "eye_left", "eye_right", "nose", "mouth", "mixture")
    assert e.output.region_logits.shape == (1, 6, 8) and e.output.boxes.shape == (1, 4, 4)


@pytest.mark.parametrize("fusion", ["two_step", "concat"])
def test_aha_region_labels_follow_the_fusion(tmp_path: Path, fusion: str) -> None:
    from matplotlib.figure import Figure

    from robustfer.explain import _draw_aha

    rec = Recognizer.from_checkpoint(checkpoint(tmp_path, "aha_compact_cnn", fusion=fusion))
    (e,) = explain_image(rec, SAMPLES / "grace_hopper.jpg", model_name=rec.model_name)
    fig = Figure()
    _draw_aha(fig, e)
    labels = [t.get_text() for t in fig.axes[0].texts]
    if fusion == "two_step":  # the LSTM's weight alpha_k of each region
        assert "LSTM weight" in fig.axes[0].get_title()
        assert len(labels) == 4 and all(t.startswith("\u03b1 ") for t in labels)
    else:  # concatenation has no region weights: the panel must not promise any
        assert "no LSTM weights" in fig.axes[0].get_title()
        assert labels == ["r1", "r2", "r3", "r4"]


def test_phanet_explanation_has_nested_scales(tmp_path: Path) -> None:
    rec = Recognizer.from_checkpoint(checkpoint(tmp_path, "phanet_compact"))
    (e,) = explain_image(rec, SAMPLES / "grace_hopper.jpg", model_name=rec.model_name)
    b = e.output.boxes[0]
    assert b.shape == (3, 4) and e.output.attention_weights.shape == (1, 3)
    # each scale's square lies inside the previous one
    for i in (1, 2):
        assert (b[i, :2] >= b[i - 1, :2] - 1e-3).all() and (b[i, 2:] <= b[i - 1, 2:] + 1e-3).all()


def test_explain_takes_a_shipped_models_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLES / "grace_hopper.jpg"), "--checkpoint", "default", "--out", str(out)]) == 0
    assert [p.name for p in out.glob("*.png")] == ["grace_hopper_explain.png"]
    assert main(["explain", str(SAMPLES / "grace_hopper.jpg"), "--checkpoint", "nope", "--out", str(out)]) == 2
