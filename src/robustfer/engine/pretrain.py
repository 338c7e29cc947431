"""Self-supervised pretraining on face images without their labels: SimCLR.

Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Each face of a batch of ``N`` is seen twice, under two independent
draws of the recipe's augmentation (``aug``) followed by a random resized crop and random
erasing (:func:`strong_views`); the model's features ``h = f(x)`` (``ModelOutput.features``) go
through a projection head ``z = g(h)`` (Linear-BN-ReLU-Linear, Sec. 2.1 "a MLP with one hidden
layer") and the NT-Xent loss (Eq. 1)

    l(i, j) = -log exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau)

with ``sim`` the cosine similarity, is averaged over all ``2N`` positive pairs (Alg. 1). The
head is dropped afterwards; the run's ``best.safetensors`` holds the model after the last epoch
(its classifier untrained) for a later recipe's ``model.init``.

Used by ``robustfer train`` when the recipe sets ``pretrain.method: simclr``: the same data
section (``data.train`` plus ``data.extra_train`` -- labels are never read), optimiser, schedule,
seed, threads and ``last.pt`` resumption (after every epoch) as a supervised run.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from robustfer.data.transforms import TrainTransform
from robustfer.engine.checkpoint import load_training_state, save_training_state
from robustfer.engine.config import Config, dump_config
from robustfer.engine.data import EpochSampler, TorchView, build_train_val, make_loader, seed_loader_for_epoch
from robustfer.engine.device import resolve_device, seed_everything
from robustfer.engine.regularize import resolve_checkpoint
from robustfer.errors import ConfigError
from robustfer.models import create_model
from robustfer.runtime.checkpoint import CheckpointMeta, save_model

METHODS = ("none", "simclr")


class TwoViews(Dataset):
    """Each item: two independently augmented views of one face (``image``, ``image2``)."""

    def __init__(self, view: TorchView) -> None:
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.view[i]["image"], "image2": self.view[i]["image"]}


def strong_views(x: torch.Tensor, gen: torch.Generator, min_scale: float, erasing: float) -> torch.Tensor:
    """SimCLR's random resized crop (area fraction in [``min_scale``, 1], aspect 3/4..4/3,
    resized back to the input size) and, with probability ``erasing``, one erased box (value
    0, the normalised mid-grey) per image; per sample, drawn from ``gen``."""
    b = x.shape[0]
    area = min_scale + (1.0 - min_scale) * torch.rand(b, generator=gen)
    logr = (torch.rand(b, generator=gen) * 2 - 1) * math.log(4 / 3)
    sx = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
    sy = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sy)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="reflection", align_corners=False)
    if erasing > 0:
        h, w = x.shape[-2:]
        for i in torch.nonzero(torch.rand(b, generator=gen) < erasing).flatten().tolist():
            eh, ew = (int(v) for v in (torch.rand(2, generator=gen) * 0.3 + 0.15) * torch.tensor([h, w]))
            y0 = int(torch.randint(0, h - eh + 1, (1,), generator=gen))
            x0 = int(torch.randint(0, w - ew + 1, (1,), generator=gen))
            out[i, :, y0:y0 + eh, x0:x0 + ew] = 0.0
    return out


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Eq. 1), mean over the 2N positive pairs (Alg. 1)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # k != i
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class ProjectionHead(nn.Module):
    """g(h) = W2 ReLU(BN(W1 h)) (Sec. 2.1)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
                                 nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def pretrain(cfg: Config) -> dict[str, Any]:
    """Run ``cfg.pretrain`` (see the module docstring); returns :func:`~robustfer.engine.train.train`'s
    summary (``best_epoch``: the last epoch, no metric, no report)."""
    from robustfer.engine.train import build_optimizer, check_resume_config, lr_lambda, preprocess_from

    p = cfg.pretrain
    if p.method not in METHODS or p.method == "none":
        raise ConfigError(f"pretrain.method {p.method!r}: use one of {', '.join(m for m in METHODS if m != 'none')}.")
    if not 0.0 < p.crop_scale <= 1.0 or not 0.0 <= p.erasing <= 1.0 or p.temperature <= 0:
        raise ConfigError(f"pretrain.crop_scale={p.crop_scale} (in (0, 1]), pretrain.erasing={p.erasing} "
                          f"(in [0, 1]) and pretrain.temperature={p.temperature} (> 0): fix the bad value.")
    t0 = time.time()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    run_dir, last_path = cfg.run_dir, cfg.run_dir / "last.pt"
    st = load_training_state(last_path) if cfg.train.resume and last_path.exists() else None
    if st is not None:
        check_resume_config(st, last_path, cfg)  # a changed recipe never continues an old run
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))

    pre = preprocess_from(cfg)
    train_ds, _ = build_train_val(cfg.data)
    print(f"pretrain ({p.method}) on {train_ds.spec}: {len(train_ds)} images, labels unused", flush=True)
    sampler = EpochSampler(train_ds.labels, shuffle=True, seed=cfg.train.seed,
                           weights=getattr(train_ds, "sampling_weights", None))
    loader = make_loader(TwoViews(TorchView(train_ds, TrainTransform(pre, cfg.aug))), cfg.train.batch_size,
                         sampler, cfg.data.num_workers, seed=cfg.train.seed, drop_last=True)
    steps = len(loader) if not cfg.train.max_steps_per_epoch else min(len(loader), cfg.train.max_steps_per_epoch)
    if steps == 0:
        raise ConfigError(f"{len(train_ds)} training images make no batch of train.batch_size="
                          f"{cfg.train.batch_size}: lower the batch size.")
    model = create_model(cfg.model.name, num_classes=train_ds.num_classes, in_chans=pre.in_chans,
                         **cfg.model.options).to(device)
    with torch.no_grad():
        feats = model.eval()(torch.zeros(2, pre.in_chans, pre.input_size, pre.input_size, device=device)).features
    if feats is None or feats.ndim != 2:
        raise ConfigError(f"model {cfg.model.name!r} exposes no (B, D) ModelOutput.features to pretrain.")
    head = ProjectionHead(feats.shape[1], p.hidden_dim, p.proj_dim).to(device)
    both = nn.ModuleDict({"model": model, "head": head})
    optimizer = build_optimizer(cfg, both)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    gen = torch.Generator().manual_seed(cfg.train.seed + 104729)
    start, history = 1, []
    if st is not None:
        both.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        gen.set_state(st["gen"])
        start, history = st["epoch"] + 1, st["history"]
        print(f"resumed {last_path} after epoch {st['epoch']}", flush=True)
    meta = CheckpointMeta(model_name=cfg.model.name, model_options=dict(cfg.model.options),
                          class_names=train_ds.classes, preprocess=pre, config=cfg.to_dict(), epoch=0, metrics={})
    amp = cfg.train.amp and (device.type == "cuda" or cfg.train.amp_cpu)
    for epoch in range(start, cfg.train.epochs + 1):
        sampler.set_epoch(epoch)
        if cfg.data.num_workers > 0:  # workers draw their augmentation from per-epoch seeds
            seed_loader_for_epoch(loader, cfg.train.seed, epoch)
        both.train()
        t_epoch, total, n = time.time(), 0.0, 0
        bar = tqdm(total=steps, desc=f"pretrain {epoch}/{cfg.train.epochs}", disable=not cfg.train.progress,
                   dynamic_ncols=True)
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            x1 = strong_views(batch["image"], gen, p.crop_scale, p.erasing).to(device)
            x2 = strong_views(batch["image2"], gen, p.crop_scale, p.erasing).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                h = model(torch.cat([x1, x2])).features
                z = head(h.float())
            loss = nt_xent(z[: len(x1)], z[len(x1):], p.temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretrain loss became {float(loss)} at epoch {epoch} step {step}; "
                                         "lower optim.lr.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                nn.utils.clip_grad_norm_(both.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            total, n = total + float(loss.detach()) * len(x1), n + len(x1)
            bar.set_postfix(loss=f"{total / n:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            bar.update(1)
        bar.close()
        secs = time.time() - t_epoch
        row = {"epoch": epoch, "lr": scheduler.get_last_lr()[0], "train_loss": total / max(n, 1),
               "epoch_seconds": round(secs, 1), "images_per_second": round(n / max(secs, 1e-9), 1)}
        history.append(row)
        meta.epoch, meta.metrics = epoch, {"pretrain_loss": row["train_loss"]}
        save_model(run_dir / "best.safetensors", model, meta)
        state = {"model": both.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "gen": gen.get_state(), "epoch": epoch,
                 "history": history, "meta": {"config": json.dumps(cfg.to_dict())}}
        save_training_state(last_path, state)
        print(f"pretrain epoch {epoch}: NT-Xent {row['train_loss']:.4f} ({secs:.0f}s, "
              f"{row['images_per_second']:.0f} faces/s)", flush=True)
    print(f"pretrained weights: {run_dir / 'best.safetensors'} ({time.time() - t0:.0f} s); use them with "
          f"model.init: {run_dir}", flush=True)
    return {"run_dir": str(run_dir), "best_epoch": len(history), "best_metric": float("nan"),
            "history": history, "report": None}


def load_init_weights(model: nn.Module, spec: str) -> tuple[int, int]:
    """``model.init``: load every tensor of checkpoint ``spec`` whose name and shape match the
    model's; returns (loaded, model tensors). A checkpoint that matches fewer than half of the
    model's tensors is an error (another architecture)."""
    from safetensors.torch import load_file

    path = resolve_checkpoint(spec, "model.init")
    src = load_file(str(path))
    own = model.state_dict()
    take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if 2 * len(take) < len(own):
        raise ConfigError(f"model.init {spec!r} ({path}) shares no tensor (same name and shape) with "
                          f"{len(own) - len(take)} of this model's {len(own)}: it is another architecture; "
                          "pretrain the same model.name and model.options.")
    model.load_state_dict(take, strict=False)
    return len(take), len(own)


__all__ = ["ProjectionHead", "TwoViews", "load_init_weights", "nt_xent", "pretrain", "strong_views"]
