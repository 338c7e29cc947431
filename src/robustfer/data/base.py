"""Dataset core: samples, the in-memory dataset, image decoding and the dataset registry.

A loader is a function ``build(root: Path, split: str, **options) -> FERDataset`` registered
with :func:`register_dataset`. It reads the dataset's own distribution format and returns
samples whose ``label`` is already a canonical index (see :mod:`robustfer.data.labels`).
Datasets are addressed by spec strings ``name:split[:subset]`` (``ferplus:test:pose30``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from robustfer.data.labels import class_names
from robustfer.errors import DatasetError

#: Environment variable naming the folder that holds the dataset folders.
DATA_ENV = "ROBUSTFER_DATA"


@dataclass(frozen=True)
class Sample:
    """One labelled face image.

    Attributes:
        id: stable identifier, unique within its dataset (usually the path relative to root).
        label: canonical class index (see :class:`~robustfer.data.labels.Expression`).
        path: image file, or ``None`` when ``pixels`` holds the image (CSV datasets).
        pixels: decoded uint8 image (H, W) or (H, W, 3) RGB for datasets stored as pixels.
        soft: soft target over the dataset's classes (sums to 1), e.g. FER+ vote shares.
        box: face box ``(x, y, w, h)`` in pixels to crop before preprocessing.
        pose: head yaw in degrees where the dataset states it (KDEF) or a pose file gives it.
        pose_bin: coarse pose class index, where known.
        subject: subject identifier, for subject-independent splits.
        landmarks: facial landmarks, float32 (L, 2) ``(x, y)`` in pixels of the stored image
            (before the ``box`` crop), where the dataset gives them (see
            :mod:`robustfer.data.landmarks`); an array, not tuples, so that 68 points for each of
            AffectNet's 287k faces cost about 0.2 GB rather than 2 GB.
    """

    id: str
    label: int
    path: Path | None = None
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)
    soft: tuple[float, ...] | None = None
    box: tuple[int, int, int, int] | None = None
    pose: float | None = None
    pose_bin: int | None = None
    subject: str | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False, compare=False)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to uint8: (H, W) for grayscale files, (H, W, 3) RGB otherwise.

    Raises:
        DatasetError: naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"image file {path} does not exist; check the dataset root and that the "
            "dataset was extracted completely."
        )
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DatasetError(
            f"cannot decode image {path} ({data.size} bytes); expected a PNG/JPEG/BMP "
            "file. Re-extract or remove the file."
        )
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


class FERDataset:
    """A list of :class:`Sample` with a label space and an in-memory cache of decoded images.

    Indexing returns ``(image, sample)`` where ``image`` is the uint8 array (already cropped
    to ``sample.box`` when one is given). Decoded images are kept in memory, so small-image
    datasets are decoded once; call :meth:`preload` before forking data-loader workers so
    that the workers share the cache.
    """

    def __init__(
        self,
        name: str,
        split: str,
        samples: Sequence[Sample],
        num_classes: int,
        root: Path | None = None,
        subset: str | None = None,
        cache: bool = True,
    ) -> None:
        self.name = name
        self.split = split
        self.subset = subset
        self.root = root
        self.samples: list[Sample] = list(samples)
        self.classes: tuple[str, ...] = class_names(num_classes)
        self.cache = cache
        self._cache: list[np.ndarray | None] = [None] * len(self.samples)
        for s in self.samples:
            if not 0 <= s.label < num_classes:
                raise DatasetError(
                    f"{self.spec}: sample {s.id} has label {s.label}, outside the "
                    f"{num_classes}-class space {list(self.classes)}."
                )

    # ------------------------------------------------------------------ identity
    @property
    def spec(self) -> str:
        """``name:split[:subset]`` string that rebuilds this dataset."""
        return ":".join(p for p in (self.name, self.split, self.subset) if p)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"FERDataset({self.spec!r}, n={len(self)}, classes={self.num_classes})"

    # ------------------------------------------------------------------ access
    @property
    def labels(self) -> np.ndarray:
        """Canonical labels as an int64 array."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class name."""
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def load_image(self, index: int) -> np.ndarray:
        """Decoded (and box-cropped) uint8 image of sample ``index``, from the cache if there."""
        cached = self._cache[index]
        if cached is not None:
            return cached
        s = self.samples[index]
        if s.pixels is not None:
            img = s.pixels
        elif s.path is not None:
            img = read_image(s.path)
        else:
            raise DatasetError(f"{self.spec}: sample {s.id} has neither a path nor pixels.")
        if s.box is not None:
            img = crop_box(img, s.box)
        if self.cache:
            self._cache[index] = img
        return img

    @property
    def landmark_count(self) -> int:
        """Points per face when every sample has the same number of landmarks, else 0."""
        counts = {0 if s.landmarks is None else len(s.landmarks) for s in self.samples}
        return counts.pop() if len(counts) == 1 else 0

    def load_landmarks(self, index: int) -> np.ndarray | None:
        """Landmarks of sample ``index`` in pixels of :meth:`load_image`'s (box-cropped) image."""
        s = self.samples[index]
        if s.landmarks is None or len(s.landmarks) == 0:
            return None
        pts = np.asarray(s.landmarks, dtype=np.float32).reshape(-1, 2)
        if s.box is not None:  # the crop's origin, as crop_box clips it
            x0, y0 = (max(0, int(round(v))) for v in s.box[:2])
            pts = pts - np.array([x0, y0], dtype=np.float32)
        return pts

    def __getitem__(self, index: int) -> tuple[np.ndarray, Sample]:
        return self.load_image(index), self.samples[index]

    def preload(self, progress: bool = True) -> FERDataset:
        """Decode every image into the in-memory cache now (once), with a progress bar."""
        from tqdm.auto import tqdm

        todo = [i for i, c in enumerate(self._cache) if c is None]
        for i in tqdm(todo, desc=f"decode {self.spec}", disable=not progress or not todo):
            self.load_image(i)
        return self

    def subset_of(self, indices: Sequence[int], subset: str | None) -> FERDataset:
        """A new dataset over ``indices`` (sharing decoded images already cached)."""
        ds = FERDataset(
            self.name, self.split, [self.samples[i] for i in indices], self.num_classes,
            root=self.root, subset=subset, cache=self.cache,
        )
        ds._cache = [self._cache[i] for i in indices]
        return ds

    def with_samples(self, samples: Sequence[Sample], subset: str | None = None) -> FERDataset:
        """A new dataset of the same kind with other samples (no shared cache)."""
        return FERDataset(
            self.name, self.split, samples, self.num_classes, root=self.root,
            subset=subset if subset is not None else self.subset, cache=self.cache,
        )

    def attach_pose(self, poses: dict[str, tuple[float | None, int | None]]) -> FERDataset:
        """Return a copy whose samples carry ``(yaw, bin)`` from ``poses`` keyed by sample id."""
        new = [
            replace(s, pose=poses[s.id][0], pose_bin=poses[s.id][1]) if s.id in poses else s
            for s in self.samples
        ]
        ds = self.with_samples(new)
        ds._cache = list(self._cache)
        return ds

    def attach_landmarks(self, points: dict[str, np.ndarray], fill: np.ndarray | None = None) -> FERDataset:
        """Return a copy whose samples carry the landmarks of ``points`` (keyed by sample id; (L, 2)
        pixels of the stored image, :class:`Sample`'s convention); samples not in ``points`` get
        ``fill`` -- (L, 2) in units of the sample's (box-cropped) image side, e.g. a template --
        or keep their own when ``fill`` is None. Filling decodes the images it needs the size of."""
        new = []
        for i, s in enumerate(self.samples):
            if s.id in points:
                new.append(replace(s, landmarks=np.asarray(points[s.id], dtype=np.float32)))
                continue
            if fill is None:
                new.append(s)
                continue
            h, w = (s.pixels.shape[:2] if s.pixels is not None and s.box is None
                    else self.load_image(i).shape[:2])
            pts = np.asarray(fill, dtype=np.float32) * np.array([w, h], dtype=np.float32)
            if s.box is not None:  # Sample.landmarks are in pixels of the image before the box crop
                pts = pts + np.array([max(0, int(round(v))) for v in s.box[:2]], dtype=np.float32)
            new.append(replace(s, landmarks=pts))
        ds = self.with_samples(new)
        ds._cache = list(self._cache)
        return ds


def crop_box(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop ``(x, y, w, h)`` from ``img``, clipped to the image; raises if nothing is left."""
    x, y, w, h = (int(round(v)) for v in box)
    H, W = img.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        raise DatasetError(
            f"face box {box} lies outside the {W}x{H} image; expected (x, y, w, h) inside it."
        )
    return np.ascontiguousarray(img[y0:y1, x0:x1])


# ---------------------------------------------------------------------- registry
Builder = Callable[..., FERDataset]
SubsetBuilder = Callable[..., FERDataset]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset family."""

    name: str
    build: Builder
    splits: tuple[str, ...]
    dirnames: tuple[str, ...]
    description: str
    has_validation: bool
    needs_root: bool = True
    subsets: dict[str, SubsetBuilder] = field(default_factory=dict)


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str,
    *,
    splits: Sequence[str],
    dirnames: Sequence[str],
    description: str,
    has_validation: bool,
    needs_root: bool = True,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``build(root, split, **options)`` under ``name``.

    Args:
        name: registry key (lower case).
        splits: split names the builder accepts.
        dirnames: folder names looked for under ``$ROBUSTFER_DATA`` or a data root.
        description: one line for ``robustfer datasets list``.
        has_validation: whether the dataset has its own validation split; when not, the
            engine carves a fixed, seeded validation split out of train.
    """

    def deco(fn: Builder) -> Builder:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _DATASETS[name] = DatasetInfo(
            name, fn, tuple(splits), tuple(dirnames), description, has_validation, needs_root
        )
        return fn

    return deco


def register_subset(dataset: str, subset: str) -> Callable[[SubsetBuilder], SubsetBuilder]:
    """Decorator registering ``build(base: FERDataset, data_root: Path | None, **opts)``.

    The function receives the full split it belongs to and returns the named subset.
    """

    def deco(fn: SubsetBuilder) -> SubsetBuilder:
        info = _DATASETS[dataset]
        if subset in info.subsets:
            raise ValueError(f"subset {dataset}:{subset} is registered twice")
        info.subsets[subset] = fn
        return fn

    return deco


def _ensure_loaders() -> None:
    # Importing the package registers every built-in loader.
    import robustfer.data  # noqa: F401


def list_datasets() -> list[DatasetInfo]:
    """Registered dataset families, sorted by name."""
    _ensure_loaders()
    return [_DATASETS[k] for k in sorted(_DATASETS)]


def get_dataset_info(name: str) -> DatasetInfo:
    """Registry entry for ``name``; an unknown name lists the close matches."""
    _ensure_loaders()
    key = name.lower()
    if key not in _DATASETS:
        close = difflib.get_close_matches(key, list(_DATASETS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DatasetError(
            f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(sorted(_DATASETS))} "
            "(`robustfer datasets list`)."
        )
    return _DATASETS[key]


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """Split ``name:split[:subset]`` into its parts, with a clear error on a bad spec."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise DatasetError(
            f"dataset spec {spec!r} is malformed; expected name:split[:subset], "
            "e.g. ferplus:train or ferplus:test:pose30."
        )
    return parts[0].lower(), parts[1], (parts[2] if len(parts) == 3 else None)


def data_root_from_env() -> Path | None:
    """The folder named by ``$ROBUSTFER_DATA``, if set."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else None


def resolve_root(info: DatasetInfo, root: str | Path | None) -> Path:
    """Find a dataset's folder from an explicit root or ``$ROBUSTFER_DATA``.

    ``root`` may be the dataset folder itself or a data folder holding it under one of the
    dataset's ``dirnames``.
    """
    base = Path(root).expanduser() if root is not None else data_root_from_env()
    if base is None:
        raise DatasetError(
            f"no root given for dataset {info.name!r}; pass --data-root (data.root in a "
            f"config) or set ${DATA_ENV} to the folder that holds {info.dirnames[0]}/."
        )
    for d in info.dirnames:
        if (base / d).is_dir():
            return base / d
    if base.is_dir():
        return base  # the dataset folder itself; its loader checks the layout
    raise DatasetError(
        f"dataset root {base} for {info.name!r} does not exist. Point --data-root (or "
        f"${DATA_ENV}) at the folder holding {info.dirnames[0]}/ or at that folder itself."
    )


def build_dataset(
    spec: str,
    root: str | Path | None = None,
    **options: Any,
) -> FERDataset:
    """Build a dataset from a spec ``name:split[:subset]``.

    Args:
        spec: e.g. ``"ferplus:train"``, ``"ferplus:test:pose30"``.
        root: the dataset folder, or a data folder holding it; defaults to ``$ROBUSTFER_DATA``.
        **options: loader options (e.g. ``label_mode="probability"``, ``num_classes=7``).
            A subset builder also receives ``data_root`` (the folder above the dataset root),
            where list files such as ``ran_lists/`` are looked up.

    Raises:
        DatasetError: on an unknown name, split or subset, a missing root or a bad layout.
    """
    name, split, subset = parse_spec(spec)
    info = get_dataset_info(name)
    if split not in info.splits:
        raise DatasetError(
            f"dataset {name!r} has no split {split!r}; expected one of {list(info.splits)}."
        )
    subset_opts = {k: options.pop(k) for k in list(options) if k.startswith("subset_")}
    if subset is not None and subset not in info.subsets:
        raise DatasetError(
            f"dataset {name!r} has no subset {subset!r}; known subsets: "
            f"{sorted(info.subsets) or 'none'}."
        )
    droot = resolve_root(info, root) if info.needs_root else Path(root or ".")
    try:
        ds = info.build(droot, split, **options)
    except TypeError as e:  # an unknown loader option
        raise DatasetError(f"bad option for dataset {name!r}: {e}") from e
    if subset is None:
        return ds
    return info.subsets[subset](ds, data_root=droot.parent, **subset_opts)
