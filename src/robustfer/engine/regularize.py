"""Regularisers of the training step that work with every model and loss.

* :class:`ModelEma` -- an exponential moving average of the weights (Polyak averaging, as in
  timm's ``ModelEmaV2``); the engine validates it next to the raw weights every epoch and keeps
  whichever is better on validation (``train.ema``).
* :func:`mix_batch` -- mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019)
  (``train.mixup`` / ``train.cutmix``). The loss of a mixed batch is
  ``lam * L(out, batch) + (1 - lam) * L(out, batch[perm])``, which equals the cross-entropy
  against the mixed target for every cross-entropy loss and also works for the methods' own
  losses.
* :func:`consistency_kl` -- the clean/occluded consistency term (``train.consistency``): the
  occluded view of a face is pulled towards the prediction of its clean view,
  ``KL(stopgrad(p_clean) || p_occluded)``.
* :class:`TeacherEnsemble` -- knowledge distillation (Hinton et al., 2015) from one or more
  trained robustfer checkpoints (``distill.teachers``): the student also matches the average of
  the teachers' temperature-softened probabilities, ``T^2 * KL(p_teacher^T || p_student^T)``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustfer.errors import ConfigError

__all__ = ["ModelEma", "TeacherEnsemble", "consistency_kl", "distill_kl", "mix_batch"]


class ModelEma:
    """EMA of a model's state: ``ema = d * ema + (1 - d) * weights`` after every optimiser step.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the early
    average is not dominated by the random initialisation. Floating-point buffers (batch-norm
    statistics) are averaged too; integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema={decay}: the EMA decay must lie in (0, 1), e.g. 0.999; "
                              "null turns it off.")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        own = self.module.state_dict()
        for k, v in model.state_dict().items():
            e = own[k]
            if e.dtype.is_floating_point:
                e.mul_(d).add_(v.detach().to(e.dtype), alpha=1.0 - d)
            else:
                e.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


def _cut_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """CutMix's box (Yun et al., Alg. A1): area ``1 - lam`` of the image, centre uniform,
    clipped to the image."""
    r = float(np.sqrt(1.0 - lam))
    ch, cw = int(h * r), int(w * r)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return y0, y1, x0, x1


def mix_batch(x: torch.Tensor, mixup: float, cutmix: float, prob: float,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Mix a batch ``x`` (B, C, H, W) with a permutation of itself.

    With probability ``prob`` the batch is mixed: by CutMix or mixup (one of them at random
    when both alphas are > 0), ``lam ~ Beta(alpha, alpha)``. Returns ``(x, perm, lam)``;
    ``perm`` is None when the batch was left as it is. For CutMix ``lam`` is the fraction of
    the image that stayed (after clipping the box), as in the paper.
    """
    if (mixup <= 0 and cutmix <= 0) or x.shape[0] < 2 or rng.random() >= prob:
        return x, None, 1.0
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    if use_cutmix:
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = _cut_box(h, w, lam, rng)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    return x, perm, lam


def consistency_kl(clean_logits: torch.Tensor, occluded_logits: torch.Tensor) -> torch.Tensor:
    """``KL(stopgrad(p_clean) || p_occluded)``, batch mean: the occluded view learns to say what
    the clean view says; the clean view gets no gradient from this term."""
    p = F.softmax(clean_logits.detach().float(), dim=-1)
    return F.kl_div(F.log_softmax(occluded_logits.float(), dim=-1), p, reduction="batchmean")


def distill_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s distillation term ``T^2 * KL(p_teacher^T || softmax(z_student / T))``,
    batch mean (``teacher_probs`` already softened at ``T``)."""
    logq = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(logq, teacher_probs, reduction="batchmean") * temperature ** 2


def resolve_checkpoint(spec: str, role: str = "distill teacher") -> Path:
    """A checkpoint named in a recipe (a distillation teacher, ``model.init``): a shipped model
    name (``default``), a ``.safetensors`` file or a run folder."""
    from robustfer.runtime.checkpoint import safetensors_checkpoint
    from robustfer.runtime.weights import PRETRAINED

    path = safetensors_checkpoint(spec, f"{role} must be a .safetensors checkpoint (or a run folder "
                                        "holding best.safetensors) or a shipped name.")
    if not path.is_file():
        raise ConfigError(f"{role} {spec!r}: {path} does not exist; train that run first "
                          f"or fix the path (shipped names: {sorted(PRETRAINED)}).")
    return path


class TeacherEnsemble:
    """Frozen teacher models whose averaged softened probabilities the student matches.

    Every teacher must take the student's input (same preprocessing: size, channels,
    normalisation, crop) and predict the same classes; otherwise its input would not be the
    face it was trained on, and the construction raises :class:`ConfigError` saying so.
    """

    def __init__(self, specs: list[str], student_pre: Any, class_names: list[str],
                 device: torch.device, temperature: float, channels_last: bool = False) -> None:
        from robustfer.runtime.checkpoint import load_model

        if temperature <= 0:
            raise ConfigError(f"distill.temperature={temperature}: must be > 0 (e.g. 2).")
        self.temperature = float(temperature)
        self.models: list[nn.Module] = []
        for spec in specs:
            path = resolve_checkpoint(spec)
            model, meta = load_model(path, device)
            if meta.preprocess != student_pre:
                raise ConfigError(
                    f"distill teacher {spec!r} ({path}) expects input {meta.preprocess}, the student "
                    f"gets {student_pre}: distil from a teacher trained on the same preprocessing, "
                    "or change the student's data settings to match.")
            if list(meta.class_names) != list(class_names):
                raise ConfigError(
                    f"distill teacher {spec!r} predicts {list(meta.class_names)}, the student "
                    f"{list(class_names)}: use a teacher with the student's label space.")
            for p in model.parameters():
                p.requires_grad_(False)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.models.append(model.eval())
        if not self.models:
            raise ConfigError("distill.teachers is empty: name at least one checkpoint (e.g. default).")

    @torch.no_grad()
    def probs(self, x: torch.Tensor, amp: bool = False) -> torch.Tensor:
        """Mean over teachers of ``softmax(logits / T)`` (float32, (B, C))."""
        acc = None
        for m in self.models:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = m(x).logits
            p = F.softmax(logits.float() / self.temperature, dim=-1)
            acc = p if acc is None else acc + p
        assert acc is not None
        return acc / len(self.models)
