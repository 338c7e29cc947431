"""Synthetic occlusion: geometry, coverage, fills, determinism and the CLI parser."""

from __future__ import annotations

import numpy as np
import pytest

from robustfer.data.occlusion import (
    EYE_BAND,
    LOWER_FACE,
    Occluder,
    apply_occluder,
    block_size,
    default_occluders,
    occluder_box,
    occlusion_rng,
    parse_occluders,
)
from robustfer.errors import ConfigError


def _face(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    # values 1..254 so that black (0) and noise pixels are told apart from the image
    return np.random.default_rng(seed).integers(1, 255, size=shape, dtype=np.uint8)


def _covered(img: np.ndarray, out: np.ndarray) -> np.ndarray:
    diff = img != out
    return diff.any(axis=2) if diff.ndim == 3 else diff


@pytest.mark.parametrize("shape", [(48, 48), (48, 48, 3), (100, 100, 3), (37, 91), (120, 40, 3)])
@pytest.mark.parametrize("level", [0.1, 0.2, 0.3, 0.4, 0.5])
def test_block_coverage_shape_dtype(shape: tuple[int, ...], level: float) -> None:
    img = _face(shape)
    occ = Occluder.block(level)
    out = apply_occluder(img, occ, np.random.default_rng(1))
    assert out.shape == img.shape and out.dtype == np.uint8 and out is not img
    mask = _covered(img, out)
    h, w = block_size(shape[0], shape[1], level)
    target = level * shape[0] * shape[1]
    assert mask.sum() == h * w
    assert abs(h * w - target) <= max(h, w) / 2  # within one row/column of rounding
    assert 0.7 <= h / w <= 1.45 or w == shape[1] or h == shape[0]  # near-square
    ys, xs = np.nonzero(mask)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (h, w)  # one rectangle
    assert (out[mask] == 0).all()
    assert np.array_equal(out[~mask], img[~mask])


def test_block_position_uniform_and_inside() -> None:
    occ = Occluder.block(0.25)
    corners = set()
    for i in range(300):
        y0, x0, y1, x1 = occluder_box((48, 48), occ, occlusion_rng(0, i, occ))
        assert 0 <= y0 and 0 <= x0 and y1 <= 48 and x1 <= 48
        corners.add((y0, x0))
    assert len(corners) > 150
    ys = [c[0] for c in corners]
    assert min(ys) <= 2 and max(ys) >= 22  # reaches both edges (range 0..24)


def test_eye_band_and_lower_face_rows() -> None:
    img = _face((48, 48))
    eye = apply_occluder(img, Occluder("eye_band", "eye_band"), np.random.default_rng(0))
    rows = np.nonzero(_covered(img, eye).all(axis=1))[0]
    assert (rows.min(), rows.max()) == (12, 23)  # rows [0.25*48, 0.50*48)
    assert _covered(img, eye).sum() == 12 * 48
    low = apply_occluder(img, Occluder("lower_face", "lower_face"), np.random.default_rng(0))
    rows = np.nonzero(_covered(img, low).all(axis=1))[0]
    assert (rows.min(), rows.max()) == (29, 47)  # rows [round(0.60*48), 48)
    assert _covered(img, low).sum() == 19 * 48
    assert EYE_BAND[1] < LOWER_FACE[0]  # the two bands do not overlap


def test_band_rgb_and_area_fraction() -> None:
    img = _face((100, 100, 3))
    out = apply_occluder(img, Occluder("eye_band", "eye_band"), np.random.default_rng(0))
    assert out.shape == (100, 100, 3)
    assert (out[25:50] == 0).all() and np.array_equal(out[:25], img[:25])
    assert Occluder("lower_face", "lower_face").area_fraction == pytest.approx(0.4)
    assert Occluder.block(0.3).area_fraction == 0.3


@pytest.mark.parametrize("shape", [(48, 48), (64, 64, 3)])
def test_fills(shape: tuple[int, ...]) -> None:
    img = _face(shape)
    occ = Occluder.block(0.3)
    y0, x0, y1, x1 = occluder_box(shape, occ, np.random.default_rng(5))
    mask = np.zeros(shape[:2], bool)
    mask[y0:y1, x0:x1] = True
    gray = apply_occluder(img, occ, np.random.default_rng(5), fill="gray")
    assert (gray[mask] == 128).all() and np.array_equal(gray[~mask], img[~mask])
    assert (apply_occluder(img, occ, np.random.default_rng(5), fill=200)[mask] == 200).all()
    noise = apply_occluder(img, occ, np.random.default_rng(5), fill="noise")
    assert np.array_equal(noise[~mask], img[~mask])  # same block position
    vals = noise[mask]
    assert vals.std() > 40 and len(np.unique(vals)) > 50
    with pytest.raises(ConfigError, match="fill"):
        apply_occluder(img, occ, np.random.default_rng(5), fill="pink")
    with pytest.raises(ConfigError, match="0-255"):
        apply_occluder(img, occ, np.random.default_rng(5), fill=300)


def test_determinism_independent_of_order() -> None:
    imgs = [_face((48, 48), seed=i) for i in range(6)]
    occs = default_occluders()

    def run(order: list[int]) -> dict[tuple[int, str], np.ndarray]:
        return {
            (i, o.name): apply_occluder(imgs[i], o, occlusion_rng(7, i, o), fill="noise")
            for i in order
            for o in occs
        }

    a, b = run([0, 1, 2, 3, 4, 5]), run([5, 3, 1, 0, 4, 2])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = {
        i: apply_occluder(imgs[i], occs[2], occlusion_rng(8, i, occs[2]), fill="noise")
        for i in range(6)
    }
    assert any(not np.array_equal(other[i], a[(i, occs[2].name)]) for i in range(6))
    renamed = Occluder("my_block", "block", occs[2].level)
    assert np.array_equal(
        apply_occluder(imgs[0], renamed, occlusion_rng(7, 0, renamed), fill="noise"),
        a[(0, occs[2].name)],
    )
    with pytest.raises(ValueError, match="non-negative"):
        occlusion_rng(-1, 0, occs[0])


def test_input_validation() -> None:
    occ = Occluder.block(0.1)
    with pytest.raises(ValueError, match="uint8"):
        apply_occluder(np.zeros((8, 8), np.float32), occ, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        apply_occluder(np.zeros((8,), np.uint8), occ, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="level"):
        Occluder("b", "block", 0.0)
    with pytest.raises(ConfigError, match="takes no level"):
        Occluder("e", "eye_band", 0.2)
    with pytest.raises(ConfigError, match="kind"):
        Occluder("x", "cape")


def test_default_occluders() -> None:
    names = [o.name for o in default_occluders()]
    blocks = [f"block{p}" for p in (10, 20, 30, 40, 50)]
    assert names == [*blocks, "eye_band", "lower_face", "mask", "sunglasses", "hand", "scarf", "hair"]


def test_parse_occluders() -> None:
    assert parse_occluders("default") == default_occluders()
    assert parse_occluders("none") == [] and parse_occluders(" ") == []
    got = parse_occluders("block:0.1, block:30%,eye_band,lower_face,block:0.1,block:25")
    assert [(o.name, o.kind, o.level) for o in got] == [
        ("block10", "block", 0.1), ("block30", "block", 0.3), ("eye_band", "eye_band", None),
        ("lower_face", "lower_face", None), ("block25", "block", 0.25),
    ]
    assert parse_occluders("block:0.125")[0].name == "block12.5"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("block", "needs a level"),
        ("block:", "needs a level"),
        ("block:abc", "not a number"),
        ("block:0", "outside"),
        ("block:150", "outside"),
        ("eye_band:0.2", "takes no level"),
        ("cape", "unknown"),
        ("block:0.1,,eye_band", "empty item"),
    ],
)
def test_parse_occluders_errors(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_occluders(spec)
