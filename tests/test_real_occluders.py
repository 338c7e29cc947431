"""Realistic occluders: drawn where they belong on the face, deterministic, any image layout."""
from __future__ import annotations

import numpy as np
import pytest

from robustfer.data.occlusion import (
    Occluder,
    apply_occluder,
    occluder_box,
    occlusion_rng,
    parse_occluders,
    realistic_occluders,
)
from robustfer.data.real_occluders import REALISTIC_KINDS, draw_occluder, jittered_points, template_points
from robustfer.data.transforms import AugmentConfig, Preprocess, TrainTransform


def _face(shape=(48, 48), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(90, 160, size=shape, dtype=np.uint8)


def _changed_rows(kind: str, n: int = 12) -> np.ndarray:
    """Fraction of changed pixels per row band (top, eyes, nose, mouth, chin), over n faces."""
    bands = np.zeros(5)
    for i in range(n):
        img = _face(seed=i)
        out = draw_occluder(img, kind, np.random.default_rng(i))
        diff = np.abs(out.astype(int) - img.astype(int)) > 8
        bands += [diff[a:b].mean() for a, b in ((0, 9), (12, 20), (20, 28), (31, 39), (40, 48))]
    return bands / n


def test_each_occluder_covers_its_part_of_the_face() -> None:
    top, eyes, nose, mouth, chin = range(5)
    m = _changed_rows("mask")
    assert m[mouth] > 0.5 and m[nose] > 0.4 and m[chin] > 0.25 and m[top] < 0.05 and m[eyes] < 0.2
    g = _changed_rows("sunglasses")
    assert g[eyes] > 0.3 and g[mouth] < 0.02 and g[chin] < 0.02
    h = _changed_rows("hair")
    assert h[top] > 0.8 and h[mouth] < 0.02 and h[chin] < 0.02
    s = _changed_rows("scarf")
    assert s[chin] > 0.8 and s[top] < 0.02 and s[eyes] < 0.02
    hand = _changed_rows("hand")
    assert 0.05 < hand.mean() < 0.7  # somewhere on the face, never all of it


def test_template_points_are_a_face_in_the_crop() -> None:
    t = template_points()
    assert t.shape == (468, 2) and (t > 0).all() and (t < 1).all()
    p = jittered_points(48, 48, np.random.default_rng(0))
    assert p.shape == (468, 2) and np.abs(p / 48 - t).max() < 0.15


@pytest.mark.parametrize("kind", REALISTIC_KINDS)
def test_deterministic_and_layouts(kind: str) -> None:
    gray = _face((48, 48))
    a = draw_occluder(gray, kind, np.random.default_rng(3))
    b = draw_occluder(gray, kind, np.random.default_rng(3))
    c = draw_occluder(gray, kind, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and a.dtype == np.uint8
    assert np.array_equal(draw_occluder(gray[:, :, None], kind, np.random.default_rng(3))[:, :, 0], a)
    rgb = np.repeat(_face((96, 80))[:, :, None], 3, axis=2)
    out = draw_occluder(rgb, kind, np.random.default_rng(3))
    assert out.shape == rgb.shape and not np.array_equal(out, rgb)


def test_named_occluders_in_reports() -> None:
    occs = parse_occluders("realistic,block:0.3")
    assert [o.name for o in occs] == ["mask", "sunglasses", "hand", "scarf", "hair", "block30"]
    assert occs[:5] == realistic_occluders() and all(o.realistic for o in occs[:5])
    assert np.isnan(occs[0].area_fraction)
    img = _face()
    mask = Occluder("mask", "mask")
    x = apply_occluder(img, mask, occlusion_rng(0, 5, mask))
    assert np.array_equal(x, apply_occluder(img, mask, occlusion_rng(0, 5, mask), fill="noise"))
    assert not np.array_equal(x, apply_occluder(img, mask, occlusion_rng(1, 5, mask)))
    with pytest.raises(ValueError, match="not a rectangle"):
        occluder_box(img.shape, mask, np.random.default_rng(0))


def test_training_augmentation_draws_occluders() -> None:
    pre = Preprocess(input_size=48, in_chans=1, mean=(0.5,), std=(0.5,))
    plain = dict(hflip=0.0, scale=(1.0, 1.0), translate=0.0, rotate=0.0, brightness=0.0, contrast=0.0)
    img = np.full((48, 48), 128, np.uint8)
    np.random.seed(0)
    t = TrainTransform(pre, AugmentConfig(**plain, occluders=1.0, occluder_kinds=["sunglasses"]))
    outs = [t(img) for _ in range(5)]
    assert all(float((o != outs[0]).float().mean()) > 0 for o in outs[1:])  # a new draw per call
    assert all(float((o[0, 12:20] != 0).float().mean()) > 0.3 for o in outs)  # on the eyes
    t0 = TrainTransform(pre, AugmentConfig(**plain, occluders=0.0))
    assert float(t0(img).abs().max()) < 0.01  # 128 -> ~0 after normalisation: untouched
    from robustfer.errors import ConfigError
    with pytest.raises(ConfigError, match="occluder_kinds"):
        TrainTransform(pre, AugmentConfig(**plain, occluders=0.5, occluder_kinds=["cape"]))
