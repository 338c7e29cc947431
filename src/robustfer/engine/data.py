"""From :class:`FERDataset` to batches: the torch view, the epoch sampler, loaders, splits."""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from robustfer.data.base import FERDataset, build_dataset, get_dataset_info, parse_spec
from robustfer.errors import ConfigError


class TorchView(Dataset):
    """A :class:`FERDataset` as a torch dataset of dicts.

    Each item: ``image`` (C, H, W) float, ``label`` int, ``soft`` (num_classes,) float,
    ``index`` int, ``pose_bin`` int (-1 when unknown), and ``landmarks`` (L, 2) float in input
    pixels when every sample of the dataset has L landmarks (moved with the image by the
    transform's ``with_points``). An optional occluder is applied to the decoded image before
    the transform, with a generator derived from (seed, index), so the occluded test set is
    identical for a given seed whatever the batching. With ``pair_occluded`` (the consistency
    loss) each item also holds ``image_occluded``: the same augmented face under a realistic
    occluder (:meth:`~robustfer.data.transforms.TrainTransform.pair`).
    """

    def __init__(self, ds: FERDataset, transform: Callable[[np.ndarray], torch.Tensor],
                 occluder: Any = None, occlusion_seed: int = 0, occlusion_fill: str = "black",
                 pair_occluded: bool = False) -> None:
        self.ds = ds
        self.pair_occluded = pair_occluded
        self.transform = transform
        self.occluder = occluder
        self.occlusion_seed = occlusion_seed
        self.occlusion_fill = occlusion_fill
        self.with_landmarks = ds.landmark_count > 0 and hasattr(transform, "with_points")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = self.ds.load_image(i)
        if self.occluder is not None:
            from robustfer.data.occlusion import apply_occluder, occlusion_rng

            rng = occlusion_rng(self.occlusion_seed, i, self.occluder)
            img = apply_occluder(img, self.occluder, rng, fill=self.occlusion_fill)
        s = self.ds.samples[i]
        if s.soft is not None:
            soft = torch.tensor(s.soft, dtype=torch.float32)
        else:
            soft = torch.zeros(self.ds.num_classes)
            soft[s.label] = 1.0
        item = {
            "label": s.label,
            "soft": soft,
            "index": i,
            "pose_bin": -1 if s.pose_bin is None else s.pose_bin,
        }
        if self.pair_occluded:
            if self.with_landmarks:
                raise ConfigError("train.consistency does not support models that take landmarks yet; "
                                  "set train.consistency=0 for this model.")
            item["image"], item["image_occluded"] = self.transform.pair(img)  # type: ignore[attr-defined]
        elif self.with_landmarks:
            x, pts = self.transform.with_points(img, self.ds.load_landmarks(i))  # type: ignore[attr-defined]
            item["image"], item["landmarks"] = x, torch.from_numpy(np.asarray(pts, dtype=np.float32))
        else:
            item["image"] = self.transform(img)
        return item


class EpochSampler(Sampler[int]):
    """Seeded shuffling (or class-balanced sampling), sharded across DDP ranks.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees exactly the
    batches it would have seen. With ``balanced=True`` indices are drawn with replacement with
    probability proportional to 1 / class frequency, and with per-image ``weights`` (times
    those) in proportion to them. Every rank gets ``ceil(n / world)``
    indices (the global order is padded by wrapping around, as DistributedSampler does).
    """

    def __init__(self, labels: np.ndarray, shuffle: bool = True, balanced: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1,
                 weights: np.ndarray | None = None) -> None:
        self.labels = np.asarray(labels)
        self.shuffle = shuffle
        self.balanced = balanced
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0
        counts = np.bincount(self.labels, minlength=int(self.labels.max(initial=0)) + 1)
        w = 1.0 / counts[self.labels] if balanced else np.ones(len(self.labels))
        # per-image weights (extra training datasets): drawn with replacement in proportion
        self.weighted = balanced or (weights is not None and not np.allclose(weights, 1.0))
        if weights is not None:
            if len(weights) != len(self.labels):
                raise ValueError(f"{len(weights)} sampling weights for {len(self.labels)} images")
            w = w * np.asarray(weights, dtype=np.float64)
        self.weights = torch.tensor(w, dtype=torch.double)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select epoch ``epoch``'s order; ``skip`` drops this rank's first ``skip`` indices (a
        run resumed mid-epoch does not see the batches it already trained on again)."""
        self.epoch = epoch
        self.skip = skip

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.world_size) - self.skip

    def __iter__(self):  # type: ignore[override]
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weighted:
            order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        elif self.shuffle:
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = math.ceil(n / self.world_size) * self.world_size
        if total > n:
            order = torch.cat([order, order[: total - n]])
        return iter(order[self.rank:total:self.world_size][self.skip:].tolist())


def _worker_init(worker_id: int) -> None:
    # albumentations draws from python's and numpy's global generators: seed them per worker
    # from torch's per-worker seed, which DataLoader derives from the loader's generator.
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_loader(view: TorchView, batch_size: int, sampler: Sampler[int] | None, num_workers: int,
                seed: int, drop_last: bool = False) -> DataLoader:
    """A DataLoader with seeded workers.

    Workers are started afresh each epoch (cheap: the decoded-image cache is shared by fork)
    so that :func:`seed_loader_for_epoch` can give each epoch's workers seeds that depend
    only on (seed, epoch, rank): a resumed run then augments exactly as the original would.
    """
    return DataLoader(
        view, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
        worker_init_fn=_worker_init, generator=torch.Generator().manual_seed(seed),
        persistent_workers=False, drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )


def seed_loader_for_epoch(loader: DataLoader, seed: int, epoch: int, rank: int = 0) -> None:
    """Reseed the generator the loader draws its workers' base seed from, per epoch."""
    if loader.generator is not None:
        loader.generator.manual_seed((seed * 1_000_003 + epoch) * 131 + rank)


def check_not_test(spec: str, role: str) -> None:
    """Refuse a test split for training or selection (it would inflate the reported result)."""
    _, split, _ = parse_spec(spec)
    if split == "test":
        raise ConfigError(
            f"{role} is {spec!r}, a test split. Test data may only be used for the final "
            "evaluation (data.eval); select checkpoints on a validation split, or leave data.val "
            "empty to carve a fixed, seeded validation split out of train."
        )


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Fixed, seeded, per-class split of indices into (train, val)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {fraction}.")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        val.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return sorted(train), sorted(val)


def _build(spec: str, data_cfg: Any, user_opts: dict[str, Any], label_mode: str,
           fewer_classes: bool = False, landmarks: bool = True) -> FERDataset:
    """Build ``spec`` with the engine's options where the loader takes them, then check them.

    ``num_classes``, ``cache`` and (FER+) ``label_mode`` are passed only to loaders that
    accept them; ``user_opts`` (``data.train_options`` / ``data.eval_options``) always are,
    so a typo there is an error. A label space that differs from ``data.num_classes`` is an
    error rather than a silent mismatch, except that ``fewer_classes`` (evaluation) lets a
    7-class dataset be scored by an 8-class model. ``data.pose_file`` and (with ``landmarks``)
    ``data.landmark_file`` are attached.
    """
    info = get_dataset_info(parse_spec(spec)[0])
    params = inspect.signature(info.build).parameters
    engine_opts = {"num_classes": data_cfg.num_classes, "cache": data_cfg.cache, "label_mode": label_mode}
    opts = {k: v for k, v in engine_opts.items() if k in params}
    opts.update(user_opts)
    ds = build_dataset(spec, data_cfg.root, **opts)
    if fewer_classes and ds.num_classes < data_cfg.num_classes:
        # a 7-class set evaluated by an 8-class model: same canonical indices, and a
        # contempt prediction counts as the error it is
        wider = FERDataset(ds.name, ds.split, ds.samples, data_cfg.num_classes, root=ds.root,
                           subset=ds.subset, cache=ds.cache)
        wider._cache = list(ds._cache)
        ds = wider
    if ds.num_classes != data_cfg.num_classes:
        raise ConfigError(
            f"{spec} has {ds.num_classes} classes but data.num_classes is {data_cfg.num_classes}; "
            f"set data.num_classes={ds.num_classes} (or the loader's num_classes option)."
        )
    ds.cache = data_cfg.cache
    pose_files = _as_list(getattr(data_cfg, "pose_file", None))
    if pose_files:
        from robustfer.data.pose import read_pose_file

        poses: dict[str, tuple[float | None, int | None]] = {}
        for f in pose_files:
            poses.update(read_pose_file(f))
        ds = ds.attach_pose(poses)
    return attach_landmark_file(ds, data_cfg) if landmarks else ds


def _as_list(v: str | list[str] | None) -> list[str]:
    return [] if not v else [v] if isinstance(v, str) else list(v)


def attach_landmark_file(ds: FERDataset, data_cfg: Any, aligned: bool = False) -> FERDataset:
    """``ds`` with the landmarks of ``data.landmark_file`` (nothing to do without one).

    Dataset images as stored get the files' points (by sample id), and the five points of the
    FER2013 mesh template (:func:`robustfer.data.landmarks.template_five`) where the files have
    none. Faces the front end re-cut (``aligned``) all get the template's points in the run's
    crop geometry (``data.crop_scale``): the alignment put their landmarks there, and the files'
    points are in the uncut images' pixels."""
    files = _as_list(getattr(data_cfg, "landmark_file", None))
    if not files:
        return ds
    from robustfer.data.landmarks import template_five
    from robustfer.data.pose import read_landmark_file

    if aligned:
        return ds.attach_landmarks({}, template_five(data_cfg.crop_scale))
    points: dict[str, np.ndarray] = {}
    for f in files:
        points.update(read_landmark_file(f))
    return ds.attach_landmarks(points, template_five())


def build_train_val(data_cfg: Any) -> tuple[FERDataset, FERDataset]:
    """Training and selection datasets from a ``DataConfig``.

    Raises:
        ConfigError: when either would be a test split.
    """
    check_not_test(data_cfg.train, "data.train")
    train = _build(data_cfg.train, data_cfg, data_cfg.train_options, data_cfg.label_mode)
    if data_cfg.val:
        check_not_test(data_cfg.val, "data.val")
        val = _build(data_cfg.val, data_cfg, data_cfg.eval_options, data_cfg.eval_label_mode)
        return add_extra_train(train, data_cfg), val
    tr_idx, va_idx = stratified_split(train.labels, data_cfg.val_fraction, data_cfg.val_seed)
    return (add_extra_train(train.subset_of(tr_idx, f"carved-train-{data_cfg.val_seed}"), data_cfg),
            train.subset_of(va_idx, f"carved-val-{data_cfg.val_seed}"))


_EXTRA_KEYS = {"spec", "weight", "align", "options"}


def add_extra_train(train: FERDataset, data_cfg: Any) -> FERDataset:
    """``train`` plus the datasets of ``data.extra_train``, as one dataset.

    Each extra dataset is built like ``train`` (label mode, cache), optionally re-cut by the
    front end (``align: true``, :func:`robustfer.data.aligned.align_dataset` with the run's
    crop geometry), and its sample ids are prefixed with its spec so they stay unique. A
    7-class dataset joins an 8-class run (its labels are canonical indices); its soft targets
    are one-hot. The result's ``sampling_weights`` (one per image) make the sampler draw each
    extra image ``weight`` times as often as a ``train`` image; with no extras ``train`` is
    returned unchanged.

    Raises:
        ConfigError: on a malformed entry, a test split, or a label space larger than the run's.
    """
    extras = list(getattr(data_cfg, "extra_train", None) or [])
    if not extras:
        return train
    from dataclasses import replace

    samples = list(train.samples)
    caches = list(train._cache)
    weights = [1.0] * len(samples)
    names = [(train.spec, len(train), 1.0)]
    for k, entry in enumerate(extras):
        where = f"data.extra_train[{k}]"
        if not isinstance(entry, dict) or "spec" not in entry or set(entry) - _EXTRA_KEYS:
            raise ConfigError(f"{where} = {entry!r}: use a mapping with keys spec (required), weight, "
                              "align, options, e.g. {spec: 'sfew:train:rest', weight: 2.0, align: true}.")
        spec = str(entry["spec"])
        check_not_test(spec, where)
        weight = float(entry.get("weight", 1.0))
        if not weight > 0:
            raise ConfigError(f"{where}: weight={weight}; use a positive number (1.0 = as often as a "
                              "data.train image).")
        info = get_dataset_info(parse_spec(spec)[0])
        params = inspect.signature(info.build).parameters
        opts = {k2: v for k2, v in {"cache": data_cfg.cache, "label_mode": data_cfg.label_mode}.items()
                if k2 in params}
        if "num_classes" in params:
            opts["num_classes"] = data_cfg.num_classes
        opts.update(dict(entry.get("options") or {}))
        ds = build_dataset(spec, data_cfg.root, **opts)
        if ds.num_classes > data_cfg.num_classes:
            raise ConfigError(f"{where}: {spec} has {ds.num_classes} classes, more than data.num_classes="
                              f"{data_cfg.num_classes}; pass options: {{num_classes: {data_cfg.num_classes}}} "
                              "if its loader can drop classes.")
        if entry.get("align"):
            from robustfer.data.aligned import align_dataset

            ds = align_dataset(ds, size=max(96, 2 * data_cfg.input_size), crop_scale=data_cfg.crop_scale,
                               crop_shift=data_cfg.crop_shift)
            ds = attach_landmark_file(ds, data_cfg, aligned=True)
        else:
            ds = attach_landmark_file(ds, data_cfg)
        for i, s in enumerate(ds.samples):
            soft = s.soft
            if soft is not None and len(soft) < data_cfg.num_classes:
                soft = tuple(soft) + (0.0,) * (data_cfg.num_classes - len(soft))
            samples.append(replace(s, id=f"{spec}/{s.id}", soft=soft))
            caches.append(ds._cache[i] if i < len(ds._cache) else None)
        weights += [weight] * len(ds)
        names.append((ds.spec, len(ds), weight))
    out = FERDataset(train.name, train.split, samples, data_cfg.num_classes, root=train.root,
                     subset=(train.subset + "+" if train.subset else "") + "extra", cache=train.cache)
    out._cache = caches
    out.sampling_weights = np.asarray(weights, dtype=np.float64)  # type: ignore[attr-defined]
    out.sources = names  # type: ignore[attr-defined]
    return out


#: Suffix of an evaluation spec whose faces are re-cut by the front end (``sfew:train:heldout+aligned``).
ALIGNED_SUFFIX = "+aligned"


def build_eval_dataset(spec: str, data_cfg: Any) -> FERDataset:
    """A dataset for final evaluation, with the eval label mode. A spec ending in ``+aligned``
    is cut by the front end in the run's crop geometry, as the application pipeline cuts faces
    (:func:`robustfer.data.aligned.align_dataset`; images without a found face are left out)."""
    if spec.endswith(ALIGNED_SUFFIX):
        from robustfer.data.aligned import align_dataset

        ds = _build(spec[: -len(ALIGNED_SUFFIX)], data_cfg, data_cfg.eval_options, data_cfg.eval_label_mode, True,
                    landmarks=False)
        ds = align_dataset(ds, size=max(96, 2 * data_cfg.input_size), crop_scale=data_cfg.crop_scale,
                           crop_shift=data_cfg.crop_shift, progress=False)
        return attach_landmark_file(ds, data_cfg, aligned=True)
    return _build(spec, data_cfg, data_cfg.eval_options, data_cfg.eval_label_mode, True)
