"""Losses. Models return :class:`~robustfer.models.ModelOutput`; losses turn it into a scalar.

A loss is registered by name and built from ``LossConfig``; it is called as
``loss(output, batch) -> (scalar, {name: float})`` so the engine can log its parts without
knowing the method. Method-specific losses (region-biased, attention ranking, CosFace, ...)
join this registry in later files.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustfer.errors import ConfigError
from robustfer.models.output import ModelOutput

TARGETS = ("hard", "soft", "sample")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against soft targets (rows sum to 1).

    Unweighted: the batch mean of ``-sum_c t_c log p_c``. With class weights ``w`` it is
    ``sum_i sum_c w_c t_ic (-log p_ic) / sum_i sum_c w_c t_ic``, which reduces to
    ``F.cross_entropy(..., weight=w)`` for one-hot targets.
    """
    nll = -F.log_softmax(logits, dim=-1)
    if weight is None:
        return (target * nll).sum(dim=-1).mean()
    wt = target * weight
    return (wt * nll).sum() / wt.sum()


class ClassificationLoss(nn.Module):
    """Cross-entropy on hard labels, soft targets, or labels sampled from soft targets.

    Args:
        target: ``hard``, ``soft`` or ``sample`` (see :class:`~robustfer.engine.config.LossConfig`).
        label_smoothing: mixes the target with the uniform distribution.
        class_weights: optional per-class weights (every target mode).
    """

    def __init__(self, target: str = "hard", label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ConfigError(f"loss.target {target!r} is unknown; expected one of {TARGETS} or 'auto'.")
        self.target = target
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = output.logits.float()
        if self.target == "hard":
            loss = F.cross_entropy(logits, batch["label"], weight=self.class_weights,
                                   label_smoothing=self.label_smoothing)
        else:
            soft = batch["soft"]
            if self.target == "sample":
                # FER+ "probability" mode: a one-hot label drawn from the vote distribution
                # at every step (official ferplus.py, _process_target).
                idx = torch.multinomial(soft, 1).squeeze(1)
                soft = F.one_hot(idx, soft.shape[1]).to(logits.dtype)
            if self.label_smoothing > 0:
                soft = soft * (1 - self.label_smoothing) + self.label_smoothing / soft.shape[1]
            loss = soft_cross_entropy(logits, soft, self.class_weights)
        return loss, {"ce": float(loss.detach())}


LossBuilder = Callable[..., nn.Module]
_LOSSES: dict[str, LossBuilder] = {"ce": ClassificationLoss}


def register_loss(name: str) -> Callable[[LossBuilder], LossBuilder]:
    """Register a loss builder ``fn(target=..., label_smoothing=..., class_weights=..., **options)``."""

    def deco(fn: LossBuilder) -> LossBuilder:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        _LOSSES[name] = fn
        return fn

    return deco


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered loss; an unknown name lists the close matches."""
    if name not in _LOSSES:
        close = difflib.get_close_matches(name, list(_LOSSES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown loss {name!r}.{hint} Known losses: {', '.join(sorted(_LOSSES))}.")
    try:
        return _LOSSES[name](**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad option for loss {name!r}: {e}") from None
