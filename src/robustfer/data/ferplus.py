"""FERPlus: FER2013 faces with the FER+ crowd votes (Barsoum et al., ICMI 2016).

Layout, exactly as the official tooling (github.com/microsoft/FERPlus, ``generate_training_data.py``)
writes it::

    <root>/FER2013Train/ferNNNNNNN.png ... label.csv
    <root>/FER2013Valid/...                label.csv
    <root>/FER2013Test/...                 label.csv

``label.csv`` has no header; each row is
``ferNNNNNNN.png,"(0, 0, 48, 48)",neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF``
with ten annotators' vote counts. The face box is the whole 48x48 image in every official row,
so it is parsed and checked but no crop is applied.

Label modes follow ``_process_data`` in the official ``src/ferplus.py``:

* every count of one vote is set to zero first (outlier removal);
* **majority**: keep the image when the top class has *more than half* of the remaining votes
  and is not ``unknown``/``NF``. A strict majority cannot tie, so there are no ties to break.
  Counts on the real data: train 25,045 / valid 3,191 / test 3,137.
* **probability** / **crossentropy**: take classes in order of votes (all classes tied at the
  current maximum together) until 75 % of the votes or three classes are covered, stopping at
  ``unknown``/``NF``; drop the image when the kept classes hold at most half the votes, more
  than three classes were needed, or ``unknown``/``NF`` wins. The soft target is the kept votes
  over the eight expressions, renormalised. The two modes differ only in how training uses the
  target (the official trainer samples a one-hot label per step for *probability* and uses the
  distribution directly for *crossentropy*); the engine does the same (``train.target``).

The hard ``label`` of a sample is the arg-max of its target (the majority class in majority
mode). Published FER+ accuracy is always against the majority label: evaluate with
``label_mode="majority"``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.labels import LabelMap
from robustfer.errors import DatasetError

#: Vote columns of label.csv, in file order.
FERPLUS_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
    "unknown", "NF",
)
FERPLUS_LABELS = LabelMap.from_names("ferplus", FERPLUS_COLUMNS, drop=("unknown", "NF"))
SPLIT_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
LABEL_MODES = ("majority", "probability", "crossentropy")


def process_votes(votes: np.ndarray, mode: str) -> np.ndarray | None:
    """Apply the official FER+ label rule to one row of ten vote counts.

    Returns:
        A target over the 8 expressions summing to 1, or ``None`` when the image is dropped.
    """
    v = votes.astype(np.float64).copy()
    v[v <= 1.0] = 0.0  # single votes are outliers (official rule)
    total = v.sum()
    if total <= 0:
        return None
    target = np.zeros(10, dtype=np.float64)
    if mode == "majority":
        k = int(np.argmax(v))
        if v[k] > 0.5 * total and k < 8:
            target[k] = 1.0
            return target[:8]
        return None
    # probability / crossentropy, transcribed from the official loop
    part, count, valid = 0.0, 0, True
    while part < 0.75 * total and count < 3 and valid:
        maxval = v.max()
        for i in range(10):
            if v[i] == maxval:
                target[i] = maxval
                v[i] = 0.0
                part += target[i]
                count += 1
                if i >= 8:  # unknown / NF ties with the current maximum
                    valid = False
                    if target.sum() > maxval:  # expressions ahead of it are kept
                        target[i] = 0.0
                        count -= 1
                    break
    if target.sum() <= 0.5 * total or count > 3:
        return None
    if int(np.argmax(target)) >= 8:
        return None
    t = target[:8]
    return t / t.sum()


def _parse_row(row: list[str], path: Path, lineno: int) -> tuple[str, np.ndarray]:
    if len(row) != 12:
        raise DatasetError(
            f"{path}:{lineno}: expected 12 comma-separated fields (image name, face box, "
            f"10 vote counts), got {len(row)}: {','.join(row)[:120]!r}. Regenerate label.csv "
            "with the official FER+ tooling."
        )
    name, box = row[0].strip(), row[1].strip()
    if not name.lower().endswith(".png"):
        raise DatasetError(f"{path}:{lineno}: image name {name!r} is not a .png file name.")
    try:
        coords = [int(c) for c in box.strip("()").split(",")]
    except ValueError:
        coords = []
    if len(coords) != 4:
        raise DatasetError(
            f"{path}:{lineno}: face box {box!r} is malformed; expected \"(x0, y0, x1, y1)\"."
        )
    try:
        votes = np.array([float(c) for c in row[2:]], dtype=np.float64)
    except ValueError:
        raise DatasetError(
            f"{path}:{lineno}: vote counts {row[2:]} must be numbers (10 annotators' votes)."
        ) from None
    if (votes < 0).any():
        raise DatasetError(f"{path}:{lineno}: negative vote count in {row[2:]}.")
    return name, votes


def read_label_csv(path: Path) -> list[tuple[str, np.ndarray]]:
    """Rows ``(image name, votes[10])`` of one FER+ ``label.csv``."""
    if not path.is_file():
        raise DatasetError(
            f"FER+ label file {path} is missing; expected label.csv beside the images, as "
            "written by the official FER+ generate_training_data.py."
        )
    rows = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or (lineno == 1 and row[0].strip().lower() in ("image name", "image")):
                continue
            rows.append(_parse_row(row, path, lineno))
    if not rows:
        raise DatasetError(f"FER+ label file {path} has no rows.")
    return rows


@register_dataset(
    "ferplus",
    splits=tuple(SPLIT_FOLDERS),
    dirnames=("ferplus", "FERPlus", "FER+"),
    description="FER2013 faces with FER+ votes (8 classes; majority/probability/crossentropy)",
    has_validation=True,
)
def build_ferplus(
    root: Path,
    split: str,
    label_mode: str = "majority",
    num_classes: int = 8,
    cache: bool = True,
) -> FERDataset:
    """Load one FERPlus split from the official folder layout.

    Args:
        root: folder holding ``FER2013Train``, ``FER2013Valid``, ``FER2013Test``.
        split: ``train``, ``valid`` or ``test``.
        label_mode: ``majority``, ``probability`` or ``crossentropy`` (see module docstring).
        num_classes: 8 (official) or 7 (contempt images dropped, for 7-class comparisons).
        cache: keep decoded images in memory.
    """
    if label_mode not in LABEL_MODES:
        raise DatasetError(
            f"ferplus label_mode {label_mode!r} is unknown; expected one of {list(LABEL_MODES)}."
        )
    if num_classes not in (7, 8):
        raise DatasetError(f"ferplus num_classes must be 7 or 8, got {num_classes}.")
    folder = root / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise DatasetError(
            f"FERPlus split folder {folder} not found; expected {root} to hold "
            f"{', '.join(SPLIT_FOLDERS.values())} (the official FER+ layout)."
        )
    samples = []
    for name, votes in read_label_csv(folder / "label.csv"):
        target = process_votes(votes, label_mode)
        if target is None:
            continue
        label = int(np.argmax(target))
        if num_classes == 7:
            if label == 7:
                continue
            target = target[:7] / target[:7].sum() if target[:7].sum() > 0 else None
            if target is None:
                continue
        samples.append(
            Sample(
                id=f"{SPLIT_FOLDERS[split]}/{name}",
                label=label,
                path=folder / name,
                soft=tuple(float(x) for x in target),
            )
        )
    return FERDataset("ferplus", split, samples, num_classes, root=root, cache=cache)
