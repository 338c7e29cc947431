"""Losses. Models return :class:`~robustfer.models.ModelOutput`; losses turn it into a scalar.

A loss is registered by name and built from ``LossConfig``; it is called as
``loss(output, batch) -> (scalar, {name: float})`` so the engine can log its parts without
knowing the method. Method-specific losses (region-biased, attention ranking, CosFace, ...)
join this registry: ``ran`` (cross-entropy + region-biased loss) and ``scan_cci`` (the
weighted sum over SCAN-CCI's five heads) are defined below.
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
        loss = self.ce(output.logits, batch)
        return loss, {"ce": float(loss.detach())}

    def ce(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The configured cross-entropy of ``logits`` (B, C) against the batch's target."""
        logits = logits.float()
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
        return loss


def region_biased_loss(weights: torch.Tensor, alpha: float) -> torch.Tensor:
    """RAN's region-biased loss (Wang et al., TIP 2020, Eq. 5), vectorised over the batch.

    ``L_RB = max(0, alpha - (mu_max - mu_0))`` averaged over the batch, where ``weights`` is
    (B, R) with the whole face's weight ``mu_0`` in column 0 and the crops' weights ``mu_1..``
    after it; ``mu_max`` is the largest crop weight. It pushes at least one region to be
    weighted ``alpha`` above the whole face. (The official code loops over samples in Python.)
    """
    if weights.ndim != 2 or weights.shape[1] < 2:
        raise ValueError(f"region_biased_loss needs (B, R>=2) weights, got {tuple(weights.shape)}")
    mu_0 = weights[:, 0]
    mu_max = weights[:, 1:].max(dim=1).values
    return F.relu(alpha - (mu_max - mu_0)).mean()


class RANLoss(ClassificationLoss):
    """RAN's training loss: ``CE + lambda * L_RB`` (Wang et al., TIP 2020, Sec. III-C).

    The cross-entropy is the configured :class:`ClassificationLoss` on ``output.logits``; the
    region-biased term reads the self-attention weights ``output.attention_weights`` (B, R),
    whole face first. The official FERPlus code uses ``alpha = 0.1`` and ``lambda = 1``;
    ``rb_weight = 0`` trains RAN without the region-biased loss (the paper's ablation).
    """

    def __init__(self, target: str = "hard", label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None, alpha: float = 0.1,
                 rb_weight: float = 1.0) -> None:
        super().__init__(target, label_smoothing, class_weights)
        if alpha < 0 or rb_weight < 0:
            raise ConfigError(f"ran loss: alpha ({alpha}) and rb_weight ({rb_weight}) must be >= 0.")
        self.alpha = float(alpha)
        self.rb_weight = float(rb_weight)

    def forward(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if output.attention_weights is None:
            raise ConfigError("loss 'ran' needs a model that returns attention_weights (a ran_* model); "
                              "use loss.name: ce for other models.")
        ce = self.ce(output.logits, batch)
        rb = region_biased_loss(output.attention_weights.float(), self.alpha)
        loss = ce + self.rb_weight * rb
        return loss, {"ce": float(ce.detach()), "rb": float(rb.detach())}


class ScanCciLoss(ClassificationLoss):
    """SCAN-CCI's loss (Gera & Balasubramanian, PRL 2021): ``0.2 * CE(attention branch) +
    0.8 * sum_r CE(region head r)``.

    Reads ``output.region_logits`` (B, 1 + R, C): the attention branch first, then the R
    complementary-context region heads. Each CE is the configured :class:`ClassificationLoss`.
    """

    def __init__(self, target: str = "hard", label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None, attention_weight: float = 0.2,
                 region_weight: float = 0.8) -> None:
        super().__init__(target, label_smoothing, class_weights)
        self.attention_weight = float(attention_weight)
        self.region_weight = float(region_weight)

    def forward(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        rl = output.region_logits
        if rl is None or rl.ndim != 3 or rl.shape[1] < 2:
            raise ConfigError("loss 'scan_cci' needs region_logits (B, 1 + R, C) from a scan_cci_* model; "
                              "use loss.name: ce for other models.")
        att = self.ce(rl[:, 0], batch)
        regions = torch.stack([self.ce(rl[:, r], batch) for r in range(1, rl.shape[1])]).sum()
        loss = self.attention_weight * att + self.region_weight * regions
        return loss, {"ce_attention": float(att.detach()), "ce_regions": float(regions.detach())}


LossBuilder = Callable[..., nn.Module]
_LOSSES: dict[str, LossBuilder] = {"ce": ClassificationLoss, "ran": RANLoss, "scan_cci": ScanCciLoss}


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
