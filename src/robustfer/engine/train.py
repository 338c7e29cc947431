"""The one training engine for every robustfer model.

:class:`Trainer` builds the datasets, the model (by registry name) and the loss (by registry
name) from a :class:`~robustfer.engine.config.Config`, and runs a plain loop: seeded, with a
progress bar and ETA, per-step LR schedule, bf16 autocast and channels-last on GPU, DDP when
launched by ``torchrun``. After every epoch it evaluates the validation split, appends a
row to ``metrics.csv``/``metrics.jsonl``, writes ``best.safetensors`` when the selection
metric improved and ``last.pt`` (full training state) always -- both atomically -- and
``last.pt`` also every ``train.checkpoint_minutes`` within an epoch, so a killed run resumes
where it stopped (mid-epoch: after the last batch saved). Finally it reloads the best
checkpoint and evaluates ``data.eval`` (test set, subsets, occluders) into ``report.json``
(:mod:`robustfer.engine.evaluate`). :func:`train` is the entry point.

The engine knows nothing about a particular method: a method plugs in through its model
(which returns :class:`~robustfer.models.ModelOutput`), its registered loss and, where its
steps do not all train the same thing, a training schedule: a model with a
``training_schedule()`` method (e.g. PhaNet's alternation,
:class:`~robustfer.models.schedule.TrainingSchedule`) gets a :class:`ScheduleTask`, which
passes each step's phase to the model's forward and keeps the step count in ``last.pt``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from robustfer.data.landmarks import takes_landmarks
from robustfer.data.transforms import EvalTransform, Preprocess, TrainTransform
from robustfer.engine.checkpoint import load_training_state, save_training_state
from robustfer.engine.config import Config, dump_config
from robustfer.engine.data import (
    EpochSampler,
    TorchView,
    build_eval_dataset,
    build_train_val,
    make_loader,
    seed_loader_for_epoch,
)
from robustfer.engine.device import resolve_device, seed_everything, setup_distributed
from robustfer.engine.regularize import ModelEma, TeacherEnsemble, consistency_kl, distill_kl, mix_batch
from robustfer.engine.evaluate import (
    calibration_metrics,
    dataset_metrics,
    evaluate_datasets,
    predict_dataset,
    print_summary,
    write_report,
)
from robustfer.errors import ConfigError
from robustfer.losses import build_loss
from robustfer.models import create_model
from robustfer.runtime.checkpoint import CheckpointMeta, load_model, save_model

SELECT_METRICS = ("accuracy", "mean_class_accuracy", "macro_f1")


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


# ---------------------------------------------------------------------- method hooks
class TrainingTask:
    """What a method adds to the generic training step; this base adds nothing.

    :meth:`forward_kwargs` gives extra keyword arguments for the model's forward in the next
    training step, :meth:`step_done` is called after every optimiser step, and
    :meth:`state_dict` / :meth:`load_state_dict` travel in ``last.pt`` (key ``"task"``), so a
    resumed run continues where the interrupted one stopped.
    """

    def forward_kwargs(self) -> dict[str, Any]:
        return {}

    def step_done(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ScheduleTask(TrainingTask):
    """Follows a model's training schedule: step ``k`` of the run (0-based, over all epochs)
    runs in ``schedule.phase_at(k)``, passed to the forward as ``phase=``."""

    def __init__(self, schedule: Any) -> None:
        self.schedule = schedule
        self.step = 0

    def forward_kwargs(self) -> dict[str, Any]:
        return {"phase": self.schedule.phase_at(self.step)}

    def step_done(self) -> None:
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


def task_for(model: nn.Module) -> TrainingTask:
    """The task of a model: a :class:`ScheduleTask` when it has a ``training_schedule()``
    (returning an object with ``phase_at(step)``, or None for none), else :class:`TrainingTask`."""
    hook = getattr(model, "training_schedule", None)
    schedule = hook() if callable(hook) else None
    return TrainingTask() if schedule is None else ScheduleTask(schedule)


# ---------------------------------------------------------------------- the trainer
class _EpochSums:
    """Running sums of one training epoch (what a mid-epoch save carries over)."""

    def __init__(self, partial: dict[str, Any] | None = None) -> None:
        self.loss_sum, self.correct, self.seen, self.prior_seconds = 0.0, 0, 0, 0.0
        self.parts: dict[str, float] = {}
        if partial is not None:
            self.loss_sum, self.correct, self.seen = partial["loss_sum"], partial["correct"], partial["seen"]
            self.parts, self.prior_seconds = dict(partial["part_sums"]), partial["seconds"]

    def add(self, loss: float, parts: dict[str, float], correct: int, n: int) -> None:
        self.loss_sum += loss * n
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + v * n
        self.correct += correct
        self.seen += n

    def partial(self, epoch: int, step: int, seconds: float) -> dict[str, Any]:
        """The ``partial`` entry of a mid-epoch ``last.pt``: resume after ``step`` steps."""
        return {"epoch": epoch, "step": step, "loss_sum": self.loss_sum, "correct": self.correct,
                "seen": self.seen, "part_sums": dict(self.parts), "seconds": seconds}


class Trainer:
    """One training run of ``cfg`` (see the module docstring); :meth:`fit` runs it.

    Construction does the setup in a fixed order (device, seeds, data, model, loss, optimiser,
    then the resumed state, which restores the RNG states last), so that a run and its resumed
    continuation draw the same random numbers.
    """

    def __init__(self, cfg: Config) -> None:
        # the run's wall clock: a resumed run adds the time its interrupted runs had logged in last.pt
        self.t_start, self.resumes = time.time(), 0
        self.cfg = cfg
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.select_metric not in SELECT_METRICS:
            raise ConfigError(f"train.select_metric {cfg.train.select_metric!r} is unknown; "
                              f"expected one of {SELECT_METRICS}.")
        dev0 = resolve_device(cfg.train.device)
        self.dinfo = dinfo = setup_distributed(dev0)
        self.device = device = resolve_device(cfg.train.device, dinfo.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        seed_everything(cfg.train.seed + dinfo.rank)
        self.run_dir = cfg.run_dir
        self.last_path = self.run_dir / "last.pt"
        resume_state = (load_training_state(self.last_path)
                        if cfg.train.resume and self.last_path.exists() else None)
        if resume_state is not None:
            check_resume_config(resume_state, self.last_path, cfg)  # before config.yaml is overwritten
        if dinfo.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))

        self._build_data()
        self._build_model()
        self.start_epoch, self.best, self.best_epoch, self.bad_epochs = 1, -1.0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.partial: dict[str, Any] | None = None  # the sums of an epoch interrupted after a mid-epoch save
        if resume_state is not None:
            self.resume(resume_state)
        self.log = _CsvLog(self.run_dir)
        if dinfo.is_main:
            self.log.rewrite(self.history)
        self.ckpt_every = (cfg.train.checkpoint_minutes or 0) * 60.0
        self.last_save = time.time()

    def say(self, *a: Any) -> None:
        if self.dinfo.is_main:
            print(*a, flush=True)

    # ------------------------------------------------------------------ setup
    def _build_data(self) -> None:
        cfg, dinfo = self.cfg, self.dinfo
        self.pre = preprocess_from(cfg)
        self.train_ds, self.val_ds = train_ds, val_ds = build_train_val(cfg.data)
        self.say(f"train {train_ds.spec}: {len(train_ds)} images {train_ds.class_counts()}")
        self.say(f"val   {val_ds.spec}: {len(val_ds)} images (checkpoint selection)")
        n_pose = sum(s.pose_bin is not None and s.pose_bin >= 0 for s in train_ds.samples)
        if n_pose:
            self.say(f"pose labels: {n_pose} of {len(train_ds)} training images")
        if cfg.data.cache:
            train_ds.preload(progress=cfg.train.progress and dinfo.is_main)
            val_ds.preload(progress=cfg.train.progress and dinfo.is_main)
        weights = getattr(train_ds, "sampling_weights", None)
        for spec, n, w in getattr(train_ds, "sources", []):
            self.say(f"  {spec}: {n} images, sampling weight {w:g}")
        self.sampler = EpochSampler(train_ds.labels, shuffle=True, balanced=cfg.data.balanced_sampling,
                                    seed=cfg.train.seed, rank=dinfo.rank, world_size=dinfo.world_size,
                                    weights=weights)
        t = cfg.train
        if t.mixup < 0 or t.cutmix < 0 or not 0.0 <= t.mix_prob <= 1.0 or t.consistency < 0:
            raise ConfigError(f"train.mixup={t.mixup}, train.cutmix={t.cutmix} (Beta alphas, >= 0), "
                              f"train.mix_prob={t.mix_prob} (in [0, 1]) and train.consistency="
                              f"{t.consistency} (>= 0): fix the out-of-range value.")
        if t.consistency > 0 and (t.mixup > 0 or t.cutmix > 0):
            raise ConfigError("train.consistency compares a face's clean and occluded views, which "
                              "mixup/CutMix would mix with other faces: use one or the other.")
        train_view = TorchView(train_ds, TrainTransform(self.pre, cfg.aug), pair_occluded=t.consistency > 0)
        self.loader = make_loader(train_view, cfg.train.batch_size, self.sampler, cfg.data.num_workers,
                                  seed=cfg.train.seed + dinfo.rank,
                                  drop_last=len(self.sampler) > cfg.train.batch_size)
        self.steps_per_epoch = len(self.loader)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)

    def _build_model(self) -> None:
        cfg, device, train_ds = self.cfg, self.device, self.train_ds
        model = create_model(cfg.model.name, num_classes=train_ds.num_classes, in_chans=self.pre.in_chans,
                             **cfg.model.options).to(device)
        if cfg.model.init:
            from robustfer.engine.pretrain import load_init_weights

            n, total = load_init_weights(model, cfg.model.init)
            self.say(f"initial weights: {n} of {total} tensors from {cfg.model.init}")
        # channels-last pays on GPU and on CPU too (oneDNN): ~2x for compact_cnn on 2 cores.
        self.channels_last = cfg.train.channels_last
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        class_weights = None
        if cfg.loss.class_weights == "inverse":
            counts = np.bincount(train_ds.labels, minlength=train_ds.num_classes).astype(np.float64)
            w = counts.sum() / np.maximum(counts, 1) / train_ds.num_classes
            class_weights = torch.tensor(w, dtype=torch.float32, device=device)
        elif cfg.loss.class_weights not in (None, "none"):
            raise ConfigError(f"loss.class_weights {cfg.loss.class_weights!r} is unknown; expected none or inverse.")
        self.loss_fn = build_loss(cfg.loss.name, target=resolve_target(cfg), label_smoothing=cfg.loss.label_smoothing,
                                  class_weights=class_weights, **cfg.loss.options).to(device)
        self.optimizer = build_optimizer(cfg, model)
        self.model_landmarks = takes_landmarks(model)
        if train_ds.landmark_count:
            self.say(f"landmarks: {train_ds.landmark_count} per face"
                     + ("" if self.model_landmarks else f" (not used: {cfg.model.name} takes none)"))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps_per_epoch))
        self.task = task_for(model)
        self.ema = ModelEma(model, cfg.train.ema) if cfg.train.ema is not None else None
        self.mix_rng = np.random.default_rng(cfg.train.seed + 7919 * (1 + self.dinfo.rank))
        self.teachers = None
        if cfg.distill.teachers:
            if not 0.0 < cfg.distill.weight <= 1.0:
                raise ConfigError(f"distill.weight={cfg.distill.weight}: use a value in (0, 1] "
                                  "(0.5 weighs the labels and the teachers equally).")
            self.teachers = TeacherEnsemble(cfg.distill.teachers, self.pre, train_ds.classes, device,
                                            cfg.distill.temperature, channels_last=self.channels_last)
            self.say(f"distilling from {len(self.teachers.models)} teacher(s): {', '.join(cfg.distill.teachers)} "
                     f"(weight {cfg.distill.weight:g}, T={cfg.distill.temperature:g})")
        self.ddp_model: nn.Module = model
        if self.dinfo.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.meta_base = {"model_name": cfg.model.name, "model_options": dict(cfg.model.options),
                          "class_names": train_ds.classes, "preprocess": self.pre, "config": cfg.to_dict()}

    # ------------------------------------------------------------------ training state
    def training_state(self, epoch_done: int, partial: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs; ``partial``: the sums of the epoch in progress."""
        st = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "task": self.task.state_dict(),
            "mix_rng": self.mix_rng.bit_generator.state,
            "epoch": epoch_done, "best": self.best, "best_epoch": self.best_epoch, "history": self.history,
            "bad_epochs": self.bad_epochs, "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
            "wall_seconds": time.time() - self.t_start, "resumes": self.resumes,
            "meta": CheckpointMeta(**self.meta_base, epoch=epoch_done, metrics={}).to_strings(),
        }
        if self.ema is not None:
            st["ema"] = self.ema.state_dict()
        if partial is not None:
            st["partial"] = partial
        return st

    def save_checkpoint(self, epoch_done: int, partial: dict[str, Any] | None = None) -> None:
        """Write ``last.pt`` (after ``epoch_done`` whole epochs and, with ``partial``, part of the next)."""
        save_training_state(self.last_path, self.training_state(epoch_done, partial))
        self.last_save = time.time()

    def resume(self, st: dict[str, Any]) -> None:
        """Continue from the training state ``st`` (read from ``last.pt``)."""
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        # a last.pt from before tasks were saved: the scheduler has counted the optimiser steps
        self.task.load_state_dict(st.get("task", {"step": self.scheduler.last_epoch}))
        if "mix_rng" in st:
            self.mix_rng.bit_generator.state = st["mix_rng"]
        if self.ema is not None:
            if "ema" in st:
                self.ema.load_state_dict(st["ema"])
            else:  # a run that had no EMA: start the average at the resumed weights
                self.ema = ModelEma(self.model, self.ema.decay)
        self.start_epoch, self.best, self.best_epoch = st["epoch"] + 1, st["best"], st["best_epoch"]
        self.history, self.bad_epochs = st["history"], st["bad_epochs"]
        torch.set_rng_state(st["torch_rng"])
        np.random.set_state(st["numpy_rng"])
        random.setstate(st["python_rng"])
        self.partial = st.get("partial")
        # wall time up to the saved state counts (not the time between that save and the kill)
        self.t_start -= float(st.get("wall_seconds", 0.0))
        self.resumes = int(st.get("resumes", 0)) + 1
        where = (f"epoch {st['epoch']}" if self.partial is None else
                 f"step {self.partial['step']}/{self.steps_per_epoch} of epoch {self.partial['epoch']}")
        self.say(f"resumed from {self.last_path} after {where} (best {self.cfg.train.select_metric} "
                 f"{self.best:.4f} at epoch {self.best_epoch})")

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train, select on validation, evaluate ``data.eval``; returns :func:`train`'s summary."""
        cfg, dinfo = self.cfg, self.dinfo
        patience = cfg.train.early_stopping_patience
        for epoch in range(self.start_epoch, cfg.train.epochs + 1):
            if self.bad_epochs and patience and self.bad_epochs >= patience:
                break
            sums, train_time = self.train_one_epoch(epoch)
            if dinfo.is_main:
                self.end_epoch(epoch, sums, train_time)
            if dinfo.enabled:
                flag = torch.tensor([self.bad_epochs], dtype=torch.long)
                dist.broadcast(flag, 0)
                self.bad_epochs = int(flag)
        report = self.final_evaluation() if dinfo.is_main else None
        if dinfo.enabled:
            dist.barrier()
            dist.destroy_process_group()
        return {"run_dir": str(self.run_dir), "best_epoch": self.best_epoch, "best_metric": self.best,
                "history": self.history, "report": report}

    def train_one_epoch(self, epoch: int) -> tuple[_EpochSums, float]:
        """Train epoch ``epoch`` (from where a mid-epoch save stopped, if it did); returns the
        epoch's sums and its training seconds."""
        cfg, device = self.cfg, self.device
        skip = 0
        partial, self.partial = self.partial, None
        if partial is not None and partial["epoch"] == epoch:
            skip = partial["step"]
        else:
            partial = None
        sums = _EpochSums(partial)
        self.sampler.set_epoch(epoch, skip=skip * cfg.train.batch_size)
        if cfg.data.num_workers > 0:
            # with workers, augmentation randomness comes from per-epoch worker seeds; with
            # none, from the main process's generators, which last.pt saves and restores
            seed_loader_for_epoch(self.loader, cfg.train.seed, epoch, self.dinfo.rank)
        self.ddp_model.train()
        t0 = time.time() - sums.prior_seconds
        amp = cfg.train.amp and (device.type == "cuda" or cfg.train.amp_cpu)
        bar = tqdm(total=self.steps_per_epoch, initial=skip, desc=f"epoch {epoch}/{cfg.train.epochs}",
                   disable=not (cfg.train.progress and self.dinfo.is_main), dynamic_ncols=True)
        for step, batch in enumerate(self.loader, start=skip):
            if step >= self.steps_per_epoch:
                break
            self.train_step(batch, amp, epoch, step, sums)
            bar.set_postfix(loss=f"{sums.loss_sum / sums.seen:.4f}", acc=f"{sums.correct / sums.seen:.3f}",
                            lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            bar.update(1)
            if (self.ckpt_every and self.dinfo.is_main and step + 1 < self.steps_per_epoch
                    and time.time() - self.last_save >= self.ckpt_every):
                # mid-epoch save: a run killed now loses at most checkpoint_minutes of work
                self.save_checkpoint(epoch - 1, sums.partial(epoch, step + 1, time.time() - t0))
        bar.close()
        return sums, time.time() - t0

    def train_step(self, batch: dict[str, torch.Tensor], amp: bool, epoch: int, step: int,
                   sums: _EpochSums) -> None:
        """One optimiser step on ``batch``; its loss and accuracy are added to ``sums``."""
        x = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        tb = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k != "image"}
        kw = {"landmarks": tb["landmarks"]} if "landmarks" in tb and self.model_landmarks else {}
        kw.update(self.task.forward_kwargs())
        t = self.cfg.train
        x, perm, lam = mix_batch(x, t.mixup, t.cutmix, t.mix_prob, self.mix_rng)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            out = self.ddp_model(x, **kw)
        loss, parts = self.loss_fn(out, tb)
        if perm is not None:
            # mixup / CutMix: the loss is linear in the target, so mixing the losses of both
            # label sets equals the loss against the mixed target
            loss2, parts2 = self.loss_fn(out, {k: v[perm] for k, v in tb.items()})
            loss = lam * loss + (1.0 - lam) * loss2
            parts = {k: lam * v + (1.0 - lam) * parts2.get(k, v) for k, v in parts.items()}
        if "image_occluded" in tb:
            x2 = tb["image_occluded"]
            if self.channels_last:
                x2 = x2.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                out2 = self.ddp_model(x2, **kw)
            loss_occ, _ = self.loss_fn(out2, tb)
            cons = consistency_kl(out.logits, out2.logits)
            loss = 0.5 * (loss + loss_occ) + t.consistency * cons
            parts = {**parts, "occluded_ce": float(loss_occ.detach()), "consistency": float(cons.detach())}
        if self.teachers is not None:
            w = self.cfg.distill.weight
            kd = distill_kl(out.logits, self.teachers.probs(x, amp=amp), self.teachers.temperature)
            loss = (1.0 - w) * loss + w * kd
            parts = {**parts, "distill": float(kd.detach())}
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {float(loss)} at epoch {epoch} step {step}; lower optim.lr "
                "or set train.grad_clip.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.task.step_done()
        if self.ema is not None:
            self.ema.update(self.model)
        n = x.shape[0]
        label = tb["label"] if perm is None or lam >= 0.5 else tb["label"][perm]
        correct = int((out.logits.detach().argmax(1) == label).sum())
        sums.add(float(loss.detach()), parts, correct, n)

    def validate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Metrics of the current model (or ``model``) on the validation split."""
        out_v = predict_dataset(model or self.model, self.val_ds, self.pre, self.device, self.cfg.eval.batch_size,
                                channels_last=self.channels_last, progress=False, tta=self.cfg.eval.tta)
        return dataset_metrics(self.val_ds, out_v)

    def end_epoch(self, epoch: int, sums: _EpochSums, train_time: float) -> dict[str, Any]:
        """Main rank, after epoch ``epoch``: validate, keep the best model, log, save ``last.pt``."""
        vm = self.validate()
        metric = self.cfg.train.select_metric
        candidate, weights = self.model, "raw"
        vm_ema = None
        if self.ema is not None:
            # select the EMA or the raw weights on validation, epoch by epoch
            vm_ema = self.validate(self.ema.module)
            if vm_ema[metric] > vm[metric]:
                candidate, weights = self.ema.module, "ema"
        vbest = vm_ema if weights == "ema" else vm
        score = vbest[metric]
        improved = score > self.best
        if improved:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            save_model(self.run_dir / "best.safetensors", candidate, CheckpointMeta(
                **self.meta_base, epoch=epoch, metrics={f"val_{k}": vbest[k] for k in SELECT_METRICS}))
        else:
            self.bad_epochs += 1
        seen = sums.seen
        row: dict[str, Any] = {
            "epoch": epoch, "lr": self.scheduler.get_last_lr()[0], "train_loss": sums.loss_sum / max(1, seen),
            "train_accuracy": sums.correct / max(1, seen), "val_loss": vm["loss"],
            "val_accuracy": vm["accuracy"], "val_mean_class_accuracy": vm["mean_class_accuracy"],
            "val_macro_f1": vm["macro_f1"], "epoch_seconds": round(train_time, 1),
            "images_per_second": round(seen * self.dinfo.world_size / max(train_time, 1e-9), 1),
            "best": improved}
        if vm_ema is not None:
            row.update({"val_ema_accuracy": vm_ema["accuracy"],
                        "val_ema_mean_class_accuracy": vm_ema["mean_class_accuracy"],
                        "val_ema_macro_f1": vm_ema["macro_f1"], "weights": weights})
        if set(sums.parts) != {"ce"}:
            # a method's loss terms (e.g. RAN's region-biased loss), epoch means
            row.update({f"train_{k}": v / max(1, seen) for k, v in sums.parts.items()})
        self.history.append(row)
        self.log.write(row)
        self.save_checkpoint(epoch)
        self.say(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | "
                 f"val acc {vm['accuracy']:.4f} mca {vm['mean_class_accuracy']:.4f} "
                 + (f"| ema acc {vm_ema['accuracy']:.4f} " if vm_ema is not None else "")
                 + f"({train_time:.0f}s, {row['images_per_second']:.0f} img/s){' *' if improved else ''}"
                 + (f" ({weights} weights)" if improved and vm_ema is not None else ""))
        return row

    def calibrate(self, model: nn.Module, meta: CheckpointMeta) -> CheckpointMeta:
        """Fit the temperature on the validation split (Guo et al., ICML 2017) and store it in
        ``best.safetensors``; the weights and every prediction's argmax stay as they are."""
        from robustfer.data.calibration import fit_temperature

        out = predict_dataset(model, self.val_ds, self.pre, self.device, self.cfg.eval.batch_size,
                              channels_last=self.channels_last, progress=False, desc="calibrate",
                              tta=self.cfg.eval.tta)
        t = fit_temperature(out["probs"], out["labels"])
        meta.temperature = t
        save_model(self.run_dir / "best.safetensors", model, meta)
        cal = calibration_metrics(out, t)
        self.say(f"temperature {t:.3f} fitted on {self.val_ds.spec}: validation ECE "
                 f"{cal['ece_before']:.4f} -> {cal['ece']:.4f}")
        return meta

    def final_evaluation(self) -> dict[str, Any] | None:
        """Main rank: reload ``best.safetensors`` and evaluate ``data.eval`` into ``report.json``."""
        cfg, run_dir = self.cfg, self.run_dir
        report = None
        self.say(f"best {cfg.train.select_metric} on {self.val_ds.spec}: {self.best:.4f} at epoch {self.best_epoch}")
        if cfg.train.epochs > 0:
            model, meta = load_model(run_dir / "best.safetensors", self.device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            if cfg.eval.calibrate:
                meta = self.calibrate(model, meta)
            if cfg.data.eval:
                datasets = {s: build_eval_dataset(s, cfg.data) for s in cfg.data.eval}
                results = evaluate_datasets(model, datasets, self.pre, self.device, cfg.eval,
                                            channels_last=self.channels_last, progress=cfg.train.progress,
                                            temperature=meta.temperature)
                report = write_report(run_dir / "report.json", results, {
                    "checkpoint": str(run_dir / "best.safetensors"), "model": cfg.model.name,
                    "temperature": meta.temperature, "temperature_fitted_on": self.val_ds.spec,
                    "selected_on": self.val_ds.spec, "best_epoch": self.best_epoch,
                    "seed": cfg.train.seed, "train_wall_seconds": round(time.time() - self.t_start, 1),
                    "resumes": self.resumes, "history": self.history}, plots=cfg.eval.plots)
                print_summary(results)
        if cfg.eval.plots and self.history:
            from robustfer.engine.plots import plot_training_curves

            plot_training_curves(self.history, run_dir / "training_curves.png")
        return report


def train(cfg: Config) -> dict[str, Any]:
    """Train, select on validation, evaluate ``data.eval``; returns a summary dict.

    With ``pretrain.method`` set, runs self-supervised pretraining instead
    (:func:`robustfer.engine.pretrain.pretrain`).

    Returns:
        ``{"run_dir", "best_epoch", "best_metric", "history", "report"}`` (``report`` is
        ``None`` on non-main DDP ranks, when ``data.eval`` is empty, and for pretraining).
    """
    if cfg.pretrain.method != "none":
        from robustfer.engine.pretrain import pretrain

        return pretrain(cfg)
    return Trainer(cfg).fit()


__all__ = ["EvalTransform", "ScheduleTask", "Trainer", "TrainingTask", "task_for", "train"]
