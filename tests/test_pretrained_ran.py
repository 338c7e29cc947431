"""The second shipped model, ``ran``: RAN with fixed regions from the attention comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robustfer import Recognizer
from robustfer.cli import main
from robustfer.explain import explain_image
from robustfer.runtime.weights import PRETRAINED, pretrained_path

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer.from_pretrained("ran")


def test_ran_is_shipped_with_its_onnx_export() -> None:
    assert "ran" in PRETRAINED
    p = pretrained_path("ran")
    assert p.with_suffix(".onnx").is_file()


def test_ran_loads_and_predicts_on_the_samples(rec: Recognizer) -> None:
    assert rec.model_name == "ran_compact_cnn"
    assert rec.class_names == Recognizer.from_pretrained("default").class_names
    assert rec.preprocess.input_size == 48 and rec.preprocess.in_chans == 1
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        faces = rec.predict(SAMPLES / name)
        assert len(faces) == 1, name
        p = faces[0].probabilities
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
    # Eileen Collins smiles broadly in this portrait: a model that misses it is broken.
    assert rec.predict(SAMPLES / "astronaut.jpg")[0].expression == "happiness"


def test_ran_onnx_export_agrees_with_pytorch(rec: Recognizer) -> None:
    pytest.importorskip("onnxruntime")
    fast = Recognizer.from_pretrained("ran", backend="onnx")
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        a = rec.predict(SAMPLES / name)[0].probabilities
        b = fast.predict(SAMPLES / name)[0].probabilities
        assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-4, name


def test_ran_attention_is_real(rec: Recognizer) -> None:
    (e,) = explain_image(rec, SAMPLES / "grace_hopper.jpg", source="grace")
    w = np.asarray(e.output.attention_weights[0], dtype=np.float64)
    assert w.shape == (8,) and np.isfinite(w).all()
    # a trained RAN weighs its face and seven crops differently (an untrained one, or a stub,
    # gives near-equal weights)
    assert float(w.max() - w.min()) > 1e-3
    assert e.output.boxes.shape == (1, 8, 4)


def test_explain_takes_the_shipped_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLES / "grace_hopper.jpg"), "--checkpoint", "ran", "--out", str(out)]) == 0
    assert [p.name for p in out.glob("*.png")] == ["grace_hopper_explain.png"]
