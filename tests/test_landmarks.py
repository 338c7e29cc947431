"""Landmarks travel with the image: loaders, box crop, augmentation, resize, engine, models."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustfer.data import build_dataset
from robustfer.data.base import FERDataset, Sample
from robustfer.data.landmarks import FLIP_ORDER, flip_points, flip_points_tensor, resize_points
from robustfer.data.transforms import AugmentConfig, EvalTransform, Preprocess, TrainTransform
from robustfer.errors import DatasetError

# robustfer's 5-point order: subject's right eye (image-left), left eye, nose, mouth corners
FIVE = np.array([[30.0, 36.0], [66.0, 34.0], [47.0, 55.0], [34.0, 74.0], [61.0, 76.0]], np.float32)


def dots(size: int, pts: np.ndarray) -> np.ndarray:
    """A dark grayscale image with a bright 5x5 dot at every point, different brightness each."""
    img = np.full((size, size), 10, np.uint8)
    for k, (x, y) in enumerate(np.round(pts).astype(int)):
        img[y - 2:y + 3, x - 2:x + 3] = 120 + 30 * k
    return img


def brightness_at(x: torch.Tensor, pts: np.ndarray) -> list[float]:
    """Pixel values of a (1, S, S) normalised tensor (mean 0.5, std 0.5) at the points, in 0-255."""
    img = (x[0].numpy() * 0.5 + 0.5) * 255
    s = img.shape[0]
    return [float(img[min(s - 1, max(0, round(y))), min(s - 1, max(0, round(x_)))]) for x_, y in pts]


def test_flip_orders_are_involutions_that_swap_sides() -> None:
    for n, order in FLIP_ORDER.items():
        assert sorted(order) == list(range(n))
        assert [order[i] for i in order] == list(range(n))
    o = FLIP_ORDER[68]
    assert (o[36], o[45], o[30], o[48], o[57], o[0], o[8]) == (45, 36, 30, 54, 57, 16, 8)
    f = flip_points(FIVE, 96)
    assert f[0, 0] < f[1, 0]  # point 0 is still on the image-left after mirroring
    np.testing.assert_allclose(f[0], [96 - 1 - 66, 34])
    np.testing.assert_allclose(flip_points(f, 96), FIVE)
    t = torch.from_numpy(FIVE)[None]
    assert torch.equal(flip_points_tensor(t, 96)[0], torch.from_numpy(f))
    odd = np.array([[1.0, 2.0], [5.0, 6.0], [7.0, 8.0]])  # unknown layout: mirrored, not swapped
    np.testing.assert_allclose(flip_points(odd, 10)[:, 0], [8, 4, 2])


def test_resize_points_maps_pixel_centres() -> None:
    np.testing.assert_allclose(resize_points(np.array([[0.5, 1.5], [95.5, 47.5]]), (48, 96), 48),
                               [[0.0, 1.5], [47.5, 47.5]], atol=1e-6)


def test_eval_transform_moves_points_with_the_image() -> None:
    x, pts = EvalTransform(Preprocess(input_size=48)).with_points(dots(96, FIVE), FIVE)
    assert x.shape == (1, 48, 48) and pts.shape == (5, 2)
    assert min(brightness_at(x, pts)) > 80  # every point still sits on its dot


@pytest.mark.parametrize("aug", [AugmentConfig(hflip=1.0, rotate=0, translate=0, scale=(1, 1),
                                               brightness=0, contrast=0),
                                 AugmentConfig(hflip=0.5, rotate=20, translate=0.1, scale=(0.9, 1.1),
                                               brightness=0, contrast=0)])
def test_train_transform_moves_points_with_the_image(aug: AugmentConfig) -> None:
    tf = TrainTransform(Preprocess(input_size=48), aug)
    img = dots(96, FIVE)
    np.random.seed(0)
    for _ in range(20):
        x, pts = tf.with_points(img, FIVE)
        assert pts.shape == (5, 2)
        vals = brightness_at(x, pts)
        assert min(vals) > 60, vals
        # semantics kept: point 0 (image-left eye) left of point 1, mouth corners likewise
        assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]
        if aug.rotate == 0:  # always flipped: point 0 now sits on the dot that was point 1's
            assert vals[0] > vals[1] and vals[3] > vals[4], vals
    # missing points stay missing
    nan = FIVE.copy()
    nan[3:] = np.nan
    _, pts = tf.with_points(img, nan)
    assert np.isnan(pts[3:]).all() and np.isfinite(pts[:3]).all()


def test_box_crop_shifts_the_landmarks() -> None:
    img = dots(96, FIVE)
    s = Sample(id="a", label=1, pixels=img, box=(10, 20, 70, 70), landmarks=FIVE.copy())
    ds = FERDataset("x", "train", [s], 8)
    assert ds.landmark_count == 5
    np.testing.assert_allclose(ds.load_landmarks(0), FIVE - [10, 20])
    crop = ds.load_image(0)
    for (x, y) in ds.load_landmarks(0):
        assert crop[round(y), round(x)] > 100
    mixed = FERDataset("x", "train", [s, Sample(id="b", label=0, pixels=img)], 8)
    assert mixed.landmark_count == 0


def _folder(root: Path, n: int = 16, landmarks: bool = True, bad: str | None = None) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        pts = FIVE + rng.uniform(-4, 4, FIVE.shape)
        Image.fromarray(dots(96, pts)).save(root / "img" / f"{i}.png")
        lm = " ".join(f"{v:.1f}" for v in pts.ravel()) if landmarks else ""
        rows.append({"path": f"img/{i}.png", "label": ["happy", "sad"][i % 2], "landmarks": lm})
    if bad:
        rows[3]["landmarks"] = bad
    for split in ("train", "valid", "test"):
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "label", "landmarks"])
            w.writeheader()
            w.writerows(rows)
    return root


def test_folder_csv_reads_landmarks(tmp_path: Path) -> None:
    ds = build_dataset("folder:train", root=_folder(tmp_path))
    assert ds.landmark_count == 5 and ds.samples[0].landmarks is not None
    assert build_dataset("folder:train", root=_folder(tmp_path / "n", landmarks=False)).landmark_count == 0
    for bad, msg in (("1 2 3", "odd"), ("1 2 x 4", "not numbers"), ("1 2 3 4", "same number")):
        with pytest.raises(DatasetError, match=msg):
            build_dataset("folder:train", root=_folder(tmp_path / bad.replace(" ", "_"), bad=bad))


def _train(root: Path, out: Path, model: str, options: str, *extra: str) -> tuple[int, str]:
    from robustfer.cli import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_quickstart.yaml"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["train", "--config", str(recipe), "--output-dir", str(out), "--name", "lm",
                   "train.progress=false", f"data.root={root}", "data.train=folder:train",
                   "data.val=folder:valid", "data.eval=[folder:test]", "data.num_classes=8",
                   "eval.occluders=none", "eval.plots=false", "train.epochs=1", "train.batch_size=8",
                   f"model.name={model}", f"model.options={options}", "eval.tta=hflip", *extra])
    return rc, buf.getvalue()


@pytest.mark.parametrize("model, options", [
    ("ran_compact_cnn", "{width: 0.25, regions: landmarks, crop_size: 16}"),
    ("aha_compact_cnn", "{width: 0.25}"),
])
def test_engine_feeds_landmarks_to_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             model: str, options: str) -> None:
    """Training, validation and hflip-TTA evaluation all call the model with the batch's points."""
    from robustfer.engine import train as train_mod
    from robustfer.models import create_model

    seen: list[torch.Tensor | None] = []

    def spy(name, **kw):  # type: ignore[no-untyped-def]
        m = create_model(name, **kw)
        fwd = m.forward

        def forward(x, landmarks=None):  # type: ignore[no-untyped-def]
            seen.append(landmarks)
            return fwd(x, landmarks=landmarks)

        m.forward = forward  # type: ignore[method-assign]
        return m

    monkeypatch.setattr(train_mod, "create_model", spy)
    rc, log = _train(_folder(tmp_path / "d"), tmp_path / "runs", model, options)
    assert rc == 0, log
    assert "landmarks: 5 per face" in log
    assert seen and all(lm is not None and lm.shape[1:] == (5, 2) for lm in seen)
    assert all(torch.isfinite(lm).all() and lm.min() > -10 and lm.max() < 58 for lm in seen)


def test_landmark_ran_without_landmarks_says_what_to_do(tmp_path: Path) -> None:
    with contextlib.redirect_stderr(io.StringIO()) as err:
        rc, _ = _train(_folder(tmp_path / "d", landmarks=False), tmp_path / "runs", "ran_compact_cnn",
                       "{width: 0.25, regions: landmarks, crop_size: 16}")
    assert rc == 2
    assert "crops around landmarks" in err.getvalue(), err.getvalue()


# ------------------------------------------------------------------ inference
def test_crop_points_follow_align_face() -> None:
    """Landmarks mapped into the crop land where align_face put those points of the image."""
    from robustfer.inference.align import align_face, crop_points, eye_template
    from robustfer.inference.detect import Detection

    img = np.full((200, 240), 10, np.uint8)
    pts = FIVE * 1.5 + [50, 30]  # a face about 140 px wide, eyes level
    for k, (x, y) in enumerate(np.round(pts).astype(int)):
        img[y - 3:y + 4, x - 3:x + 4] = 120 + 30 * k
    det = Detection((50.0, 30.0, 194.0, 174.0), 0.9, pts.astype(np.float64), "frontal")
    for use in (True, False):
        crop, how = align_face(img, det, 48, 1.05, 0.0, use_landmarks=use)
        q = crop_points(det, 48, 1.05, 0.0, use_landmarks=use)
        assert how == ("aligned" if use else "box") and q.shape == (5, 2)
        for k, (x, y) in enumerate(q):  # every mapped point sits on its own dot
            assert abs(float(crop[round(y), round(x)]) - (120 + 30 * k)) < 45, (use, k)
    np.testing.assert_allclose(crop_points(det, 48, 1.05, 0.0)[:2], eye_template(1.05) * 48, atol=1e-4)
    assert crop_points(Detection((0, 0, 10, 10), 1.0, None, "frontal"), 48, 1.05, 0.0) is None


def test_recognizer_passes_detector_landmarks_to_a_landmark_model() -> None:
    from robustfer.data.labels import class_names
    from robustfer.inference import Recognizer
    from robustfer.inference.detect import Detection
    from robustfer.models import create_model

    torch.manual_seed(0)
    model = create_model("ran_compact_cnn", num_classes=8, in_chans=1, width=0.25,
                         regions="landmarks", crop_size=16)
    seen = []
    fwd = model.forward

    def forward(x, landmarks=None):  # type: ignore[no-untyped-def]
        seen.append(landmarks)
        return fwd(x, landmarks=landmarks)

    model.forward = forward  # type: ignore[method-assign]
    pts = FIVE * 1.5 + [50, 30]

    class Fake:
        def detect(self, rgb):  # type: ignore[no-untyped-def]
            return [Detection((50.0, 30.0, 194.0, 174.0), 0.9, pts.astype(np.float64), "frontal")]

    rec = Recognizer(model, Preprocess(), class_names(8), detector=Fake())
    faces = rec.predict(np.zeros((200, 240, 3), np.uint8))
    assert len(faces) == 1 and seen[-1] is not None and seen[-1].shape == (1, 5, 2)
    np.testing.assert_allclose(seen[-1][0].numpy(), rec._points([(Fake().detect(None)[0], None, "aligned")])[0])
