"""Synthetic cartoon faces: a small, learnable dataset generated on the fly.

Used by the test suite and by the README's quick-start job, so that robustfer trains and
evaluates end to end on a fresh machine without any downloaded data. Each 48x48 grayscale
image is a drawn face whose brows, eyes and mouth encode the expression (e.g. raised brows
and an open round mouth for surprise, a U-shaped mouth for happiness), with random head yaw
(the features shift sideways and the far half of the face narrows), scale, position, contrast
and noise. The yaw in degrees is stored as the sample's pose, binned into five bins like
KDEF's angles. It is *not* a benchmark: it only has to be real enough that a model that
learns reaches high accuracy and one that does not stays at chance.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.errors import DatasetError

SPLIT_SEEDS = {"train": 0, "valid": 1, "test": 2}
SPLIT_SIZES = {"train": 800, "valid": 200, "test": 200}
POSE_BINS = (-90.0, -45.0, 0.0, 45.0, 90.0)

# Per canonical class: (brow tilt, brow raise, eye open, mouth curve, mouth open, mouth width)
_STYLE = {
    0: (0.0, 0.0, 1.0, 0.0, 0.0, 1.0),    # neutral
    1: (0.0, 0.0, 0.8, 1.0, 0.3, 1.3),    # happiness
    2: (0.0, 1.0, 1.5, 0.0, 1.0, 0.7),    # surprise
    3: (-1.0, 0.0, 0.7, -1.0, 0.0, 1.0),  # sadness
    4: (1.0, -1.0, 0.9, -0.5, 0.0, 1.0),  # anger
    5: (0.5, -0.5, 0.5, -0.8, 0.4, 1.1),  # disgust
    6: (-1.0, 1.0, 1.4, -0.3, 0.6, 1.2),  # fear
    7: (0.5, 0.0, 0.9, 0.6, 0.0, 0.8),    # contempt (one-sided smile below)
}


def render_face(label: int, rng: np.random.Generator, size: int = 48) -> tuple[np.ndarray, float]:
    """Draw one face with expression ``label``; returns (uint8 image, yaw degrees)."""
    s = 4  # draw at 4x and downsample for anti-aliasing
    S = size * s
    bg = int(rng.integers(20, 90))
    img = np.full((S, S), bg, np.uint8)
    yaw = float(rng.uniform(-60, 60))
    cx = S / 2 + rng.uniform(-0.05, 0.05) * S
    cy = S / 2 + rng.uniform(-0.05, 0.05) * S
    r = S * rng.uniform(0.36, 0.44)
    skin = int(rng.integers(140, 230))
    cv2.ellipse(img, (int(cx), int(cy)), (int(r * (1 - abs(yaw) / 300)), int(r * 1.15)), 0, 0,
                360, skin, -1)
    shift = np.sin(np.radians(yaw)) * r * 0.45  # features move towards the turned side
    tilt, raise_, eye, curve, mopen, mwidth = _STYLE[label]
    jitter = lambda a: a + rng.normal(0, 0.12)  # noqa: E731
    tilt, raise_, eye, curve, mopen, mwidth = map(jitter, (tilt, raise_, eye, curve, mopen, mwidth))
    dark = max(0, skin - int(rng.integers(90, 130)))
    th = max(2, int(S * 0.025))
    for side in (-1, 1):
        # the far eye narrows as the head turns (foreshortening)
        scale = 1 - 0.5 * max(0.0, side * np.sin(np.radians(-yaw)))
        ex = cx + shift + side * r * 0.4 * scale
        ey = cy - r * 0.2
        cv2.ellipse(img, (int(ex), int(ey)), (int(r * 0.13 * scale), max(1, int(r * 0.07 * eye))),
                    0, 0, 360, dark, -1)
        by = ey - r * (0.22 + 0.12 * raise_)
        dy = side * tilt * r * 0.08
        cv2.line(img, (int(ex - r * 0.15 * scale), int(by - dy)),
                 (int(ex + r * 0.15 * scale), int(by + dy)), dark, th)
    mx, my, mw = cx + shift, cy + r * 0.45, r * 0.3 * mwidth
    pts = []
    for t in np.linspace(-1, 1, 21):
        lift = curve * (t * t) * r * 0.15
        if label == 7:  # contempt: one corner raised only
            lift = curve * max(t, 0) ** 2 * r * 0.25
        pts.append((mx + t * mw, my - lift))
    upper = np.array(pts, np.int32)
    if mopen > 0.2:
        lower = np.array([(x, y + mopen * r * 0.25 * (1 - ((x - mx) / mw) ** 2)) for x, y in pts])
        poly = np.concatenate([upper, lower[::-1].astype(np.int32)])
        cv2.fillPoly(img, [poly], dark)
    else:
        cv2.polylines(img, [upper], False, dark, th)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    img = img * rng.uniform(0.7, 1.2) + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), yaw


def pose_bin(yaw: float) -> int:
    """Index of the nearest of five yaw bins (-90, -45, 0, 45, 90 degrees)."""
    return int(np.argmin([abs(yaw - b) for b in POSE_BINS]))


@register_dataset(
    "synthetic",
    splits=tuple(SPLIT_SEEDS),
    dirnames=(),
    description="generated cartoon faces (tests and quick start; needs no files)",
    has_validation=True,
    needs_root=False,
)
def build_synthetic(
    root: Path, split: str, num_classes: int = 7, size: int | None = None, seed: int = 0,
    image_size: int = 48,
) -> FERDataset:
    """Generate a synthetic split (balanced classes, deterministic for ``seed``).

    Args:
        root: ignored (nothing is read).
        split: ``train`` (800), ``valid`` (200) or ``test`` (200 images by default).
        num_classes: 7 or 8.
        size: number of images instead of the split's default.
        seed: generator seed, combined with the split so splits never share images.
        image_size: side of the square images.
    """
    if num_classes not in (7, 8):
        raise DatasetError(f"synthetic num_classes must be 7 or 8, got {num_classes}.")
    n = SPLIT_SIZES[split] if size is None else int(size)
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split]])
    samples = []
    for i in range(n):
        label = i % num_classes
        img, yaw = render_face(label, rng, image_size)
        samples.append(Sample(id=f"{split}/{i:05d}", label=label, pixels=img, pose=yaw,
                              pose_bin=pose_bin(yaw), subject=f"s{i % 20:02d}"))
    return FERDataset("synthetic", split, samples, num_classes, root=None)
