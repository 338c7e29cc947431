"""muxspace facial_expressions: whole-face photos with crowd-sourced (noisy) expression labels.

Layout (the ``muxspace_dev`` distribution)::

    <root>/images/*.jpg
    <root>/labels.csv          header ``image,emotion``; emotion in lower-case FER+ names

Mostly 350x350 greyscale photos of one face with some background, so the faces must be found
and aligned before training (``align: true`` in a recipe's ``data.extra_train``: see
:mod:`robustfer.data.aligned`). Labels are noisy: use it as auxiliary training data and for
whole-photo checks, not as a headline benchmark. There is one split, ``train`` (every labelled
photo). Rows whose image file is missing are skipped with a warning, so one missing file does
not stop a run; an unknown label is an error naming the row.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.labels import canonical_index
from robustfer.errors import DatasetError

logger = logging.getLogger(__name__)


@register_dataset(
    "muxspace",
    splits=("train",),
    dirnames=("muxspace_dev", "muxspace", "facial_expressions"),
    description="muxspace facial_expressions whole-face photos (8 classes, noisy labels, train only)",
    has_validation=False,
)
def build_muxspace(root: Path, split: str, cache: bool = False) -> FERDataset:
    """Load ``labels.csv`` and ``images/`` of a muxspace folder.

    Args:
        root: folder holding ``labels.csv`` and ``images/``.
        split: ``train``.
        cache: keep decoded images in memory (off by default: the photos are large; aligned
            crops are cached instead).
    """
    csv_path = root / "labels.csv"
    if not csv_path.is_file():
        raise DatasetError(f"muxspace labels file {csv_path} not found; expected labels.csv with "
                           "columns image,emotion next to the images/ folder.")
    samples, missing = [], 0
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "image" not in cols or "emotion" not in cols:
            raise DatasetError(f"{csv_path}: header {reader.fieldnames} lacks image,emotion columns.")
        for line, row in enumerate(reader, start=2):
            name, emo = row[cols["image"]].strip(), row[cols["emotion"]].strip()
            try:
                label = canonical_index(emo)
            except Exception:
                raise DatasetError(f"{csv_path}:{line}: unknown emotion {emo!r}; use a FER+ class "
                                   "name (neutral, happiness, surprise, sadness, anger, disgust, fear, "
                                   "contempt).") from None
            path = root / "images" / name
            if not path.is_file():
                missing += 1
                continue
            samples.append(Sample(id=f"images/{name}", label=label, path=path))
    if missing:
        logger.warning("muxspace: %d of %d rows of %s name a missing image; skipped.",
                       missing, missing + len(samples), csv_path)
    if not samples:
        raise DatasetError(f"{csv_path} lists no image present in {root / 'images'}.")
    return FERDataset("muxspace", split, samples, 8, root=root, cache=cache)
