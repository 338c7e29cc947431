"""Face-region boxes and a differentiable, batched crop-and-resize.

Boxes are ``(x0, y0, x1, y1)`` **fractions** of the image side (0 = left/top edge, 1 =
right/bottom edge), so one set of boxes serves every input size. :func:`crop_regions` cuts
them out of a batch with one ``grid_sample`` call (bilinear, zeros outside the image), so the
crops are computed on the fly inside a model: no offline crop folders, gradients reach the
image, and the same code runs on CPU, GPU and in ONNX export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustfer.errors import ModelError

#: The seven fixed boxes of the official RAN AffectNet code (Wang et al., TIP 2020), as
#: fractions of the face: lower face, top-left, top-right, and four centre crops of shrinking
#: margin, then the upper face.
RAN_FIXED_BOXES: tuple[tuple[float, float, float, float], ...] = (
    (0.125, 0.25, 0.875, 1.0),
    (0.0, 0.0, 0.75, 0.75),
    (0.25, 0.0, 1.0, 0.75),
    (0.05, 0.05, 0.95, 0.95),
    (0.10, 0.10, 0.90, 0.90),
    (0.125, 0.125, 0.875, 0.875),
    (0.125, 0.0, 0.875, 0.75),
)


def check_boxes(boxes: torch.Tensor, values: bool = True) -> torch.Tensor:
    """Validate fraction boxes of shape (K, 4) or (B, K, 4); returns them as float.

    ``values=False`` checks the shape only: the value check reads the tensor, which a traced
    or exported graph (ONNX) cannot do, so models check their boxes once when built.
    """
    if boxes.ndim not in (2, 3) or boxes.shape[-1] != 4:
        raise ModelError(f"region boxes must be (K, 4) or (B, K, 4) fractions, got shape {tuple(boxes.shape)}.")
    boxes = boxes.float()
    if values and bool(((boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])).any()):
        raise ModelError("every region box needs x1 > x0 and y1 > y0 (fractions of the face).")
    return boxes


def crop_regions(x: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int],
                 check: bool = True) -> torch.Tensor:
    """Crop every box out of every image and resize it to ``size``.

    Args:
        x: images (B, C, H, W).
        boxes: (K, 4) boxes shared by the batch, or (B, K, 4) per image; fractions of the side.
        size: output side ``s`` or ``(h, w)``.
        check: refuse boxes with ``x1 <= x0`` or ``y1 <= y0`` (reads the values; models pass
            ``False`` for boxes checked or generated valid, which keeps them exportable).

    Returns:
        (B, K, C, h, w) crops, bilinearly resampled; parts of a box outside the image are zero.
    """
    b, c = x.shape[:2]
    boxes = check_boxes(boxes, values=check).to(x.device)
    if boxes.ndim == 2:
        boxes = boxes.unsqueeze(0).expand(b, -1, -1)
    if boxes.shape[0] != b:
        raise ModelError(f"{boxes.shape[0]} sets of boxes for a batch of {b} images.")
    k = boxes.shape[1]
    oh, ow = (size, size) if isinstance(size, int) else size
    x0, y0, x1, y1 = boxes.reshape(b * k, 4).unbind(-1)
    # affine_grid maps output coords u in [-1, 1] to input coords; a fraction f of the side is
    # the normalised coordinate 2f - 1, so the box centre is x0 + x1 - 1 and its half-width x1 - x0
    zero = torch.zeros_like(x0)
    theta = torch.stack([torch.stack([x1 - x0, zero, x0 + x1 - 1], -1),
                         torch.stack([zero, y1 - y0, y0 + y1 - 1], -1)], 1)  # (B*K, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), [b * k, c, oh, ow], align_corners=False)  # (B*K, h, w, 2)
    src = x.unsqueeze(1).expand(b, k, *x.shape[1:]).reshape(b * k, *x.shape[1:])  # (B*K, C, H, W)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.view(b, k, c, oh, ow)


def random_boxes(batch: int, k: int, scale: tuple[float, float] = (0.7, 0.95),
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """``k`` random square boxes per image, side a uniform fraction in ``scale``, inside the image.

    Returns:
        (batch, k, 4) fraction boxes.
    """
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ModelError(f"random crop scale {scale} must satisfy 0 < low <= high <= 1.")
    u = torch.rand(batch, k, 3, generator=generator).to(device)
    side = lo + (hi - lo) * u[..., 0]
    x0 = (1 - side) * u[..., 1]
    y0 = (1 - side) * u[..., 2]
    return torch.stack([x0, y0, x0 + side, y0 + side], -1)


def landmark_boxes(landmarks: torch.Tensor, image_size: tuple[int, int], side: float = 0.4) -> torch.Tensor:
    """Square boxes of ``side`` (fraction of the face) centred on each landmark.

    A box that would leave the image is shifted back inside (its size is kept), so every crop
    is all face. Non-finite landmarks (a detector that gives none for a point) become the
    image centre.

    Args:
        landmarks: (B, L, 2) points ``(x, y)`` in pixels of the model's input image.
        image_size: ``(H, W)`` of that input image.
        side: box side as a fraction of the image side, in (0, 1].

    Returns:
        (B, L, 4) fraction boxes.
    """
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ModelError(f"landmarks must be (B, L, 2) pixel points, got shape {tuple(landmarks.shape)}.")
    if not 0 < side <= 1:
        raise ModelError(f"landmark box side {side} must be in (0, 1].")
    h, w = image_size
    centre = landmarks.float() / torch.tensor([w, h], dtype=torch.float32, device=landmarks.device)
    known = torch.isfinite(centre).all(-1, keepdim=True)  # (B, L, 1): both coordinates given
    centre = torch.where(known, centre, torch.full_like(centre, 0.5))
    half = side / 2
    centre = centre.clamp(half, 1 - half)
    return torch.cat([centre - half, centre + half], -1)
