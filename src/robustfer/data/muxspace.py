"""muxspace facial_expressions: whole-face photos with crowd-sourced (noisy) expression labels.

Layout (the ``muxspace_dev`` distribution)::

    <root>/images/*.jpg
    <root>/labels.csv          header ``image,emotion``; emotion in lower-case FER+ names

Mostly 350x350 greyscale photos of one face with some background, so the faces must be found
and aligned before training (``align: true`` in a recipe's ``data.extra_train``: see
:mod:`robustfer.data.aligned`). Labels are noisy: use it as auxiliary training data and for
whole-photo checks, not as a headline benchmark. There is one split, ``train`` (every labelled
photo), with subsets split by person, never by photo: ``heldout`` (one person in
:data:`PERSON_FOLDS`, a cross-dataset check, e.g. ``muxspace:train:heldout+aligned``) and ``rest``
(the others, extra training data that never shares a person with ``heldout``). Rows whose
image file is missing are skipped with a warning, so one missing file does not stop a run; an
unknown label is an error naming the row.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any

from robustfer.data.base import FERDataset, Sample, register_dataset, register_subset
from robustfer.data.folds import hash_fold, held_out_by_group
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


#: One person in this many is held out (``heldout``); the rest are ``rest``.
PERSON_FOLDS = 5


def person_of(sample_id: str) -> str:
    """The person of a muxspace photo (``images/George_W_Bush_0012.jpg`` -> ``George_W_Bush``);
    a name without a trailing ``_<number>`` is its own person."""
    stem = Path(sample_id).stem
    return re.sub(r"_\d+$", "", stem)


def person_fold(person: str) -> int:
    """A person's fold, 0..PERSON_FOLDS-1, from a fixed hash of the name (fold 0 is held out)."""
    return hash_fold(person, PERSON_FOLDS)


def _by_person(ds: FERDataset, held: bool, subset: str) -> FERDataset:
    return held_out_by_group(ds, person_of, PERSON_FOLDS, held, subset, "<Person_Name>_<number>.jpg")


@register_subset("muxspace", "heldout")
def muxspace_heldout(ds: FERDataset, data_root: Any = None) -> FERDataset:
    """The held-out persons (fold 0 of :func:`person_fold`): a cross-dataset check."""
    return _by_person(ds, True, "heldout")


@register_subset("muxspace", "rest")
def muxspace_rest(ds: FERDataset, data_root: Any = None) -> FERDataset:
    """Every person but the held-out ones: extra training data that never shares a person
    with ``heldout``."""
    return _by_person(ds, False, "rest")
