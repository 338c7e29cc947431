"""Torch-side preprocessing and training augmentation.

:class:`~robustfer.data.preprocess.Preprocess` (stored with the weights) says how a face crop
becomes a model input; :class:`EvalTransform` applies it and returns a tensor, with the same
arithmetic as the numpy :func:`~robustfer.data.preprocess.preprocess_face` the application path
uses. Augmentation uses albumentations (no torchvision needed).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from robustfer.data.preprocess import Preprocess, normalize, resize_square, to_channels

__all__ = ["AugmentConfig", "EvalTransform", "Preprocess", "TrainTransform", "to_tensor"]

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never phone home at import


def to_tensor(img: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """uint8 (H, W, C) at input size -> normalised float tensor (C, H, W)
    (:func:`~robustfer.data.preprocess.normalize`, the arithmetic the application path uses)."""
    return torch.from_numpy(normalize(img, pre))


class EvalTransform:
    """Deterministic preprocessing: channels, square resize, normalisation."""

    def __init__(self, pre: Preprocess) -> None:
        self.pre = pre

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        img = resize_square(to_channels(img, self.pre.in_chans), self.pre.input_size)
        return to_tensor(img, self.pre)

    def with_points(self, img: np.ndarray, pts: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The image as :meth:`__call__` makes it, and (L, 2) landmarks moved with it."""
        from robustfer.data.landmarks import resize_points

        return self(img), resize_points(pts, img.shape[:2], self.pre.input_size)


@dataclass
class AugmentConfig:
    """Training augmentation (albumentations), applied before the resize to input size.

    Attributes:
        hflip: probability of a horizontal flip.
        scale: random zoom range of the affine transform.
        translate: max shift as a fraction of the side.
        rotate: max rotation in degrees.
        brightness: brightness jitter (fraction).
        contrast: contrast jitter (fraction).
        erasing: probability of erasing one random rectangle (random-erasing regularisation).
        occluders: probability of drawing one realistic occluder (mask, sunglasses, hand,
            scarf, hair: :mod:`robustfer.data.real_occluders`) on the face, before the affine,
            so it moves with the face.
        occluder_kinds: the kinds drawn from, uniformly.
    """

    hflip: float = 0.5
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.1
    rotate: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    erasing: float = 0.0
    occluders: float = 0.0
    occluder_kinds: list[str] = field(default_factory=lambda: ["mask", "sunglasses", "hand", "scarf", "hair"])


class TrainTransform:
    """Augment with albumentations, then preprocess exactly like :class:`EvalTransform`.

    Randomness comes from numpy/python's global generators, which the engine seeds per
    data-loader worker, so runs are reproducible for a given seed.
    """

    def __init__(self, pre: Preprocess, aug: AugmentConfig) -> None:
        import albumentations as A

        self.pre = pre
        self.hflip = aug.hflip
        self.occluders = float(aug.occluders)
        self.occluder_kinds = list(aug.occluder_kinds)
        if self.occluders > 0:
            from robustfer.data.real_occluders import REALISTIC_KINDS

            bad = [k for k in self.occluder_kinds if k not in REALISTIC_KINDS]
            if bad or not self.occluder_kinds:
                from robustfer.errors import ConfigError

                raise ConfigError(f"aug.occluder_kinds={self.occluder_kinds}: choose from {list(REALISTIC_KINDS)}.")
        ops: list[Any] = []
        if aug.hflip > 0:
            ops.append(A.HorizontalFlip(p=aug.hflip))
        if aug.rotate > 0 or aug.translate > 0 or tuple(aug.scale) != (1.0, 1.0):
            ops.append(
                A.Affine(
                    scale=tuple(aug.scale), translate_percent=(-aug.translate, aug.translate),
                    rotate=(-aug.rotate, aug.rotate), border_mode=cv2.BORDER_REFLECT_101, p=1.0,
                )
            )
        if aug.brightness > 0 or aug.contrast > 0:
            ops.append(A.RandomBrightnessContrast(aug.brightness, aug.contrast, p=0.8))
        if aug.erasing > 0:
            ops.append(
                A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.4),
                                hole_width_range=(0.1, 0.4), fill=0, p=aug.erasing)
            )
        self.aug = A.Compose(ops) if ops else None
        # the clean/occluded pair of the consistency loss: one draw of every operation, applied
        # to both images
        self.aug_pair = A.Compose(ops, additional_targets={"occluded": "image"}) if ops else None
        # With landmarks: the same operations but the flip, which with_points does itself so
        # that left and right points swap (albumentations only mirrors the coordinates).
        # The points follow the affine through the matrix albumentations reports having applied
        # (its own keypoint processing adds reflected copies of the points with reflect borders).
        kp_ops = [o for o in ops if not isinstance(o, A.HorizontalFlip)]
        self.aug_points = A.Compose(kp_ops, save_applied_params=True) if kp_ops else None

    @staticmethod
    def _reseed(compose: Any) -> None:
        # albumentations >= 2 ignores the global generators: every Compose and transform
        # owns generators seeded from OS entropy. Reseed them for each image from numpy's
        # global generator (seeded per worker, saved in last.pt), as the docstring promises.
        # (albumentations 1.x draws from the global generators itself and has no such hook.)
        if hasattr(compose, "set_random_state"):
            seed = int(np.random.randint(0, 2**31 - 1))
            compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def _occlude(self, img: np.ndarray) -> np.ndarray:
        """A realistic occluder with probability ``occluders`` (numpy's global generator, seeded
        per worker like the rest of the augmentation)."""
        if self.occluders <= 0 or np.random.random() >= self.occluders:
            return img
        from robustfer.data.real_occluders import draw_occluder

        kind = self.occluder_kinds[int(np.random.randint(len(self.occluder_kinds)))]
        return draw_occluder(img, kind, np.random.default_rng(int(np.random.randint(0, 2**31 - 1))))

    def pair(self, img: np.ndarray, kinds: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views of one face with the same augmentation draw: as it is and under one
        realistic occluder (a kind from ``kinds``, default ``occluder_kinds``), for the
        clean/occluded consistency loss. The occluder is drawn before the affine, so it
        moves with the face exactly as in :meth:`__call__`."""
        from robustfer.data.real_occluders import draw_occluder

        kinds = list(kinds or self.occluder_kinds)
        img = to_channels(img, self.pre.in_chans)
        kind = kinds[int(np.random.randint(len(kinds)))]
        occ = draw_occluder(img, kind, np.random.default_rng(int(np.random.randint(0, 2**31 - 1))))
        occ = occ[:, :, None] if occ.ndim == 2 else occ
        if self.aug_pair is not None:
            self._reseed(self.aug_pair)
            out = self.aug_pair(image=img, occluded=occ)
            img, occ = out["image"], out["occluded"]
            img = img[:, :, None] if img.ndim == 2 else img
            occ = occ[:, :, None] if occ.ndim == 2 else occ
        size = self.pre.input_size
        return to_tensor(resize_square(img, size), self.pre), to_tensor(resize_square(occ, size), self.pre)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        img = self._occlude(to_channels(img, self.pre.in_chans))
        if self.aug is not None:
            self._reseed(self.aug)
            out = self.aug(image=img)["image"]
            img = out[:, :, None] if out.ndim == 2 else out
        return to_tensor(resize_square(img, self.pre.input_size), self.pre)

    def with_points(self, img: np.ndarray, pts: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Augment the image and its (L, 2) landmarks together; returns both at input size.

        Points pushed out of the image by the affine keep their (outside) coordinates; the
        models' landmark crops shift such boxes back inside.
        """
        from robustfer.data.landmarks import flip_points, resize_points

        img = self._occlude(to_channels(img, self.pre.in_chans))
        pts = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
        if self.hflip > 0 and np.random.random() < self.hflip:
            img = np.ascontiguousarray(img[:, ::-1])
            pts = flip_points(pts, img.shape[1])
        if self.aug_points is not None:
            self._reseed(self.aug_points)
            out = self.aug_points(image=img)
            img = out["image"][:, :, None] if out["image"].ndim == 2 else out["image"]
            for _, params in out.get("applied_transforms", []):
                m = params.get("matrix") if isinstance(params, dict) else None
                if m is not None:  # 3x3 projective matrix on (x, y, 1); NaN points stay NaN
                    h = np.c_[pts, np.ones(len(pts), np.float32)] @ np.asarray(m, np.float32).T
                    pts = (h[:, :2] / h[:, 2:]).astype(np.float32)
        size = self.pre.input_size
        return to_tensor(resize_square(img, size), self.pre), resize_points(pts, img.shape[:2], size)
