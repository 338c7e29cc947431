"""AffectNet manually annotated images (Mollahosseini et al., IEEE TAC 2017).

Layout of the distribution::

    <root>/Manually_Annotated_file_lists/training.csv   (also accepted directly in <root>)
    <root>/Manually_Annotated_file_lists/validation.csv
    <root>/Manually_Annotated_Images/<subDirectory_filePath>   (or images directly in <root>)

The CSVs have the header ``subDirectory_filePath,face_x,face_y,face_width,face_height,
facial_landmarks,expression,valence,arousal`` (a copy of ``validation.csv`` without the
header row is accepted too). ``expression`` is in the native order
0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt, 8 None,
9 Uncertain, 10 No-face; rows 8..10 are dropped, and contempt too when ``num_classes=7``.
The face box becomes ``Sample.box`` so images are cropped to the face; the 68 facial landmarks
(``x1;y1;x2;y2;...`` in pixels of the original image) become ``Sample.landmarks``, which the
engine moves into the crop and passes to models that take them (RAN ``regions: landmarks``,
AHA; see :mod:`robustfer.data.landmarks`); ``landmarks=False`` leaves them out. Valence and
arousal are not used.

AffectNet's test set is not public: published accuracies are on the validation set
(split ``valid`` here, 500 images per class). The registry therefore declares
``has_validation=False`` so that the engine carves its own model-selection split out of
``train`` and ``valid`` stays an untouched test set.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.labels import Expression, LabelMap
from robustfer.data.landmarks import parse_points
from robustfer.errors import DatasetError

AFFECTNET_LABELS = LabelMap.from_names(
    "affectnet",
    ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
     "none", "uncertain", "no-face"),
    drop=("none", "uncertain", "no-face"),
)
SPLIT_FILES = {"train": "training.csv", "valid": "validation.csv"}
COLUMNS = (
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
    "facial_landmarks", "expression", "valence", "arousal",
)


Box = tuple[int, int, int, int]


def _points(text: str) -> np.ndarray | None:
    """The ``facial_landmarks`` field; ``None`` when it is empty or malformed (it is optional)."""
    try:
        return parse_points(text)
    except ValueError:
        return None


def read_affectnet_csv(path: Path, num_classes: int = 8) -> list[tuple[str, int, Box, np.ndarray | None]]:
    """Rows ``(relative image path, canonical label, (x, y, w, h), landmarks or None)`` of one
    AffectNet CSV.

    Raises:
        DatasetError: naming ``file:line`` on a bad header, a malformed row or an unknown label.
    """
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        first = [c.strip() for c in next(reader, [])]
        body: Iterable[list[str]] = reader
        if tuple(first[: len(COLUMNS)]) != COLUMNS:
            # Some copies of validation.csv lack the header row: accept a first row of data.
            if len(first) < len(COLUMNS) or not first[6].lstrip("-").isdigit():
                raise DatasetError(
                    f"{path}:1: header {first} is not AffectNet's; expected "
                    f"{','.join(COLUMNS)}. Use the unmodified Manually_Annotated_file_lists file."
                )
            body = itertools.chain([first], reader)
        for lineno, row in enumerate(body, start=1 if body is not reader else 2):
            if not row:
                continue
            where = f"{path}:{lineno}"
            if len(row) < len(COLUMNS):
                raise DatasetError(
                    f"{where}: expected {len(COLUMNS)} comma-separated fields, got {len(row)}."
                )
            try:
                x, y, w, h = (int(float(v)) for v in row[1:5])
                native = int(row[6])
            except ValueError:
                raise DatasetError(
                    f"{where}: face box {row[1:5]} and expression {row[6]!r} must be numbers."
                ) from None
            try:
                label = AFFECTNET_LABELS(native)
            except DatasetError as e:
                raise DatasetError(f"{where}: {e}") from None
            if label is None or (num_classes == 7 and label == Expression.CONTEMPT):
                continue
            rows.append((row[0].strip(), label, (x, y, w, h), _points(row[5])))
    return rows


@register_dataset(
    "affectnet",
    splits=tuple(SPLIT_FILES),
    dirnames=("affectnet", "AffectNet"),
    description="AffectNet manual annotations (7 or 8 classes; valid = published test set)",
    has_validation=False,
)
def build_affectnet(
    root: Path, split: str, num_classes: int = 8, cache: bool = True, landmarks: bool = True
) -> FERDataset:
    """Load the AffectNet training or validation list.

    Args:
        root: AffectNet folder (see the module docstring for the layout).
        split: ``train`` (training.csv) or ``valid`` (validation.csv).
        num_classes: 8 (with contempt) or 7 (contempt rows dropped).
        cache: keep decoded images in memory (AffectNet is large: consider ``False``).
        landmarks: attach the 68 landmarks of each row (used only where every row has them).
    """
    if num_classes not in (7, 8):
        raise DatasetError(f"affectnet num_classes must be 7 or 8, got {num_classes}.")
    name = SPLIT_FILES[split]
    candidates = [root / "Manually_Annotated_file_lists" / name, root / name]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DatasetError(
            f"AffectNet list {name} not found; looked for {', '.join(map(str, candidates))}."
        )
    img_dir = root / "Manually_Annotated_Images"
    if not img_dir.is_dir():
        img_dir = root
    samples = [
        Sample(id=rel, label=label, path=img_dir / rel, box=box, landmarks=pts if landmarks else None)
        for rel, label, box, pts in read_affectnet_csv(path, num_classes)
    ]
    return FERDataset("affectnet", split, samples, num_classes, root=root, cache=cache)
