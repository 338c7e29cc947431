"""JAFFE, the Japanese Female Facial Expression database (Lyons et al., FG 1998).

The distribution (``jaffedbase/``) is a flat folder of 213 grey 256x256 TIFF images named
``<subject>.<code><n>.<index>.tiff``, e.g. ``KA.AN1.39.tiff``: subject ``KA`` (10 subjects),
expression code AN, DI, FE, HA, NE, SA, SU (7 classes), the pose number and a running index.
Images are found recursively; non-image files (README, ratings) are ignored, and an image file
whose name does not follow the pattern is an error unless ``strict=False`` skips it.

JAFFE has no official split: ``train``/``test`` are subject-independent folds
(:mod:`robustfer.data.folds`); with 10 subjects, the default 10 folds are leave-one-subject-out.
"""

from __future__ import annotations

import re
from pathlib import Path

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.folder import list_images
from robustfer.data.folds import FOLD_SPLITS, split_by_subject
from robustfer.data.labels import LabelMap
from robustfer.errors import DatasetError

#: Native order: the file-name codes in alphabetical order.
JAFFE_LABELS = LabelMap.from_names("jaffe", ("AN", "DI", "FE", "HA", "NE", "SA", "SU"))
# Code -> canonical index (JAFFE drops no class).
_CANON = {
    n: c for n, c in zip(JAFFE_LABELS.native, JAFFE_LABELS.to_canonical) if c is not None
}
_NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})\d*\.\d+$", re.IGNORECASE)


def parse_jaffe_name(path: Path) -> tuple[str, int] | None:
    """``(subject, canonical label)`` from a JAFFE file name, or ``None`` if it does not match.

    Raises:
        DatasetError: if the name matches but the expression code is unknown.
    """
    m = _NAME.match(path.stem)
    if m is None:
        return None
    code = m.group(2).upper()
    if code not in _CANON:
        raise DatasetError(
            f"JAFFE image {path}: expression code {code!r} is unknown; expected one of "
            f"{list(_CANON)}."
        )
    return m.group(1).upper(), _CANON[code]


@register_dataset(
    "jaffe",
    splits=FOLD_SPLITS,
    dirnames=("jaffe", "JAFFE", "jaffedbase"),
    description="JAFFE posed expressions, subject-independent k-fold (7 classes)",
    has_validation=False,
)
def build_jaffe(
    root: Path,
    split: str,
    fold: int = 0,
    num_folds: int = 10,
    seed: int = 0,
    strict: bool = True,
    cache: bool = True,
) -> FERDataset:
    """Load one subject-independent fold of JAFFE.

    Args:
        root: folder holding the ``*.tiff`` images (searched recursively).
        split: ``train``, ``test`` (subjects of group ``fold``) or ``all``.
        fold: which subject group is the test part.
        num_folds: number of subject groups.
        seed: subject shuffling seed.
        strict: raise on image files with unparseable names (else skip them).
        cache: keep decoded images in memory.
    """
    if not root.is_dir():
        raise DatasetError(f"JAFFE folder {root} does not exist.")
    samples = []
    for f in list_images(root):
        parsed = parse_jaffe_name(f)
        if parsed is None:
            if strict:
                raise DatasetError(
                    f"JAFFE image {f} is not named like KA.AN1.39.tiff (subject.code.index); "
                    "rename or remove it, or pass strict=False to skip such files."
                )
            continue
        subject, label = parsed
        samples.append(
            Sample(id=f.relative_to(root).as_posix(), label=label, path=f, subject=subject)
        )
    samples = split_by_subject(
        samples, split, dataset="jaffe", fold=fold, num_folds=num_folds, seed=seed
    )
    return FERDataset("jaffe", split, samples, 7, root=root, cache=cache)
