"""How a decoded face crop becomes a model input, without PyTorch.

:class:`Preprocess` (channels, square size, mean and std, crop geometry) is saved in every
checkpoint; training, evaluation, the Recognizer, the CLI, the service and ONNX export all build
their input pipeline from it, so inference always matches training. :func:`preprocess_face` is
the evaluation transform in numpy: the application path (ONNX Runtime) runs it without torch,
and :class:`~robustfer.data.transforms.EvalTransform` wraps the same arithmetic for training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from robustfer.errors import ConfigError


@dataclass(frozen=True)
class Preprocess:
    """How a face crop becomes a model input.

    Attributes:
        input_size: side of the square input in pixels.
        in_chans: 1 (grayscale) or 3 (RGB).
        mean: per-channel mean of [0, 1] pixel values, subtracted.
        std: per-channel std, divided by.
        face_crop: how faces were cropped for training: ``"loose"`` means a square box
            around the face, as in FER2013/FERPlus; ``"aligned"`` a 5-point similarity
            alignment.
        crop_scale: side of the square crop the face front end cuts around a detected face,
            relative to the (Haar frontal) face box. The default 1.05 was measured on FERPlus:
            the Haar cascade's box on 1,009 of 1,500 random FER2013Train faces has a median side
            of 0.96 of the image (1 / 1.043) and is centred (``benchmarks/calibrate_face_crop.py``).
        crop_shift: vertical offset of the crop centre below the box centre, in box heights.
    """

    input_size: int = 48
    in_chans: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    face_crop: str = "loose"
    crop_scale: float = 1.05
    crop_shift: float = 0.0

    def __post_init__(self) -> None:
        if self.in_chans not in (1, 3):
            raise ConfigError(f"preprocess in_chans must be 1 or 3, got {self.in_chans}.")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigError(
                f"preprocess mean {self.mean} and std {self.std} need {self.in_chans} value(s), "
                "one per input channel."
            )
        if not 0.5 <= self.crop_scale <= 4.0:
            raise ConfigError(f"preprocess crop_scale {self.crop_scale} is outside 0.5-4 (crop side / face box side).")
        if self.input_size < 8:
            raise ConfigError(f"preprocess input_size {self.input_size} is too small (>= 8).")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        d = dict(d)
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)


def to_channels(img: np.ndarray, in_chans: int) -> np.ndarray:
    """Convert a uint8 (H, W) or (H, W, 3) RGB image to (H, W, in_chans)."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == in_chans:
        return img
    if in_chans == 1:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.repeat(img, 3, axis=2)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, C) to (size, size, C): area filter to shrink, bilinear to enlarge."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    out = cv2.resize(img, (size, size), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


def normalize(img: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 (H, W, C) at input size -> normalised float32 (C, H, W).

    float32 throughout, in the order ``(x / 255 - mean) / std``: bit-identical to the torch
    transform used in training (``tests/test_transforms.py``).
    """
    x = np.ascontiguousarray(img).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(pre.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def preprocess_face(img: np.ndarray, pre: Preprocess) -> np.ndarray:
    """A uint8 RGB or grayscale face crop -> the model input (C, S, S) float32."""
    return normalize(resize_square(to_channels(img, pre.in_chans), pre.input_size), pre)
