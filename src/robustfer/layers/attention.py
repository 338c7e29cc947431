"""Attention blocks shared by the attention models.

* :class:`SpatioChannelAttention` -- SCAN, the spatio-channel attention net of Gera &
  Balasubramanian, "Landmark guidance independent spatio-channel attention and complementary
  context information based facial expression recognition", Pattern Recognition Letters 145
  (2021), arXiv 2007.10298; official code github.com/1980x/SCAN-CCI-FER
  (``models/attentionnet.py``, class ``Attentiomasknet``). One weight for every channel at
  every location: ``A = sigmoid(BN(PReLU(conv3x3(X))))``, output ``X * A``.
* :class:`ECA` -- efficient channel attention of Wang et al., "ECA-Net: Efficient Channel
  Attention for Deep Convolutional Neural Networks", CVPR 2020 (official code
  github.com/BangguWu/ECANet): global average pooling, a 1-D convolution across channels
  whose kernel size grows with ``log2(C)`` (:func:`eca_kernel_size`), a sigmoid, and a
  per-channel rescaling.
* :class:`MaskedBatchNorm2d` -- batch norm whose training statistics skip masked-out
  positions, so that zero-padded patches of unequal size can be batched (SCAN-CCI's 5x5
  patch grid) without the padding biasing the statistics.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that can leave positions out of its batch statistics.

    Without a mask, or in eval mode with running statistics, it is exactly
    ``nn.BatchNorm2d``. With a mask in training mode, the per-channel mean and (biased)
    variance are taken over the positions where the mask is 1; the running statistics are
    updated from them as ``nn.BatchNorm2d`` would (unbiased variance, ``momentum`` or a
    cumulative average when ``momentum`` is None). Every position, masked or not, is then
    normalised with those statistics; the caller ignores the masked ones.

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` would replace this module with a plain
    ``SyncBatchNorm`` that takes no mask, so models using it must not be converted.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x`` (N, C, H, W).

        Args:
            x: input, (N, C, H, W).
            mask: 1 where a position counts, 0 where it does not; broadcastable to ``x``,
                e.g. (N, 1, H, W) or (1, C, H, W).
        """
        use_batch_stats = self.training or not self.track_running_stats
        if mask is None or not use_batch_stats:
            return super().forward(x)
        m = mask.to(x.dtype).expand_as(x)
        n = m.sum(dim=(0, 2, 3))  # (C,) positions that count, per channel
        mean = (x * m).sum(dim=(0, 2, 3)) / n  # (C,)
        centred = x - mean[None, :, None, None]
        var = (centred.square() * m).sum(dim=(0, 2, 3)) / n  # (C,) biased, for normalising
        if self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(unbiased.detach(), alpha=f)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


class SpatioChannelAttention(nn.Module):
    """SCAN: a separate attention weight for every channel at every spatial location.

    ``A = sigmoid(BN(PReLU(conv3x3(X))))`` with a C -> C 3x3 convolution (stride 1, zero
    padding 1, no bias), a PReLU with one slope per channel, and batch norm -- the order of
    the official ``Attentiomasknet`` (conv, PReLU, BN, sigmoid); the output is ``X * A``.
    ``A`` has the shape of ``X`` and lies in (0, 1).

    ``groups > 1`` holds ``groups`` independent SCAN blocks applied side by side to an input
    whose channels are the ``groups`` inputs concatenated, (N, groups * C, H, W): a grouped
    convolution, per-group PReLU slopes and BN statistics. It is the vectorised form of
    ``groups`` separate blocks, with the same parameters and outputs.

    Args:
        channels: C, the channels of one input.
        groups: independent blocks applied side by side (1 = one block).
    """

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.groups = groups
        total = channels * groups
        self.conv = nn.Conv2d(total, total, 3, stride=1, padding=1, groups=groups, bias=False)
        self.prelu = nn.PReLU(total)
        self.bn = MaskedBatchNorm2d(total)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend to ``x``.

        Args:
            x: (N, groups * C, H, W).
            mask: optional, broadcastable to ``x``: 1 at real positions, 0 at zero padding.
                Padded positions must hold zeros in ``x`` (so the convolution sees the zero
                padding a separate, smaller input would have) and are left out of the batch
                statistics.

        Returns:
            ``(x * A, A)``, both (N, groups * C, H, W).
        """
        a = torch.sigmoid(self.bn(self.prelu(self.conv(x)), mask))  # (N, G*C, H, W)
        return x * a, a


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size ``k = |log2(C) / gamma + b / gamma|_odd`` (Wang et al. 2020, Eq. 12).

    As the official ECA code computes it: ``t = int(|(log2(C) + b) / gamma|)``, then
    ``t`` if odd else ``t + 1``. With ``gamma=2, b=1``: C = 64 -> 3, 128 -> 5, 256 -> 5,
    1024 -> 5, 2048 -> 7.
    """
    if channels < 1:
        raise ValueError(f"ECA needs at least one channel, got {channels}.")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient channel attention (Wang et al., CVPR 2020).

    ``w = sigmoid(conv1d_k(GAP(X)))`` across the channel axis (one 1-D kernel of size ``k``
    shared by all channels, no bias, zero padding), output ``X * w`` broadcast over space.

    Args:
        channels: C.
        kernel_size: ``k``; None = :func:`eca_kernel_size` of ``channels``.
    """

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = eca_kernel_size(channels) if kernel_size is None else int(kernel_size)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA kernel size must be a positive odd number, got {k}.")
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights in (0, 1), (N, C)."""
        y = x.mean(dim=(2, 3))  # (N, C) global average pooling
        return torch.sigmoid(self.conv(y[:, None, :])[:, 0, :])  # (N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W), channels rescaled."""
        return x * self.weights(x)[:, :, None, None]
