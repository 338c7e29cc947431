"""Differentiable square crop-and-zoom through a sigmoid boxcar mask (RA-CNN / PhaNet).

Fu, Zheng, Mei, "Look Closer to See Better: Recurrent Attention Convolutional Neural Network
for Fine-grained Image Recognition", CVPR 2017 (RA-CNN, Sec. 3.2), as used by PhaNet (Liu,
Peng, Zeng, Shan, arXiv 1905.10059, Eq. 5). A square of centre ``(x, y)`` and half side ``l``
(pixels of the image it is cut from) selects a region through the element-wise product
``X_att = X * M(x, y, l)`` with the 2-D boxcar

    M = [h(x' - x_tl) - h(x' - x_br)] * [h(y' - y_tl) - h(y' - y_br)],  h(z) = 1 / (1 + exp(-k z)),

``x_tl = x - l``, ``x_br = x + l`` (and the same for y), evaluated at every pixel centre
``(x', y')``; the attended region is then zoomed to the output size by bilinear interpolation.
Both steps are differentiable in ``(x, y, l)``: through the mask (its edges) and through the
bilinear sampling grid, so an attention network that predicts the square learns from the loss
of whatever reads the zoomed crop.

Coordinates: pixel ``j`` covers ``[j, j + 1)``, so its centre is ``j + 0.5`` and the image spans
``[0, W] x [0, H]``; this is the ``align_corners=False`` convention of ``grid_sample``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustfer.errors import ModelError


def boxcar_mask(centre: torch.Tensor, half: torch.Tensor, size: tuple[int, int], k: float = 10.0) -> torch.Tensor:
    """The sigmoid boxcar mask of one square per image (RA-CNN, PhaNet Eq. 5).

    Args:
        centre: (B, 2) square centres ``(x, y)`` in pixels.
        half: (B,) half sides ``l`` in pixels.
        size: ``(H, W)`` of the image the mask multiplies.
        k: sharpness of the logistic edges, per pixel (RA-CNN: 10, a nearly hard edge; smaller
            values spread the gradient over more pixels).

    Returns:
        (B, 1, H, W) mask, about 1 inside the square and 0 outside.
    """
    h, w = size
    dtype, device = centre.dtype, centre.device
    xs = torch.arange(w, dtype=dtype, device=device) + 0.5  # (W,) pixel centres x'
    ys = torch.arange(h, dtype=dtype, device=device) + 0.5  # (H,) pixel centres y'
    cx, cy, l = centre[:, 0:1], centre[:, 1:2], half.reshape(-1, 1)  # (B, 1) each
    # Eq. 5: [h(x' - x_tl) - h(x' - x_br)], h(z) = sigmoid(k z)               (B, W)
    mx = torch.sigmoid(k * (xs - (cx - l))) - torch.sigmoid(k * (xs - (cx + l)))
    my = torch.sigmoid(k * (ys - (cy - l))) - torch.sigmoid(k * (ys - (cy + l)))  # (B, H)
    return (my[:, :, None] * mx[:, None, :]).unsqueeze(1)  # (B, 1, H, W): M = M_x * M_y


def boxcar_crop(images: torch.Tensor, centre: torch.Tensor, half: torch.Tensor,
                out_size: tuple[int, int] | None = None, k: float = 10.0) -> torch.Tensor:
    """Attend to one square per image with the boxcar mask and zoom it to ``out_size``.

    ``X_att = X * M`` (Eq. 5), then the square ``[x - l, x + l] x [y - l, y + l]`` of ``X_att``
    is resampled bilinearly onto an ``out_size`` grid (the zoom of RA-CNN / PhaNet). Samples
    that would fall outside the image repeat its border (``padding_mode="border"``), so a square
    touching the edge gets no dark rim. Runs in float32 (or float64) even under autocast, so
    that sub-pixel box coordinates are not rounded to bfloat16.

    Args:
        images: (B, C, H, W).
        centre: (B, 2) square centres ``(x, y)`` in pixels of ``images``.
        half: (B,) half sides in pixels (> 0).
        out_size: ``(h, w)`` of the zoomed crop; ``None`` = the input's ``(H, W)``.
        k: boxcar sharpness per pixel (see :func:`boxcar_mask`).

    Returns:
        (B, C, h, w) crops, differentiable w.r.t. ``images``, ``centre`` and ``half``.
    """
    if images.ndim != 4:
        raise ModelError(f"boxcar_crop expects images (B, C, H, W), got shape {tuple(images.shape)}.")
    b, c, h, w = images.shape
    if centre.shape != (b, 2) or half.shape != (b,):
        raise ModelError(f"boxcar_crop needs centre (B, 2) and half (B,) for a batch of {b}, got "
                         f"{tuple(centre.shape)} and {tuple(half.shape)}.")
    oh, ow = out_size or (h, w)
    with torch.autocast(images.device.type, enabled=False):
        dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        x = images.to(dtype)
        centre, half = centre.to(dtype), half.to(dtype)
        attended = x * boxcar_mask(centre, half, (h, w), k)  # (B, C, H, W)  Eq. 5: X * M
        # zoom: affine_grid maps output coords in [-1, 1] onto input coords; pixel u of the
        # input is the normalised coordinate 2u / W - 1, so the square's centre is 2x / W - 1
        # and its half side 2l / W
        zero = torch.zeros_like(half)
        theta = torch.stack([torch.stack([2 * half / w, zero, 2 * centre[:, 0] / w - 1], -1),
                             torch.stack([zero, 2 * half / h, 2 * centre[:, 1] / h - 1], -1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, [b, c, oh, ow], align_corners=False)  # (B, h, w, 2)
        return F.grid_sample(attended, grid, mode="bilinear", padding_mode="border", align_corners=False)
