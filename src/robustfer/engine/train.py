"""The one training engine for every robustfer model.

``train(cfg)`` builds the datasets, the model (by registry name) and the loss (by registry
name) from a :class:`~robustfer.engine.config.Config`, and runs a plain loop: seeded, with a
progress bar and ETA, per-step LR schedule, bf16 autocast and channels-last on GPU, DDP when
launched by ``torchrun``. After every epoch it evaluates the validation split, appends a
row to ``metrics.csv``/``metrics.jsonl``, writes ``best.safetensors`` when the selection
metric improved and ``last.pt`` (full training state) always — both atomically — and
``last.pt`` also every ``train.checkpoint_minutes`` within an epoch, so a killed run resumes
where it stopped (mid-epoch: after the last batch saved). Finally it reloads the best checkpoint and evaluates
``data.eval`` (test set, subsets, occluders) into ``report.json``.

The engine knows nothing about a particular method: a method plugs in through its model
(which returns :class:`~robustfer.models.ModelOutput`) and its registered loss.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from robustfer.data.landmarks import takes_landmarks
from robustfer.data.transforms import EvalTransform, Preprocess, TrainTransform
from robustfer.engine.checkpoint import (
    CheckpointMeta,
    load_training_state,
    save_model,
    save_training_state,
)
from robustfer.engine.config import Config, dump_config
from robustfer.engine.data import (
    EpochSampler,
    TorchView,
    build_eval_dataset,
    build_train_val,
    make_loader,
    seed_loader_for_epoch,
)
from robustfer.engine.evaluate import (
    dataset_metrics,
    evaluate_datasets,
    predict_dataset,
    print_summary,
    write_report,
)
from robustfer.errors import ConfigError
from robustfer.losses import build_loss
from robustfer.models import create_model

SELECT_METRICS = ("accuracy", "mean_class_accuracy", "macro_f1")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA GPU is available; use 'auto' or 'cpu'.")
    return torch.device(name)


def lr_lambda(cfg: Config, steps_per_epoch: int):
    """Per-step LR multiplier: linear warm-up, then cosine / step / constant."""
    o = cfg.optim
    total = max(1, cfg.train.epochs * steps_per_epoch)
    warm = int(o.warmup_epochs * steps_per_epoch)
    if o.scheduler not in ("cosine", "step", "none"):
        raise ConfigError(f"optim.scheduler {o.scheduler!r} is unknown; expected cosine, step or none.")

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if o.scheduler == "cosine":
            t = (step - warm) / max(1, total - warm)
            return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if o.scheduler == "step":
            epoch = step // steps_per_epoch
            return o.step_gamma ** sum(epoch >= e for e in o.step_epochs)
        return 1.0

    return f


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW; no weight decay on biases and normalisation parameters."""
    o = cfg.optim
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas))
    raise ConfigError(f"optim.name {o.name!r} is unknown; expected sgd, adamw or adam.")


def resolve_target(cfg: Config) -> str:
    """``loss.target``; ``auto`` follows the FER+ label mode of the training data."""
    if cfg.loss.target != "auto":
        return cfg.loss.target
    return {"probability": "sample", "crossentropy": "soft"}.get(cfg.data.label_mode, "hard")


def preprocess_from(cfg: Config) -> Preprocess:
    d = cfg.data
    return Preprocess(d.input_size, d.in_chans, tuple(d.mean), tuple(d.std), d.face_crop,
                      d.crop_scale, d.crop_shift)


# Settings a resumed run may change: they do not alter what is trained (train.epochs extends a
# run on purpose, see the README; eval.* only shapes the final evaluation).
RESUME_MAY_CHANGE = ("train.epochs", "train.threads", "train.progress", "train.device", "train.resume",
                     "train.checkpoint_minutes", "data.root", "data.num_workers", "output_dir", "eval.")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and not k.endswith("options"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(st: dict[str, Any], last_path: Path, cfg: Config) -> None:
    """Refuse to resume the training state ``st`` (read from ``last_path``) under a config that
    would train something else.

    The run's saved config (in ``last.pt``) is compared with ``cfg``, key by key, except the
    settings in :data:`RESUME_MAY_CHANGE`; a difference raises :class:`ConfigError` naming the
    keys and both values, so a changed recipe never silently continues an old run.
    """
    try:
        saved = json.loads(st["meta"]["config"])
    except (KeyError, TypeError, ValueError):
        return  # a training state from before configs were saved in it: nothing to compare
    old, new = _flat(saved), _flat(json.loads(json.dumps(cfg.to_dict())))
    # keys known to one side only come from another robustfer version: not compared
    diff = [k for k in sorted(set(old) & set(new))
            if old.get(k) != new.get(k) and not any(k == m or (m.endswith(".") and k.startswith(m))
                                                     for m in RESUME_MAY_CHANGE)]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} in the run, {new.get(k)!r} now" for k in diff[:6])
        raise ConfigError(
            f"{last_path} was trained with a different config ({shown}{'; ...' if len(diff) > 6 else ''}). "
            "Resuming would mix two recipes: give the new run its own name (--name), or start this "
            "one afresh with train.resume=false.")


class _CsvLog:
    """Append-only per-epoch log as CSV and JSON lines (survives a killed run)."""

    def __init__(self, run_dir: Path) -> None:
        self.csv = run_dir / "metrics.csv"
        self.jsonl = run_dir / "metrics.jsonl"

    def write(self, row: dict[str, Any]) -> None:
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Make the logs hold exactly ``rows``: the epochs of the training state being resumed
        (a run killed between logging an epoch and saving ``last.pt`` re-runs that epoch), or
        none when a run starts afresh in an existing folder."""
        for p in (self.csv, self.jsonl):
            p.unlink(missing_ok=True)
        for row in rows:
            self.write(row)


def train(cfg: Config) -> dict[str, Any]:
    """Train, select on validation, evaluate ``data.eval``; returns a summary dict.

    Returns:
        ``{"run_dir", "best_epoch", "best_metric", "history", "report"}`` (``report`` is
        ``None`` on non-main DDP ranks or when ``data.eval`` is empty).
    """
    t_start = time.time()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.select_metric not in SELECT_METRICS:
        raise ConfigError(f"train.select_metric {cfg.train.select_metric!r} is unknown; expected one of {SELECT_METRICS}.")
    dev0 = resolve_device(cfg.train.device)
    dinfo = setup_distributed(dev0)
    device = resolve_device(cfg.train.device, dinfo.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    seed_everything(cfg.train.seed + dinfo.rank)
    run_dir = cfg.run_dir
    last_path = run_dir / "last.pt"
    resume_state = load_training_state(last_path) if cfg.train.resume and last_path.exists() else None
    if resume_state is not None:
        check_resume_config(resume_state, last_path, cfg)  # before config.yaml is overwritten
    if dinfo.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
    say = (lambda *a: print(*a, flush=True)) if dinfo.is_main else (lambda *a: None)

    # ---------------------------------------------------------------- data
    pre = preprocess_from(cfg)
    train_ds, val_ds = build_train_val(cfg.data)
    say(f"train {train_ds.spec}: {len(train_ds)} images {train_ds.class_counts()}")
    say(f"val   {val_ds.spec}: {len(val_ds)} images (checkpoint selection)")
    n_pose = sum(s.pose_bin is not None and s.pose_bin >= 0 for s in train_ds.samples)
    if n_pose:
        say(f"pose labels: {n_pose} of {len(train_ds)} training images")
    if cfg.data.cache:
        train_ds.preload(progress=cfg.train.progress and dinfo.is_main)
        val_ds.preload(progress=cfg.train.progress and dinfo.is_main)
    sampler = EpochSampler(train_ds.labels, shuffle=True, balanced=cfg.data.balanced_sampling,
                           seed=cfg.train.seed, rank=dinfo.rank, world_size=dinfo.world_size)
    train_view = TorchView(train_ds, TrainTransform(pre, cfg.aug))
    loader = make_loader(train_view, cfg.train.batch_size, sampler, cfg.data.num_workers,
                         seed=cfg.train.seed + dinfo.rank, drop_last=len(sampler) > cfg.train.batch_size)
    steps_per_epoch = len(loader)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)

    # ---------------------------------------------------------------- model, loss, optimiser
    model = create_model(cfg.model.name, num_classes=train_ds.num_classes, in_chans=pre.in_chans,
                         **cfg.model.options).to(device)
    # channels-last pays on GPU and on CPU too (oneDNN): ~2x for compact_cnn on 2 cores.
    channels_last = cfg.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    class_weights = None
    if cfg.loss.class_weights == "inverse":
        counts = np.bincount(train_ds.labels, minlength=train_ds.num_classes).astype(np.float64)
        w = counts.sum() / np.maximum(counts, 1) / train_ds.num_classes
        class_weights = torch.tensor(w, dtype=torch.float32, device=device)
    elif cfg.loss.class_weights not in (None, "none"):
        raise ConfigError(f"loss.class_weights {cfg.loss.class_weights!r} is unknown; expected none or inverse.")
    loss_fn = build_loss(cfg.loss.name, target=resolve_target(cfg), label_smoothing=cfg.loss.label_smoothing,
                         class_weights=class_weights, **cfg.loss.options).to(device)
    optimizer = build_optimizer(cfg, model)
    model_landmarks = takes_landmarks(model)
    if train_ds.landmark_count:
        say(f"landmarks: {train_ds.landmark_count} per face"
            + ("" if model_landmarks else f" (not used: {cfg.model.name} takes none)"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))
    ddp_model: nn.Module = model
    if dinfo.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    meta_base = dict(model_name=cfg.model.name, model_options=dict(cfg.model.options),
                     class_names=train_ds.classes, preprocess=pre, config=cfg.to_dict())

    # ---------------------------------------------------------------- resume
    start_epoch, best, best_epoch, history, bad_epochs = 1, -1.0, 0, [], 0
    partial: dict[str, Any] | None = None  # the sums of an epoch interrupted after a mid-epoch save
    if resume_state is not None:
        st, resume_state = resume_state, None  # read once, above
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        start_epoch, best, best_epoch = st["epoch"] + 1, st["best"], st["best_epoch"]
        history, bad_epochs = st["history"], st["bad_epochs"]
        torch.set_rng_state(st["torch_rng"])
        np.random.set_state(st["numpy_rng"])
        random.setstate(st["python_rng"])
        partial = st.get("partial")
        where = (f"epoch {st['epoch']}" if partial is None else
                 f"step {partial['step']}/{steps_per_epoch} of epoch {partial['epoch']}")
        say(f"resumed from {last_path} after {where} (best {cfg.train.select_metric} "
            f"{best:.4f} at epoch {best_epoch})")
    log = _CsvLog(run_dir)
    if dinfo.is_main:
        log.rewrite(history)

    def training_state(epoch_done: int, part: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs; ``part``: the sums of the epoch in progress."""
        st = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch_done, "best": best, "best_epoch": best_epoch, "history": history,
            "bad_epochs": bad_epochs, "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
            "meta": CheckpointMeta(**meta_base, epoch=epoch_done, metrics={}).to_strings(),
        }
        if part is not None:
            st["partial"] = part
        return st

    ckpt_every = (cfg.train.checkpoint_minutes or 0) * 60.0
    last_save = time.time()

    # ---------------------------------------------------------------- loop
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        if bad_epochs and cfg.train.early_stopping_patience and bad_epochs >= cfg.train.early_stopping_patience:
            break
        skip = 0
        loss_sum, correct, seen, prior_time = 0.0, 0, 0, 0.0
        part_sums: dict[str, float] = {}
        if partial is not None and partial["epoch"] == epoch:
            skip = partial["step"]
            loss_sum, correct, seen = partial["loss_sum"], partial["correct"], partial["seen"]
            part_sums, prior_time = dict(partial["part_sums"]), partial["seconds"]
        partial = None
        sampler.set_epoch(epoch, skip=skip * cfg.train.batch_size)
        if cfg.data.num_workers > 0:
            # with workers, augmentation randomness comes from per-epoch worker seeds; with
            # none, from the main process's generators, which last.pt saves and restores
            seed_loader_for_epoch(loader, cfg.train.seed, epoch, dinfo.rank)
        ddp_model.train()
        t0 = time.time() - prior_time
        bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch}/{cfg.train.epochs}",
                   disable=not (cfg.train.progress and dinfo.is_main), dynamic_ncols=True)
        for step, batch in enumerate(loader, start=skip):
            if step >= steps_per_epoch:
                break
            x = batch["image"].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            tb = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "image"}
            kw = {"landmarks": tb["landmarks"]} if "landmarks" in tb and model_landmarks else {}
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=cfg.train.amp and (device.type == "cuda" or cfg.train.amp_cpu)):
                out = ddp_model(x, **kw)
            loss, parts = loss_fn(out, tb)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {float(loss)} at epoch {epoch} step {step}; lower optim.lr "
                    "or set train.grad_clip.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            n = x.shape[0]
            loss_sum += float(loss.detach()) * n
            for k, v in parts.items():
                part_sums[k] = part_sums.get(k, 0.0) + v * n
            correct += int((out.logits.detach().argmax(1) == tb["label"]).sum())
            seen += n
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                            lr=f"{scheduler.get_last_lr()[0]:.2e}")
            bar.update(1)
            if ckpt_every and dinfo.is_main and step + 1 < steps_per_epoch and time.time() - last_save >= ckpt_every:
                # mid-epoch save: a run killed now loses at most checkpoint_minutes of work
                save_training_state(last_path, training_state(epoch - 1, {
                    "epoch": epoch, "step": step + 1, "loss_sum": loss_sum, "correct": correct,
                    "seen": seen, "part_sums": dict(part_sums), "seconds": time.time() - t0}))
                last_save = time.time()
        bar.close()
        train_time = time.time() - t0

        row: dict[str, Any] = {}
        improved = False
        if dinfo.is_main:
            out_v = predict_dataset(model, val_ds, pre, device, cfg.eval.batch_size,
                                    channels_last=channels_last, progress=False, tta=cfg.eval.tta)
            vm = dataset_metrics(val_ds, out_v)
            score = vm[cfg.train.select_metric]
            improved = score > best
            if improved:
                best, best_epoch, bad_epochs = score, epoch, 0
                save_model(run_dir / "best.safetensors", model, CheckpointMeta(
                    **meta_base, epoch=epoch, metrics={f"val_{k}": vm[k] for k in SELECT_METRICS}))
            else:
                bad_epochs += 1
            row = {"epoch": epoch, "lr": scheduler.get_last_lr()[0], "train_loss": loss_sum / max(1, seen),
                   "train_accuracy": correct / max(1, seen), "val_loss": vm["loss"],
                   "val_accuracy": vm["accuracy"], "val_mean_class_accuracy": vm["mean_class_accuracy"],
                   "val_macro_f1": vm["macro_f1"], "epoch_seconds": round(train_time, 1),
                   "images_per_second": round(seen * dinfo.world_size / max(train_time, 1e-9), 1),
                   "best": improved}
            if set(part_sums) != {"ce"}:
                # a method's loss terms (e.g. RAN's region-biased loss), epoch means
                row.update({f"train_{k}": v / max(1, seen) for k, v in part_sums.items()})
            history.append(row)
            log.write(row)
            save_training_state(last_path, training_state(epoch))
            last_save = time.time()
            say(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | "
                f"val acc {vm['accuracy']:.4f} mca {vm['mean_class_accuracy']:.4f} "
                f"({train_time:.0f}s, {row['images_per_second']:.0f} img/s){' *' if improved else ''}")
        if dinfo.enabled:
            flag = torch.tensor([bad_epochs], dtype=torch.long)
            dist.broadcast(flag, 0)
            bad_epochs = int(flag)

    # ---------------------------------------------------------------- final evaluation
    report = None
    if dinfo.is_main:
        say(f"best {cfg.train.select_metric} on {val_ds.spec}: {best:.4f} at epoch {best_epoch}")
        if cfg.train.epochs > 0:
            from robustfer.engine.checkpoint import load_model

            model, meta = load_model(run_dir / "best.safetensors", device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            if cfg.data.eval:
                datasets = {s: build_eval_dataset(s, cfg.data) for s in cfg.data.eval}
                results = evaluate_datasets(model, datasets, pre, device, cfg.eval,
                                            channels_last=channels_last, progress=cfg.train.progress)
                report = write_report(run_dir / "report.json", results, {
                    "checkpoint": str(run_dir / "best.safetensors"), "model": cfg.model.name,
                    "selected_on": val_ds.spec, "best_epoch": best_epoch,
                    "seed": cfg.train.seed, "train_wall_seconds": round(time.time() - t_start, 1),
                    "history": history}, plots=cfg.eval.plots)
                print_summary(results)
        if cfg.eval.plots and history:
            from robustfer.engine.plots import plot_training_curves

            plot_training_curves(history, run_dir / "training_curves.png")
    if dinfo.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return {"run_dir": str(run_dir), "best_epoch": best_epoch, "best_metric": best,
            "history": history, "report": report}


def evaluate_checkpoint(checkpoint: str | Path, specs: list[str], data_root: str | None,
                        out_dir: Path | None, eval_overrides: dict[str, Any] | None = None,
                        device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Evaluate a saved model on dataset specs, writing ``report.json`` to ``out_dir``.

    ``checkpoint`` may also be an exported ``.onnx`` file (e.g. an int8 one from
    ``robustfer export --int8``): it then runs with ONNX Runtime on the CPU, exactly as shipped.
    """
    from robustfer.engine.checkpoint import load_model
    from robustfer.engine.config import config_from_dict

    dev = resolve_device(device)
    is_onnx = Path(checkpoint).suffix == ".onnx"
    if is_onnx:
        from robustfer.export import OnnxModule, meta_from_onnx

        dev = torch.device("cpu")
        meta = meta_from_onnx(checkpoint)
        model = OnnxModule(checkpoint, threads=torch.get_num_threads())
    else:
        model, meta = load_model(checkpoint, dev)
    cfg = config_from_dict(meta.config)
    if data_root is not None:
        cfg.data.root = data_root
    for k, v in (eval_overrides or {}).items():
        setattr(cfg.eval, k, v)
    specs = specs or list(cfg.data.eval)
    datasets = {s: build_eval_dataset(s, cfg.data) for s in specs}
    # Same memory format as at training time, so the numbers reproduce bit for bit.
    cl = cfg.train.channels_last and not is_onnx
    if cl:
        model = model.to(memory_format=torch.channels_last)
    results = evaluate_datasets(model, datasets, meta.preprocess, dev, cfg.eval,
                                channels_last=cl, progress=progress)
    print_summary(results)
    ck = Path(checkpoint)
    out_dir = Path(out_dir) if out_dir else (ck if ck.is_dir() else ck.parent) / "eval"
    print(f"report: {out_dir / 'report.json'}")
    return write_report(out_dir / "report.json", results, {
        "checkpoint": str(checkpoint), "model": meta.model_name, "best_epoch": meta.epoch}, plots=cfg.eval.plots)


__all__ = ["EvalTransform", "evaluate_checkpoint", "train"]
