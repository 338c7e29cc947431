"""SFEW 2.0, static facial expressions in the wild (Dhall et al., EmotiW 2015).

Layout of the distribution (folder names matched case-insensitively)::

    <root>/Train/<Class>/*.png
    <root>/Val/<Class>/*.png

with class folders Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise. The test labels were
never released, so published SFEW numbers are on ``Val`` (split ``valid``). Any other class
folder name is an error rather than silently skipped, so that a misplaced folder is noticed.

Frames of one movie look alike (same actors, lighting, grading), so a held-out check must split
by movie, never by frame. Subsets ``heldout`` and ``rest`` (e.g. ``sfew:train:heldout``) split
any split by movie -- the file name's part before ``_<time>_<frame>`` -- with a fixed hash
(:func:`movie_fold`): about a fifth of the movies are held out, the same ones on every machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustfer.data.base import FERDataset, Sample, register_dataset, register_subset
from robustfer.data.folder import list_images
from robustfer.data.folds import hash_fold, held_out_by_group
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
    dirnames=("sfew", "SFEW", "SFEW_2", "SFEW2", "sfew2"),
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


#: One movie in this many is held out (``heldout``); the rest are ``rest``.
MOVIE_FOLDS = 5


def movie_of(sample_id: str) -> str:
    """The movie of an SFEW file (``Airheads_000519240_00000005.png`` -> ``Airheads``)."""
    stem = Path(sample_id).stem
    parts = stem.rsplit("_", 2)
    return parts[0] if len(parts) == 3 else stem


def movie_fold(movie: str) -> int:
    """A movie's fold, 0..MOVIE_FOLDS-1, from a fixed hash of its name (fold 0 is held out)."""
    return hash_fold(movie, MOVIE_FOLDS)


def _by_movie(ds: FERDataset, held: bool, subset: str) -> FERDataset:
    return held_out_by_group(ds, movie_of, MOVIE_FOLDS, held, subset, "<Movie>_<time>_<frame>.png")


@register_subset("sfew", "heldout")
def sfew_heldout(ds: FERDataset, data_root: Any = None) -> FERDataset:
    """The held-out movies (fold 0 of :func:`movie_fold`): a cross-dataset check."""
    return _by_movie(ds, True, "heldout")


@register_subset("sfew", "rest")
def sfew_rest(ds: FERDataset, data_root: Any = None) -> FERDataset:
    """Every movie but the held-out ones: extra training data that never shares a movie with
    ``heldout``."""
    return _by_movie(ds, False, "rest")
