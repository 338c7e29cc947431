"""Facial landmarks that travel with a sample: storage convention, mirroring, model plumbing.

A :class:`~robustfer.data.base.Sample` may carry ``landmarks``: L points ``(x, y)`` in pixels of
the image as stored (before the sample's ``box`` crop). The engine keeps them in step with the
image through the box crop, training augmentation (flip, affine) and the resize to the model's
input, and passes them to models whose ``forward`` takes ``landmarks`` -- RAN with
``regions="landmarks"`` (crops centred on the points) and AHA (regions from the points) -- as a
(B, L, 2) tensor in input pixels. A dataset's landmarks are used only when every sample has the
same number of points; otherwise none are passed and the models use their landmark-free regions.

A horizontal flip mirrors the points and, for the known layouts, swaps left and right so that
point k keeps its meaning (:data:`FLIP_ORDER`): 4 = AHA's region centres (eyes, nose, mouth), 5 =
robustfer's detector order (subject's right eye = image-left first, left eye, nose, mouth
corners), 68 = iBUG 300-W. Other counts are mirrored without swapping.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch only where tensors are handled: the app path imports this without it
    import torch


def _ibug68_flip() -> list[int]:
    perm = list(range(68))
    pairs = [(i, 16 - i) for i in range(8)]                      # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]                # brows
    pairs += [(31, 35), (32, 34)]                                # nose base
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]                      # inner lips
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


#: Face-mesh (468-point) indices of the five points of :data:`FIVE_POINTS`: each eye is the mean
#: of its corners and lids; the nose tip; the mouth corners (the subject's right first).
MESH_RIGHT_EYE = (33, 133, 159, 145)     # subject's right eye (image left): corners, lids
MESH_LEFT_EYE = (263, 362, 386, 374)
MESH_NOSE_TIP = 1
MESH_MOUTH_RIGHT, MESH_MOUTH_LEFT = 61, 291
#: The 5-point order of every detector and landmark file (``robustfer.inference.detect.LANDMARK_NAMES``).
FIVE_POINTS = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
#: ``crop_scale`` of the FER2013 crop geometry the mesh template was measured in (the
#: ``Preprocess`` default; ``robustfer.inference.align.FER_CROP_SCALE``).
TEMPLATE_CROP_SCALE = 1.05


def five_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """The five points (:data:`FIVE_POINTS` order) of a (468, >= 2) face mesh, (5, 2)."""
    m = np.asarray(mesh, dtype=np.float64)[:, :2]
    return np.stack([m[list(MESH_RIGHT_EYE)].mean(0), m[list(MESH_LEFT_EYE)].mean(0), m[MESH_NOSE_TIP],
                     m[MESH_MOUTH_RIGHT], m[MESH_MOUTH_LEFT]])


def template_five(crop_scale: float = TEMPLATE_CROP_SCALE) -> np.ndarray:
    """Where the five points sit in a FER2013-style crop of margin ``crop_scale``, (5, 2) in units
    of the crop side: those of the FER2013 mesh template (the median face the front end aligns
    faces to), shrunk about the centre for looser crops -- so, in a face the front end aligned,
    the points the alignment put there; in a FER2013 image, the typical face's."""
    from robustfer.data.real_occluders import template_points

    return 0.5 + (five_from_mesh(template_points()) - 0.5) * (TEMPLATE_CROP_SCALE / crop_scale)


#: Index order after a horizontal flip, by number of points.
FLIP_ORDER: dict[int, list[int]] = {4: [1, 0, 2, 3], 5: [1, 0, 2, 4, 3], 68: _ibug68_flip()}


def parse_points(text: str | None) -> np.ndarray | None:
    """``"x1 y1 x2 y2 ..."`` (spaces, commas or semicolons) -> float32 (L, 2); ``None`` if empty.

    Raises:
        ValueError: a value is not a number, or the count is odd (the message says which).
    """
    text = (text or "").replace(";", " ").replace(",", " ").strip()
    if not text:
        return None
    try:
        vals = [float(v) for v in text.split()]
    except ValueError:
        raise ValueError(f"landmarks {text!r} are not numbers; expected 'x1 y1 x2 y2 ...' in pixels.") from None
    if len(vals) % 2:
        raise ValueError(f"{len(vals)} landmark values is odd; expected x y pairs.")
    return np.asarray(vals, dtype=np.float32).reshape(-1, 2)


def flip_points(pts: np.ndarray, width: int) -> np.ndarray:
    """Mirror (L, 2) pixel points of an image ``width`` pixels wide, swapping left and right."""
    out = np.asarray(pts, dtype=np.float32).copy()
    out[:, 0] = width - 1 - out[:, 0]
    order = FLIP_ORDER.get(len(out))
    return out[order] if order is not None else out


def flip_points_tensor(pts: torch.Tensor, width: int) -> torch.Tensor:
    """:func:`flip_points` for a (B, L, 2) tensor."""
    out = pts.clone()
    out[..., 0] = width - 1 - out[..., 0]
    order = FLIP_ORDER.get(out.shape[1])
    return out[:, order] if order is not None else out


def resize_points(pts: np.ndarray, size_from: tuple[int, int], size_to: int) -> np.ndarray:
    """Points of an (H, W) image mapped onto its square resize to ``size_to`` pixels."""
    h, w = size_from
    scale = np.array([size_to / w, size_to / h], dtype=np.float32)
    # pixel centres map onto pixel centres: (x + 0.5) * s - 0.5
    return (np.asarray(pts, dtype=np.float32) + 0.5) * scale - 0.5


def takes_landmarks(model: Any) -> bool:
    """Whether ``model.forward`` (through DDP / compile wrappers) accepts ``landmarks``."""
    m = getattr(model, "module", model)
    m = getattr(m, "_orig_mod", m)
    try:
        return "landmarks" in inspect.signature(m.forward).parameters
    except (TypeError, ValueError):
        return False


def model_inputs(model: Any, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Keyword arguments beyond the image for ``model``: ``landmarks`` where both sides have them."""
    if "landmarks" in batch and takes_landmarks(model):
        return {"landmarks": batch["landmarks"].to(device, non_blocking=True)}
    return {}
