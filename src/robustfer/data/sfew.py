"""SFEW 2.0, static facial expressions in the wild (Dhall et al., EmotiW 2015).

Layout of the distribution (folder names matched case-insensitively)::

    <root>/Train/<Class>/*.png
    <root>/Val/<Class>/*.png

with class folders Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise. The test labels were
never released, so published SFEW numbers are on ``Val`` (split ``valid``). Any other class
folder name is an error rather than silently skipped, so that a misplaced folder is noticed.
"""

from __future__ import annotations

from pathlib import Path

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.folder import list_images
from robustfer.data.labels import LabelMap
from robustfer.errors import DatasetError

SFEW_LABELS = LabelMap.from_names(
    "sfew", ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
)
# Lower-case native name -> canonical index (SFEW drops no class).
_CANON = {
    n.lower(): c for n, c in zip(SFEW_LABELS.native, SFEW_LABELS.to_canonical) if c is not None
}
SPLIT_DIRS = {"train": ("train",), "valid": ("val", "valid", "validation")}


def _split_dir(root: Path, split: str) -> Path:
    by_name = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    for name in SPLIT_DIRS[split]:
        if name in by_name:
            return by_name[name]
    raise DatasetError(
        f"SFEW split folder for {split!r} not found in {root}; expected "
        f"{SPLIT_DIRS[split][0].capitalize()}/ (folders present: {sorted(by_name) or 'none'})."
    )


@register_dataset(
    "sfew",
    splits=tuple(SPLIT_DIRS),
    dirnames=("sfew", "SFEW", "SFEW_2", "SFEW2"),
    description="SFEW 2.0 movie stills (7 classes, train/valid)",
    has_validation=True,
)
def build_sfew(root: Path, split: str, cache: bool = True) -> FERDataset:
    """Load the SFEW 2.0 ``Train`` or ``Val`` folder.

    Args:
        root: folder holding ``Train/`` and ``Val/``.
        split: ``train`` or ``valid``.
        cache: keep decoded images in memory.
    """
    folder = _split_dir(root, split)
    samples = []
    for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = _CANON.get(cls_dir.name.lower())
        if label is None:
            raise DatasetError(
                f"SFEW class folder {cls_dir} is unknown; expected one of "
                f"{list(SFEW_LABELS.native)}. Rename or remove it."
            )
        samples += [
            Sample(id=p.relative_to(root).as_posix(), label=label, path=p)
            for p in list_images(cls_dir)
        ]
    if not samples:
        raise DatasetError(f"SFEW folder {folder} holds no images in class folders.")
    return FERDataset("sfew", split, samples, 7, root=root, cache=cache)
