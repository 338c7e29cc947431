"""The one typed output every robustfer model returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from robustfer.models.schedule import Phase


@dataclass
class ModelOutput:
    """Output of a FER model's ``forward``.

    Attributes:
        logits: expression logits, (B, num_classes). Always present.
        features: the representation the classifier reads, (B, D), where the model exposes it.
        region_logits: per-region / per-branch logits, (B, R, num_classes).
        attention_weights: per-region or per-scale attention weights, (B, R).
        attention_maps: spatial attention, (B, 1|R, h, w).
        pose_logits: head-pose logits, (B, num_pose_bins).
        boxes: attended boxes in input pixels, (B, R, 4) as (x0, y0, x1, y1).
        extras: anything else a method's loss needs, keyed by name (tensors).
        phase: the training phase this forward pass ran in, for models with a training
            schedule (:mod:`robustfer.models.schedule`; the loss reads it); None for others.
    """

    logits: torch.Tensor
    features: torch.Tensor | None = None
    region_logits: torch.Tensor | None = None
    attention_weights: torch.Tensor | None = None
    attention_maps: torch.Tensor | None = None
    pose_logits: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    phase: Phase | None = None
