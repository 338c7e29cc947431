"""FER2013 (Goodfellow et al., ICONIP 2013) with its original single-annotator labels.

Two sources are accepted; the loader detects which one ``<root>`` holds (``source="auto"``,
preferring the CSV when both are there):

* **csv** -- the Kaggle ``fer2013.csv`` in ``<root>`` or ``<root>/fer2013/``, header
  ``emotion,pixels,Usage``: ``pixels`` is 2304 space-separated grey levels of a 48x48 image and
  ``Usage`` is ``Training`` / ``PublicTest`` / ``PrivateTest`` -> splits train / valid / test.
  Images are decoded from the CSV while loading; sample ids are ``fer2013.csv:<row>`` with the
  0-based data row, which is also the number in the FER+ image name ``fer<row:07d>.png``.
* **folder** -- the FER+ image folders ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``
  (see :mod:`robustfer.data.ferplus`) plus ``fer2013_original_labels.csv`` in ``<root>`` or
  the folder above it, header ``image_name,usage,fer2013_label,ambiguous``; the label is a name
  (``angry``, ``happy``, ...) or a native id, and rows with ``ambiguous=1`` are dropped unless
  ``drop_ambiguous=False``. Sample ids are ``<split folder>/<image name>`` as in ``ferplus``.

Native order: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral (7 classes).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.labels import LabelMap, canonical_index
from robustfer.errors import DatasetError

FER2013_LABELS = LabelMap.from_names(
    "fer2013", ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
)
USAGE_SPLITS = {
    "training": "train", "train": "train",
    "publictest": "valid", "valid": "valid", "validation": "valid", "val": "valid",
    "privatetest": "test", "test": "test",
}
SPLIT_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
LABELS_CSV = "fer2013_original_labels.csv"
SOURCES = ("auto", "csv", "folder")


def _usage(value: str, where: str) -> str:
    key = value.strip().lower()
    if key not in USAGE_SPLITS:
        raise DatasetError(
            f"{where}: usage {value!r} is unknown; expected Training, PublicTest or PrivateTest."
        )
    return USAGE_SPLITS[key]


def _label(value: str, where: str) -> int:
    text = value.strip()
    try:
        if text.isdigit():
            label = FER2013_LABELS(int(text))
            if label is not None:  # always: FER2013 drops no native class
                return label
        return canonical_index(text)
    except DatasetError as e:
        raise DatasetError(f"{where}: {e}") from None


def _header(reader: csv.DictReader, path: Path, required: tuple[str, ...]) -> None:
    cols = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in required if c not in cols]
    if missing:
        raise DatasetError(
            f"{path}:1: header {cols} lacks {missing}; expected {','.join(required)}. "
            "Use the unmodified file from the distribution."
        )
    reader.fieldnames = cols


def _from_csv(path: Path, split: str) -> list[Sample]:
    samples = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        _header(reader, path, ("emotion", "pixels", "Usage"))
        for row_idx, row in enumerate(reader):
            where = f"{path}:{row_idx + 2}"
            if _usage(row["Usage"] or "", where) != split:
                continue  # only the wanted split's pixels are parsed
            try:
                px = np.array((row["pixels"] or "").split(), dtype=np.int64)
            except ValueError:
                raise DatasetError(f"{where}: pixels must be integers 0..255.") from None
            if px.size != 48 * 48 or px.min() < 0 or px.max() > 255:
                raise DatasetError(
                    f"{where}: expected 2304 grey levels 0..255 (a 48x48 image), got "
                    f"{px.size} values. Re-download fer2013.csv."
                )
            samples.append(
                Sample(
                    id=f"{path.name}:{row_idx}", label=_label(row["emotion"] or "", where),
                    pixels=px.astype(np.uint8).reshape(48, 48),
                )
            )
    return samples


def _from_folder(root: Path, split: str, drop_ambiguous: bool) -> list[Sample]:
    path = next((p for p in (root / LABELS_CSV, root.parent / LABELS_CSV) if p.is_file()), None)
    if path is None:
        raise DatasetError(
            f"{root} has FER2013 image folders but no {LABELS_CSV} (looked in {root} and "
            f"{root.parent}); put the file there or use fer2013.csv instead."
        )
    samples = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        _header(reader, path, ("image_name", "usage", "fer2013_label", "ambiguous"))
        for lineno, row in enumerate(reader, start=2):
            where = f"{path}:{lineno}"
            if _usage(row["usage"] or "", where) != split:
                continue
            amb = (row["ambiguous"] or "0").strip().lower()
            if amb not in ("0", "1", "true", "false", ""):
                raise DatasetError(f"{where}: ambiguous {amb!r} must be 0 or 1.")
            if drop_ambiguous and amb in ("1", "true"):
                continue
            name = (row["image_name"] or "").strip()
            if not name:
                raise DatasetError(f"{where}: empty image_name.")
            folder = SPLIT_FOLDERS[split]
            samples.append(
                Sample(
                    id=f"{folder}/{name}", label=_label(row["fer2013_label"] or "", where),
                    path=root / folder / name,
                )
            )
    return samples


@register_dataset(
    "fer2013",
    splits=tuple(SPLIT_FOLDERS),
    dirnames=("fer2013", "FER2013", "ferplus", "FERPlus"),
    description="FER2013 original labels from fer2013.csv or FER+ folders (7 classes)",
    has_validation=True,
)
def build_fer2013(
    root: Path,
    split: str,
    source: str = "auto",
    drop_ambiguous: bool = True,
    cache: bool = True,
) -> FERDataset:
    """Load one FER2013 split (see the module docstring for the two sources).

    Args:
        root: folder holding ``fer2013.csv`` or the FER+ image folders.
        split: ``train`` (Training), ``valid`` (PublicTest) or ``test`` (PrivateTest).
        source: ``auto``, ``csv`` or ``folder``.
        drop_ambiguous: folder source only: drop rows marked ``ambiguous=1``.
        cache: keep decoded images in memory.
    """
    if source not in SOURCES:
        raise DatasetError(f"fer2013 source {source!r} is unknown; expected one of {SOURCES}.")
    csv_path = next(
        (p for p in (root / "fer2013.csv", root / "fer2013" / "fer2013.csv") if p.is_file()), None
    )
    has_folders = any((root / d).is_dir() for d in SPLIT_FOLDERS.values())
    if source == "csv" or (source == "auto" and csv_path is not None):
        if csv_path is None:
            raise DatasetError(f"fer2013.csv not found in {root} or {root / 'fer2013'}.")
        samples = _from_csv(csv_path, split)
    elif source == "folder" or has_folders:
        folder = root / SPLIT_FOLDERS[split]
        if not folder.is_dir():
            raise DatasetError(f"FER2013 split folder {folder} not found (FER+ layout).")
        samples = _from_folder(root, split, drop_ambiguous)
    else:
        raise DatasetError(
            f"{root} holds neither fer2013.csv nor FER2013Train/Valid/Test folders; point the "
            "root at the Kaggle fer2013.csv folder or the FER+ image folders."
        )
    return FERDataset("fer2013", split, samples, 7, root=root, cache=cache)
