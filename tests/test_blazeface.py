"""The default face front end: BlazeFace + face mesh + head pose (robustfer.inference.blazeface)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from robustfer.errors import ConfigError
from robustfer.inference import create_detector, load_image
from robustfer.inference.blazeface import (
    WEIGHTS,
    BlazeFaceDetector,
    LEVEL_SIDES,
    _BlazeFace,
    dense_anchors,
    letterbox,
    mesh_roi,
    pose_from_mesh,
    ssd_anchors,
    weighted_nms,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def det() -> BlazeFaceDetector:
    return BlazeFaceDetector()


@pytest.fixture(scope="module")
def hopper_mesh(det: BlazeFaceDetector) -> np.ndarray:
    faces = det.detect(load_image(SAMPLES / "grace_hopper.jpg"))
    assert len(faces) == 1
    return faces[0].extra["mesh"].astype(np.float64)


def test_models_ship_in_the_package() -> None:
    for name in ("blazeface_full_range.onnx", "blazeface_short_range.onnx", "face_mesh.onnx"):
        assert (WEIGHTS / name).is_file(), name
    assert (WEIGHTS / "NOTICE.md").is_file()


def test_anchor_counts_match_the_models() -> None:
    assert len(ssd_anchors(128, (8, 16, 16, 16), (2, 2, 2, 2))) == 896
    assert len(ssd_anchors(192, (4,), (1,))) == 2304
    a = ssd_anchors(192, (4,), (1,))
    assert a.min() > 0 and a.max() < 1 and np.allclose(a[0], [0.5 / 48, 0.5 / 48])


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.6, 0.8])
    kps = np.zeros((3, 6, 2))
    kps[1] += 1.0
    out = weighted_nms(boxes, scores, kps, 0.3)
    assert len(out) == 2
    box, score, kp = out[0]
    assert score == 0.9 and box[0] == pytest.approx(0.6 / 1.5) and kp[0, 0] == pytest.approx(0.6 / 1.5)
    assert out[1][1] == 0.8


def test_windows_and_dense_scales() -> None:
    x0, y0, side = letterbox(480, 640, 0.5)
    assert side == 1280 and x0 == -320 and y0 == -400
    d = BlazeFaceDetector(mesh=False)
    assert d.scales(480, 640) == pytest.approx([512 / 640, 224 / 640])
    assert d.scales(120, 160) == []  # no larger than the whole-image window: nothing to add
    assert all(s <= 1.25 for s in BlazeFaceDetector(levels=2, mesh=False).scales(300, 400))
    assert BlazeFaceDetector(levels=2, mesh=False).scales(480, 640)[0] == pytest.approx(1.25)
    assert LEVEL_SIDES[0] == ()


def test_dense_anchors_are_the_native_anchors_at_the_native_size() -> None:
    a = dense_anchors(128, 128, (8, 16), (2, 6)) / 128
    assert np.array_equal(a, ssd_anchors(128, (8, 16, 16, 16), (2, 2, 2, 2)))
    assert len(dense_anchors(384, 512, (8, 16), (2, 6))) == 48 * 64 * 2 + 24 * 32 * 6


def test_a_dense_pass_at_the_native_size_equals_the_window_pass() -> None:
    """On a 128 x 128 image, the dense pass and the one-window pass are the same computation;
    on a larger image the dense pass finds the face where the window pass finds it."""
    net = _BlazeFace("short", 1)
    im = load_image(SAMPLES / "grace_hopper.jpg")
    small = cv2.resize(im[:512, :512], (128, 128), interpolation=cv2.INTER_AREA)
    a = net(small, [(0.0, 0.0, 128.0)], 0.5)
    b = net.dense(small, 1.0, 0.5)
    assert len(a[1]) > 0 and np.allclose(a[0], b[0], atol=1e-3) and np.allclose(a[1], b[1], atol=1e-5)
    canvas = np.full((480, 640, 3), 100, np.uint8)
    canvas[200:328, 300:428] = small
    boxes, scores, _ = net.dense(canvas, 1.0, 0.5)
    best = boxes[np.argmax(scores)]
    assert np.allclose(best, a[0][np.argmax(a[1])] + [300, 200, 300, 200], atol=3.0)


def test_mesh_roi_is_centred_scaled_and_levels_the_eyes() -> None:
    box = np.array([100.0, 50.0, 200.0, 170.0])
    right_eye, left_eye = np.array([120.0, 100.0]), np.array([180.0, 130.0])  # tilted eye line
    a = mesh_roi(box, right_eye, left_eye)
    centre = a[:, :2] @ np.array([96.0, 96.0]) + a[:, 2]
    assert np.allclose(centre, [150.0, 110.0])
    assert math.sqrt(abs(np.linalg.det(a[:, :2]))) * 192 == pytest.approx(1.5 * 120)
    inv = cv2.invertAffineTransform(a)
    r, l_ = inv[:, :2] @ right_eye + inv[:, 2], inv[:, :2] @ left_eye + inv[:, 2]
    assert r[1] == pytest.approx(l_[1]) and l_[0] > r[0]


def _rotate(mesh: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Apply R = Rz(roll) Ry(yaw) Rx(pitch) about the mesh centre (image axes: x right, y down,
    z away from the camera): yaw > 0 brings the subject's left side nearer, pitch > 0 the chin,
    roll > 0 turns clockwise in the image."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    c = mesh.mean(0)
    return (mesh - c) @ (rz @ ry @ rx).T + c


def _straighten(mesh: np.ndarray) -> np.ndarray:
    """The mesh turned back to yaw = pitch = roll = 0 by its own measured pose."""
    from robustfer.inference import blazeface

    y, p, r = pose_from_mesh(mesh)
    p += blazeface.MESH_PITCH_OFFSET  # raw pitch
    y, p, r = (math.radians(v) for v in (y, p, r))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    c = mesh.mean(0)
    return (mesh - c) @ (rz @ ry @ rx) + c  # R^T


@pytest.mark.parametrize("yaw,pitch,roll", [(30, 0, 0), (-50, 0, 0), (0, 20, 0), (0, -15, 0), (0, 0, 25),
                                            (35, 10, -15), (-60, -20, 30)])
def test_pose_from_mesh_recovers_known_rotations(hopper_mesh: np.ndarray, yaw: float, pitch: float,
                                                 roll: float) -> None:
    from robustfer.inference import blazeface

    base = _straighten(hopper_mesh)
    y0, p0, r0 = pose_from_mesh(base)
    assert abs(y0) < 1e-6 and abs(r0) < 1e-6 and p0 == pytest.approx(-blazeface.MESH_PITCH_OFFSET, abs=1e-6)
    y1, p1, r1 = pose_from_mesh(_rotate(base, yaw, pitch, roll))
    assert (y1, p1 - p0, r1) == pytest.approx((yaw, pitch, roll), abs=1e-6)


@pytest.mark.parametrize("name", ["astronaut.jpg", "grace_hopper.jpg", "camera.png"])
def test_each_sample_face_gets_mesh_landmarks_and_pose(det: BlazeFaceDetector, name: str) -> None:
    faces = det.detect(load_image(SAMPLES / name))
    assert len(faces) == 1
    f = faces[0]
    assert f.extra["mesh"].shape == (468, 3) and f.extra["mesh_score"] > 0.5
    assert f.landmarks.shape == (5, 2) and np.isfinite(f.landmarks).all()
    x1, y1, x2, y2 = f.box
    assert (f.landmarks[:, 0] > x1).all() and (f.landmarks[:, 0] < x2).all()
    assert f.landmarks[0, 0] < f.landmarks[1, 0]          # image-left eye first
    assert f.landmarks[3, 1] > f.landmarks[2, 1]          # mouth below the nose
    assert all(np.isfinite(v) for v in f.extra["pose"])


def test_rotating_the_photo_changes_roll_by_the_angle(det: BlazeFaceDetector) -> None:
    im = load_image(SAMPLES / "grace_hopper.jpg")
    r0 = det.detect(im)[0].extra["pose"][2]
    h, w = im.shape[:2]
    for ang in (-30, 25):
        rot = cv2.warpAffine(im, cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0), (w, h),
                             borderMode=cv2.BORDER_REPLICATE)
        faces = det.detect(rot)
        assert len(faces) == 1
        # OpenCV's positive angle turns the picture counter-clockwise: roll changes by -angle
        assert faces[0].extra["pose"][2] - r0 == pytest.approx(-ang, abs=5)


def test_mirroring_the_photo_flips_the_yaw(det: BlazeFaceDetector) -> None:
    im = load_image(SAMPLES / "camera.png")
    yaw = det.detect(im)[0].extra["pose"][0]
    yaw_m = det.detect(np.ascontiguousarray(im[:, ::-1]))[0].extra["pose"][0]
    assert yaw < -30 and yaw_m > 30 and abs(yaw + yaw_m) < 8


def test_a_tight_face_crop_is_one_face(det: BlazeFaceDetector) -> None:
    im = load_image(SAMPLES / "grace_hopper.jpg")
    x1, y1, x2, y2 = (int(v) for v in det.detect(im)[0].box)
    crop = np.ascontiguousarray(im[y1:y2, x1:x2])
    assert len(det.detect(crop)) == 1
    small = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
    assert len(det.detect(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))) == 1  # grey, 48 px


def test_no_face_in_blank_tiny_or_noise_images(det: BlazeFaceDetector) -> None:
    assert det.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert det.detect(np.zeros((4, 4, 3), np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert det.detect(noise) == []


def test_detector_names_and_bad_options() -> None:
    assert create_detector().name == "blazeface"
    assert create_detector("blazeface:thorough").levels == 2
    assert create_detector("blazeface:fast").levels == 0
    with pytest.raises(ConfigError, match="fast, default or thorough"):
        create_detector("blazeface:slow")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        BlazeFaceDetector(score_threshold=1.5)


def test_thorough_mode_finds_a_small_face() -> None:
    im = load_image(SAMPLES / "grace_hopper.jpg")
    thorough = create_detector("blazeface:thorough")
    x1, y1, x2, y2 = (int(v) for v in thorough.detect(im)[0].box)
    face = cv2.resize(im[y1:y2, x1:x2], (44, 48), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[300:348, 500:544] = face
    found = thorough.detect(canvas)
    assert len(found) >= 1
    cx = (found[0].box[0] + found[0].box[2]) / 2
    assert 490 < cx < 555


@pytest.mark.data
def test_most_fer2013_test_crops_are_found(det: BlazeFaceDetector, data_root: Path) -> None:
    from robustfer.data import build_dataset

    ds = build_dataset("ferplus:test", root=data_root)
    idx = np.random.default_rng(0).choice(len(ds), 60, replace=False)
    found = sum(bool(det.detect(ds[int(i)][0])) for i in idx)
    assert found >= 54, found


def test_rescue_pass_only_runs_when_no_face_passed_and_needs_the_mesh() -> None:
    with pytest.raises(ConfigError, match="rescue_threshold"):
        BlazeFaceDetector(rescue_threshold=0.7)
    assert BlazeFaceDetector(mesh=False, rescue_threshold=0.4).rescue_threshold is None
    img = load_image(SAMPLES / "grace_hopper.jpg")
    plain = BlazeFaceDetector().detect(img)
    rescue = BlazeFaceDetector(rescue_threshold=0.3)
    calls: list[int] = []
    real = rescue._finish
    rescue._finish = lambda *a, **k: calls.append(1) or real(*a, **k)  # type: ignore[method-assign]
    faces = rescue.detect(img)
    assert len(calls) == 1 and [f.box for f in faces] == [f.box for f in plain]  # a face: no second chance
    calls.clear()
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert rescue.detect(blank) == [] and len(calls) <= 2
