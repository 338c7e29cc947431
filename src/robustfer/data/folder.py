"""Your own data: an image-folder tree or CSV lists, one per split.

Two layouts are accepted for each split (``train``, ``valid``, ``test``; a ``valid`` split may
also be named ``val`` or ``validation``)::

    <root>/<split>/<class name>/**/*.jpg|png|...     (a) class folders
    <root>/<split>.csv                                (b) a list, preferred when both exist

Class folder names and CSV labels are resolved with
:func:`robustfer.data.labels.canonical_name`, so ``Happy``, ``happiness`` and ``HA`` are the
same class; a CSV label may also be a canonical index (0 neutral ... 7 contempt). The CSV has a
header with columns ``path,label`` and optionally ``subject``, ``yaw`` (degrees) and
``landmarks`` (``x1 y1 x2 y2 ...`` in pixels of the image, space-separated; every row the same
number of points, e.g. 5 in robustfer's detector order or the 68 of iBUG 300-W; models that take
landmarks, RAN with ``regions: landmarks`` and AHA, then get them; see
:mod:`robustfer.data.landmarks`); ``path`` is relative to ``<root>`` unless absolute.

The label space is 8 classes when *any* split present under the root has contempt, else 7,
so that train and test of one root always agree; pass ``num_classes`` to force it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.labels import EXPRESSIONS_8, Expression, LabelMap, canonical_index
from robustfer.data.landmarks import parse_points
from robustfer.errors import DatasetError

#: Native order of this loader is the canonical order itself.
FOLDER_LABELS = LabelMap.from_names("folder", EXPRESSIONS_8)
#: File suffixes treated as images by every folder-scanning loader.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("valid", "val", "validation"),
    "test": ("test",),
}


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted; other files are ignored."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _locate(root: Path, split: str) -> Path | None:
    """The CSV (preferred) or folder that holds ``split``, or ``None``."""
    for name in SPLIT_ALIASES[split]:
        if (root / f"{name}.csv").is_file():
            return root / f"{name}.csv"
    for name in SPLIT_ALIASES[split]:
        if (root / name).is_dir():
            return root / name
    return None


def _parse_label(value: str, where: str) -> int:
    text = value.strip()
    if text.isdigit():
        idx = int(text)
        if idx < len(Expression):
            return idx
        raise DatasetError(
            f"{where}: label {text} is not a canonical index; expected 0..7 "
            f"({', '.join(EXPRESSIONS_8)}) or a class name."
        )
    try:
        return canonical_index(text)
    except DatasetError as e:
        raise DatasetError(f"{where}: {e}") from None


def _read_csv(path: Path, root: Path) -> list[Sample]:
    samples = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        if "path" not in cols or "label" not in cols:
            raise DatasetError(
                f"{path}:1: header {cols} lacks 'path' and/or 'label'; expected columns "
                "path,label[,subject][,yaw][,landmarks]. Add the header line."
            )
        reader.fieldnames = cols
        for lineno, row in enumerate(reader, start=2):
            where = f"{path}:{lineno}"
            rel = (row.get("path") or "").strip()
            if not rel or row.get("label") is None:
                raise DatasetError(f"{where}: empty path or label; every row needs both.")
            label = _parse_label(row["label"], where)
            yaw_text = (row.get("yaw") or "").strip()
            try:
                yaw = float(yaw_text) if yaw_text else None
            except ValueError:
                raise DatasetError(
                    f"{where}: yaw {yaw_text!r} is not a number; expected degrees or empty."
                ) from None
            p = Path(rel)
            samples.append(
                Sample(
                    id=rel, label=label, path=p if p.is_absolute() else root / p,
                    pose=yaw, subject=(row.get("subject") or "").strip() or None,
                    landmarks=_parse_landmarks(row.get("landmarks"), where),
                )
            )
    counts = {0 if s.landmarks is None else len(s.landmarks) for s in samples}
    if len(counts) > 1:
        raise DatasetError(f"{path}: rows have {sorted(counts)} landmarks; give every row the same "
                           "number of points (or leave the column empty everywhere).")
    return samples


def _parse_landmarks(text: str | None, where: str) -> np.ndarray | None:
    try:
        return parse_points(text)
    except ValueError as e:
        raise DatasetError(f"{where}: {e}") from None


def _class_label(cls_dir: Path) -> int:
    try:
        return canonical_index(cls_dir.name)
    except DatasetError as e:
        raise DatasetError(f"class folder {cls_dir}: {e} Rename or remove the folder.") from None


def _read_tree(folder: Path, root: Path) -> list[Sample]:
    samples = []
    for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = _class_label(cls_dir)
        samples += [
            Sample(id=p.relative_to(root).as_posix(), label=label, path=p)
            for p in list_images(cls_dir)
        ]
    return samples


def _labels_in(source: Path, root: Path) -> set[int]:
    """Labels present in another split; a folder tree needs only its class folder names."""
    if source.suffix == ".csv":
        return {s.label for s in _read_csv(source, root)}
    return {_class_label(p) for p in source.iterdir() if p.is_dir()}


def _read(source: Path, root: Path) -> list[Sample]:
    return _read_csv(source, root) if source.suffix == ".csv" else _read_tree(source, root)


@register_dataset(
    "folder",
    splits=tuple(SPLIT_ALIASES),
    dirnames=("folder",),
    description="your own data: <split>/<class>/*.jpg folders or <split>.csv (path,label)",
    has_validation=True,
)
def build_folder(
    root: Path, split: str, num_classes: int | None = None, cache: bool = True
) -> FERDataset:
    """Load one split of a user dataset (see the module docstring for the layouts).

    Args:
        root: folder holding ``train/``, ``valid/``, ``test/`` or ``train.csv``, ...
        split: ``train``, ``valid`` or ``test``.
        num_classes: 7 or 8; ``None`` picks 8 when any split has contempt, else 7.
        cache: keep decoded images in memory.
    """
    found = {s: _locate(root, s) for s in SPLIT_ALIASES}
    source = found[split]
    if source is None:
        present = [f"{s} ({p.name})" for s, p in found.items() if p is not None]
        raise DatasetError(
            f"split {split!r} not found under {root}: expected {split}.csv or a {split}/ "
            f"folder of class folders. Present: {', '.join(present) or 'nothing'}."
        )
    samples = _read(source, root)
    if not samples:
        raise DatasetError(f"{source} holds no labelled images; expected <class>/*.jpg or rows.")
    contempt = int(Expression.CONTEMPT)
    if num_classes is None:
        labels = {s.label for s in samples}
        for other in (p for p in found.values() if p is not None and p != source):
            labels |= _labels_in(other, root)
        num_classes = 8 if contempt in labels else 7
    if num_classes == 7 and any(s.label == contempt for s in samples):
        raise DatasetError(
            f"{source} has contempt images but num_classes=7; use num_classes=8 or remove them."
        )
    return FERDataset("folder", split, samples, num_classes, root=root, cache=cache)
