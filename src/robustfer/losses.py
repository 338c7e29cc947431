"""Losses. Models return :class:`~robustfer.models.ModelOutput`; losses turn it into a scalar.

A loss is registered by name and built from ``LossConfig``; it is called as
``loss(output, batch) -> (scalar, {name: float})`` so the engine can log its parts without
knowing the method. Method-specific losses (region-biased, attention ranking, CosFace, ...)
join this registry: ``ran`` (cross-entropy + region-biased loss), ``scan_cci`` (the
weighted sum over SCAN-CCI's five heads), ``phanet`` (PhaNet's Eq. 9, by training phase) and
``aha`` are defined below.
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
from robustfer.models.schedule import Phase

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


# ---------------------------------------------------------------------- PhaNet
def attention_ranking_loss(p_prev: torch.Tensor, p_next: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """PhaNet's attention ranking loss (Liu et al., arXiv 1905.10059, Eq. 4; RA-CNN's inter-scale loss).

    ``L_s^R = max(0, p(y|s-1) - p(y|s) + margin)``: each finer scale must be at least ``margin``
    more confident of the true class y than the scale it was cut from. ``p_prev`` and ``p_next``
    are true-class probabilities, (B,) for one pair of scales or (B, S) for S pairs; the hinge
    is averaged over the batch and summed over the pairs (the sum over s = 2, 3 in Eq. 9).
    """
    if p_prev.shape != p_next.shape or p_prev.ndim not in (1, 2):
        raise ValueError(f"attention_ranking_loss needs two (B,) or (B, S) tensors of the same shape, got "
                         f"{tuple(p_prev.shape)} and {tuple(p_next.shape)}")
    return F.relu(p_prev - p_next + margin).mean(dim=0).sum()


def dcml_constraint(lambda_p: torch.Tensor) -> torch.Tensor:
    """PhaNet's constraint factor ``exp(-12 lambda_p (1 - lambda_p))`` (Eq. 9), element-wise.

    1 at ``lambda_p = 0`` and ``exp(-3)`` at 0.5: it penalises a pose weight that collapses to 0.
    """
    return torch.exp(-12.0 * lambda_p * (1.0 - lambda_p))


@register_loss("phanet")
class PhaNetLoss(ClassificationLoss):
    """PhaNet's loss (Liu et al., arXiv 1905.10059, Eq. 9) for a ``phanet_*`` model.

    ``lambda_e L(e) + lambda_p L(p) + sum_s L_s^att + exp(-12 lambda_p (1 - lambda_p))`` with
    ``L(e)`` the configured cross-entropy of the joint head (``output.logits``), ``L(p)`` the
    cross-entropy of ``output.pose_logits`` against ``batch["pose_bin"]`` over the samples whose
    pose is known (``pose_bin >= 0``), and ``L_s^att`` the configured cross-entropy of each
    scale (Eq. 3; ``output.region_logits``) plus, for s = 2, 3, the ranking loss of
    :func:`attention_ranking_loss` on the true-class (``batch["label"]``) probabilities (Eq. 4).
    lambda_e, lambda_p (``output.extras["lambda"]``, per sample) and the constraint factor are
    averaged over the pose-labelled samples. A batch without pose labels (or a model without a
    pose branch) has no pose term: lambda is fixed to [1, 0] and the constraint factor is off.

    The terms depend on the phase the forward pass ran in, a
    :class:`~robustfer.models.schedule.Phase` in ``output.phase`` (the training engine takes
    it from the model's ``training_schedule()`` and passes it to the forward, see
    :mod:`robustfer.models.phanet`, item 11): ``JOINT`` (and ``EVAL``) -- the whole loss;
    ``CLASSIFY`` -- everything except the ranking loss; ``RANK`` -- the ranking loss alone.

    Args:
        target, label_smoothing, class_weights: the expression cross-entropy (every scale and
            the joint head), as :class:`ClassificationLoss`.
        margin: ranking margin (paper: 0.05).
        scale_weight: weight of the per-scale cross-entropies (paper: 1).
        rank_weight: weight of the ranking loss (paper: 1).
    """

    def __init__(self, target: str = "hard", label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None, margin: float = 0.05, scale_weight: float = 1.0,
                 rank_weight: float = 1.0) -> None:
        super().__init__(target, label_smoothing, class_weights)
        if margin < 0 or scale_weight < 0 or rank_weight < 0:
            raise ConfigError(f"phanet loss: margin ({margin}), scale_weight ({scale_weight}) and rank_weight "
                              f"({rank_weight}) must be >= 0.")
        self.margin = float(margin)
        self.scale_weight = float(scale_weight)
        self.rank_weight = float(rank_weight)
        self._pose_checked = False  # the first training batch is checked for pose labels, once

    def forward(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        rl, lam, phase = output.region_logits, output.extras.get("lambda"), output.phase
        if rl is None or rl.ndim != 3 or rl.shape[1] < 2 or lam is None or phase is None:
            raise ConfigError("loss 'phanet' needs region_logits (B, S, C), extras 'lambda' and a phase from a "
                              "phanet_* model; use loss.name: ce for other models.")
        if not isinstance(phase, Phase):
            raise ConfigError(f"loss 'phanet' needs output.phase to be a robustfer.models.schedule.Phase, "
                              f"got {phase!r}.")
        ce = self.ce(output.logits, batch)  # L(e)
        ce_scales = torch.stack([self.ce(rl[:, s], batch) for s in range(rl.shape[1])]).sum()  # Eq. 3 over s
        y = batch["label"]
        p_y = rl.float().softmax(-1).gather(2, y[:, None, None].expand(-1, rl.shape[1], 1)).squeeze(2)  # (B, S)
        rank = attention_ranking_loss(p_y[:, :-1], p_y[:, 1:], self.margin)  # Eq. 4, s = 2..S

        lam = lam.float()
        zero = ce.new_zeros(())
        pose_loss, lam_e, lam_p, constraint = zero, zero + 1.0, zero, zero
        pose_bin = batch.get("pose_bin")
        known = None if output.pose_logits is None or pose_bin is None else pose_bin >= 0
        if known is not None and bool(known.any()):
            n_bins = output.pose_logits.shape[1]
            if bool((pose_bin[known] >= n_bins).any()):
                raise ConfigError(f"batch pose_bin up to {int(pose_bin.max())}, but the model has {n_bins} pose bins; "
                                  "build it with num_pose_bins matching the pose file (FERPlus pose files: 5).")
            pose_loss = F.cross_entropy(output.pose_logits[known].float(), pose_bin[known])  # L(p)
            lam_e, lam_p = lam[known, 0].mean(), lam[known, 1].mean()
            constraint = dcml_constraint(lam[known, 1]).mean()
        elif output.pose_logits is not None and phase is not Phase.EVAL and not self._pose_checked:
            import warnings

            warnings.warn("PhaNet's pose branch is on but the first training batch has no pose labels "
                          "(pose_bin -1 everywhere): the pose loss stays off and lambda is fixed to [1, 0] on every "
                          "batch without them. Attach labels with data.pose_file (a CSV from `robustfer "
                          "annotate-pose ferplus:train --out FILE`) or build the model with pose=False.",
                          stacklevel=2)
        if phase is not Phase.EVAL:
            self._pose_checked = True

        multi = lam_e * ce + lam_p * pose_loss + constraint  # Eq. 9 without the attention losses
        if phase is Phase.RANK:  # only the APNs are in the graph
            loss = self.rank_weight * rank
        elif phase is Phase.CLASSIFY:  # the squares are fixed
            loss = multi + self.scale_weight * ce_scales
        else:
            loss = multi + self.scale_weight * ce_scales + self.rank_weight * rank  # Eq. 9
        c = output.attention_weights
        parts = {"ce": ce, "ce_scales": ce_scales, "rank": rank, "pose": pose_loss, "lambda_e": lam_e,
                 "lambda_p": lam_p, "constraint": constraint}
        if c is not None:
            parts.update({f"c{i + 1}": c[:, i].float().mean() for i in range(c.shape[1])})
        return loss, {k: float(v.detach()) for k, v in parts.items()}


# ---------------------------------------------------------------------- AHA
def cosface_logits(cos: torch.Tensor, target: torch.Tensor, scale: float | torch.Tensor,
                   margin: float) -> torch.Tensor:
    """Large-margin cosine logits (CosFace: Wang et al., CVPR 2018, Eq. 4), used by AHA.

    ``s * (cos(theta_j) - m * 1[j = y])``: ``cos`` (B, C) holds the cosines between the
    L2-normalised features and the L2-normalised class weights, ``target`` (B,) the classes y.
    The softmax cross-entropy of these logits is the large-margin cosine loss.
    """
    if cos.ndim != 2 or target.shape != cos.shape[:1]:
        raise ValueError(f"cosface_logits needs cosines (B, C) and targets (B,), got {tuple(cos.shape)} "
                         f"and {tuple(target.shape)}")
    at_target = F.one_hot(target, cos.shape[1]).to(cos.dtype)  # (B, C) 1[j = y]
    return scale * (cos - margin * at_target)


@register_loss("aha")
class AHALoss(ClassificationLoss):
    """AHA's loss (Weng et al., ICPR 2020) for an ``aha_*`` model.

    ``fused_weight * L_fused + branch_weight * sum_n CE(branch n)``:

    * ``L_fused``: the configured cross-entropy of the fused classifier. With a CosFace head
      (the model puts the cosines in ``output.extras["cos_logits"]``) it is the large-margin
      cosine loss: the cross-entropy of :func:`cosface_logits` with margin ``margin`` and scale
      ``scale`` (None = the model's ``extras["cos_scale"]``, so training and the model's
      probabilities use the same s). With soft targets the margin goes to the class of
      ``batch["label"]`` (the majority vote) and the soft cross-entropy reads the margined
      logits. With a softmax head, ``output.logits`` as they are.
    * one configured cross-entropy per branch classifier, ``output.region_logits`` (B, N, C)
      (global, every region, mixture): the per-branch losses that push each sub-network's
      attention onto what tells the expressions apart. ``branch_weight = 0`` trains the fused
      output alone (and accepts any model).

    Args:
        target, label_smoothing, class_weights: the cross-entropy, as :class:`ClassificationLoss`.
        branch_weight: weight of the sum of branch cross-entropies (the paper gives none; 0.25).
        fused_weight: weight of the fused loss (1).
        margin: CosFace margin m (CosFace's 0.35); used only with a CosFace head.
        scale: CosFace scale s; None = the model's.
    """

    def __init__(self, target: str = "hard", label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None, branch_weight: float = 0.25,
                 fused_weight: float = 1.0, margin: float = 0.35, scale: float | None = None) -> None:
        super().__init__(target, label_smoothing, class_weights)
        if branch_weight < 0 or fused_weight < 0 or margin < 0:
            raise ConfigError(f"aha loss: branch_weight ({branch_weight}), fused_weight ({fused_weight}) and "
                              f"margin ({margin}) must be >= 0.")
        if scale is not None and scale <= 0:
            raise ConfigError(f"aha loss: scale ({scale}) must be > 0, or null to use the model's cos_scale.")
        self.branch_weight = float(branch_weight)
        self.fused_weight = float(fused_weight)
        self.margin = float(margin)
        self.scale = None if scale is None else float(scale)

    def forward(self, output: ModelOutput,
                batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cos = output.extras.get("cos_logits")
        if cos is not None:
            s = self.scale if self.scale is not None else output.extras.get("cos_scale")
            if s is None:
                raise ConfigError("loss 'aha' got cosines (extras['cos_logits']) but no scale; pass "
                                  "loss.options.scale, or use an aha_* model (it returns "
                                  "extras['cos_scale']).")
            fused = cosface_logits(cos.float(), batch["label"], s, self.margin)  # large-margin cosine logits
        else:
            fused = output.logits
        ce = self.ce(fused, batch)
        rl = output.region_logits
        if rl is None or rl.ndim != 3:
            if self.branch_weight > 0:
                raise ConfigError("loss 'aha' needs region_logits (B, N, C) from an aha_* model for its "
                                  "branch losses; use an aha_* model, or loss.options.branch_weight: 0.")
            branches = ce.new_zeros(())
        else:
            branches = torch.stack([self.ce(rl[:, n], batch) for n in range(rl.shape[1])]).sum()
        loss = self.fused_weight * ce + self.branch_weight * branches
        return loss, {"ce": float(ce.detach()), "ce_branches": float(branches.detach())}
