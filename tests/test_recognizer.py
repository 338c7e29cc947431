"""The Recognizer API with the shipped default model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustfer import Recognizer
from robustfer.errors import ConfigError, ImageError
from robustfer.inference import FaceResult, load_image, to_records

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    """Same probabilities up to float noise (batch size changes the kernels' summation order)."""
    return a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-5


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer.from_pretrained("default")


def test_default_model_metadata(rec: Recognizer) -> None:
    assert rec.class_names == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                               "fear", "contempt")
    assert rec.preprocess.input_size == 48 and rec.preprocess.in_chans == 1
    assert "Recognizer(" in repr(rec)


def test_photo_gives_one_face_with_probabilities(rec: Recognizer) -> None:
    faces = rec.predict(SAMPLES / "astronaut.jpg")
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, FaceResult)
    assert sum(f.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert f.expression == max(f.probabilities, key=f.probabilities.get)
    assert f.confidence == f.probabilities[f.expression]
    assert f.pose.yaw_bin_name == "frontal" and f.crop == "mesh" and f.pose.method == "face-mesh"
    assert f.landmarks is not None and np.isfinite(f.landmarks).all() and abs(f.pose.yaw) < 20
    d = f.to_dict()
    json.dumps(d)
    assert set(d) >= {"box", "score", "expression", "probabilities", "pose"}


def test_smiling_astronaut_is_happy(rec: Recognizer) -> None:
    # Eileen Collins smiles broadly in this portrait: a model that misses it is broken.
    assert rec.predict(SAMPLES / "astronaut.jpg")[0].expression == "happiness"


def test_no_face_is_an_empty_list(rec: Recognizer) -> None:
    assert rec.predict(np.full((200, 200, 3), 90, np.uint8)) == []


def test_list_input_and_input_kinds_agree(rec: Recognizer) -> None:
    path = SAMPLES / "grace_hopper.jpg"
    img = load_image(path)
    out = rec.predict([path, img, np.ascontiguousarray(img[:, :, ::-1])], bgr=False)
    assert len(out) == 3 and all(len(o) == 1 for o in out)
    assert _close(out[0][0].probabilities, out[1][0].probabilities)
    bgr = rec.predict(np.ascontiguousarray(img[:, :, ::-1]), bgr=True)
    assert _close(bgr[0].probabilities, out[0][0].probabilities)


def test_detect_false_classifies_the_whole_image(rec: Recognizer) -> None:
    img = load_image(SAMPLES / "astronaut.jpg")
    f = rec.predict(img, detect=False)
    assert len(f) == 1 and f[0].box == (0.0, 0.0, 512.0, 512.0) and f[0].crop == "whole-image"
    assert f[0].pose.yaw is None


def test_detect_false_matches_the_engine_on_a_crop(rec: Recognizer) -> None:
    """Same preprocessing as training/evaluation, and the checkpoint's temperature: the
    Recognizer and the model agree exactly."""
    from robustfer.data.transforms import EvalTransform

    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (48, 48), dtype=np.uint8)
    p_rec = np.array(list(rec.predict(crop, detect=False)[0].probabilities.values()))
    x = EvalTransform(rec.preprocess)(crop)[None]
    with torch.no_grad():
        p_eng = (rec.classifier.model(x).logits / rec.classifier.temperature).softmax(1)[0].numpy()
    assert rec.classifier.temperature != 1.0  # the shipped model is calibrated
    assert np.abs(p_rec - p_eng).max() < 1e-5


def test_bad_input_in_a_list_names_its_index(rec: Recognizer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="input 1: .*bad.jpg"):
        rec.predict([SAMPLES / "astronaut.jpg", bad])


def test_predict_batch_goes_on_past_a_bad_input(rec: Recognizer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    res = rec.predict_batch([SAMPLES / "astronaut.jpg", bad, SAMPLES / "grace_hopper.jpg"])
    assert [r.ok for r in res] == [True, False, True]
    assert "empty" in res[1].error and res[1].faces == []
    assert len(res[0].faces) == 1 and len(res[2].faces) == 1
    rows = to_records(res)
    assert len(rows) == 3 and rows[1]["error"] and rows[0]["p_happiness"] > 0


def test_unknown_pretrained_name() -> None:
    with pytest.raises(ConfigError, match="shipped"):
        Recognizer.from_pretrained("nope")


def test_from_checkpoint_path_matches_default(rec: Recognizer) -> None:
    from robustfer.inference.recognizer import pretrained_path

    other = Recognizer.from_checkpoint(pretrained_path("default"))
    a = rec.predict(SAMPLES / "grace_hopper.jpg")[0].probabilities
    b = other.predict(SAMPLES / "grace_hopper.jpg")[0].probabilities
    assert _close(a, b)


def test_profile_photo_is_found_and_its_turn_named(rec: Recognizer) -> None:
    # camera.png: the photographer faces the image's right, i.e. he is turned to his left
    # (yaw < 0). The default detector measures the turn from its face mesh.
    faces = rec.predict(SAMPLES / "camera.png")
    assert len(faces) == 1
    pose = faces[0].pose
    assert pose.method == "face-mesh" and pose.yaw < -30 and pose.yaw_bin_name in ("half_left", "full_left")
    # Haar: only the profile pass on the mirrored image finds him, giving a bin but no angles.
    from robustfer.inference import HaarDetector

    haar = Recognizer.from_pretrained("default", detector="haar")
    faces = haar.predict(SAMPLES / "camera.png")
    assert len(faces) == 1
    assert faces[0].pose.yaw_bin_name == "full_left" and faces[0].pose.yaw is None
    frontal_only = Recognizer.from_pretrained("default", detector=HaarDetector(profile="never"))
    assert frontal_only.predict(SAMPLES / "camera.png") == []


def test_dlib_recognizer_gives_strict_json_and_an_aligned_crop() -> None:
    pytest.importorskip("dlib")
    rec = Recognizer.from_pretrained("default", detector="dlib")
    f = rec.predict(SAMPLES / "grace_hopper.jpg")[0]
    assert f.crop == "aligned" and f.pose.method == "landmarks"
    d = f.to_dict()
    json.dumps(d, allow_nan=False)  # missing landmark points are null, not NaN
    assert d["landmarks"][3] == [None, None]
